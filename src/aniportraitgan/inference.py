"""Load a trained generator for inference (``generate``, ``animate``, ``demo``).

``ckpt`` may be
* ``"demo"``: the bundled checkpoint ``aniportraitgan/assets/demo_generator.safetensors``;
* an exported generator file (``training.checkpoint.export_generator``: EMA weights, with the
  generator config as JSON in the safetensors metadata);
* a training checkpoint folder ``RUN/checkpoints/s<stage>-<step>/`` (its ``G_ema.`` weights);
* a run folder ``RUN/`` (its newest checkpoint).

Every failure is an ``AssetError`` that names the file and the problem: missing, corrupted
(unreadable, checksum mismatch, NaN weights), not a generator, weights that do not fit the
stored config, or a config other than the one the caller expects.

The latent prior (``latents.LatentPrior``, metadata key ``latent_prior``): an identity is drawn
from a seed with the training labels' statistics when the checkpoint stores them, else from
N(0, 1); ``eps ~ N(0, 1)``; the main camera's placement comes from the same labels.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from aniportraitgan.atomic import atomic_path
from aniportraitgan.cameras import Cameras
from aniportraitgan.errors import AssetError, InputError
from aniportraitgan.latents import LatentPrior

DEMO_NAME = "demo"
ASSETS_DIR = Path(__file__).resolve().parent / "assets"
DEMO_CHECKPOINT = ASSETS_DIR / "demo_generator.safetensors"
PRIOR_METADATA_KEY = "latent_prior"
# Samples used to set the truncation centres of a checkpoint that has none (an untrained one).
W_AVG_SAMPLES = 1024


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``None`` or ``"auto"``: CUDA when available, else CPU."""
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise InputError(f"invalid device {device!r}: {exc}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"device {device!r} requested but CUDA is not available")
    return dev


# ----------------------------------------------------------------------------- the model


@dataclass
class InferenceModel:
    """A generator ready for rendering, with what inference needs to know about it."""

    generator: Any  # aniportraitgan.generator.Generator, eval mode
    stage: int  # 1: phi at the intersections; 2: U's super-resolved maps
    prior: LatentPrior
    source: Path
    portrait_resolution: int  # native resolution of this stage
    face_resolution: int
    step: int | None = None
    metadata: dict = field(default_factory=dict)

    @property
    def config(self):
        return self.generator.config

    @property
    def body(self):
        return self.generator.body

    @property
    def device(self) -> torch.device:
        return next(self.generator.parameters()).device

    def identity(self, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(z_id [1, id_dim], eps [1, noise_dim]) of a seed, identical on every device."""
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise InputError(f"seed must be an int >= 0, got {seed!r}")
        g = torch.Generator(device="cpu").manual_seed(seed)
        c = self.config
        z = torch.randn(1, c.id_dim, generator=g)
        eps = torch.randn(1, c.noise_dim, generator=g)
        z_id = self.prior.z_id_mean[None] + self.prior.z_id_std[None] * z
        return z_id.to(self.device), eps.to(self.device)

    def cameras(self, yaw: torch.Tensor, pitch: torch.Tensor) -> Cameras:
        """Main cameras [B] at (yaw, pitch) radians with this model's placement."""
        yaw = torch.as_tensor(yaw, dtype=torch.float32, device=self.device).reshape(-1)
        pitch = torch.as_tensor(pitch, dtype=torch.float32, device=self.device).reshape(-1)
        return self.prior.camera.cameras(yaw, pitch)


def _check_finite_weights(weights: dict[str, torch.Tensor], source: Path) -> None:
    for k, v in weights.items():
        if v.is_floating_point() and not torch.isfinite(v).all():
            raise AssetError(f"checkpoint {source} is corrupted: weight {k!r} contains NaN or inf")


def _config_diff(a: dict, b: dict) -> list[str]:
    keys = sorted(set(a) | set(b))
    return [f"{k}: {a.get(k)!r} != {b.get(k)!r}" for k in keys if a.get(k) != b.get(k)]


def _expected_config(expected):
    from aniportraitgan.generator import GeneratorConfig

    if expected is None or isinstance(expected, GeneratorConfig):
        return expected
    if isinstance(expected, str):
        return GeneratorConfig.preset(expected)
    raise InputError(f"expected_config must be a GeneratorConfig or a preset name, got {type(expected).__name__}")


def resolve_checkpoint(ckpt: str | Path) -> Path:
    """The file or folder a ``--ckpt`` value names (``demo`` -> the bundled file)."""
    if isinstance(ckpt, str) and ckpt == DEMO_NAME:
        if not DEMO_CHECKPOINT.is_file():
            raise AssetError(
                f"the bundled demo checkpoint {DEMO_CHECKPOINT} does not exist yet: it is produced by "
                f"training on SynthPortraits (docs/animation.md). Pass --ckpt with a checkpoint of your "
                f"own (an exported generator .safetensors, a checkpoint folder or a run folder)"
            )
        return DEMO_CHECKPOINT
    path = Path(ckpt)
    if not path.exists():
        raise AssetError(f"checkpoint {path} does not exist")
    return path


def _read_source(path: Path) -> tuple[dict, dict, dict, int | None, int | None, dict | None]:
    """(weights, generator config dict, metadata, stage, step, train config dict) of a checkpoint."""
    from aniportraitgan.training.checkpoint import CheckpointManager, load_checkpoint, read_generator_file, subdict

    if path.is_file() and path.name == "weights.safetensors" and (path.parent / "meta.json").is_file():
        path = path.parent  # a file inside a training checkpoint: use the folder
    if path.is_dir():
        if not (path / "meta.json").exists():
            latest = CheckpointManager(path).latest()
            if latest is None:
                raise AssetError(f"{path} is neither a checkpoint folder (no meta.json) nor a run folder "
                                 f"(no checkpoints/s<stage>-<step>/ inside)")
            path = latest
        ck = load_checkpoint(path)
        weights = subdict(ck.weights, "G_ema") or subdict(ck.weights, "G")
        if not weights:
            raise AssetError(f"checkpoint {path} holds no generator weights (no 'G_ema.' or 'G.' entries)")
        train_cfg = ck.meta.get("config") or {}
        gen_cfg = ck.meta.get("generator_config")
        if gen_cfg is None:
            preset = train_cfg.get("generator_preset")
            if preset is None:
                raise AssetError(f"checkpoint {path}: meta.json names no generator config or preset")
            from aniportraitgan.generator import GeneratorConfig

            # as the trainer builds it: preset + overrides, Dp off for the no_dp ablation
            overrides = dict(train_cfg.get("generator_overrides") or {})
            if (train_cfg.get("ablation") or {}).get("no_dp", False):
                overrides["use_dp"] = False
            try:
                gen_cfg = GeneratorConfig.preset(preset, **overrides).to_dict()
            except (InputError, TypeError) as exc:
                raise AssetError(f"checkpoint {path}: cannot rebuild its generator config ({exc})") from None
        meta = {k: v for k, v in ck.meta.items() if isinstance(v, str)}
        if PRIOR_METADATA_KEY in ck.meta and not isinstance(ck.meta[PRIOR_METADATA_KEY], str):
            meta[PRIOR_METADATA_KEY] = json.dumps(ck.meta[PRIOR_METADATA_KEY])
        return weights, gen_cfg, meta, ck.stage, ck.step, train_cfg
    weights, meta = read_generator_file(path)
    try:
        gen_cfg = json.loads(meta["generator_config"])
        train_cfg = json.loads(meta["train_config"]) if "train_config" in meta else None
        stage = int(meta["stage"]) if "stage" in meta else None
        step = int(meta["step"]) if "step" in meta else None
    except (ValueError, TypeError) as exc:
        raise AssetError(f"generator file {path} has corrupted metadata ({exc})") from None
    if not isinstance(gen_cfg, dict):
        raise AssetError(f"generator file {path}: generator_config is not a JSON object")
    return weights, gen_cfg, meta, stage, step, train_cfg


def load_inference_model(
    ckpt: str | Path,
    device: str | torch.device | None = "cpu",
    expected_config=None,
    body_model=None,
) -> InferenceModel:
    """Load a checkpoint (see the module docstring) as an ``InferenceModel`` in eval mode.

    ``expected_config`` (a ``GeneratorConfig`` or a preset name) makes a checkpoint of any
    other configuration an ``AssetError`` listing the differing fields.
    """
    from aniportraitgan.generator import Generator
    from aniportraitgan.training.checkpoint import load_module_state
    from aniportraitgan.training.config import generator_config_from_dict

    dev = resolve_device(device)
    path = resolve_checkpoint(ckpt)
    weights, cfg_dict, meta, stage, step, train_cfg = _read_source(path)
    try:
        cfg = generator_config_from_dict(cfg_dict)
    except (InputError, TypeError, ValueError) as exc:
        raise AssetError(f"checkpoint {path} stores an invalid generator config ({exc})") from None
    want = _expected_config(expected_config)
    if want is not None:
        diff = _config_diff(cfg.to_dict(), want.to_dict())
        if diff:
            raise AssetError(f"checkpoint {path} was trained with another generator config: "
                             + "; ".join(diff[:6]) + (" ..." if len(diff) > 6 else ""))
    _check_finite_weights(weights, path)
    if body_model is None:
        from aniportraitgan.body import PortraitBodyModel

        body_model = PortraitBodyModel.load(device="cpu")
    try:
        gen = Generator(cfg, body_model)
    except InputError as exc:
        raise AssetError(f"checkpoint {path} does not fit the body model: {exc}") from None
    load_module_state(gen, weights, "the generator of its stored config", path)
    gen = gen.to(dev).eval()
    for p in gen.parameters():
        p.requires_grad_(False)

    prior = LatentPrior.standard(cfg.id_dim)
    if PRIOR_METADATA_KEY in meta:
        prior = LatentPrior.from_json(meta[PRIOR_METADATA_KEY], cfg.id_dim, where=str(path))

    if stage is None:  # a stage-2 export has trained U (its truncation centre was updated)
        stage = 2 if gen.w_avg_superres.initialized else 1
    if stage not in (1, 2):
        raise AssetError(f"checkpoint {path} has an invalid stage {stage!r}")
    averages = (gen.w_avg_radiance, gen.w_avg_superres)
    if not all(a.initialized for a in averages):
        # A network that was never trained (U after stage 1, or an untrained generator) has no
        # running average: estimate it from the prior, keeping any average training recorded.
        kept = [a.w_avg.clone() if a.initialized else None for a in averages]
        g = torch.Generator(device="cpu").manual_seed(0)
        z = prior.z_id_mean[None] + prior.z_id_std[None] * torch.randn(W_AVG_SAMPLES, cfg.id_dim, generator=g)
        with torch.no_grad():
            gen.compute_w_avg(z_id=z)
            for a, w in zip(averages, kept):
                if w is not None:
                    a.set(w)

    st = (train_cfg or {}).get(f"stage{stage}") or {}
    if stage == 2:
        res = int(st.get("portrait_resolution", cfg.sr_output_resolution))
        face = int(st.get("face_resolution", max(8, res // 2)))
    else:
        res = int(st.get("portrait_resolution", cfg.sr_map_resolution))
        face = int(st.get("face_resolution", res))
    return InferenceModel(gen, stage, prior, path, res, face, step, dict(meta))


def load_generator(ckpt: str | Path, device: str | torch.device | None = "cpu", expected_config=None):
    """The generator of a checkpoint (``demo``, a file, a checkpoint or run folder), eval mode."""
    return load_inference_model(ckpt, device, expected_config).generator


def save_inference_checkpoint(path: str | Path, generator, stage: int | None = None, step: int | None = None,
                              prior: LatentPrior | None = None, train_config: dict | None = None) -> Path:
    """Export a generator in the format ``load_inference_model`` reads (atomic write).

    Thin wrapper of ``training.checkpoint.export_generator`` that also stores the latent prior.
    """
    from aniportraitgan.training.checkpoint import export_generator

    path = export_generator(path, generator.state_dict(), generator.config.to_dict(), train_config, step, stage)
    if prior is not None:
        # Re-write with the prior in the metadata (export_generator has no slot for it).
        from safetensors.torch import save_file

        from aniportraitgan.training.checkpoint import read_generator_file

        weights, meta = read_generator_file(path)
        meta[PRIOR_METADATA_KEY] = prior.to_json()
        with atomic_path(path) as tmp:
            save_file({k: v.contiguous() for k, v in weights.items()}, str(tmp), metadata=meta)
    return path


__all__ = [
    "DEMO_CHECKPOINT", "DEMO_NAME", "InferenceModel", "load_generator",
    "load_inference_model", "resolve_checkpoint", "resolve_device", "save_inference_checkpoint",
]
