"""Loading a stored generator from any of its artefacts.

``ckpt`` may be
* ``"demo"``: the bundled checkpoint ``aniportraitgan/assets/demo_generator.safetensors``;
* an exported generator file (``export_generator``: weights, with the generator config as JSON
  in the safetensors metadata);
* a training checkpoint folder ``RUN/checkpoints/s<stage>-<step>/`` (its ``G_ema.`` weights);
* a run folder ``RUN/`` (its newest checkpoint).

Every failure is an ``AssetError`` that names the file and the problem: missing, corrupted
(unreadable, checksum mismatch, NaN weights), not a generator, weights that do not fit the
stored config, or a config other than the one the caller expects.

The latent prior (``latents.LatentPrior``, metadata key ``latent_prior``) comes with the
generator when the checkpoint stores it, else it is N(0, 1).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

import torch

from aniportraitgan.artefacts.checksummed import first_non_finite
from aniportraitgan.artefacts.checkpoints import CheckpointManager, load_checkpoint, load_module_state, subdict
from aniportraitgan.artefacts.generator_files import PRIOR_KEY, read_generator_file
from aniportraitgan.body import PortraitBodyModel
from aniportraitgan.errors import AssetError, InputError
from aniportraitgan.generator import Generator, GeneratorConfig
from aniportraitgan.latents import LatentPrior

DEMO_NAME = "demo"
ASSETS_DIR = Path(__file__).resolve().parent.parent / "assets"
DEMO_CHECKPOINT = ASSETS_DIR / "demo_generator.safetensors"
# Samples used to set the truncation centres of a checkpoint that has none (an untrained one).
W_AVG_SAMPLES = 1024
# Differing fields listed in a config mismatch message.
DIFF_SHOWN = 6


def config_diff(a: Mapping[str, Any], b: Mapping[str, Any], ignore: Iterable[str] = ()) -> str:
    """``"key: a != b; ..."`` for the fields where two config dicts differ ("" when none do)."""
    skip = set(ignore)
    keys = sorted((set(a) | set(b)) - skip)
    diff = [f"{k}: {a.get(k)!r} != {b.get(k)!r}" for k in keys if a.get(k) != b.get(k)]
    return "; ".join(diff[:DIFF_SHOWN]) + (" ..." if len(diff) > DIFF_SHOWN else "")


def generator_config(train_config: Mapping[str, Any]) -> GeneratorConfig:
    """The generator config a training config (``TrainConfig.to_dict()``) trains: its preset with
    its overrides; the ``no_dp`` ablation (paper Table 2, "w/o Dp") turns Dp off."""
    overrides = dict(train_config.get("generator_overrides") or {})
    if (train_config.get("ablation") or {}).get("no_dp", False):
        overrides["use_dp"] = False
    return GeneratorConfig.preset(train_config["generator_preset"], **overrides)


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


@dataclass
class _Source:
    """What a checkpoint stores about its generator, before any network is built."""

    path: Path
    weights: dict[str, torch.Tensor]
    config: dict
    metadata: dict[str, str]
    stage: int | None
    step: int | None
    train_config: dict | None


def _read_folder(path: Path) -> _Source:
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
    if gen_cfg is None:  # written before checkpoints stored it: rebuild it as the trainer did
        if train_cfg.get("generator_preset") is None:
            raise AssetError(f"checkpoint {path}: meta.json names no generator config or preset")
        try:
            gen_cfg = generator_config(train_cfg).to_dict()
        except (InputError, TypeError) as exc:
            raise AssetError(f"checkpoint {path}: cannot rebuild its generator config ({exc})") from None
    meta = {k: v for k, v in ck.meta.items() if isinstance(v, str)}
    if PRIOR_KEY in ck.meta and not isinstance(ck.meta[PRIOR_KEY], str):
        meta[PRIOR_KEY] = json.dumps(ck.meta[PRIOR_KEY])
    return _Source(path, weights, gen_cfg, meta, ck.stage, ck.step, train_cfg)


def _read_file(path: Path) -> _Source:
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
    return _Source(path, weights, gen_cfg, meta, stage, step, train_cfg)


def _read_source(path: Path) -> _Source:
    if path.is_file() and path.name == "weights.safetensors" and (path.parent / "meta.json").is_file():
        path = path.parent  # a file inside a training checkpoint: use the folder
    return _read_folder(path) if path.is_dir() else _read_file(path)


def _expected_config(expected) -> GeneratorConfig | None:
    if expected is None or isinstance(expected, GeneratorConfig):
        return expected
    if isinstance(expected, str):
        return GeneratorConfig.preset(expected)
    raise InputError(f"expected_config must be a GeneratorConfig or a preset name, got {type(expected).__name__}")


def _check_finite_weights(weights: dict[str, torch.Tensor], source: Path) -> None:
    bad = first_non_finite(weights)
    if bad is not None:
        raise AssetError(f"checkpoint {source} is corrupted: weight {bad!r} contains NaN or inf")


@dataclass
class StoredGenerator:
    """A generator read from a checkpoint (eval mode, frozen) with what the checkpoint says about it."""

    generator: Generator
    source: Path
    stage: int  # 1: phi at the intersections; 2: U's super-resolved maps
    prior: LatentPrior
    step: int | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    train_config: dict | None = None


def _load(ckpt, device, expected_config, body_model, fill_averages: bool) -> StoredGenerator:
    path = resolve_checkpoint(ckpt)
    src = _read_source(path)
    try:
        cfg = GeneratorConfig.from_dict(src.config)
    except (InputError, TypeError, ValueError) as exc:
        raise AssetError(f"checkpoint {path} stores an invalid generator config ({exc})") from None
    want = _expected_config(expected_config)
    if want is not None:
        diff = config_diff(cfg.to_dict(), want.to_dict())
        if diff:
            raise AssetError(f"checkpoint {path} was trained with another generator config: {diff}")
    _check_finite_weights(src.weights, path)
    if body_model is None:
        body_model = PortraitBodyModel.load(device="cpu")
    try:
        gen = Generator(cfg, body_model)
    except InputError as exc:
        raise AssetError(f"checkpoint {path} does not fit the body model: {exc}") from None
    load_module_state(gen, src.weights, "the generator of its stored config", path)
    gen = gen.to(device).eval()
    for p in gen.parameters():
        p.requires_grad_(False)

    prior = LatentPrior.standard(cfg.id_dim)
    if PRIOR_KEY in src.metadata:
        prior = LatentPrior.from_json(src.metadata[PRIOR_KEY], cfg.id_dim, where=str(path))
    stage = src.stage
    if stage is None:  # a stage-2 export has trained U (its truncation centre was updated)
        stage = 2 if gen.w_avg_superres.initialized else 1
    if stage not in (1, 2):
        raise AssetError(f"checkpoint {path} has an invalid stage {stage!r}")
    if fill_averages:
        fill_missing_averages(gen, prior)
    return StoredGenerator(gen, path, stage, prior, src.step, dict(src.metadata), src.train_config)


def fill_missing_averages(gen: Generator, prior: LatentPrior) -> None:
    """Estimate, from the prior, the truncation centres training never recorded (U after stage 1,
    or an untrained generator), keeping any average training recorded."""
    averages = (gen.w_avg_radiance, gen.w_avg_superres)
    if all(a.initialized for a in averages):
        return
    kept = [a.w_avg.clone() if a.initialized else None for a in averages]
    g = torch.Generator(device="cpu").manual_seed(0)
    z = prior.z_id_mean[None] + prior.z_id_std[None] * torch.randn(W_AVG_SAMPLES, gen.config.id_dim, generator=g)
    with torch.no_grad():
        gen.compute_w_avg(z_id=z)
        for a, w in zip(averages, kept):
            if w is not None:
                a.set(w)


def open_generator(ckpt: str | Path, device: str | torch.device = "cpu", expected_config=None,
                   body_model=None) -> StoredGenerator:
    """A checkpoint's generator ready to render (see the module docstring), with its stage, step
    and prior; truncation centres it never recorded are estimated (``fill_missing_averages``).

    ``expected_config`` (a ``GeneratorConfig`` or a preset name) makes a checkpoint of any
    other configuration an ``AssetError`` listing the differing fields."""
    return _load(ckpt, device, expected_config, body_model, fill_averages=True)


def load_generator(ckpt: str | Path, device: str | torch.device = "cpu", expected_config=None, body_model=None):
    """A checkpoint's generator with exactly its stored weights and buffers (eval mode, frozen)."""
    return _load(ckpt, device, expected_config, body_model, fill_averages=False).generator
