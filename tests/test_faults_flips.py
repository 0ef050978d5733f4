"""Fault injection (issue 12): bit flips in every kind of file the project loads.

For each kind a good file is written, then `FLIPS` copies of it each get one byte XOR-ed with a
random non-zero mask at a seeded random offset (the first ones land in the header, where the
damage is subtlest), and the file's loader reads it. The outcome is classified:

* files the project writes and later trusts are checksummed: every flip must be an
  `AssetError` that names the file (generator files, the bundled demo, checkpoint folders,
  R weights, identity files);
* files people write or edit themselves (keyframes, training configs, reports) and formats
  with their own checks (PNG's CRCs) may load when a flip leaves them valid; otherwise the
  error must be one of the project's (printed without a traceback), never another exception;
* the metrics cache, which is only a cache, warns and is recomputed;
* the body-model asset is not checksummed yet (docs/reliability.md says why): its loader checks
  every tensor's name, shape and dtype, and a flip in the tensor data loads.

The counts are printed (pytest -s) and recorded in docs/reliability.md.
"""

from __future__ import annotations

import json
import random
import shutil
import warnings
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import torch

from aniportraitgan.animation.keyframe_files import load_keyframes, save_keyframes
from aniportraitgan.animation.presets import preset
from aniportraitgan.artefacts import CheckpointManager, export_generator, load_checkpoint, read_generator_file
from aniportraitgan.artefacts.identities import StoredIdentity, read_identity, write_identity
from aniportraitgan.artefacts.loading import DEMO_CHECKPOINT
from aniportraitgan.body.asset import DEFAULT_ASSET, load_asset
from aniportraitgan.commands.config_args import load_train_config as load_config
from aniportraitgan.data.dataset import read_png, write_png
from aniportraitgan.errors import AssetError, InputError, UserError
from aniportraitgan.facerecon import FaceRecon, FaceReconConfig
from aniportraitgan.metrics.features import FeatureStats, RealStatsCache
from aniportraitgan.metrics.report import load_report, write_report
from aniportraitgan.training import TrainConfig

FLIP_SEED = 12
FLIPS = 24  # per kind
HEADER_SHARE = 0.4  # of the flips land in the first 512 bytes
PROJECT_ERRORS = (AssetError, InputError, UserError)
RESULTS: dict[str, dict[str, int]] = {}


def flipped_copies(good: Path, seed: int, n: int = FLIPS):
    """(copy path, offset) for n one-byte flips of `good`, each in a fresh copy."""
    data = good.read_bytes()
    rng = random.Random(seed)
    for i in range(n):
        hi = min(len(data), 512) if i < n * HEADER_SHARE else len(data)
        off = rng.randrange(hi)
        bad = bytearray(data)
        bad[off] ^= rng.randrange(1, 256)
        copy = good.with_name(f"flip{i}-{good.name}")
        copy.write_bytes(bytes(bad))
        yield copy, off


def run_kind(name: str, good: Path, load: Callable[[Path], object], checksummed: bool, seed: int = FLIP_SEED,
             where: Callable[[Path], Path] | None = None, unchanged: Callable[[object, object], bool] | None = None
             ) -> dict[str, int]:
    """Flip `good` FLIPS times and load each copy; record and check the outcomes. `unchanged`:
    what a flipped copy loads must equal the good file's content (only harmless bytes moved)."""
    original = load(good)  # the good file loads
    counts = {"flips": 0, "errors": 0, "loaded": 0}
    for copy, off in flipped_copies(good, seed):
        counts["flips"] += 1
        try:
            got = load(copy)
        except PROJECT_ERRORS as exc:
            counts["errors"] += 1
            assert str(where(copy) if where else copy) in str(exc), (name, off, str(exc))
        except Exception as exc:  # noqa: BLE001 - what the test is about
            pytest.fail(f"{name}: a flip at byte {off} raised {type(exc).__name__}: {exc}")
        else:
            counts["loaded"] += 1
            assert not checksummed, f"{name}: a flip at byte {off} loaded without an error"
            assert unchanged is None or unchanged(got, original), f"{name}: a flip at byte {off} changed the content"
        finally:
            if copy.is_file():
                copy.unlink()
    RESULTS[name] = counts
    print(f"bit flips: {name}: {counts}")
    return counts


# ---------------------------------------------------------------- checksummed kinds
@pytest.fixture(scope="module")
def small_generator_state():
    g = torch.Generator().manual_seed(0)
    return {"a.weight": torch.randn(64, 32, generator=g), "a.bias": torch.randn(64, generator=g)}


def test_flips_in_exported_generator_files(tmp_path, small_generator_state):
    path = export_generator(tmp_path / "g.safetensors", small_generator_state, {"preset": "tiny"}, step=3, stage=1)
    run_kind("exported generator", path, read_generator_file, checksummed=True)


def test_flips_in_the_bundled_demo(tmp_path):
    copy = tmp_path / "demo.safetensors"
    shutil.copyfile(DEMO_CHECKPOINT, copy)
    run_kind("bundled demo generator", copy, read_generator_file, checksummed=True)


