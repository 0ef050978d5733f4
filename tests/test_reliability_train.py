"""Issue 12, training: the run-folder lock (defect 2), resume of the same run only (defect 5), the
graceful stop on signals (defect 6), the export a kill left stale, and checksummed R weights."""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from aniportraitgan.artefacts import CheckpointManager, RunLocked, load_checkpoint, read_generator_file
from aniportraitgan.data.dataset import load_labels, save_labels
from aniportraitgan.data.synth import make_tiny_dataset
from aniportraitgan.errors import AssetError
from aniportraitgan.facerecon import FaceRecon, FaceReconConfig
from aniportraitgan.signals import Interrupted
from aniportraitgan.training import RunOptions, TrainConfig, train


def small_config() -> TrainConfig:
    cfg = TrainConfig.preset("tiny")
    cfg.stage1.portrait_resolution = cfg.stage1.face_resolution = 16
    cfg.stage1.batch_size = 2
    cfg.generator_overrides = {"samples_per_ray": 8, "sr_map_resolution": 16, "sr_map_depth_samples": 12, "aux_points": 256}
    cfg.checkpoint_every = 2
    cfg.image_every = 0
    cfg.num_workers = 0
    return cfg


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return make_tiny_dataset(tmp_path_factory.mktemp("rel_train") / "data", num=8, resolution=32)


def opts(data: Path, out: Path, **kw) -> RunOptions:
    return RunOptions(data=data, out=out, progress=False, **kw)


def _steps(run: Path) -> list[int]:
    return [s for _, s, _ in CheckpointManager(run).list()]


