"""Typed training configuration: loss weights, ablation switches, discriminators, the two
stages, and the presets ``tiny``, ``small`` and ``paper`` (``PRESETS``, at the end).

Every number the trainer uses lives here so that a run folder's `config.json` describes the run
completely, and a checkpoint can be checked against the configuration that asks to resume it.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from typing import Any, Mapping

from aniportraitgan import artefacts
from aniportraitgan.configs import Config, UnknownFields
from aniportraitgan.errors import InputError, UserError
from aniportraitgan.images import MIN_RESOLUTION


@dataclass
class LossWeights(Config):
    """Weights of every training loss (paper section 3.5).

    Adversarial weights are the paper's (lambda_whole 0.1, lambda_face 1.0, lambda_torso 0.5);
    they scale the generator's non-saturating term of each discriminator. Each discriminator's
    own loss is unweighted: with one Adam optimiser per discriminator a constant factor would
    only rescale its R1 balance, which `r1_gamma` already sets.

    The deformation losses follow AniFaceGAN's recipe (eqs. 9-13); the paper does not list their
    weights, so these defaults are ours, chosen so that each term is of order 0.1-1 at the start
    of training with the generator's units (canonical space, where the portrait fits in [-1, 1]^3).
    """

    whole: float = 0.1
    """lambda_whole: the generator's term against D_whole."""
    face: float = 1.0
    """lambda_face: the generator's term against D_face."""
    torso: float = 0.5
    """lambda_torso: the generator's term against D_torso."""
    r1_gamma: float = 1.0
    """R1 penalty gamma/2 * E||grad_x D(x)||^2 on real images, per discriminator."""
    r1_every: int = 4
    """Lazy regularisation (StyleGAN2): R1 every `r1_every` D steps, scaled by r1_every."""
    landmark: float = 1.0
    """Eq. 9: squared 3D landmark distance in centimetres, mean over the 68 points, between the
    body model built from the input codes and from R's estimate of the face image."""
    imitation: float = 100.0
    """Eq. 10: squared difference between De's displacement and the body model's expression
    displacement at the nearest mesh point (canonical units)."""
    pose_smooth: float = 10.0
    """Eq. 11: the generator's pose-deformation smoothness regulariser."""
    exp_smooth: float = 10.0
    """Eq. 12: the generator's expression-deformation smoothness regulariser."""
    exp_minimal: float = 1.0
    """Eq. 13: the generator's minimal expression-deformation regulariser."""
    template_smooth: float = 0.0
    """Total-variation prior on phi's template (``GeneratorConfig.radiance_template``): the mean
    squared difference of neighbouring voxels' logits. Ours, not the paper's (it has no template);
    0 turns it off, and a generator without a template ignores it."""
    colour_smooth: float = 0.0
    """Smoothness prior on phi's colour (stage 1): the opacity-weighted mean squared RGB change
    between 1024 random ray-manifold intersections per ray chunk and the same points moved 5 mm
    (``Aux.colour_rough``, logged as ``colour_smooth``). Ours, not the paper's: the GAN draws
    dark stripes into phi's colour at CPU sizes (docs/training.md); 0 turns it off."""


@dataclass
class AblationConfig(Config):
    """Switches for the rows of the paper's Table 2."""

    no_face_disc: bool = False
    """Drop D_face."""
    no_torso_disc: bool = False
    """Drop D_torso."""
    face_from_crop: bool = False
    """D_face sees faces cropped from the portrait, not the face camera."""
    no_dp: bool = False
    """No pose-deformation CNN Dp: plain nearest-vertex skinning (GeneratorConfig.use_dp off)."""


@dataclass
class DiscriminatorConfig(Config):
    """StyleGAN2-style residual discriminator: channels at a feature map of side `s` are
    min(channel_base // s, channel_max)."""

    channel_base: int = 16384
    """Channel budget: a feature map of side s has channel_base // s channels (capped)."""
    channel_max: int = 512
    """Cap on the channels of any feature map."""
    mbstd_group: int = 4
    """Minibatch standard deviation group size."""
    mbstd_channels: int = 1
    """Minibatch standard deviation feature channels."""


