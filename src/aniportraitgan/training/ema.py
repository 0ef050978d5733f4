"""Exponential moving average of the generator's weights (the generator used for sampling)."""

from __future__ import annotations

import copy

import torch
from torch import nn


def ema_beta(batch_size: int, cur_nimg: int, ema_kimg: float, rampup: float | None) -> float:
    """Decay per step from a half-life of `ema_kimg` thousand images (StyleGAN2).

    With `rampup`, the half-life is at most rampup * images seen so far, so that early
    averages do not hold on to the random initialisation."""
    ema_nimg = ema_kimg * 1000.0
    if rampup is not None:
        ema_nimg = min(ema_nimg, cur_nimg * rampup)
    if ema_nimg <= 0:
        return 0.0
    return 0.5 ** (batch_size / max(ema_nimg, 1e-8))


class EMA:
    """Holds a frozen copy of a module whose parameters track the live module's."""

    def __init__(self, module: nn.Module):
        self.module = copy.deepcopy(module).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, live: nn.Module, beta: float) -> None:
        for p_ema, p in zip(self.module.parameters(), live.parameters()):
            if p.requires_grad:
                p_ema.lerp_(p.detach().to(p_ema.dtype), 1.0 - beta)
            else:  # frozen parts (stage 2) are copied: they equal the live ones anyway
                p_ema.copy_(p.detach())
        for b_ema, b in zip(self.module.buffers(), live.buffers()):
            b_ema.copy_(b)

    @torch.no_grad()
    def copy_from(self, live: nn.Module) -> None:
        self.update(live, 0.0)
        for p_ema, p in zip(self.module.parameters(), live.parameters()):
            p_ema.copy_(p.detach())

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.module.state_dict()

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.module.load_state_dict(state)
