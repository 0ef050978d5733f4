"""Issue 12, datasets (defect 8): checking a dataset before a long run (`data.verify`), and
`train` stopping at the start on a bad image instead of at the step that draws it."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from aniportraitgan.artefacts import CheckpointManager
from aniportraitgan.data.dataset import face_path, portrait_path, read_card, write_card
from aniportraitgan.data.synth import make_tiny_dataset
from aniportraitgan.data.verify import png_problem, verify_dataset
from aniportraitgan.errors import AssetError
from aniportraitgan.training import RunOptions, TrainConfig, train


@pytest.fixture(scope="module")
def good(tmp_path_factory) -> Path:
    return make_tiny_dataset(tmp_path_factory.mktemp("rel_data") / "data", num=8, resolution=32)


@pytest.fixture
def data(good, tmp_path) -> Path:
    copy = tmp_path / "data"
    shutil.copytree(good, copy)
    return copy


def test_a_good_dataset_verifies(good):
    for full in (False, True):
        report = verify_dataset(good, full=full)
        assert report.ok and report.num_samples == 8 and report.images_checked == 16, report.summary()


def _truncate(p: Path) -> None:
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])


def _empty(p: Path) -> None:
    p.write_bytes(b"")


def _flip_inside(p: Path) -> None:
    data = bytearray(p.read_bytes())
    data[len(data) // 2] ^= 0xFF  # inside the image data: header and end still whole
    p.write_bytes(bytes(data))


@pytest.mark.parametrize("damage, fast_finds, words", [
    (_empty, True, "too short for a PNG"),
    (_truncate, True, "truncated"),
    (lambda p: p.unlink(), True, "missing"),
    (lambda p: shutil.copyfile(face_path(p.parent.parent, 0), p), True, "16x16, the card says 32x32"),
    (_flip_inside, False, "corrupt or unreadable"),
])
def test_each_bad_image_is_named(data, damage, fast_finds, words):
    bad = portrait_path(data, 3)
    damage(bad)
    fast, full = verify_dataset(data, full=False), verify_dataset(data, full=True)
    assert not full.ok and str(bad) in full.summary() and words in full.summary(), full.summary()
    assert fast.ok is not fast_finds, fast.summary()


def test_counts_and_card_are_checked(data):
    shutil.copyfile(portrait_path(data, 0), portrait_path(data, 99))
    card = read_card(data)
    write_card(data, {**card, "num_samples": 9, "complete": False})
    problems = verify_dataset(data, full=False).summary()
    assert "000099.png: has no row in labels.npz" in problems
    assert "has 8 rows" in problems and "num_samples=9" in problems and "incomplete" in problems


def test_png_problem_fast_path(tmp_path, good):
    assert png_problem(portrait_path(good, 0), 32) is None
    assert "not a PNG" in png_problem(Path(shutil.copyfile(good / "dataset.json", tmp_path / "x.png")))


def test_train_stops_before_step_0_on_a_bad_image(data, tmp_path):
    """Before: training started and aborted at the step that drew the truncated sample."""
    _truncate(face_path(data, 5))
    cfg = TrainConfig.preset("tiny")
    cfg.stage1.portrait_resolution = cfg.stage1.face_resolution = 16
    cfg.stage1.batch_size = 2
    cfg.image_every = 0
    run = tmp_path / "run"
    steps = []
    with pytest.raises(AssetError, match=f"{face_path(data, 5)}: truncated"):
        train(cfg, RunOptions(data=data, out=run, steps=50, progress=False, on_step=lambda s, d: steps.append(d)))
    assert steps == [] and CheckpointManager(run).list() == []
