"""Truncation around averaged mapping outputs, and the per-identity cache used for animation.

``WAverage`` keeps the average mapping output of one mapping network: a running (EMA) average
updated in training mode, or one precomputed from samples of the latent distribution.
``truncate`` pulls a mapping output toward it: ``w' = w_avg + psi (w - w_avg)``.

``IdentityCache`` holds everything that depends only on (z_id, eps) (and the weights): the
truncated mapping outputs of phi and U and, for stage 2, the super-resolved radiance maps. An
animation builds it once per identity and then redoes only the per-frame work: body model,
deformation, M along the rays, intersections, map look-ups and compositing.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from aniportraitgan.errors import InputError


class WAverage(nn.Module):
    def __init__(self, dim: int, beta: float = 0.995) -> None:
        super().__init__()
        self.register_buffer("w_avg", torch.zeros(dim))
        self.register_buffer("count", torch.zeros((), dtype=torch.long))
        self.beta = beta

    @property
    def initialized(self) -> bool:
        return bool(self.count.item() > 0)

    @torch.no_grad()
    def update(self, w: torch.Tensor) -> None:
        """Running average of mapping outputs (called by the generator in training mode)."""
        mean = w.detach().mean(0).to(self.w_avg.dtype)
        if self.count.item() == 0:
            self.w_avg.copy_(mean)
        else:
            self.w_avg.lerp_(mean, 1.0 - self.beta)
        self.count += 1

    @torch.no_grad()
    def set(self, w_mean: torch.Tensor) -> None:
        self.w_avg.copy_(w_mean.to(self.w_avg.dtype))
        self.count.fill_(max(1, int(self.count.item())))

    def truncate(self, w: torch.Tensor, psi: float) -> torch.Tensor:
        if psi == 1.0:
            return w
        if not self.initialized:
            raise InputError("truncation psi != 1 needs an average mapping output: call "
                             "Generator.compute_w_avg() or train the generator first")
        return self.w_avg.to(w.dtype) + psi * (w - self.w_avg.to(w.dtype))


@dataclass
class IdentityCache:
    """Per-identity work of the generator; build with ``Generator.build_cache``."""

    z_id: torch.Tensor  # [B, id_dim]
    eps: torch.Tensor  # [B, noise_dim]
    psi: float
    stage: int
    w_radiance: torch.Tensor  # [B, w_dim] truncated mapping output of phi
    w_superres: torch.Tensor | None  # [B, style_dim] truncated style of U (stage 2)
    maps: torch.Tensor | None  # [B, L, 4, R_hr, R_hr] super-resolved radiance maps (stage 2)

    def __len__(self) -> int:
        return self.z_id.shape[0]

    def check(self, z_id: torch.Tensor, eps: torch.Tensor, stage: int, psi: float) -> None:
        """Raise InputError unless the cache was built for these codes, stage and psi."""
        if stage != self.stage:
            raise InputError(f"identity cache was built for stage {self.stage}, rendering asks for stage {stage}")
        if psi != self.psi:
            raise InputError(f"identity cache was built with psi={self.psi}, rendering asks for psi={psi}")
        B = z_id.shape[0]
        # A cache of one identity serves a batch of frames of that identity.
        if len(self) not in (1, B) or z_id.shape[1:] != self.z_id.shape[1:] or eps.shape != (B,) + self.eps.shape[1:]:
            raise InputError(
                f"identity cache holds {len(self)} identities; got z_id {tuple(z_id.shape)}, eps {tuple(eps.shape)}"
            )
        same = torch.equal(z_id.to(self.z_id), self.z_id.expand_as(z_id)) and torch.equal(
            eps.to(self.eps), self.eps.expand_as(eps))
        if not same:
            raise InputError("identity cache was built for different z_id / eps")

    def expand(self, B: int) -> "IdentityCache":
        """The same cache viewed as B identities (no copy)."""
        if len(self) == B:
            return self
        def ex(t):
            return None if t is None else t.expand((B,) + t.shape[1:])
        return IdentityCache(ex(self.z_id), ex(self.eps), self.psi, self.stage,
                             ex(self.w_radiance), ex(self.w_superres), ex(self.maps))