@dataclass
class StageConfig(Config):
    """One training stage (paper section 3.6)."""

    portrait_resolution: int
    """Side of generated and real portraits (a power of two, divisible by 4)."""
    face_resolution: int
    """Side of generated and real faces (a power of two)."""
    batch_size: int
    """Global batch (split across processes)."""
    g_lr: float
    """Generator learning rate."""
    d_lr: float
    """Discriminator learning rate."""
    betas: tuple[float, float] = (0.0, 0.99)
    """Adam betas of both optimisers."""
    steps: int = 1000
    """Default length; `--steps` overrides."""
    lr_scale: dict[str, float] = field(default_factory=lambda: {"Dp": 0.01})
    """Learning-rate multipliers of generator sub-networks (paper names M, phi, U, Dp, De).
    Dp starts as an averaging filter whose weights are 1/(kernel volume) ~ 1e-3 across 16x16
    channel pairs: at the common rate one Adam step (which moves every weight by about lr)
    would change its output by O(1), so it learns 100x slower."""


@dataclass
class TrainConfig(Config):
    """A whole training run: the generator it trains, both stages, losses and schedules."""

    name: str
    """The preset this config started from (logged, shown in resume errors)."""
    generator_preset: str
    """GeneratorConfig.preset(name) of the trained generator."""
    stage1: StageConfig
    """Stage 1: every network but U, at 128 in the paper."""
    stage2: StageConfig
    """Stage 2: U alone, portrait 512 / face 256 in the paper."""
    disc: DiscriminatorConfig = field(default_factory=DiscriminatorConfig)
    """The discriminators of both stages."""
    loss: LossWeights = field(default_factory=LossWeights)
    """Loss weights."""
    ablation: AblationConfig = field(default_factory=AblationConfig)
    """Ablation switches (paper Table 2)."""
    generator_overrides: dict[str, Any] = field(default_factory=dict)
    """GeneratorConfig fields that differ from the preset (e.g. fewer samples per ray for tests)."""
    ema_kimg: float = 10.0
    """EMA half-life in thousands of images."""
    ema_rampup: float | None = 0.05
    """StyleGAN2 EMA ramp-up (fraction of images seen); None: off."""
    amp: str = "bf16"
    """Mixed precision on CUDA only: "bf16", "fp16" or "none". CPU always runs in fp32."""
    facerecon_resolution: int = 64
    """Resolution at which R reads generated faces (R is trained at this size)."""
    seed: int = 0
    """Seed of data order, latent sampling and initialisation."""
    checkpoint_every: int = 500
    """Steps between checkpoints ("last")."""
    keep_every: int = 5000
    """Checkpoints at multiples of this are kept for good."""
    log_every: int = 10
    """Steps between log lines and scalars."""
    image_every: int = 500
    """Steps between logged image grids."""
    num_workers: int = 2
    """Data-loading worker processes."""
    grid_size: int = 8
    """Number of samples in logged image grids."""
    compile_networks: bool = False
    """Speed-up (issue 13): torch.compile (dynamic shapes) of the generator's per-point networks M,
    phi and De, which fuses their elementwise work; same maths. The first step then compiles
    (minutes on a CPU: 163 s on 2 shared cores), later steps are faster (CPU time x0.82 at 64 px)."""
    reuse_fakes: bool = False
    """Speed-up (issue 13): each D step judges the previous G step's renders (detached) instead
    of rendering fresh ones without gradient (29% of a CPU step). The discriminators then see
    fakes one generator update old, which changes the GAN's dynamics: off until measured. A
    resumed run renders fresh fakes for its first D step (not bit-identical to an unbroken run)."""

    @staticmethod
    def preset(name: str) -> "TrainConfig":
        if name not in PRESETS:
            raise UserError(f"unknown training config {name!r}: choose one of {', '.join(sorted(PRESETS))}")
        return TrainConfig.from_dict({"name": name, "generator_preset": name, **copy.deepcopy(PRESETS[name])})

    def stage(self, index: int) -> StageConfig:
        if index == 1:
            return self.stage1
        if index == 2:
            return self.stage2
        raise InputError(f"stage must be 1 or 2, got {index!r}")

    def generator_config(self):
        """The GeneratorConfig this run trains (preset, overrides, the no_dp ablation)."""
        return artefacts.generator_config(self.to_dict())

    def model_signature(self) -> str:
        """Hash of everything that fixes parameter shapes and what the networks mean
        (``artefacts.model_signature``): a checkpoint resumes a run only under the same one."""
        return artefacts.model_signature(self.to_dict())

    # ------------------------------------------------------------ serialisation
    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "TrainConfig":
        try:
            return super().from_dict(d)
        except UnknownFields as exc:
            raise InputError(f"invalid training config: unknown field {exc.names[0]!r} in {exc.owner}") from exc
        except (InputError, TypeError, KeyError, ValueError) as exc:
            raise InputError(f"invalid training config: {exc}") from exc

    @classmethod
    def from_json(cls, text: str) -> "TrainConfig":
        try:
            d = json.loads(text)
        except json.JSONDecodeError as exc:
            raise InputError(f"training config is not valid JSON: {exc}") from exc
        return cls.from_dict(d)

    def validate(self) -> None:
        for idx in (1, 2):
            st = self.stage(idx)
            for res in (st.portrait_resolution, st.face_resolution):
                if res < MIN_RESOLUTION or res & (res - 1):
                    raise InputError(f"stage {idx}: resolutions must be powers of two >= {MIN_RESOLUTION}, got {res}")
            if st.portrait_resolution % 4:
                raise InputError("portrait resolution must be divisible by 4 (torso crop)")
            if st.batch_size < 1:
                raise InputError(f"stage {idx}: batch_size must be >= 1")
        if self.amp not in ("bf16", "fp16", "none"):
            raise InputError(f"amp must be 'bf16', 'fp16' or 'none', got {self.amp!r}")
        if self.loss.r1_every < 1:
            raise InputError("r1_every must be >= 1")


