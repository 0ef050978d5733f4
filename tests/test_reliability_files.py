"""Issue 12, files: checksummed safetensors (exported generators, the demo), full disks (atomic
writes and checkpoint folders), the run-folder lock and the clean-up of temporary folders."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import resource
import struct
import subprocess
import sys
import warnings
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from aniportraitgan.artefacts import CheckpointManager, export_generator, read_generator_file
from aniportraitgan.artefacts.checksummed import (
    CHECKSUM_KEY,
    MARKER_KEY,
    UnverifiedFileWarning,
    read_checksummed,
    write_checksummed,
)
from aniportraitgan.artefacts.loading import DEMO_CHECKPOINT
from aniportraitgan.artefacts.run_lock import HOST, RunLock, RunLocked, owner_is_dead, owner_tag, pid_alive
from aniportraitgan.atomic import DiskFullError, atomic_write_bytes, reporting_disk_full
from aniportraitgan.errors import AssetError, UserError

# The bundled demo model (issue 13, 64 px, 2026-12-04: phi 128 x 3 with a 96^3 face template,
# smoothed by a Gaussian of 1 voxel, then 2572 steps with its total-variation prior):
# SHA-256 of its tensor data and of its tensor index (names, dtypes, shapes, offsets).
# Re-exporting it must not move one bit.
DEMO_DATA_SHA256 = "d287da2d257f91efa8b415b1ddb775f49c71083997759786f3b3328290d28786"
DEMO_INDEX_SHA256 = "b7d8b0af4557d741be01a30ed4972655eb13966eb1413c357b34a06350d263a1"


def _header(path: Path) -> tuple[dict, int]:
    data = path.read_bytes()
    n = struct.unpack("<Q", data[:8])[0]
    return json.loads(data[8:8 + n]), 8 + n


def flip(path: Path, offset: int, mask: int = 0x10) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= mask
    path.write_bytes(bytes(data))


@contextmanager
def file_size_limit(nbytes: int):
    """`ulimit -f` for this process (Python ignores SIGXFSZ: writes past it fail with EFBIG)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (nbytes, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))


def _tensors() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {"a.w": torch.randn(64, 32, generator=g), "a.b": torch.arange(7), "h": torch.randn(3, generator=g).half()}


# ------------------------------------------------------------------ checksums (defect 3)
def test_checksummed_round_trip_and_every_flip_is_caught(tmp_path):
    path = write_checksummed(tmp_path / "x.safetensors", _tensors(), {"note": "hi"})
    got = read_checksummed(path, "thing")
    assert got.checksummed and got.metadata == {"note": "hi"}
    assert all(torch.equal(got.tensors[k], v) for k, v in _tensors().items())
    header, start = _header(path)
    assert set(header["__metadata__"]) == {"note", CHECKSUM_KEY, MARKER_KEY}
    good = path.read_bytes()
    # A flip in the tensor data, the header (names, shapes, offsets, metadata, both checksum
    # keys' names) and the header length: each is an AssetError naming the file.
    text = good[8:start].decode()
    offsets = [start, start + 1000, len(good) - 1, 3, 8 + text.index('"note"') + 2,
               8 + text.index(f'"{CHECKSUM_KEY}"') + 2, 8 + text.index(f'"{MARKER_KEY}"') + 2,
               8 + text.index('"shape"') + 10, 8 + text.index('"data_offsets"') + 16, 8 + text.index("hi")]
    for off in offsets:
        path.write_bytes(good)
        flip(path, off)
        with pytest.raises(AssetError, match=f"thing {path}"):
            read_checksummed(path, "thing")


def test_file_without_checksum_loads_with_a_warning(tmp_path):
    old = tmp_path / "old.safetensors"
    save_file(_tensors(), str(old), metadata={"note": "x"})
    got = read_checksummed(old)
    assert not got.checksummed and got.metadata == {"note": "x"}


