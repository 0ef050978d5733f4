"""Determinism of a training run: seeds mixed from (seed, stage, step, rank), the random states a
checkpoint saves, and the data order.

Every step reseeds all random number generators from `mix(seed, stage, step, rank)` and the data
order is a function of (seed, stage, step), so a run resumed from a checkpoint at step k
continues exactly as the uninterrupted run did (bit-identical on CPU).
"""

from __future__ import annotations

import contextlib
import random
from typing import Iterator

import numpy as np
import torch

from aniportraitgan.errors import UserError


def mix(*values: int) -> int:
    """A 63-bit seed from a few integers (splitmix-style)."""
    h = 0x9E3779B97F4A7C15
    for v in values:
        h ^= (int(v) + 0x9E3779B97F4A7C15 + (h << 6) + (h >> 2)) & 0xFFFFFFFFFFFFFFFF
        h = (h * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
        h ^= h >> 31
    return h & 0x7FFFFFFFFFFFFFFF


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def rng_state() -> dict:
    """The Python, NumPy, torch (and CUDA) random states, in a form torch.save can store."""
    py = random.getstate()
    np_state = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "python": (py[0], tuple(py[1]), py[2]),
        "numpy": (np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), int(np_state[2]), int(np_state[3]), float(np_state[4])),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    n = state["numpy"]
    np.random.set_state((n[0], n[1].numpy().astype(np.uint32), n[2], n[3], n[4]))
    if "cuda" in state and torch.cuda.is_available():
        # A checkpoint of a machine with another number of GPUs keeps the CPU streams only.
        with contextlib.suppress(RuntimeError):
            torch.cuda.set_rng_state_all(state["cuda"])


class StepBatches:
    """Deterministic batches: global step s of a stage reads positions [s*B, (s+1)*B) of an
    endless stream of per-epoch permutations (seeded by seed, stage, epoch); rank r of W takes
    its contiguous share of each global batch. Independent of the number of processes."""

    def __init__(self, n: int, batch: int, rank: int, world: int, seed: int, stage: int, start_step: int, stop_step: int):
        if batch % world:
            raise UserError(f"batch size {batch} is not divisible by the number of processes {world}")
        self.n, self.batch, self.rank, self.world = n, batch, rank, world
        self.seed, self.stage = seed, stage
        self.start, self.stop = start_step, stop_step
        self._cache: dict[int, torch.Tensor] = {}

    def _perm(self, epoch: int) -> torch.Tensor:
        if epoch not in self._cache:
            g = torch.Generator().manual_seed(mix(self.seed, self.stage, epoch, 0x5EED))
            self._cache = {epoch: torch.randperm(self.n, generator=g)}
        return self._cache[epoch]

    def indices(self, step: int) -> list[int]:
        per = self.batch // self.world
        lo = step * self.batch + self.rank * per
        return [int(self._perm(pos // self.n)[pos % self.n]) for pos in range(lo, lo + per)]

    def __iter__(self) -> Iterator[list[int]]:
        for step in range(self.start, self.stop):
            yield self.indices(step)

    def __len__(self) -> int:
        return max(0, self.stop - self.start)
