"""Manifold super-resolution U (GRAM-HD style) and the radiance maps it works on.

Each manifold (level of M) is a surface that, seen along canonical -z, is a height field over
the canonical x-y plane. Casting orthographic rays along -z through a fixed R x R grid of (x, y)
pixel centres and intersecting them with the levels (the same routine as for camera rays) gives
one surface point per texel and level; phi evaluated there gives low-resolution radiance maps
[B, L, 4 + F, R, R] (colour, opacity, features). U upsamples every map by 4 (128 -> 512 in the
paper) with RRDB blocks and two sub-pixel convolutions, modulated by a style vector mapped from
(z_id, eps). Rendering then reads level l's map at the canonical (x, y) of a ray's level-l
intersection.

U predicts a residual in logit space on top of the bilinearly upsampled low-resolution colour and
opacity, with its last layer zero-initialised: a freshly initialised stage 2 renders what stage 1
renders (up to interpolation), which makes the stage switch smooth.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from aniportraitgan.generator.layers import MappingNetwork
from aniportraitgan.generator.manifolds import Intersections, intersect_levels

LOGIT_CLAMP = 1e-4


# ------------------------------------------------------------------ maps on the x-y grid
def texel_centers(resolution: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """Canonical (x, y) of the texel centres [R*R, 2], row-major: row i <-> y, column j <-> x."""
    c = (torch.arange(resolution, device=device, dtype=dtype) + 0.5) / resolution * 2.0 - 1.0
    y, x = torch.meshgrid(c, c, indexing="ij")
    return torch.stack([x, y], -1).reshape(-1, 2)


def map_intersections(manifold: nn.Module, resolution: int, depth_samples: int,
                      z_front: float, z_back: float, chunk: int = 16384) -> Intersections:
    """Level crossings of orthographic rays along -z through the texel centres.

    Returns t [R*R, L] (the canonical z of the crossing), valid [R*R, L], points [R*R, L, 3].
    Depends only on M (not on the latent codes).
    """
    levels = manifold.levels
    xy = texel_centers(resolution, device=levels.device, dtype=levels.dtype)
    z = torch.linspace(z_front, z_back, depth_samples, device=levels.device, dtype=levels.dtype)
    ts, valids, pts = [], [], []
    for start in range(0, xy.shape[0], chunk):
        c = xy[start:start + chunk]
        points = torch.cat([c[:, None, :].expand(-1, depth_samples, 2),
                            z[None, :, None].expand(c.shape[0], depth_samples, 1)], -1)
        s = manifold(points)
        hit = intersect_levels(s, levels, -z, points)  # depth along the ray = -z, increasing
        ts.append(-hit.t)
        valids.append(hit.valid)
        pts.append(hit.points)
    return Intersections(t=torch.cat(ts), valid=torch.cat(valids), points=torch.cat(pts))


def lowres_maps(radiance: nn.Module, w: torch.Tensor, hits: Intersections, resolution: int,
                chunk: int = 65536, frame: torch.Tensor | None = None) -> torch.Tensor:
    """phi at the map surface points -> maps [B, L, 4 + F, R, R] (colour, alpha, features);
    ``frame`` [B, 4, 3]: the frames of phi's template (None without one).

    Texels whose level has no surface get zero opacity, colour and features.
    """
    B = w.shape[0]
    P, L, _ = hits.points.shape
    flat = hits.points.reshape(1, P * L, 3).expand(B, -1, -1)
    outs = []
    for start in range(0, P * L, chunk):
        r = radiance(flat[:, start:start + chunk], w, frame)
        outs.append(torch.cat([r.color, r.alpha[..., None], r.features], -1))
    maps = torch.cat(outs, 1).reshape(B, P, L, -1)
    maps = maps * hits.valid.reshape(1, P, L, 1).to(maps.dtype)
    return maps.permute(0, 2, 3, 1).reshape(B, L, -1, resolution, resolution)


def sample_maps(maps: torch.Tensor, points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Read radiance maps [B, L, 4, R, R] at canonical points [B, n, L, 3] by their (x, y).

    Returns colour [B, n, L, 3] and alpha [B, n, L]; outside the map the opacity is zero.
    """
    B, L, C, R, _ = maps.shape
    n = points.shape[1]
    grid = points[..., :2].permute(0, 2, 1, 3).reshape(B * L, n, 1, 2)
    out = F.grid_sample(maps.reshape(B * L, C, R, R), grid, mode="bilinear",
                        padding_mode="zeros", align_corners=False)  # [B*L, C, n, 1]
    out = out[..., 0].reshape(B, L, C, n).permute(0, 3, 1, 2)  # [B, n, L, C]
    return out[..., :3], out[..., 3]


