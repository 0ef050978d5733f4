"""Issue 12, signals: the graceful stop of loops that can save and SIGTERM as an exception."""

from __future__ import annotations

import os
import signal
import time

import pytest

from aniportraitgan.atomic import atomic_path
from aniportraitgan.signals import GracefulStop, Interrupted, exit_code, signals_raise


def _deliver(sig: int) -> None:
    os.kill(os.getpid(), sig)
    time.sleep(0.05)  # the handler runs between bytecodes of the main thread


def test_first_signal_is_recorded_second_stops_at_once():
    before = signal.getsignal(signal.SIGTERM)
    with GracefulStop() as stop:
        assert not stop.requested and stop.exit_code is None
        _deliver(signal.SIGTERM)
        assert stop.requested and stop.exit_code == 143
        with pytest.raises(Interrupted, match="SIGINT") as info:
            _deliver(signal.SIGINT)
        assert info.value.exit_code == 130 and isinstance(info.value, KeyboardInterrupt)
    assert signal.getsignal(signal.SIGTERM) is before


def test_under_a_launcher_a_quick_second_signal_is_the_same_request():
    calls = []
    with GracefulStop(on_request=calls.append, same_request_s=5.0) as stop:
        _deliver(signal.SIGINT)
        _deliver(signal.SIGTERM)  # torchrun forwarding the Ctrl-C the worker already got
        assert stop.exit_code == 130 and calls == [signal.SIGINT]


def test_sigterm_raises_and_atomic_writes_clean_up(tmp_path):
    target = tmp_path / "video.mp4"
    with signals_raise(), pytest.raises(Interrupted) as info:
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"half")
            _deliver(signal.SIGTERM)
    assert info.value.exit_code == exit_code(signal.SIGTERM) == 143
    assert list(tmp_path.iterdir()) == []
