"""Atomic file writes: a temporary file beside the target, renamed into place when complete.

`os.replace` is atomic on one file system, so readers (and a resumed job after a crash) see
either the old file or the complete new one, never half of one. Every writer of checkpoints,
labels, reports, images and videos goes through here.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path


def temp_path_beside(path: str | os.PathLike) -> Path:
    """A fresh, empty temporary file in the target's folder, keeping the target's suffix
    (some writers pick the format from it) and the usual umask-based permissions."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
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
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write(path: str | os.PathLike, write: Callable, mode: str = "wb") -> None:
    """Write through `write(fileobj)`, flushed to disk before the rename."""
    with atomic_path(path) as tmp:
        with open(tmp, mode) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    atomic_write(path, lambda f: f.write(data))
