"""Generator configuration: one typed dataclass with the `paper` and `tiny` presets.

All geometric quantities of the radiance manifolds are in canonical units (scene metres divided
by ``frames.SCENE_SCALE``, so the portrait fits in [-1, 1]^3).
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass

from aniportraitgan.errors import InputError

# Truncation psi of rendering for viewing (the released model's default); training uses 1.
DEFAULT_PSI = 0.7


@dataclass
class GeneratorConfig:
    # Latent sizes (the body model's id/exp sizes; eps is the appearance noise).
    id_dim: int = 40
    exp_dim: int = 52
    noise_dim: int = 256

    # Manifold predictor M: x -> s. s starts as the distance to `shell_center` (concentric
    # shells, the GRAM-style initialisation) plus a learned residual MLP.
    manifold_hidden: int = 128
    manifold_layers: int = 3
    num_levels: int = 24
    shell_center: tuple[float, float, float] = (0.0, 0.0, -1.5)
    level_min: float = 0.9  # innermost shell radius
    level_max: float = 2.1  # outermost shell radius

    # Radiance generator phi: FiLM-SIREN conditioned on (z_id, eps).
    radiance_hidden: int = 256
    radiance_layers: int = 8
    radiance_features: int = 16  # extra feature channels beside colour and opacity
    mapping_hidden: int = 256
    mapping_layers: int = 3

    # Expression deformation De: FiLM-SIREN (3 layers) conditioned on (z_id, z_exp).
    exp_hidden: int = 128
    exp_layers: int = 3
    exp_mapping_hidden: int = 256
    exp_mapping_layers: int = 3

    # Mesh guidance: each sample's inverse transform also undoes the body model's expression
    # displacement at its nearest vertex, and De learns a residual (see deformation.py).
    exp_mesh_guided: bool = True
    # Scale of De's input coordinates, i.e. the spatial frequency of its displacement field. At
    # 1 (the plain SIREN) the GAN turned De into high-frequency noise (residual changing by 2.4
    # mm over 2 mm after 400 tiny steps, speckled faces; zeroing the residual of the demo model
    # lowered its FID); 0.25 kept it 7x smoother (0.34 mm) with the same imitation loss.
    exp_input_scale: float = 0.25

    # Pose deformation Dp: two Conv3d (D, H, W) kernels over the transform volume.
    dp_kernel: tuple[int, int, int] = (5, 9, 9)
    dp_half_resolution: bool = True  # nearest-vertex lookup at half resolution (rays and depth), then x2
    # Cap on the transform volume's ray resolution: 64 is half of the 128 training resolution, so
    # a 512 render reuses the deformation field Dp was trained on (upsampled) instead of a finer
    # volume on which Dp's fixed-size kernels would smooth 4x less; 0 disables the cap.
    dp_volume_max: int = 64
    use_dp: bool = True  # False: plain nearest-vertex skinning (the paper's "w/o Dp" ablation)
    # Views whose full-resolution transform volume has at most this many numbers are upsampled
    # densely (fast backward); larger ones (e.g. 512 x 512 renders) are read per ray chunk.
    dp_dense_upsample_max: int = 1 << 26
    nn_chunk: int = 65536  # sample points per nearest-vertex distance chunk

    # Manifold super-resolution U (stage 2).
    sr_map_resolution: int = 128
    sr_scale: int = 4  # two sub-pixel x2 convolutions: 128 -> 512
    sr_channels: int = 32
    sr_growth: int = 16
    sr_blocks: int = 4  # RRDB blocks (3 dense blocks each)
    sr_style_dim: int = 256
    sr_map_depth_samples: int = 96  # samples along the orthographic z rays of the maps

    # Rendering.
    samples_per_ray: int = 64
    # Portrait bounding box in canonical units; rays are sampled between its near/far depths.
    bbox_min: tuple[float, float, float] = (-1.0, -1.0, -1.0)
    bbox_max: tuple[float, float, float] = (1.0, 1.0, 1.0)
    # Fast rendering: views larger than this evaluate the deformation and M on a ray grid of
    # at most this size and interpolate them per pixel (0 = every pixel, the paper's way).
    geometry_max_resolution: int = 0
    face_bound_radius: float = 0.25  # metres around the posed head centre sampled by face views
    ray_chunk: int = 16384  # rays per chunk for the per-sample networks (memory bound)
    aux_points: int = 4096  # points per view for the De loss terms (eqs. 10, 12)

    # Truncation: EMA decay of the running average of mapping outputs during training.
    w_avg_beta: float = 0.995

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
        if not (math.isfinite(self.exp_input_scale) and self.exp_input_scale > 0):
            raise InputError(f"GeneratorConfig.exp_input_scale must be > 0, got {self.exp_input_scale}")
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

    # Presets -----------------------------------------------------------------------------
    @classmethod
    def paper(cls, **overrides) -> "GeneratorConfig":
        """Sizes of the paper (Fig. 10 and GRAM): hidden 256, 24 manifolds, 64 samples, 128 -> 512."""
        return cls(**overrides)

    @classmethod
    def tiny(cls, **overrides) -> "GeneratorConfig":
        """A few-thousand-parameter generator that trains on 2 CPU cores in seconds."""
        base = dict(
            noise_dim=16,
            manifold_hidden=16, manifold_layers=2, num_levels=6,
            radiance_hidden=32, radiance_layers=2, radiance_features=4,
            mapping_hidden=32, mapping_layers=2,
            exp_hidden=16, exp_layers=3, exp_mapping_hidden=32, exp_mapping_layers=2,
            dp_kernel=(3, 5, 5), nn_chunk=16384,
            sr_map_resolution=32, sr_scale=2, sr_channels=8, sr_growth=4, sr_blocks=1,
            sr_style_dim=16, sr_map_depth_samples=24,
            samples_per_ray=16, ray_chunk=8192,
        )
        base.update(overrides)
        return cls(**base)

    @classmethod
    def preset(cls, name: str, **overrides) -> "GeneratorConfig":
        if name not in PRESETS:
            raise InputError(f"unknown generator preset {name!r}; choose one of {sorted(PRESETS)}")
        return getattr(cls, name)(**overrides)

    # Serialisation (checkpoints store the config as JSON) ---------------------------------
    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict) -> "GeneratorConfig":
        data = dict(data)
        # Configs saved before these fields existed describe generators trained without them.
        data.setdefault("exp_mesh_guided", False)
        data.setdefault("exp_input_scale", 1.0)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise InputError(f"unknown GeneratorConfig fields: {unknown}")
        return cls(**data)


PRESETS = ("paper", "tiny")
