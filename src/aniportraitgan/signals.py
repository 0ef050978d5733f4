"""Stopping on SIGINT or SIGTERM without losing work or leaving partial files.

SIGTERM is what `timeout`, docker, SLURM and systemd send; Python's default for it is to die on
the spot, with no `finally` block run, so temporary files stay behind. Two behaviours:

* ``GracefulStop`` (loops that can save, i.e. training): the first signal only records itself;
  the loop finishes its step, writes a checkpoint and exits with ``exit_code`` (130 for
  SIGINT, 143 for SIGTERM, as a shell reports them). A second signal raises ``Interrupted`` at once. Under a
  launcher (torchrun) a second signal within ``LAUNCHED_SAME_REQUEST_S`` of the first is the
  same request: Ctrl-C reaches every process of the terminal's group and SLURM signals every
  process of a step, and torchrun then forwards what it got to its workers as a SIGTERM.
* ``signals_raise()`` (every other command): SIGTERM raises ``Interrupted`` (a
  ``KeyboardInterrupt``) as Ctrl-C does, so ``atomic.atomic_path`` and ``finally`` blocks
  remove what was half-written before the exit.

Handlers can only be installed from the main thread; elsewhere both are no-ops.
"""

from __future__ import annotations

import signal
import threading
import time
from contextlib import contextmanager
from typing import Iterator

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
LAUNCHED_SAME_REQUEST_S = 2.0


def exit_code(signum: int) -> int:
    """The exit status a shell shows for a process ended by `signum` (130, 143)."""
    return 128 + int(signum)


class Interrupted(KeyboardInterrupt):
    """Raised by a stop signal; ``exit_code`` is the status the command should end with."""

    def __init__(self, signum: int):
        self.signum = int(signum)
        self.exit_code = exit_code(signum)
        super().__init__(f"interrupted by {signal.Signals(self.signum).name}")


def _in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


@contextmanager
def _handlers(handler) -> Iterator[None]:
    if not _in_main_thread():
        yield
        return
    previous = {s: signal.signal(s, handler) for s in STOP_SIGNALS}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


@contextmanager
def signals_raise() -> Iterator[None]:
    """SIGINT and SIGTERM raise ``Interrupted`` inside the block."""

    def handler(signum, frame):
        raise Interrupted(signum)

    with _handlers(handler):
        yield


class GracefulStop:
    """``with GracefulStop() as stop:`` ... ``if stop.requested: save; return stop.exit_code``.

    ``request(signum)`` does what a signal does (for a rank told by another that a signal
    came, or a test)."""

    def __init__(self, on_request=None, same_request_s: float = 0.0):
        self.signum: int | None = None
        self.same_request_s = float(same_request_s)  # LAUNCHED_SAME_REQUEST_S under torchrun
        self._since = 0.0
        self._on_request = on_request  # called once, from the handler, with the signal number
        self._context = None

    @property
    def requested(self) -> bool:
        return self.signum is not None

    @property
    def exit_code(self) -> int | None:
        return None if self.signum is None else exit_code(self.signum)

    def request(self, signum: int = signal.SIGTERM) -> None:
        if self.signum is None:
            self.signum, self._since = int(signum), time.monotonic()
            if self._on_request is not None:
                self._on_request(self.signum)

    def _handler(self, signum, frame) -> None:
        if self.signum is not None and time.monotonic() - self._since >= self.same_request_s:
            raise Interrupted(signum)
        self.request(signum)

    def __enter__(self) -> "GracefulStop":
        self._context = _handlers(self._handler)
        self._context.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._context.__exit__(*exc)
        self._context = None


def ignore_stop_signals(worker_id: int | None = None) -> None:
    """For worker processes (a DataLoader's ``worker_init_fn``): SIGINT and SIGTERM are left to
    the main process, which finishes its step and then ends its workers itself. (Ctrl-C and
    SLURM signal every process; a worker that died of it would fail the step in progress.)"""
    if _in_main_thread():
        for s in STOP_SIGNALS:
            signal.signal(s, signal.SIG_IGN)
