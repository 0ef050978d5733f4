"""Typed training configuration: presets `tiny` and `paper`, loss weights, ablation switches.

Every number the trainer uses lives here so that a run folder's `config.json` describes the run
completely, and a checkpoint can be checked against the configuration that asks to resume it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from aniportraitgan.errors import InputError, UserError


@dataclass
class LossWeights:
    """Weights of every training loss (paper section 3.5).

    Adversarial weights are the paper's (lambda_whole 0.1, lambda_face 1.0, lambda_torso 0.5);
    they scale the generator's non-saturating term of each discriminator. Each discriminator's
    own loss is unweighted: with one Adam optimiser per discriminator a constant factor would
    only rescale its R1 balance, which `r1_gamma` already sets.

    The deformation losses follow AniFaceGAN's recipe (eqs. 9-13); the paper does not list their
    weights, so these defaults are ours, chosen so that each term is of order 0.1-1 at the start
    of training with the generator's units (canonical space, where the portrait fits in [-1, 1]^3):
    - `landmark` (eq. 9): squared 3D landmark distance in centimetres, mean over the 68 points,
      between the body model built from the input codes and from R's estimate of the face image.
    - `imitation` (eq. 10): squared difference between De's displacement and the body model's
      expression displacement at the nearest mesh point (canonical units).
    - `pose_smooth` (eq. 11), `exp_smooth` (eq. 12), `exp_minimal` (eq. 13): the generator's
      regularisers, as returned in its aux dict.
    """

    whole: float = 0.1
    face: float = 1.0
    torso: float = 0.5
    # R1 penalty gamma/2 * E||grad_x D(x)||^2 on real images, per discriminator.
    r1_gamma: float = 1.0
    # Lazy regularisation (StyleGAN2): R1 every `r1_every` D steps, scaled by r1_every.
    r1_every: int = 4
    landmark: float = 1.0
    imitation: float = 100.0
    pose_smooth: float = 10.0
    exp_smooth: float = 10.0
    exp_minimal: float = 1.0


@dataclass
class AblationConfig:
    """Switches for the rows of the paper's Table 2."""

    no_face_disc: bool = False  # drop D_face
    no_torso_disc: bool = False  # drop D_torso
    face_from_crop: bool = False  # D_face sees faces cropped from the portrait, not the face camera
    no_dp: bool = False  # no pose-deformation CNN Dp: plain nearest-vertex skinning


@dataclass
class DiscriminatorConfig:
    """StyleGAN2-style residual discriminator: channels at a feature map of side `s` are
    min(channel_base // s, channel_max)."""

    channel_base: int = 16384
    channel_max: int = 512
    mbstd_group: int = 4
    mbstd_channels: int = 1


@dataclass
class StageConfig:
    """One training stage (paper section 3.6)."""

    portrait_resolution: int
    face_resolution: int
    batch_size: int  # global batch (split across processes)
    g_lr: float
    d_lr: float
    betas: tuple[float, float] = (0.0, 0.99)
    steps: int = 1000  # default length; `--steps` overrides
    # Learning-rate multipliers of generator sub-networks (paper names M, phi, U, Dp, De).
    # Dp starts as an averaging filter whose weights are 1/(kernel volume) ~ 1e-3 across 16x16
    # channel pairs: at the common rate one Adam step (which moves every weight by about lr)
    # would change its output by O(1), so it learns 100x slower.
    lr_scale: dict[str, float] = field(default_factory=lambda: {"Dp": 0.01})