# ----------------------------------------------------------------------- presets
# The fields of each preset that differ from the defaults (name and generator_preset are the
# preset's name); ``TrainConfig.preset`` builds a fresh config from them.
# Trains in minutes on CPU (tests, smoke runs, the first 32 px leg of the bundled demo model).
_TINY: dict[str, Any] = {
    "stage1": dict(portrait_resolution=32, face_resolution=32, batch_size=4, g_lr=1e-3, d_lr=1e-3, steps=200),
    "stage2": dict(portrait_resolution=64, face_resolution=32, batch_size=4, g_lr=1e-3, d_lr=1e-3, steps=100),
    "disc": dict(channel_base=512, channel_max=32, mbstd_group=2),
    "loss": dict(r1_gamma=0.1, r1_every=2),
    "ema_kimg": 0.05, "ema_rampup": None, "facerecon_resolution": 32, "checkpoint_every": 50,
    "keep_every": 1000, "log_every": 5, "image_every": 50, "num_workers": 0, "grid_size": 4,
}

PRESETS: dict[str, dict[str, Any]] = {
    # The paper's resolutions, batches and learning rates (section 3.6).
    "paper": {
        "stage1": dict(portrait_resolution=128, face_resolution=128, batch_size=32, g_lr=2e-5, d_lr=2e-4, steps=100_000),
        "stage2": dict(portrait_resolution=512, face_resolution=256, batch_size=16, g_lr=1e-4, d_lr=2e-4, steps=50_000),
    },
    "tiny": _TINY,
    # The bundled CPU demo model: tiny, with the tiny generator fine-tuned at portrait and face 64
    # (R at 64). reuse_fakes: 914 vs 670 steps in 12 CPU minutes from the same start, with lower
    # FID (portrait 276 vs 301, face 312 vs 356, 500 vs 500 samples) and higher exp_corr (0.08 vs
    # 0.06); ema_kimg: a half-life of 125 steps at batch 4 instead of tiny's 12 (docs/training.md).
    "small": {
        **_TINY,
        "generator_preset": "tiny",
        "stage1": dict(portrait_resolution=64, face_resolution=64, batch_size=4, g_lr=1e-3, d_lr=1e-3, steps=20_000),
        "stage2": dict(portrait_resolution=128, face_resolution=64, batch_size=4, g_lr=1e-3, d_lr=1e-3, steps=2000),
        "ema_kimg": 0.5, "facerecon_resolution": 64, "checkpoint_every": 100, "keep_every": 100_000,
        "log_every": 25, "image_every": 250, "reuse_fakes": True,
    },
}
