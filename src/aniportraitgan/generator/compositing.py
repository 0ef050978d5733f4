"""Front-to-back alpha compositing of the ray-manifold intersections (paper eq. 8)."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Composite:
    color: torch.Tensor  # [..., C] in [0, 1] over a white background
    depth: torch.Tensor  # [...] expected depth of the visible surface (weights renormalised)
    alpha: torch.Tensor  # [...] accumulated opacity
    weights: torch.Tensor  # [..., L] T_i * alpha_i


def composite(color: torch.Tensor, alpha: torch.Tensor, t: torch.Tensor,
              background: float = 1.0, far: torch.Tensor | float | None = None) -> Composite:
    """Composite intersections already sorted front to back.

    color [..., L, C], alpha [..., L] (zero for missing intersections), t [..., L] depths.
    ``C(r) = sum_i T_i a_i c_i + T_end * background`` with ``T_i = prod_{k<i} (1 - a_k)``.
    The depth is ``sum_i w_i t_i / sum_i w_i``; rays that hit nothing get ``far`` (or the
    last depth when ``far`` is None).
    """
    one = torch.ones_like(alpha[..., :1])
    transmittance = torch.cumprod(torch.cat([one, 1.0 - alpha], -1), -1)
    weights = transmittance[..., :-1] * alpha
    acc = weights.sum(-1)
    rgb = (weights[..., None] * color).sum(-2) + (1.0 - acc)[..., None] * background
    depth_num = (weights * t).sum(-1)
    fallback = t[..., -1] if far is None else torch.as_tensor(far, dtype=t.dtype, device=t.device).expand_as(acc)
    depth = torch.where(acc > 1e-6, depth_num / acc.clamp_min(1e-6), fallback)
    return Composite(color=rgb, depth=depth, alpha=acc, weights=weights)