@dataclass
class TrainConfig:
    name: str
    generator_preset: str  # GeneratorConfig.preset(name)
    stage1: StageConfig
    stage2: StageConfig
    disc: DiscriminatorConfig = field(default_factory=DiscriminatorConfig)
    loss: LossWeights = field(default_factory=LossWeights)
    ablation: AblationConfig = field(default_factory=AblationConfig)
    # GeneratorConfig fields that differ from the preset (e.g. fewer samples per ray for tests).
    generator_overrides: dict[str, Any] = field(default_factory=dict)
    # EMA half-life in thousands of images, with the StyleGAN2 ramp-up (fraction of images seen).
    ema_kimg: float = 10.0
    ema_rampup: float | None = 0.05
    # Mixed precision on CUDA only: "bf16", "fp16" or "none". CPU always runs in fp32.
    amp: str = "bf16"
    # Resolution at which R reads generated faces (R is trained at this size).
    facerecon_resolution: int = 64
    seed: int = 0
    checkpoint_every: int = 500  # steps between checkpoints ("last")
    keep_every: int = 5000  # checkpoints at multiples of this are kept for good
    log_every: int = 10
    image_every: int = 500
    num_workers: int = 2
    # Number of samples in logged image grids.
    grid_size: int = 8

    # ------------------------------------------------------------------ presets
    @staticmethod
    def preset(name: str) -> "TrainConfig":
        if name == "tiny":
            return TrainConfig(
                name="tiny",
                generator_preset="tiny",
                stage1=StageConfig(32, 32, batch_size=4, g_lr=1e-3, d_lr=1e-3, steps=200),
                stage2=StageConfig(64, 32, batch_size=4, g_lr=1e-3, d_lr=1e-3, steps=100),
                disc=DiscriminatorConfig(channel_base=512, channel_max=32, mbstd_group=2),
                loss=LossWeights(r1_gamma=0.1, r1_every=2),
                ema_kimg=0.05,
                ema_rampup=None,
                facerecon_resolution=32,
                checkpoint_every=50,
                keep_every=1000,
                log_every=5,
                image_every=50,
                num_workers=0,
                grid_size=4,
            )
        if name == "paper":
            return TrainConfig(
                name="paper",
                generator_preset="paper",
                stage1=StageConfig(128, 128, batch_size=32, g_lr=2e-5, d_lr=2e-4, steps=100_000),
                stage2=StageConfig(512, 256, batch_size=16, g_lr=1e-4, d_lr=2e-4, steps=50_000),
                disc=DiscriminatorConfig(channel_base=16384, channel_max=512, mbstd_group=4),
                loss=LossWeights(r1_gamma=1.0, r1_every=4),
            )
        raise UserError(f"unknown training config {name!r}: choose 'tiny' or 'paper'")

    def stage(self, index: int) -> StageConfig:
        if index == 1:
            return self.stage1
        if index == 2:
            return self.stage2
        raise InputError(f"stage must be 1 or 2, got {index!r}")

    # ------------------------------------------------------------ serialisation
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @staticmethod
    def from_dict(d: dict[str, Any]) -> "TrainConfig":
        try:
            return _build(TrainConfig, d)
        except (TypeError, KeyError, ValueError) as exc:
            raise InputError(f"invalid training config: {exc}") from exc

    @staticmethod
    def from_json(text: str) -> "TrainConfig":
        try:
            d = json.loads(text)
        except json.JSONDecodeError as exc:
            raise InputError(f"training config is not valid JSON: {exc}") from exc
        return TrainConfig.from_dict(d)

    def model_signature(self) -> str:
        """Hash of everything that fixes parameter shapes and what the networks mean.

        A checkpoint can resume a run only under the same signature; schedules, logging and
        step counts may change between runs."""
        d = self.to_dict()
        keep = {
            "generator_preset": d["generator_preset"],
            "generator_overrides": d["generator_overrides"],
            "disc": d["disc"],
            "ablation": d["ablation"],
            "resolutions": [
                (d[s]["portrait_resolution"], d[s]["face_resolution"]) for s in ("stage1", "stage2")
            ],
            "facerecon_resolution": d["facerecon_resolution"],
        }
        return hashlib.sha256(json.dumps(keep, sort_keys=True).encode()).hexdigest()[:16]

    def validate(self) -> None:
        for idx in (1, 2):
            st = self.stage(idx)
            for res in (st.portrait_resolution, st.face_resolution):
                if res < 8 or res & (res - 1):
                    raise InputError(f"stage {idx}: resolutions must be powers of two >= 8, got {res}")
            if st.portrait_resolution % 4:
                raise InputError("portrait resolution must be divisible by 4 (torso crop)")
            if st.batch_size < 1:
                raise InputError(f"stage {idx}: batch_size must be >= 1")
        if self.amp not in ("bf16", "fp16", "none"):
            raise InputError(f"amp must be 'bf16', 'fp16' or 'none', got {self.amp!r}")
        if self.loss.r1_every < 1:
            raise InputError("r1_every must be >= 1")


def _build(cls: type, d: dict[str, Any]) -> Any:
    """Rebuild nested dataclasses from a dict (unknown keys are an error, missing ones default)."""
    kwargs = {}
    names = {f.name: f for f in dataclasses.fields(cls)}
    for key, value in d.items():
        if key not in names:
            raise KeyError(f"unknown field {key!r} in {cls.__name__}")
        sub = _FIELD_TYPES.get((cls.__name__, key))
        if sub is not None and isinstance(value, dict):
            value = _build(sub, value)
        elif key == "betas":
            value = tuple(value)
        kwargs[key] = value
    return cls(**kwargs)


_FIELD_TYPES: dict[tuple[str, str], type] = {
    ("TrainConfig", "stage1"): StageConfig,
    ("TrainConfig", "stage2"): StageConfig,
    ("TrainConfig", "disc"): DiscriminatorConfig,
    ("TrainConfig", "loss"): LossWeights,
    ("TrainConfig", "ablation"): AblationConfig,
}


# ------------------------------------------------------------ generator / body helpers
def generator_config_from_dict(d: dict[str, Any]):
    """Rebuild the generator's config dataclass from its asdict() form (as saved in checkpoints)."""
    from aniportraitgan.generator import GeneratorConfig

    if hasattr(GeneratorConfig, "from_dict"):
        return GeneratorConfig.from_dict(d)
    names = {f.name for f in dataclasses.fields(GeneratorConfig)}
    unknown = set(d) - names
    if unknown:
        raise InputError(f"generator config has unknown fields {sorted(unknown)}")
    return GeneratorConfig(**d)


def generator_config_to_dict(cfg) -> dict[str, Any]:
    if hasattr(cfg, "to_dict"):
        return cfg.to_dict()
    return dataclasses.asdict(cfg)


def load_body_model(device="cpu"):
    from aniportraitgan.body import PortraitBodyModel

    return PortraitBodyModel.load(device=device)
