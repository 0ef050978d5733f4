"""Fault injection (issue 12), on the command line as a user meets it: `kill -9` at seeded random
points of a tiny training run (resumed each time to the same final weights), a full disk
(`ulimit -f`) for each command that writes, and SIGTERM during every long command. The bit flips
are in test_faults_flips.py. Figures and the command that reproduces them: docs/reliability.md.

Every case asserts the same three things: a clear one-line error (no traceback), the exit status
the case calls for, and no partial file left (no `.partial`, no `.tmp-*`).
"""

from __future__ import annotations

import os
import random
import resource
import signal
import subprocess
import sys
import time
import traceback
from pathlib import Path

import pytest
import torch

from aniportraitgan.artefacts import CheckpointManager, load_checkpoint, read_generator_file
from aniportraitgan.data.synth import make_tiny_dataset
from aniportraitgan.training.config import TrainConfig
from aniportraitgan.training.loop import RunOptions, train

KILL_SEED = 2024
KILLS = 4  # kill -9 points per run
TRAIN_STEPS = 12
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE", "PYTHONUNBUFFERED": "1"}
PARTIAL_MARKS = (".partial", ".tmp-", ".old-")


def tiny_train_config() -> TrainConfig:
    """The tiny preset at 16 x 16, batch 2, a checkpoint every 2 steps (about 0.2 s a step)."""
    cfg = TrainConfig.preset("tiny")
    cfg.stage1.portrait_resolution = cfg.stage1.face_resolution = 16
    cfg.stage1.batch_size = 2
    cfg.generator_overrides = {"samples_per_ray": 8, "sr_map_resolution": 16, "sr_map_depth_samples": 12, "aux_points": 256}
    cfg.checkpoint_every = 2
    cfg.image_every = 0
    cfg.log_every = 1
    return cfg


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return make_tiny_dataset(tmp_path_factory.mktemp("faults") / "data", num=8, resolution=32)


@pytest.fixture(scope="module")
def config_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("faults_cfg") / "tiny16.json"
    path.write_text(tiny_train_config().to_json())
    return path


def _limit_file_size(kib: int | None):
    if kib is None:
        return None
    return lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (kib * 1024, resource.RLIM_INFINITY))


