"""Generator configuration: one typed dataclass and its presets (``PRESETS``: ``paper``, ``tiny``).

All geometric quantities of the radiance manifolds are in canonical units (scene metres divided
by ``frames.SCENE_SCALE``, so the portrait fits in [-1, 1]^3).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

from aniportraitgan.configs import Config
from aniportraitgan.errors import InputError

# Truncation psi of rendering for viewing (the released model's default); training uses 1.
DEFAULT_PSI = 0.7
# psi 0 renders the average identity, 1 no truncation; outside that it extrapolates into garbage.
PSI_RANGE = (0.0, 1.0)


def check_psi(psi, name: str = "psi") -> float:
    """psi as a float in ``PSI_RANGE``; ``InputError`` naming ``name`` otherwise (every renderer
    of identities and the command lines use this one check)."""
    if isinstance(psi, bool) or not isinstance(psi, (int, float)) or not math.isfinite(psi) \
            or not PSI_RANGE[0] <= psi <= PSI_RANGE[1]:
        raise InputError(f"{name} must be a number in [{PSI_RANGE[0]:g}, {PSI_RANGE[1]:g}] "
                         f"(0: the average identity, 1: no truncation), got {psi!r}")
    return float(psi)


@dataclass
class GeneratorConfig(Config):
    """Sizes and switches of every generator network, and how it renders."""

    # Latent sizes.
    id_dim: int = 40
    """Identity code z_id (the body model's shape coefficients)."""
    exp_dim: int = 52
    """Expression code z_exp (the body model's ARKit blendshapes)."""
    noise_dim: int = 256
    """Appearance noise eps."""

    # Manifold predictor M.
    manifold_hidden: int = 128
    """Width of M's residual MLP (x -> s)."""
    manifold_layers: int = 3
    """Depth of M's residual MLP."""
    num_levels: int = 24
    """Number of radiance manifolds (iso-surfaces of s)."""
    shell_center: tuple[float, float, float] = (0.0, 0.0, -1.5)
    """Centre of the concentric shells s starts as (the GRAM-style initialisation: s is the
    distance to this point plus M's learned residual)."""
    level_min: float = 0.9
    """Innermost shell radius."""
    level_max: float = 2.1
    """Outermost shell radius."""

    # Radiance generator phi: FiLM-SIREN conditioned on (z_id, eps).
    radiance_hidden: int = 256
    """Width of phi."""
    radiance_layers: int = 8
    """Depth of phi."""
    radiance_features: int = 16
    """Feature channels beside colour and opacity."""
    mapping_hidden: int = 256
    """Width of phi's mapping network."""
    mapping_layers: int = 3
    """Depth of phi's mapping network."""
    radiance_input_scale: float = 1.0
    """Scale of phi's input coordinates: the spatial frequencies it starts with (pi-GAN's, for a
    box the face fills; here the face is about a fifth of the canonical box's width)."""
    radiance_template: int = 0
    """Side (voxels) of phi's template, 0 for none (the paper's phi). The template is a learned
    grid of colour and opacity logits shared by every identity, around the head of the mean
    person, which each person reads through an affine frame fitted to their face landmarks
    (``Generator.template_frame``), added to phi's logits; it starts at zero (no change). A
    SIREN of the sizes a CPU can train draws no eyes or mouth (docs/training.md); a grid holds
    them where the mesh puts them."""
    radiance_template_extent: float = 0.45
    """Half side of the template's cube, canonical units (0.45: 16 cm, chin to crown)."""

    # Expression deformation De: FiLM-SIREN conditioned on (z_id, z_exp).
    exp_hidden: int = 128
    """Width of De."""
    exp_layers: int = 3
    """Depth of De."""
    exp_mapping_hidden: int = 256
    """Width of De's mapping network."""
    exp_mapping_layers: int = 3
    """Depth of De's mapping network."""
    exp_mesh_guided: bool = True
    """Mesh guidance: each sample's inverse transform also undoes the body model's expression
    displacement at its nearest vertex, and De learns a residual (see deformation.py)."""
    exp_input_scale: float = 0.25
    """Scale of De's input coordinates, i.e. the spatial frequency of its displacement field. At
    1 (the plain SIREN) the GAN turned De into high-frequency noise (residual changing by 2.4
    mm over 2 mm after 400 tiny steps, speckled faces; zeroing the residual of the demo model
    lowered its FID); 0.25 kept it 7x smoother (0.34 mm) with the same imitation loss."""
    exp_offsets_after_dp: bool = True
    """With mesh guidance and Dp: the expression offsets bypass Dp (their own volume, upsampled
    and added to x_p) instead of riding in the transforms Dp averages. Inside Dp, its kernels
    averaged an eyelid's few-millimetre motion with the still skin around it (at 64 px a tiny
    Dp blends 9 x 9 half-resolution pixels): blinks moved the face by 0.3 of 8-bit levels
    against the data's 5.4 (docs/training.md, "Expression offsets past Dp")."""

    # Pose deformation Dp: two Conv3d (D, H, W) kernels over the transform volume.
    dp_kernel: tuple[int, int, int] = (5, 9, 9)
    """Dp's Conv3d kernel (D, H, W); odd sizes."""
    dp_shared_blend: bool = False
    """True: Dp as two learned convex blends shared by the 16 transform entries (softmax
    kernels), so that it can only smooth transforms across skinning boundaries. False: the
    paper's two 16 -> 16 Conv3d, which can also rescale, shear and damp rotations (the bundled
    model's turns heads by 0.39 of the asked yaw; docs/evaluation.md, "Dp and head pose")."""
    dp_half_resolution: bool = True
    """Nearest-vertex lookup at half resolution (rays and depth), then x2."""
    dp_volume_max: int = 64
    """Cap on the transform volume's ray resolution: 64 is half of the 128 training resolution,
    so a 512 render reuses the deformation field Dp was trained on (upsampled) instead of a finer
    volume on which Dp's fixed-size kernels would smooth 4x less; 0 disables the cap."""
    use_dp: bool = True
    """False: plain nearest-vertex skinning (the paper's "w/o Dp" ablation)."""
    dp_dense_upsample_max: int = 1 << 26
    """Views whose full-resolution transform volume has at most this many numbers are upsampled
    densely (fast backward); larger ones (e.g. 512 x 512 renders) are read per ray chunk."""
    nn_chunk: int = 65536
    """Sample points per nearest-vertex distance chunk."""

    # Manifold super-resolution U (stage 2).
    sr_map_resolution: int = 128
    """Side of the radiance maps U reads."""
    sr_scale: int = 4
    """U's upsampling (sub-pixel x2 convolutions): 4 is 128 -> 512."""
    sr_channels: int = 32
    """U's feature channels."""
    sr_growth: int = 16
    """Growth channels of U's dense blocks."""
    sr_blocks: int = 4
    """RRDB blocks of U (3 dense blocks each)."""
    sr_style_dim: int = 256
    """Width of U's style (mapping) code."""
    sr_map_depth_samples: int = 96
    """Samples along the orthographic z rays of the maps."""

    # Rendering.
    samples_per_ray: int = 64
    """Ray samples between the bounding box's near and far depths."""
    bbox_min: tuple[float, float, float] = (-1.0, -1.0, -1.0)
    """Portrait bounding box (canonical units), lower corner."""
    bbox_max: tuple[float, float, float] = (1.0, 1.0, 1.0)
    """Portrait bounding box (canonical units), upper corner."""
    geometry_max_resolution: int = 0
    """Fast rendering: views larger than this evaluate the deformation and M on a ray grid of
    at most this size and interpolate them per pixel (0 = every pixel, the paper's way)."""
    face_bound_radius: float = 0.25
    """Metres around the posed head centre sampled by face views."""
    envelope_distance: float = 0.0
    """Metres: intersections farther than this from the posed mesh lose their opacity (fading
    to zero over the next ENVELOPE_RAMP), which removes floaters the deformation maps onto
    the head from far away (0 = off, the paper's way). Long hair lies within 12 cm."""
    ray_chunk: int = 16384
    """Rays per chunk for the per-sample networks (memory bound)."""
    aux_points: int = 4096
    """Points per view for the De loss terms (eqs. 10, 12)."""

    w_avg_beta: float = 0.995
    """Truncation: EMA decay of the running average of mapping outputs during training."""

    def __post_init__(self) -> None:
        ints = {
            "id_dim": self.id_dim, "exp_dim": self.exp_dim, "noise_dim": self.noise_dim,
            "num_levels": self.num_levels, "samples_per_ray": self.samples_per_ray,
            "radiance_layers": self.radiance_layers, "exp_layers": self.exp_layers,
            "sr_map_resolution": self.sr_map_resolution, "sr_map_depth_samples": self.sr_map_depth_samples,
        }
        for name, value in ints.items():
            if int(value) < 1:
                raise InputError(f"GeneratorConfig.{name} must be >= 1, got {value}")
        if self.samples_per_ray < 2 or self.sr_map_depth_samples < 2:
            raise InputError("GeneratorConfig needs at least 2 samples per ray")
        if self.sr_scale not in (1, 2, 4):
            raise InputError(f"GeneratorConfig.sr_scale must be 1, 2 or 4, got {self.sr_scale}")
        if int(self.radiance_template) < 0:
            raise InputError(f"GeneratorConfig.radiance_template must be >= 0 (0: none), got {self.radiance_template}")
        for name in ("exp_input_scale", "radiance_input_scale", "radiance_template_extent"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise InputError(f"GeneratorConfig.{name} must be > 0, got {value}")
        if not (math.isfinite(self.envelope_distance) and self.envelope_distance >= 0):
            raise InputError(f"GeneratorConfig.envelope_distance must be >= 0 metres (0: off), got {self.envelope_distance}")
        if not self.level_min < self.level_max:
            raise InputError("GeneratorConfig.level_min must be below level_max")
        if any(k % 2 == 0 for k in self.dp_kernel):
            raise InputError(f"GeneratorConfig.dp_kernel must be odd, got {self.dp_kernel}")
        self.shell_center = tuple(float(v) for v in self.shell_center)
        self.bbox_min = tuple(float(v) for v in self.bbox_min)
        self.bbox_max = tuple(float(v) for v in self.bbox_max)
        self.dp_kernel = tuple(int(v) for v in self.dp_kernel)

    @property
    def sr_output_resolution(self) -> int:
        return self.sr_map_resolution * self.sr_scale

    # Presets (``PRESETS`` below) ------------------------------------------------------------
    @classmethod
    def preset(cls, name: str, **overrides) -> "GeneratorConfig":
        if name not in PRESETS:
            raise InputError(f"unknown generator preset {name!r}; choose one of {sorted(PRESETS)}")
        return cls(**{**PRESETS[name], **overrides})

    @classmethod
    def paper(cls, **overrides) -> "GeneratorConfig":
        return cls.preset("paper", **overrides)

    @classmethod
    def tiny(cls, **overrides) -> "GeneratorConfig":
        return cls.preset("tiny", **overrides)

    # Serialisation (checkpoints store the config as JSON) ---------------------------------
    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "GeneratorConfig":
        # Configs saved before these fields existed describe generators trained without them.
        return super().from_dict({**LEGACY_DEFAULTS, **data})


# The five sub-networks by their paper names (Generator.SUBNETWORK_NAMES, in this order) and the
# fields that size only that sub-network: a generator whose sub-network starts afresh
# (train --init-fresh) may differ from --init in them.
SUBNETWORK_FIELDS: dict[str, tuple[str, ...]] = {
    "M": ("manifold_hidden", "manifold_layers"),
    "phi": ("radiance_hidden", "radiance_layers", "mapping_hidden", "mapping_layers", "radiance_input_scale",
            "radiance_template", "radiance_template_extent"),
    "U": ("sr_channels", "sr_growth", "sr_blocks", "sr_style_dim"),
    "Dp": ("dp_kernel", "dp_shared_blend"),
    "De": ("exp_hidden", "exp_layers", "exp_mapping_hidden", "exp_mapping_layers", "exp_input_scale"),
}

# Field values of generators saved before the field existed (differing from today's defaults).
LEGACY_DEFAULTS: dict[str, Any] = {"exp_mesh_guided": False, "exp_input_scale": 1.0, "exp_offsets_after_dp": False}

# Presets: the fields that differ from the defaults.
PRESETS: dict[str, dict[str, Any]] = {
    # Sizes of the paper (Fig. 10 and GRAM): hidden 256, 24 manifolds, 64 samples, 128 -> 512.
    "paper": {},
    # A few-thousand-parameter generator that trains on 2 CPU cores in seconds.
    "tiny": dict(
        noise_dim=16,
        manifold_hidden=16, manifold_layers=2, num_levels=6,
        radiance_hidden=32, radiance_layers=2, radiance_features=4,
        mapping_hidden=32, mapping_layers=2,
        exp_hidden=16, exp_layers=3, exp_mapping_hidden=32, exp_mapping_layers=2,
        dp_kernel=(3, 5, 5), nn_chunk=16384,
        sr_map_resolution=32, sr_scale=2, sr_channels=8, sr_growth=4, sr_blocks=1,
        sr_style_dim=16, sr_map_depth_samples=24,
        samples_per_ray=16, ray_chunk=8192,
    ),
}