# --------------------------------------------------------------------------- lock (2)
def test_a_second_run_on_one_folder_fails_at_once_naming_the_holder(data, tmp_path):
    run = tmp_path / "run"
    cfg_file = tmp_path / "cfg.json"
    cfg_file.write_text(small_config().to_json())
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"}
    holder = subprocess.Popen([sys.executable, "-m", "aniportraitgan", "train", "--config", str(cfg_file), "--data",
                               str(data), "--out", str(run), "--steps", "500", "--no-progress"], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not (run / ".lock").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        t0 = time.monotonic()
        with pytest.raises(RunLocked, match=f"in use by pid {holder.pid} on this host"):
            train(small_config(), opts(data, run, steps=2, resume=True))
        assert time.monotonic() - t0 < 10  # at once, not after building the networks and data
        assert holder.poll() is None  # the holder was not disturbed
    finally:
        holder.kill()
        holder.wait()
    # Its holder died without a word (kill -9): the stale lock is taken over.
    train(small_config(), opts(data, run, steps=2, resume=True))
    assert _steps(run)[-1] == 2 and not (run / ".lock").exists()


# ------------------------------------------------------------------------- resume (5)
def test_resume_with_another_seed_is_refused_with_the_field(data, tmp_path):
    run = tmp_path / "run"
    train(small_config(), opts(data, run, steps=2))
    before = (run / "config.json").read_text()
    other = small_config()
    other.seed = 7
    with pytest.raises(AssetError, match="another configuration.*seed: 0 != 7"):
        train(other, opts(data, run, steps=4, resume=True))
    assert (run / "config.json").read_text() == before  # not rewritten
    bookkeeping = small_config()
    bookkeeping.log_every, bookkeeping.checkpoint_every = 3, 1  # changes nothing that is learned
    train(bookkeeping, opts(data, run, steps=3, resume=True))
    assert _steps(run)[-1] == 3


def test_resume_on_another_dataset_is_refused(data, tmp_path):
    run = tmp_path / "run"
    train(small_config(), opts(data, run, steps=2))
    other = tmp_path / "other"
    shutil.copytree(data, other)
    labels = load_labels(other / "labels.npz")
    labels["z_exp"] = np.clip(labels["z_exp"] + 0.1, 0, 1).astype(labels["z_exp"].dtype)
    save_labels(other / "labels.npz", labels)
    with pytest.raises(AssetError, match=f"trained with --data {data.resolve()}.*not {other.resolve()}"):
        train(small_config(), opts(other, run, steps=4, resume=True))
    moved = tmp_path / "moved"
    shutil.copytree(data, moved)  # the same data in another place resumes
    train(small_config(), opts(moved, run, steps=3, resume=True))


def test_resume_tolerates_float_rounding_but_not_one_changed_row(data, tmp_path):
    """Another machine renders the same recipe with its float32 labels rounded differently: the
    bytes of labels.npz differ, the arrays agree to ~1e-7, and exact resume goes on. One row
    changed is another dataset."""
    run = tmp_path / "run"
    train(small_config(), opts(data, run, steps=2))
    rounded = tmp_path / "rounded"
    shutil.copytree(data, rounded)
    labels = load_labels(rounded / "labels.npz")
    labels["landmarks"] = (labels["landmarks"] * (1 + 3e-7)).astype(labels["landmarks"].dtype)
    save_labels(rounded / "labels.npz", labels)
    assert (rounded / "labels.npz").read_bytes() != (data / "labels.npz").read_bytes()
    train(small_config(), opts(rounded, run, steps=3, resume=True))
    assert _steps(run)[-1] == 3
    one_row = tmp_path / "one_row"
    shutil.copytree(rounded, one_row)
    labels["cam_yaw"][1] += 0.05
    save_labels(one_row / "labels.npz", labels)
    with pytest.raises(AssetError, match="trained with --data"):
        train(small_config(), opts(one_row, run, steps=4, resume=True))


def test_resume_with_another_R_is_refused(data, tmp_path):
    run = tmp_path / "run"
    torch.manual_seed(0)
    r1 = FaceRecon(FaceReconConfig(resolution=16, width=8, hidden=16)).save(tmp_path / "R1.safetensors")
    r2 = FaceRecon(FaceReconConfig(resolution=16, width=8, hidden=16)).save(tmp_path / "R2.safetensors")
    train(small_config(), opts(data, run, steps=2, facerecon=r1))
    with pytest.raises(AssetError, match="--facerecon"):
        train(small_config(), opts(data, run, steps=4, resume=True, facerecon=r2))


def test_resume_without_a_checkpoint_says_so(data, tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="aniportraitgan.train"):
        train(small_config(), opts(data, tmp_path / "fresh", steps=1, resume=True))
    assert "holds no checkpoint: stage 1 starts from step 0" in caplog.text


def test_resume_keeps_the_parameter_free_settings_its_checkpoint_was_trained_with(data, tmp_path, caplog):
    """A run saved before exp_offsets_after_dp existed (its stored generator config lacks it)
    resumes with the legacy value, not today's default: a default change never alters a run."""
    import json

    from aniportraitgan.artefacts.checksummed import seal_json

    run = tmp_path / "run"
    train(small_config(), opts(data, run, steps=2))
    meta_file = CheckpointManager(run).latest() / "meta.json"
    meta = json.loads(meta_file.read_text())
    assert meta["generator_config"].pop("exp_offsets_after_dp") is True
    meta_file.write_text(json.dumps(seal_json(meta)))
    with caplog.at_level(logging.WARNING, logger="aniportraitgan.train"):
        train(small_config(), opts(data, run, steps=3, resume=True))
    assert "kept the generator settings it was trained with" in caplog.text
    assert "'exp_offsets_after_dp': (True, False)" in caplog.text
    stored = json.loads(read_generator_file(run / "generator.safetensors")[1]["generator_config"])
    assert stored["exp_offsets_after_dp"] is False and _steps(run)[-1] == 3


# ----------------------------------------------------------------- signals (6)
def _signal_at(step: int, *signals: int):
    def hook(stage, done):
        if done == step:
            for s in signals:
                os.kill(os.getpid(), s)
                time.sleep(0.05)
    return hook


@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_first_signal_finishes_the_step_and_checkpoints_it(data, tmp_path, sig, code):
    run = tmp_path / "run"
    summary = train(small_config(), opts(data, run, steps=8, on_step=_signal_at(3, sig)))
    assert summary["exit_code"] == code and summary["stage1"]["steps"] == 3
    assert _steps(run) == [3]  # off the every-2 cadence: written because of the signal
    assert read_generator_file(run / "generator.safetensors")[1]["step"] == "3"
    assert not (run / ".lock").exists() and signal.getsignal(sig) is not None
    # ... and resuming from it ends where an uninterrupted run ends.
    train(small_config(), opts(data, run, steps=4, resume=True))
    straight = tmp_path / "straight"
    train(small_config(), opts(data, straight, steps=4))
    a, b = (load_checkpoint(CheckpointManager(r).latest()).weights for r in (run, straight))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_second_signal_stops_at_once(data, tmp_path):
    run = tmp_path / "run"
    with pytest.raises(Interrupted) as info:
        train(small_config(), opts(data, run, steps=8, on_step=_signal_at(3, signal.SIGTERM, signal.SIGTERM)))
    assert info.value.exit_code == 143
    assert _steps(run) == [2] and not (run / ".lock").exists()
    assert not list((run / "checkpoints").glob(".tmp-*"))


# ------------------------------------------------------------ stale export after a kill
def test_resume_with_nothing_to_do_exports_a_stale_generator(data, tmp_path):
    run = tmp_path / "run"
    train(small_config(), opts(data, run, steps=2))
    (run / "generator.safetensors").unlink()  # kill -9 between the last checkpoint and its export
    train(small_config(), opts(data, run, steps=2, resume=True))
    weights, meta = read_generator_file(run / "generator.safetensors")
    ema = load_checkpoint(CheckpointManager(run).latest()).weights
    assert meta["step"] == "2" and all(torch.equal(v, ema["G_ema." + k]) for k, v in weights.items())


# --------------------------------------------------------------------- R weights (3)
def test_R_weights_are_checksummed(tmp_path):
    path = FaceRecon(FaceReconConfig(resolution=16, width=8, hidden=16)).save(tmp_path / "R.safetensors")
    data = bytearray(path.read_bytes())
    data[-10] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(AssetError, match=f"face reconstruction weights {path} is corrupted"):
        FaceRecon.load(path)


# ---------------------------------------------------------------- every rank agrees (6)
def _rank_worker(rank: int, world: int, port: int, data: str, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    from aniportraitgan.training import Trainer
    from aniportraitgan.training import distributed

    def signal_rank_1(stage, done):  # only rank 1 is signalled, at step 3
        if rank == 1 and done == 3:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.05)

    info = distributed.init_distributed("cpu")
    try:
        trainer = Trainer(small_config(), RunOptions(data=Path(data), out=Path(out), steps=50, progress=False,
                                                     on_step=signal_rank_1), info)
        summary = trainer.run()
        Path(out).with_name(f"rank{rank}.txt").write_text(f"{summary['exit_code']} {summary['stage1']['steps']}")
    finally:
        distributed.shutdown_distributed()


def test_under_two_ranks_a_signal_on_one_stops_both_at_the_same_step(data, tmp_path):
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tmp_path / "run"
    mp.start_processes(_rank_worker, args=(2, port, str(data), str(out)), nprocs=2, join=True, start_method="spawn")
    assert [(tmp_path / f"rank{r}.txt").read_text() for r in (0, 1)] == ["143 3", "143 3"]
    ck = load_checkpoint(CheckpointManager(out).latest())
    assert ck.step == 3 and ck.state["world_size"] == 2
