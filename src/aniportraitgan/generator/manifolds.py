"""Radiance manifolds (GRAM): the scalar field M and ray-manifold intersections.

M maps a canonical point to a scalar s; the manifolds are the iso-surfaces ``s = level`` for a
fixed set of levels. We parameterise ``s(x) = |x - c| + r(x)`` where ``r`` is a small MLP whose
last layer starts near zero: at initialisation the manifolds are concentric spherical shells
around ``c`` (the GRAM initialisation), and training bends them.

Intersections are found from the values of s at ordered samples along each ray: for every level,
the first sample interval where ``s - level`` changes sign holds the crossing, and linear
interpolation inside that interval gives its position. Everything is one batched tensor
expression over rays, samples and levels.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


class ManifoldPredictor(nn.Module):
    """M: canonical points [..., 3] -> scalar field s [...]."""

    def __init__(self, hidden: int, layers: int, center: tuple[float, float, float],
                 levels: tuple[float, float, int]) -> None:
        super().__init__()
        dims = [3] + [hidden] * layers
        self.linears = nn.ModuleList([nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:])])
        self.out = nn.Linear(dims[-1], 1)
        # Small (not zero) so that every layer gets a gradient from the first step.
        with torch.no_grad():
            self.out.weight.mul_(1e-2)
            self.out.bias.zero_()
        self.register_buffer("center", torch.tensor(center, dtype=torch.float32))
        lo, hi, n = levels
        # Listed outermost first: a frontal ray meets the outer shells first.
        self.register_buffer("levels", torch.linspace(hi, lo, n))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Always float32: the sign changes of s - level define the geometry, and bf16 autocast
        # would quantise the intersection fractions.
        with torch.autocast(device_type=x.device.type, enabled=False):
            x = x.float()
            h = x
            for lin in self.linears:
                h = F.softplus(lin(h), beta=10.0)
            residual = self.out(h).squeeze(-1)
            return (x - self.center).norm(dim=-1) + residual


@dataclass
class Intersections:
    """Per ray and level: ``t`` [..., L] depth, ``valid`` [..., L] bool, ``points`` [..., L, C]."""

    t: torch.Tensor
    valid: torch.Tensor
    points: torch.Tensor | None


def intersect_levels(
    s: torch.Tensor,
    levels: torch.Tensor,
    t: torch.Tensor,
    points: torch.Tensor | None = None,
) -> Intersections:
    """First crossing of every level along ordered samples.

    s [..., N]: field values at the samples; levels [L]; t [..., N] (or broadcastable, e.g.
    [N]) the depth of each sample; points [..., N, C] optional attributes interpolated at the
    crossing (canonical positions). The crossing inside interval (k, k+1) is at fraction
    ``f = (s_k - l) / (s_k - s_{k+1})``; it is differentiable with respect to s, t and points.
    Levels without a crossing get ``valid = False`` and ``t`` equal to the last sample depth.
    """
    N = s.shape[-1]
    t = t.expand(s.shape)
    above = s[..., None, :] > levels[:, None]  # [..., L, N]
    change = above[..., 1:] ^ above[..., :-1]  # [..., L, N-1]: a crossing inside (k, k+1)
    # First crossing = the largest of the descending scores N-1, ..., 1 over the crossings (a
    # max over the contiguous last dim is much faster than argmax on CPU); 0 = no crossing.
    small = N <= 256
    score_dtype = torch.uint8 if small else torch.int32
    desc = torch.arange(N - 1, 0, -1, device=s.device, dtype=score_dtype)
    best = (change.to(score_dtype) * desc).amax(-1).long()  # [..., L]
    valid = best > 0
    k = (N - 1 - best).clamp(max=N - 2)
    k1 = (k + 1).clamp(max=N - 1)
    d0 = s.gather(-1, k) - levels
    d1 = s.gather(-1, k1) - levels
    denom = d0 - d1
    safe = torch.where(valid & (denom != 0), denom, torch.ones_like(denom))
    f = torch.where(valid, d0 / safe, torch.zeros_like(d0)).clamp(0.0, 1.0)
    t0 = t.gather(-1, k)
    t1 = t.gather(-1, k1)
    t_hit = torch.where(valid, t0 + f * (t1 - t0), t[..., -1:].expand(t0.shape))
    p_hit = None
    if points is not None:
        C = points.shape[-1]
        idx = k[..., None].expand(k.shape + (C,))
        p0 = points.gather(-2, idx)
        p1 = points.gather(-2, k1[..., None].expand(idx.shape))
        p_hit = p0 + f[..., None] * (p1 - p0)
    return Intersections(t=t_hit, valid=valid, points=p_hit)


def sort_by_depth(t: torch.Tensor, valid: torch.Tensor, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Reorder the last level dimension front to back (invalid levels last).

    t, valid [..., L]; each extra tensor [..., L] or [..., L, C]. Returns (t, valid, *tensors).
    """
    key = torch.where(valid, t, torch.full_like(t, float("inf")))
    order = key.argsort(dim=-1, stable=True)
    out = [t.gather(-1, order), valid.gather(-1, order)]
    for x in tensors:
        if x.ndim == t.ndim:
            out.append(x.gather(-1, order))
        else:
            out.append(x.gather(-2, order[..., None].expand(order.shape + x.shape[t.ndim:])))
    return tuple(out)