@pytest.mark.parametrize("member", ["weights.safetensors", "state.pt", "meta.json"])
def test_flips_in_checkpoint_folders(tmp_path, small_generator_state, member):
    mgr = CheckpointManager(tmp_path / "run")
    weights = {f"G.{k}": v for k, v in small_generator_state.items()}
    ck = mgr.save(1, 4, weights, {"step": 4, "rng": torch.get_rng_state()}, TrainConfig.preset("tiny").to_dict(), "sig")
    original = (ck / member).read_bytes()

    def load(path: Path):
        (ck / member).write_bytes(path.read_bytes())
        try:
            load_checkpoint(ck, "sig")
        finally:
            (ck / member).write_bytes(original)

    good = tmp_path / member
    good.write_bytes(original)
    run_kind(f"checkpoint {member}", good, load, checksummed=True, where=lambda _: ck / member if member != "meta.json" else ck)


def test_flips_in_R_weights(tmp_path):
    torch.manual_seed(0)
    path = FaceRecon(FaceReconConfig(resolution=16, width=8, hidden=16)).save(tmp_path / "R.safetensors")
    run_kind("R weights", path, FaceRecon.load, checksummed=True)


def test_flips_in_identity_files(tmp_path):
    g = torch.Generator().manual_seed(1)
    ident = StoredIdentity(z_id=torch.randn(1, 40, generator=g), eps=torch.randn(1, 256, generator=g),
                           w_radiance=torch.randn(1, 64, generator=g), w_superres=None, signature="abc",
                           info={"photo": "p.png"})
    path = write_identity(tmp_path / "person.safetensors", ident)
    run_kind("identity file", path, read_identity, checksummed=True)


# ------------------------------------------------------- files people write or edit
@pytest.mark.parametrize("suffix", [".npy", ".npz", ".json"])
def test_flips_in_keyframe_files(tmp_path, suffix):
    path = tmp_path / f"kf{suffix}"
    save_keyframes(preset("smile"), path)
    run_kind(f"keyframes {suffix}", path, load_keyframes, checksummed=False)


def test_flips_in_training_configs(tmp_path):
    """What `train --config FILE` reads (e.g. a run's config.json, edited)."""
    path = tmp_path / "config.json"
    path.write_text(TrainConfig.preset("tiny").to_json())
    run_kind("training config (--config)", path, lambda p: load_config(str(p)), checksummed=False)


def test_flips_in_metrics_reports(tmp_path):
    json_path, _ = write_report({"fid": 12.5, "kid": 0.01}, tmp_path / "r.json", run="r")
    run_kind("metrics report", Path(json_path), load_report, checksummed=False)


def test_flips_in_dataset_images(tmp_path):
    path = tmp_path / "00000000.png"
    write_png(path, (np.random.default_rng(0).random((32, 32, 3)) * 255).astype(np.uint8))
    run_kind("dataset PNG", path, lambda p: read_png(p, 32), checksummed=False)


def test_flips_in_dataset_labels(tmp_path):
    """labels.npz: the SHA-256 of its arrays (and the zip's CRCs); a flip in the zip's own
    bookkeeping (a timestamp) may load, with the arrays unchanged."""
    from aniportraitgan.data.dataset import load_labels, save_labels
    from aniportraitgan.data.synth import make_tiny_dataset

    labels = load_labels(make_tiny_dataset(tmp_path / "d", num=4, resolution=32) / "labels.npz")
    path = tmp_path / "labels.npz"
    save_labels(path, labels)
    same = lambda a, b: a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)  # noqa: E731
    run_kind("dataset labels.npz", path, load_labels, checksummed=False, unchanged=same)


def test_flips_in_the_body_model_asset(tmp_path):
    copy = tmp_path / "portrait_body.safetensors"
    shutil.copyfile(DEFAULT_ASSET, copy)
    run_kind("body-model asset", copy, load_asset, checksummed=False)


def test_flips_in_the_metrics_cache_warn_and_recompute(tmp_path):
    cache = RealStatsCache(tmp_path, fingerprint="f")
    feats = np.random.default_rng(0).random((8, 4))
    stats = FeatureStats(mu=feats.mean(0), sigma=np.cov(feats, rowvar=False), features=feats.astype(np.float32), meta={})
    good = cache.save(stats, "stand-in", "train", 8, 32)
    data, rng, recomputed = good.read_bytes(), random.Random(FLIP_SEED), 0
    for _ in range(FLIPS):
        bad = bytearray(data)
        bad[rng.randrange(len(bad))] ^= rng.randrange(1, 256)
        good.write_bytes(bytes(bad))
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            got = cache.load("stand-in", "train", 8, 32, feature_dim=4)
        recomputed += got is None
        assert got is not None or any("corrupt or stale" in str(w.message) for w in caught)
    RESULTS["metrics cache"] = {"flips": FLIPS, "recomputed": recomputed, "loaded": FLIPS - recomputed}
    print(f"bit flips: metrics cache: {RESULTS['metrics cache']}")
    json.dumps(RESULTS)