# ------------------------------------------------------------------ the network U
class DenseBlock(nn.Module):
    """Residual dense block: 5 densely connected 3x3 convs, residual scaled by 0.2."""

    def __init__(self, channels: int, growth: int) -> None:
        super().__init__()
        self.convs = nn.ModuleList(
            [nn.Conv2d(channels + i * growth, growth if i < 4 else channels, 3, padding=1) for i in range(5)]
        )
        for conv in self.convs:
            nn.init.kaiming_normal_(conv.weight, a=0.2)
            with torch.no_grad():
                conv.weight.mul_(0.1)
            nn.init.zeros_(conv.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = [x]
        for conv in self.convs[:-1]:
            feats.append(F.leaky_relu(conv(torch.cat(feats, 1)), 0.2))
        return x + 0.2 * self.convs[-1](torch.cat(feats, 1))


class RRDB(nn.Module):
    """Residual-in-residual dense block (three dense blocks)."""

    def __init__(self, channels: int, growth: int) -> None:
        super().__init__()
        self.blocks = nn.Sequential(*[DenseBlock(channels, growth) for _ in range(3)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + 0.2 * self.blocks(x)


class ManifoldSuperResolution(nn.Module):
    """U: low-resolution maps [B, L, 4 + F, R, R] + style -> maps [B, L, 4, sR, sR] in [0, 1]."""

    def __init__(self, in_channels: int, channels: int, growth: int, blocks: int, scale: int,
                 id_dim: int, noise_dim: int, style_dim: int, mapping_hidden: int,
                 mapping_layers: int, chunk: int = 4) -> None:
        super().__init__()
        self.mapping = MappingNetwork(id_dim + noise_dim, mapping_hidden, mapping_layers, style_dim)
        self.conv_first = nn.Conv2d(in_channels, channels, 3, padding=1)
        self.blocks = nn.ModuleList([RRDB(channels, growth) for _ in range(blocks)])
        # Per-block channel-wise affine modulation (scale, shift) from the style vector.
        self.modulations = nn.ModuleList([nn.Linear(style_dim, 2 * channels) for _ in range(blocks)])
        for mod in self.modulations:
            nn.init.zeros_(mod.weight)
            nn.init.zeros_(mod.bias)
        self.conv_trunk = nn.Conv2d(channels, channels, 3, padding=1)
        n_up = {1: 0, 2: 1, 4: 2}[scale]
        self.ups = nn.ModuleList([nn.Conv2d(channels, channels * 4, 3, padding=1) for _ in range(n_up)])
        self.conv_hr = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv_last = nn.Conv2d(channels, 4, 3, padding=1)
        nn.init.zeros_(self.conv_last.weight)
        nn.init.zeros_(self.conv_last.bias)
        self.scale = scale
        self.chunk = chunk  # maps per pass: bounds the memory of the high-resolution layers

    def map(self, z_id: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        return self.mapping(torch.cat([z_id, eps], -1))

    def _run(self, x: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        """x [N, C_in, R, R] with style [N, style_dim] -> [N, 4, sR, sR] in [0, 1]."""
        h = self.conv_first(torch.cat([x[:, :4] * 2.0 - 1.0, x[:, 4:]], 1))
        skip = h
        for block, mod in zip(self.blocks, self.modulations):
            h = block(h)
            gamma, beta = mod(style).chunk(2, -1)
            h = h * (1.0 + gamma[:, :, None, None]) + beta[:, :, None, None]
        h = self.conv_trunk(h) + skip
        for up in self.ups:
            h = F.leaky_relu(F.pixel_shuffle(up(h), 2), 0.2)
        residual = self.conv_last(F.leaky_relu(self.conv_hr(h), 0.2))
        base = x[:, :4]
        if self.scale > 1:
            base = F.interpolate(base, scale_factor=self.scale, mode="bilinear", align_corners=False)
        base = base.clamp(LOGIT_CLAMP, 1.0 - LOGIT_CLAMP)
        return torch.sigmoid(torch.logit(base) + residual)

    def forward(self, maps: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        B, L, C, R, _ = maps.shape
        x = maps.reshape(B * L, C, R, R)
        s = style.repeat_interleave(L, 0)
        out = torch.cat([self._run(x[i:i + self.chunk], s[i:i + self.chunk]) for i in range(0, B * L, self.chunk)])
        return out.reshape(B, L, 4, R * self.scale, R * self.scale)
