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


# ------------------------------------------------------------------ data synth (8)
def test_synth_resume_renders_bad_images_again(tmp_path):
    """Before: a 0-byte or truncated PNG counted as done, and training aborted on it later."""
    from aniportraitgan.data.synth import SynthConfig, synthesize

    root = tmp_path / "synth"
    cfg = SynthConfig(num=4, resolution=32, workers=1, progress=False)
    synthesize(root, cfg)
    before = {p: p.read_bytes() for p in (portrait_path(root, 1), face_path(root, 2), portrait_path(root, 3))}
    _empty(portrait_path(root, 1))
    _truncate(face_path(root, 2))
    report = synthesize(root, cfg)
    assert report.rendered == 2
    assert all(p.read_bytes() == b for p, b in before.items())  # the same bytes as the first time
    assert verify_dataset(root).ok


def test_synth_refuses_no_samples_and_absurd_sizes_up_front(tmp_path, capsys):
    """Before: `--num 0` exited 0 without labels; `--resolution 100000` died in moderngl."""
    from aniportraitgan.cli import main

    for args, words in ((["--num", "0"], "--num must be >= 1"),
                        (["--num", "3", "--resolution", "100000"], "--resolution must be in [16, 4096]")):
        assert main(["data", "synth", "--out", str(tmp_path / "x"), *args, "--no-progress"]) == 2
        assert words in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_data_verify_command(data, capsys):
    from aniportraitgan.cli import main

    assert main(["data", "verify", str(data), "--quiet"]) == 0
    assert "OK (8 samples, 16 images decoded)" in capsys.readouterr().out
    _flip_inside(face_path(data, 6))
    assert main(["data", "verify", str(data), "--fast", "--quiet"]) == 0  # headers are whole
    assert main(["data", "verify", str(data), "--quiet"]) == 1
    assert f"{face_path(data, 6)}" in capsys.readouterr().out


# ------------------------------------------------------------------ labels checksum (3)
def test_labels_are_checksummed(data):
    import numpy as np

    from aniportraitgan.data.dataset import LABELS_CHECKSUM, LABELS_FILE, load_labels

    path = data / LABELS_FILE
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    assert LABELS_CHECKSUM in arrays
    arrays["z_exp"] = arrays["z_exp"].copy()
    arrays["z_exp"][0, 0] = np.nextafter(arrays["z_exp"][0, 0], 1)  # one bit, still valid
    np.savez(path, **arrays)
    with pytest.raises(AssetError, match=f"labels file {path} is corrupt.*SHA-256"):
        load_labels(path)
    del arrays[LABELS_CHECKSUM]
    np.savez(path, **arrays)  # a file written before checksums: read as it is
    assert float(load_labels(path)["z_exp"][0, 0]) == float(arrays["z_exp"][0, 0])
