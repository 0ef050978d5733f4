"""Why a training stage stops before its last step: the wall-clock budget (``--max-minutes``) or
a stop signal (the first SIGINT / SIGTERM, ``signals.GracefulStop``).

Either way the step in progress finishes, a checkpoint is written, and ``--resume`` continues
exactly. Every rank must stop at the same step, so each step's decision is one tiny all-reduce
(maximum) of (budget spent on rank 0, signal number seen by any rank) under torchrun; single
process it is a local check.
"""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass

import torch

from aniportraitgan.signals import LAUNCHED_SAME_REQUEST_S, GracefulStop, exit_code
from aniportraitgan.training import distributed as dist_utils


@dataclass
class StopReason:
    out_of_time: bool
    signum: int | None  # the stop signal, None for the budget

    @property
    def exit_code(self) -> int:
        return 0 if self.signum is None else exit_code(self.signum)

    def describe(self, max_minutes: float | None) -> str:
        if self.signum is None:
            return f"time budget of {max_minutes:g} min used up"
        return f"stopped by {signal.Signals(self.signum).name}"


def launched() -> bool:
    """Whether a launcher (torchrun) started this process and forwards signals to it."""
    return "TORCHELASTIC_RUN_ID" in os.environ or int(os.environ.get("WORLD_SIZE", "1")) > 1


class StopCheck:
    """``check()`` after a step: a ``StopReason`` all ranks agree on, or None to go on."""

    def __init__(self, info: dist_utils.DistInfo, device: torch.device, max_minutes: float | None,
                 graceful: GracefulStop | None):
        self.info, self.device, self.max_minutes, self.graceful = info, device, max_minutes, graceful
        self.deadline = None if max_minutes is None else time.time() + 60.0 * float(max_minutes)

    @staticmethod
    def graceful_stop() -> GracefulStop:
        return GracefulStop(same_request_s=LAUNCHED_SAME_REQUEST_S if launched() else 0.0)

    def check(self, budget: bool = True) -> StopReason | None:
        """``budget=False``: signals only (before a stage's first step: the budget allows one)."""
        time_up = float(budget and self.deadline is not None and self.info.is_main and time.time() >= self.deadline)
        signum = float(self.graceful.signum or 0) if self.graceful is not None else 0.0
        if self.info.enabled:
            time_up, signum = dist_utils.all_reduce_max([time_up, signum], self.device)
        if signum:
            return StopReason(False, int(signum))
        if time_up:
            return StopReason(True, None)
        return None
