"""Atomic file writes: a temporary file beside the target, renamed into place when complete.

`os.replace` is atomic on one file system, so readers (and a resumed job after a crash) see
either the old file or the complete new one, never half of one. Every writer of checkpoints,
labels, reports, images and videos goes through here.

A full disk, a full quota or the file-size limit (`ulimit -f`: Python ignores SIGXFSZ, so the
write fails with EFBIG) is a `DiskFullError`: an `AssetError` (the command line prints it
without a traceback) that is still an `OSError` with its errno. The temporary file is removed
first, so nothing partial is left to fill the disk further.
"""

from __future__ import annotations

import errno
import os
import re
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from aniportraitgan.errors import AssetError

# errno -> what the user is told.
DISK_FULL_ERRNOS = {
    errno.ENOSPC: "no space left on the device",
    errno.EFBIG: "the file size limit was reached (ulimit -f)",
    errno.EDQUOT: "the disk quota is exceeded",
}
# What a short write reports without an errno (numpy's tofile: "4096 requested and 2016 written").
_SHORT_WRITE = re.compile(r"requested and \d+ written")


class DiskFullError(AssetError, OSError):
    """A write failed for lack of space (ENOSPC, EDQUOT) or the file size limit (EFBIG)."""

    def __init__(self, message: str, code: int = errno.ENOSPC, filename: str | None = None, reason: str = ""):
        super().__init__(message)
        self.message, self.errno, self.strerror, self.filename = message, code, os.strerror(code), filename
        self.reason = reason

    def __str__(self) -> str:  # the message alone (OSError's would add "[Errno N]" and the name)
        return self.message


def is_disk_full(exc: BaseException) -> bool:
    if not isinstance(exc, OSError):
        return False
    return exc.errno in DISK_FULL_ERRNOS or (exc.errno is None and bool(_SHORT_WRITE.search(str(exc))))


def disk_full_error(exc: OSError, path: str | os.PathLike) -> DiskFullError:
    """The error to raise for a disk-full `exc` met while writing `path` (a `DiskFullError`
    about a file inside `path` is said again about `path`)."""
    if isinstance(exc, DiskFullError):
        code, reason = exc.errno, exc.reason
    elif exc.errno in DISK_FULL_ERRNOS:
        code, reason = exc.errno, f"{DISK_FULL_ERRNOS[exc.errno]} ({errno.errorcode[exc.errno]})"
    else:
        code, reason = errno.ENOSPC, "a short write: the disk is full or the file size limit was reached"
    return DiskFullError(f"cannot write {path}: {reason}; nothing "
                         f"partial was kept. Free some space in {Path(path).parent} (or raise the limit) and run "
                         f"again", code, str(path), reason)


@contextmanager
def reporting_disk_full(path: str | os.PathLike) -> Iterator[None]:
    """Turn a disk-full `OSError` raised inside into a `DiskFullError` naming `path`."""
    try:
        yield
    except OSError as exc:
        if is_disk_full(exc):
            raise disk_full_error(exc, path) from None
        raise


def temp_path_beside(path: str | os.PathLike) -> Path:
    """A fresh, empty temporary file in the target's folder, keeping the target's suffix
    (some writers pick the format from it) and the usual umask-based permissions."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with reporting_disk_full(path):
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=f".partial{path.suffix}")
    os.close(fd)
    umask = os.umask(0)  # mkstemp makes the file private (0600)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    return Path(tmp)


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path to write; on success it replaces `path`, on any error (Ctrl-C
    included) it is removed and `path` is left as it was."""
    tmp = temp_path_beside(path)
    try:
        with reporting_disk_full(path):
            yield tmp
            os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_synced(path: str | os.PathLike, data: bytes) -> None:
    """Write `data` to `path` (not atomically) and flush it to the disk."""
    with reporting_disk_full(path), open(path, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def fsync_dir(path: str | os.PathLike) -> None:
    """Flush a folder's entries (a rename inside it) to the disk, where the system allows it."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: str | os.PathLike, write: Callable, mode: str = "wb") -> None:
    """Write through `write(fileobj)`, flushed to disk before the rename."""
    with atomic_path(path) as tmp:
        with open(tmp, mode) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    atomic_write(path, lambda f: f.write(data))
