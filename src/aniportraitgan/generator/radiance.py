"""phi: the radiance generator on the canonical manifolds.

A FiLM-SIREN MLP conditioned on (z_id, eps) through a mapping network, evaluated at canonical
points; outputs colour (sigmoid, [0, 1]), opacity (sigmoid) and feature channels (the extra input
of the super-resolution network U). It takes no view direction: the super-resolved radiance maps
of stage 2 are view-independent textures of the manifolds, so stage 1 must be too for the two
stages to agree (GRAM-HD makes the same choice).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from aniportraitgan.generator.layers import FiLMSiren, MappingNetwork, siren_hidden_init_


@dataclass
class Radiance:
    color: torch.Tensor  # [..., 3] in [0, 1]
    alpha: torch.Tensor  # [...] in [0, 1]
    features: torch.Tensor  # [..., F]


class RadianceGenerator(nn.Module):
    def __init__(self, id_dim: int, noise_dim: int, hidden: int, layers: int, features: int,
                 mapping_hidden: int, mapping_layers: int, input_scale: float = 1.0) -> None:
        super().__init__()
        # Canonical points are multiplied by this before the sine layers: above 1 it raises every
        # spatial frequency phi starts with (the face fills a fifth of the canonical box).
        self.input_scale = float(input_scale)
        self.siren = FiLMSiren(3, hidden, layers)
        self.mapping = MappingNetwork(id_dim + noise_dim, mapping_hidden, mapping_layers, self.siren.w_dim)
        self.head = nn.Linear(hidden, 4 + features)
        siren_hidden_init_(self.head)
        self.num_features = features

    def map(self, z_id: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """(z_id [B, di], eps [B, de]) -> w [B, w_dim]."""
        return self.mapping(torch.cat([z_id, eps], -1))

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> Radiance:
        """Canonical points x [B, N, 3] with conditioning w [B, w_dim]."""
        raw = self.head(self.siren(x * self.input_scale if self.input_scale != 1.0 else x, w))
        return Radiance(
            color=torch.sigmoid(raw[..., :3]),
            alpha=torch.sigmoid(raw[..., 3]),
            features=raw[..., 4:],
        )
