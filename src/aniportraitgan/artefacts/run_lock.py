"""The lock of a run folder: one writer at a time, and the owner of every temporary folder.

``RUN/.lock`` holds ``{"pid", "host", "started", "command"}`` of the process that writes the run.
It is taken with ``O_CREAT | O_EXCL`` (atomic on local and NFS file systems), so of two runs
started on one ``--out`` exactly one gets it; the other fails at once with a ``RunLocked``
error naming the holder. A lock left by a process that died (``kill -9``, a crash, a reboot)
on this host is stale: the next run takes it over. A lock written on another host is never
taken over (its process cannot be checked from here); the message says how to remove it.

Temporary names carry the writer's host and pid (``owner_tag``) so that a clean-up deletes
only what a dead process left, never the folder another live run is writing.
"""

from __future__ import annotations

import json
import os
import re
import socket
import sys
import time
from pathlib import Path

from aniportraitgan.atomic import DiskFullError, reporting_disk_full
from aniportraitgan.errors import UserError

LOCK_FILE = ".lock"
HOST = re.sub(r"[^A-Za-z0-9.]", "_", socket.gethostname()) or "localhost"


class RunLocked(UserError):
    """Another live process holds the run folder."""

    def __init__(self, message: str, holder: dict):
        super().__init__(message)
        self.holder = holder


def pid_alive(pid: int) -> bool:
    """Whether a process of this id exists on this host."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def owner_tag(pid: int | None = None) -> str:
    """``<host>@<pid>``: the suffix of a temporary name, read back by ``owner_is_dead``."""
    return f"{HOST}@{os.getpid() if pid is None else pid}"


_TAG_RE = re.compile(r"-(?:(?P<host>[A-Za-z0-9._]+)@)?(?P<pid>\d+)$")


def owner_is_dead(name: str) -> bool:
    """Whether the process named by a temporary name's tag (``owner_tag``; older names end in
    ``-<pid>``, without the host) is known to be gone: on this host and not running. Unparseable or
    foreign names count as alive (kept)."""
    m = _TAG_RE.search(name)
    if not m or (m.group("host") not in (None, HOST)):
        return False
    pid = int(m.group("pid"))
    return pid != os.getpid() and not pid_alive(pid)


class RunLock:
    """``with RunLock(run_dir):`` holds ``run_dir/.lock`` for the block (``acquire``/``release``)."""

    def __init__(self, run_dir: str | Path, command: str | None = None):
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK_FILE
        self.command = command if command is not None else " ".join(sys.argv[:3])
        self.held = False
        self._created = False  # False when the lock was already this process's

    def holder(self) -> dict | None:
        """The lock file's content (None when there is none; {} when unreadable)."""
        try:
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def _stale(self, info: dict | None) -> bool:
        if info is None:
            return True
        try:
            pid = int(info["pid"])
        except (KeyError, TypeError, ValueError):
            # Unreadable: a writer killed between creating and filling it, unless it is fresh.
            try:
                return time.time() - self.path.stat().st_mtime > 10.0
            except FileNotFoundError:
                return True
        return info.get("host") == HOST and pid != os.getpid() and not pid_alive(pid)

    def acquire(self) -> "RunLock":
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UserError(f"cannot create run folder {self.run_dir}: {exc.strerror or exc}") from None
        info = {"pid": os.getpid(), "host": HOST, "command": self.command,
                "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        for _ in range(3):
            try:
                with reporting_disk_full(self.path):
                    fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                holder = self.holder()
                if holder and holder.get("pid") == os.getpid() and holder.get("host") == HOST:
                    self.held = True  # already ours (e.g. stage 1 then stage 2 in one process)
                    return self
                if not self._stale(holder):
                    raise RunLocked(self._message(holder or {}), holder or {}) from None
                self._take_over(holder)
                continue
            except DiskFullError:
                raise
            except OSError as exc:  # a read-only folder, no permission
                raise UserError(f"cannot lock run folder {self.run_dir}: {exc.strerror or exc}") from None
            try:
                with reporting_disk_full(self.path), os.fdopen(fd, "w") as fh:
                    fh.write(json.dumps(info, sort_keys=True) + "\n")
                    fh.flush()
                    os.fsync(fh.fileno())
            except BaseException:
                self.path.unlink(missing_ok=True)  # an empty lock would block the next run for a while
                raise
            self.held = self._created = True
            return self
        raise RunLocked(self._message(self.holder() or {}), self.holder() or {})

    def _take_over(self, stale: dict | None) -> None:
        """Remove a dead owner's lock. It is renamed away first and checked: if another run
        took it over in between, the lock moved away is that run's live one and goes back."""
        grave = self.path.with_name(f"{LOCK_FILE}.stale-{owner_tag()}")
        try:
            os.replace(self.path, grave)
        except FileNotFoundError:
            return
        try:
            moved = json.loads(grave.read_text())
        except (OSError, ValueError):
            moved = {}
        # Put it back unless it is exactly the lock judged stale (None: that lock had already
        # gone, so whatever was moved belongs to a run that locked in between).
        if stale is None or moved != stale:
            try:
                os.link(grave, self.path)  # fails if a third run already holds a new lock
            except OSError:
                pass
        grave.unlink(missing_ok=True)

    def _message(self, holder: dict) -> str:
        pid, host = holder.get("pid", "?"), holder.get("host", "?")
        where = "this host" if host == HOST else f"host {host}"
        since = f" since {holder['started']}" if holder.get("started") else ""
        cmd = f" ({holder['command']})" if holder.get("command") else ""
        hint = (f"wait for it to finish or stop it (if pid {pid} is no run of this folder, delete {self.path})"
                if host == HOST else f"if that process is gone, delete {self.path}")
        return (f"run folder {self.run_dir} is in use by pid {pid} on {where}{since}{cmd}: two runs on one "
                f"folder would overwrite each other's checkpoints; {hint}, or use another --out")

    def release(self) -> None:
        if not self.held or not self._created:
            self.held = False
            return
        holder = self.holder()
        if holder and holder.get("pid") == os.getpid() and holder.get("host") == HOST:
            self.path.unlink(missing_ok=True)
        self.held = False

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
