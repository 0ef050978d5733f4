"""phi: the radiance generator on the canonical manifolds.

A FiLM-SIREN MLP conditioned on (z_id, eps) through a mapping network, evaluated at canonical
points; outputs colour (sigmoid, [0, 1]), opacity (sigmoid) and feature channels (the extra input
of the super-resolution network U). It takes no view direction: the super-resolved radiance maps
of stage 2 are view-independent textures of the manifolds, so stage 1 must be too for the two
stages to agree (GRAM-HD makes the same choice).

The optional template (``GeneratorConfig.radiance_template``) is a grid of colour and opacity
logits around the head, shared by every identity and added to the SIREN's logits: one mean face
that phi modulates. Each person reads it through an affine frame (``Generator.template_frame``)
that maps their neutral face landmarks onto the mean person's, so eyes, lips and brows of
every face shape fall on the same texels (8.5 mm apart on average when only the head centres
are aligned, 2.2 mm with the affine frame: 500 identities of a SynthPortraits dataset).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from aniportraitgan.errors import InputError
from aniportraitgan.generator.layers import FiLMSiren, MappingNetwork, siren_hidden_init_


@dataclass
class Radiance:
    color: torch.Tensor  # [..., 3] in [0, 1]
    alpha: torch.Tensor  # [...] in [0, 1]
    features: torch.Tensor  # [..., F]


def grid_roughness(grid: torch.Tensor) -> torch.Tensor:
    """Mean squared difference of neighbouring voxels of a [B, C, D, H, W] grid, averaged over
    its three spatial axes (in fp32)."""
    g = grid.float()
    return sum(g.diff(dim=d).square().mean() for d in (2, 3, 4)) / 3


class RadianceGenerator(nn.Module):
    def __init__(self, id_dim: int, noise_dim: int, hidden: int, layers: int, features: int,
                 mapping_hidden: int, mapping_layers: int, input_scale: float = 1.0,
                 template: int = 0, template_extent: float = 0.45) -> None:
        super().__init__()
        # Canonical points are multiplied by this before the sine layers: above 1 it raises every
        # spatial frequency phi starts with (the face fills a fifth of the canonical box).
        self.input_scale = float(input_scale)
        self.siren = FiLMSiren(3, hidden, layers)
        self.mapping = MappingNetwork(id_dim + noise_dim, mapping_hidden, mapping_layers, self.siren.w_dim)
        self.head = nn.Linear(hidden, 4 + features)
        siren_hidden_init_(self.head)
        self.num_features = features
        self.template_extent = float(template_extent)
        # [1, 4, D(z), H(y), W(x)] colour and opacity logits; zero: no change until trained.
        self.template = nn.Parameter(torch.zeros(1, 4, template, template, template)) if template else None

    def map(self, z_id: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """(z_id [B, di], eps [B, de]) -> w [B, w_dim]."""
        return self.mapping(torch.cat([z_id, eps], -1))

    def template_logits(self, x: torch.Tensor, frame: torch.Tensor) -> torch.Tensor:
        """The template's colour and opacity logits [B, N, 4] at canonical points x [B, N, 3] of
        people whose template frames are ``frame`` [B, 4, 3] (``u = x @ frame[:3] + frame[3]``,
        canonical units, the mean person's head centre at 0); zero outside its cube."""
        B, N, _ = x.shape
        u = torch.baddbmm(frame[:, 3:4], x, frame[:, :3])
        grid = (u / self.template_extent).reshape(B, N, 1, 1, 3)
        out = F.grid_sample(self.template.expand(B, -1, -1, -1, -1), grid, mode="bilinear",
                            padding_mode="zeros", align_corners=False)  # [B, 4, N, 1, 1]
        return out.reshape(B, 4, N).transpose(1, 2)

    def template_roughness(self) -> torch.Tensor:
        """Mean squared difference of neighbouring template voxels over the three axes, in logit
        units (0 without a template): the squared total-variation prior of voxel-grid fields.
        Without it, Adam moves each rarely-seen voxel by about the learning rate whatever its
        gradient's size, and the grid fills with a speckle the images show as a fine hatching."""
        if self.template is None:
            return self.head.weight.new_zeros(())
        return grid_roughness(self.template)

    def colour_roughness(self, x: torch.Tensor, colour: torch.Tensor, weight: torch.Tensor, w: torch.Tensor,
                         frame: torch.Tensor | None, step: float) -> torch.Tensor:
        """Weighted mean squared change of phi's colour (RGB in [0, 1], summed over channels)
        between canonical points x [B, N, 3], whose colour [B, N, 3] is known, and the same points
        moved by ``step`` (canonical units) in a random direction each; ``weight`` [B, N] (e.g.
        opacity). 0 for a constant field, larger the finer its texture. The colour prior
        (``loss.colour_smooth``) applies it at the rendered intersections, where the images read
        phi (``renderer.render_view``)."""
        moved = x + F.normalize(torch.randn_like(x), dim=-1) * step
        change = (self(moved, w, frame).color - colour).square().sum(-1)
        return (change * weight).sum() / weight.sum().clamp_min(1e-8)

    def forward(self, x: torch.Tensor, w: torch.Tensor, frame: torch.Tensor | None = None) -> Radiance:
        """Canonical points x [B, N, 3] with conditioning w [B, w_dim]; ``frame`` [B, 4, 3]: the
        people's template frames (``Generator.template_frame``; needed with a template)."""
        raw = self.head(self.siren(x * self.input_scale if self.input_scale != 1.0 else x, w))
        if self.template is not None:
            if frame is None:
                raise InputError("phi has a template: pass the people's template frames it is read through")
            raw = torch.cat([raw[..., :4] + self.template_logits(x, frame), raw[..., 4:]], -1)
        return Radiance(
            color=torch.sigmoid(raw[..., :3]),
            alpha=torch.sigmoid(raw[..., 3]),
            features=raw[..., 4:],
        )