def test_flipped_generator_weights_are_an_error_naming_the_file(tmp_path):
    """Before: a flipped byte inside the tensor data loaded and rendered without a word."""
    from aniportraitgan.body import PortraitBodyModel
    from aniportraitgan.generator import Generator, GeneratorConfig

    torch.manual_seed(0)
    G = Generator(GeneratorConfig.tiny(), PortraitBodyModel.load(device="cpu"))
    path = export_generator(tmp_path / "g.safetensors", G.state_dict(), G.config.to_dict())
    _, start = _header(path)
    flip(path, start + (path.stat().st_size - start) // 2, 0x01)  # lowest mantissa bit: finite
    with pytest.raises(AssetError, match=f"generator file {path} is corrupted.*SHA-256"):
        read_generator_file(path)


def test_old_generator_file_warns_that_it_is_unverified(tmp_path):
    old = tmp_path / "old.safetensors"
    save_file({"w": torch.zeros(2)}, str(old), metadata={"kind": "aniportraitgan-generator", "generator_config": "{}"})
    with pytest.warns(UnverifiedFileWarning, match=f"{old} has no checksum"):
        read_generator_file(old)


def test_bundled_demo_is_checksummed_with_its_weights_unchanged(tmp_path):
    header, start = _header(DEMO_CHECKPOINT)
    data = DEMO_CHECKPOINT.read_bytes()
    index = {k: v for k, v in header.items() if k != "__metadata__"}
    assert hashlib.sha256(data[start:]).hexdigest() == DEMO_DATA_SHA256
    assert hashlib.sha256(json.dumps(index, sort_keys=True).encode()).hexdigest() == DEMO_INDEX_SHA256
    with warnings.catch_warnings():
        warnings.simplefilter("error", UnverifiedFileWarning)
        read_generator_file(DEMO_CHECKPOINT)
    copy = tmp_path / "demo.safetensors"
    copy.write_bytes(data)
    flip(copy, start + 12345, 0x01)
    with pytest.raises(AssetError, match="corrupted"):
        read_generator_file(copy)


# ------------------------------------------------------------------ full disk (defect 7)
def test_atomic_write_on_a_full_disk_is_clear_and_leaves_nothing(tmp_path):
    target = tmp_path / "out.bin"
    target.write_bytes(b"old")
    with file_size_limit(64 * 1024), pytest.raises(DiskFullError, match=f"cannot write {target}.*EFBIG") as info:
        atomic_write_bytes(target, b"x" * (1 << 20))
    assert isinstance(info.value, OSError) and isinstance(info.value, AssetError)
    assert info.value.errno == errno.EFBIG
    assert target.read_bytes() == b"old" and sorted(p.name for p in tmp_path.iterdir()) == ["out.bin"]


def test_reporting_disk_full_passes_other_errors_through(tmp_path):
    with pytest.raises(DiskFullError, match="no space left"):
        with reporting_disk_full(tmp_path / "f"):
            raise OSError(errno.ENOSPC, "No space left on device")
    with pytest.raises(PermissionError):
        with reporting_disk_full(tmp_path / "f"):
            raise PermissionError(errno.EACCES, "denied")


def _save(mgr: CheckpointManager, step: int, n: int = 64):
    return mgr.save(1, step, {"G.w": torch.zeros(n, n)}, {"step": step}, {"name": "t"}, "sig")


def test_checkpoint_on_a_full_disk_leaves_no_partial_folder(tmp_path):
    """Before: a raw OSError traceback, and the partial .tmp-* folder stayed on the full disk."""
    mgr = CheckpointManager(tmp_path / "run")
    first = _save(mgr, 1)
    with file_size_limit(32 * 1024), pytest.raises(DiskFullError, match=r"cannot write \S*s1-00000002: the file size limit"):
        _save(mgr, 2, n=256)
    assert [p.name for p in mgr.dir.iterdir()] == [first.name]
    assert mgr.latest() == first


# ------------------------------------------------------------------ run lock (defect 2)
def test_second_holder_fails_at_once_naming_the_pid(tmp_path):
    run = tmp_path / "run"
    child = subprocess.Popen([sys.executable, "-c", "import sys, time\n"
                              "from aniportraitgan.artefacts.run_lock import RunLock\n"
                              f"RunLock({str(run)!r}, 'train').acquire(); print('held', flush=True); time.sleep(60)"],
                             stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "held"
        with pytest.raises(RunLocked, match=f"in use by pid {child.pid} on this host.*train"):
            RunLock(run).acquire()
    finally:
        child.kill()
        child.wait()
    # Its holder is dead now: the lock is stale and is taken over.
    with RunLock(run) as lock:
        assert lock.holder()["pid"] == os.getpid()
    assert not (run / ".lock").exists()


def test_lock_of_another_host_is_never_taken_over(tmp_path):
    (tmp_path / ".lock").write_text(json.dumps({"pid": 1, "host": "elsewhere", "started": "x"}))
    with pytest.raises(RunLocked, match=f"host elsewhere.*delete {tmp_path / '.lock'}"):
        RunLock(tmp_path).acquire()


def test_lock_is_reentrant_in_one_process(tmp_path):
    with RunLock(tmp_path):
        with RunLock(tmp_path):
            pass
        assert (tmp_path / ".lock").exists()  # the inner block did not release the outer's lock
    assert not (tmp_path / ".lock").exists()


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    assert not pid_alive(p.pid)
    return p.pid


def test_clean_up_removes_only_what_dead_writers_left(tmp_path):
    """Before: any .tmp-* not of this pid was deleted, the folder a live run was writing included."""
    mgr = CheckpointManager(tmp_path / "run")
    mgr.dir.mkdir(parents=True)
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        dead = _dead_pid()
        names = {"live": f".tmp-s1-00000004-{owner_tag(live.pid)}", "dead": f".tmp-s1-00000004-{owner_tag(dead)}",
                 "old_style_dead": f".tmp-s1-00000006-{dead}", "other_host": f".tmp-s1-00000008-elsewhere@{dead}"}
        for name in names.values():
            (mgr.dir / name).mkdir()
        assert owner_is_dead(names["dead"]) and not owner_is_dead(names["live"])
        _save(mgr, 10)
        left = {p.name for p in mgr.dir.iterdir()}
        assert left == {"s1-00000010", names["live"], names["other_host"]}
    finally:
        live.kill()
        live.wait()
    assert HOST in owner_tag()


def test_interrupted_resave_puts_the_old_copy_back(tmp_path):
    """Killed between the two renames of a re-save: the checkpoint folder is missing, its old
    copy is `.old-*`; the next clean-up restores it."""
    mgr = CheckpointManager(tmp_path / "run")
    ck = _save(mgr, 4)
    os.replace(ck, mgr.dir / f".old-{ck.name}-{owner_tag(_dead_pid())}")
    mgr.remove_leftovers()
    assert mgr.latest() == ck and (ck / "meta.json").is_file()


def test_lock_in_a_read_only_folder_is_a_clear_error(tmp_path, monkeypatch):
    def read_only(path, flags, *a):  # what a read-only mount answers (root ignores chmod)
        raise PermissionError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(os, "open", read_only)
    with pytest.raises(UserError, match="cannot lock run folder .*Read-only file system"):
        RunLock(tmp_path).acquire()


def test_lock_on_a_full_disk_leaves_no_empty_lock(tmp_path, monkeypatch):
    real_fdopen = os.fdopen

    def full(fd, *a, **k):
        fh = real_fdopen(fd, *a, **k)
        fh.write = lambda data: (_ for _ in ()).throw(OSError(errno.ENOSPC, "No space left on device"))
        return fh

    monkeypatch.setattr(os, "fdopen", full)
    with pytest.raises(DiskFullError, match=r"\.lock: no space left"):
        RunLock(tmp_path).acquire()
    assert not (tmp_path / ".lock").exists()
