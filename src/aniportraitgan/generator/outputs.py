"""The generator's typed call: what a render asks for (``RenderOptions``) and what comes back
(``Rendered``, with the loss terms of eqs. 10-13 in ``Aux`` when asked)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from aniportraitgan.body.model import BodyOutput
from aniportraitgan.cameras import Cameras
from aniportraitgan.generator.cache import IdentityCache


@dataclass(frozen=True)
class RenderOptions:
    """How to render; every field has the default a training step at 128 px would use."""

    portrait_resolution: int = 128
    """Side of the portrait (main camera) in pixels."""
    face_resolution: int | None = 128
    """Side of the face-camera image; None or 0 renders no face view."""
    stage: int = 1
    """1: phi evaluated at the intersections; 2: U's super-resolved radiance maps."""
    psi: float = 1.0
    """Truncation of the mapping outputs toward their running average (1 = none)."""
    return_aux: bool = False
    """Also compute the deformation loss terms (``Rendered.aux``)."""
    colour_roughness: bool = False
    """With ``return_aux`` in stage 1: also measure phi's colour roughness at the intersections
    (``Aux.colour_rough``, the colour prior's term; it costs a few extra phi evaluations)."""
    cache: IdentityCache | None = None
    """Per-identity work from ``Generator.build_cache`` (animation of one identity)."""
    geometry_max_resolution: int | None = None
    """Deformation and M on a ray grid of at most this side (0: full); None: the config's."""


# The ``Aux`` loss terms (eqs. 10-13, and our colour prior) and the ``LossWeights`` field that weights each.
AUX_LOSS_WEIGHTS: dict[str, str] = {
    "exp_imitation": "imitation",
    "pose_smooth": "pose_smooth",
    "exp_smooth": "exp_smooth",
    "exp_minimal": "exp_minimal",
    "colour_rough": "colour_smooth",
}


@dataclass
class Aux:
    """Loss terms and intermediate codes of one render (``RenderOptions.return_aux``)."""

    pose_smooth: torch.Tensor
    """Eq. 11: ||Dp(T) - AvgPool(T)||^2 over the transform volumes (0 without Dp)."""
    exp_imitation: torch.Tensor
    """Eq. 10: De's displacement against the body model's (its residual, with mesh guidance)."""
    exp_smooth: torch.Tensor
    """Eq. 12: smoothness of De's displacement."""
    exp_minimal: torch.Tensor
    """Eq. 13: the size of De's displacement."""
    colour_rough: torch.Tensor
    """Ours: how much phi's colour changes over 5 mm at the rendered intersections, weighted by
    their opacity (``RadianceGenerator.colour_roughness``; stage 1, phi views only)."""
    body: BodyOutput
    """The posed body model of the batch."""
    w_radiance: torch.Tensor
    """Truncated mapping output of phi [B, w_dim]."""
    w_expression: torch.Tensor
    """Mapping output of De [B, w_dim]."""

    def weighted(self, weights) -> dict[str, torch.Tensor]:
        """{term: weight * value} for the non-zero weights of a ``LossWeights``."""
        out = {}
        for term, weight_name in AUX_LOSS_WEIGHTS.items():
            weight = float(getattr(weights, weight_name))
            if weight != 0.0:
                out[weight_name] = weight * getattr(self, term).float().mean()
        return out


@dataclass
class Rendered:
    """The images of one generator call; depths are camera z-depths in metres."""

    portrait: torch.Tensor  # [B, 3, H, W] in [-1, 1]
    portrait_depth: torch.Tensor  # [B, 1, H, W]
    portrait_alpha: torch.Tensor  # [B, 1, H, W]
    face: torch.Tensor | None = None  # [B, 3, Hf, Wf]
    face_depth: torch.Tensor | None = None
    face_alpha: torch.Tensor | None = None
    face_cameras: Cameras | None = None
    aux: Aux | None = None