def cli(*args, file_kib: int | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    """`aniportraitgan ARGS` in a fresh process, optionally under `ulimit -f file_kib`."""
    return subprocess.run([sys.executable, "-m", "aniportraitgan", *map(str, args)], env=ENV, text=True,
                          capture_output=True, timeout=timeout, preexec_fn=_limit_file_size(file_kib))


class Child:
    """`aniportraitgan ARGS` in a forked copy of this process: torch is imported already, so
    it starts in milliseconds instead of seconds. Its output goes to `log`. The child runs
    on one thread (OpenMP pools do not survive a fork) and leaves with `os._exit`, as a
    fresh interpreter would: exit status of `main`, 1 with a traceback for an uncaught error."""

    def __init__(self, *args, log: Path, file_kib: int | None = None):
        self.log = Path(log)
        self.pid = os.fork()
        if self.pid == 0:  # pragma: no cover - the child
            self._child([str(a) for a in args], file_kib)
        self.returncode: int | None = None

    def _child(self, args: list[str], file_kib: int | None) -> None:
        code = 1
        try:
            fd = os.open(self.log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            os.dup2(fd, 1)
            os.dup2(fd, 2)
            sys.stdout = open(1, "w", buffering=1, closefd=False)
            sys.stderr = open(2, "w", buffering=1, closefd=False)
            signal.signal(signal.SIGINT, signal.default_int_handler)
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            torch.set_num_threads(1)
            if file_kib is not None:
                _limit_file_size(file_kib)()
            from aniportraitgan.cli import main

            code = main(args)
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        except BaseException:  # noqa: BLE001 - what an interpreter prints for an uncaught error
            traceback.print_exc()
            code = 1
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)

    @property
    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def wait_for(self, marker: str, timeout: float = 60) -> bool:
        """Whether `marker` appears in the output before the child ends or `timeout` passes."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if marker in self.output:
                return True
            if self.poll() is not None:
                return marker in self.output
            time.sleep(0.01)
        return False

    def poll(self) -> int | None:
        if self.returncode is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def send(self, sig: int) -> None:
        if self.poll() is None:
            os.kill(self.pid, sig)

    def wait(self, timeout: float = 60) -> int:
        deadline = time.monotonic() + timeout
        while self.poll() is None:
            if time.monotonic() > deadline:
                os.kill(self.pid, signal.SIGKILL)
                os.waitpid(self.pid, 0)
                raise AssertionError(f"child {self.pid} still running after {timeout} s:\n{self.output[-3000:]}")
            time.sleep(0.01)
        return self.returncode


def run_child(*args, log: Path, file_kib: int | None = None, timeout: float = 120) -> Child:
    child = Child(*args, log=log, file_kib=file_kib)
    child.wait(timeout)
    return child


def partial_files(root: Path) -> list[str]:
    return sorted(str(p) for p in root.rglob("*") if any(m in p.name for m in PARTIAL_MARKS))


def assert_clean_failure(returncode: int, output: str, pattern: str) -> None:
    assert returncode == 2, (returncode, output[-3000:])
    assert "Traceback" not in output, output[-3000:]
    assert pattern in output, output[-3000:]


# ------------------------------------------------------------------------- kill -9
def _final_weights(run: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(CheckpointManager(run).latest()).weights


def test_kill9_at_seeded_random_points_resumes_to_the_same_weights(data, config_file, tmp_path):
    ref = tmp_path / "ref"
    train(TrainConfig.from_json(config_file.read_text()), RunOptions(data=data, out=ref, steps=TRAIN_STEPS, progress=False))
    rng = random.Random(KILL_SEED)
    run, kills = tmp_path / "killed", []
    args = ("train", "--config", config_file, "--data", data, "--out", run, "--steps", TRAIN_STEPS, "--no-progress")
    for i in range(KILLS):
        child = Child(*args, *(["--resume"] if i else []), log=tmp_path / f"kill{i}.log")
        if not child.wait_for("stage 1: steps "):  # a kill during the last checkpoint left it whole
            assert "nothing to do" in child.output and child.wait() == 0, child.output[-3000:]
            break
        first = int(child.output.split("stage 1: steps ")[1].split("..")[0]) + 1
        step, delay = rng.randint(first, TRAIN_STEPS - 1), rng.uniform(0.0, 0.3)
        child.wait_for(f"stage 1 step {step} ")
        time.sleep(delay)  # anywhere in the next step, the checkpoint write or the export
        child.send(signal.SIGKILL)
        kills.append((step, round(delay, 3), child.wait()))
    last = run_child(*args, "--resume", log=tmp_path / "last.log")
    assert last.returncode == 0, last.output[-3000:]
    assert sum(rc == -signal.SIGKILL for *_, rc in kills) >= KILLS - 1, kills  # really killed, mid-run
    print("kill -9 points (step, delay s, status):", kills)
    want, got = _final_weights(ref), _final_weights(run)
    assert want.keys() == got.keys()
    for k in want:
        assert torch.equal(want[k], got[k]), (k, kills)
    # (The bytes may differ: safetensors orders metadata keys at random; the checksum is canonical.)
    (w_ref, m_ref), (w_run, m_run) = (read_generator_file(r / "generator.safetensors") for r in (ref, run))
    assert m_ref == m_run and all(torch.equal(w_ref[k], w_run[k]) for k in w_ref), kills
    assert not partial_files(run)


# ------------------------------------------------------------------- full disk (ulimit -f)
def test_full_disk_in_generate(tmp_path):
    out = tmp_path / "gen"
    c = run_child("generate", "--ckpt", "demo", "--seeds", "0", "--out", out, "--resolution", 64, file_kib=8,
                  log=tmp_path / "log")
    assert_clean_failure(c.returncode, c.output, "cannot write")
    assert not partial_files(tmp_path)


def test_full_disk_in_train(data, config_file, tmp_path):
    run = tmp_path / "run"
    c = run_child("train", "--config", config_file, "--data", data, "--out", run, "--steps", 2, "--no-progress",
                  file_kib=200, log=tmp_path / "log")
    assert_clean_failure(c.returncode, c.output, "s1-00000002: the file size limit was reached")
    assert not partial_files(tmp_path) and CheckpointManager(run).list() == []


def test_full_disk_in_data_synth(tmp_path):
    """A fresh process: the renderer's GL context does not survive a fork."""
    out = tmp_path / "synth"
    res = cli("data", "synth", "--out", out, "--num", 8, "--resolution", 64, "--workers", 1, "--no-progress",
              file_kib=12)
    assert_clean_failure(res.returncode, res.stderr, "cannot write")
    assert not partial_files(tmp_path)
