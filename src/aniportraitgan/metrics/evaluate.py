"""The evaluation pipeline behind `aniportraitgan evaluate` (docs/evaluation.md).

    from aniportraitgan.metrics.evaluate import EvalConfig, evaluate, run_evaluation
    report = evaluate("demo", "data/synth", EvalConfig(metrics=("fid", "kid"), num=20000))
    report.metrics   # {"fid_portrait": ..., "kid_portrait": ..., "fid_face": ..., ...}

FID/KID (the paper's Table 1 protocol): `num` generated portraits and their dual face-camera
renders, with codes and cameras drawn from the dataset's labels (`LabelSampler`, joint rows,
eps ~ N(0, 1)), against the dataset's first `num_real` portraits and face images (default
min(num, dataset size)), both at the evaluation resolutions (real images are resized with
antialiasing). Real-set features are cached beside the dataset (`RealStatsCache`, keyed by
extractor, split, count and resolution; a regenerated dataset invalidates them through the
fingerprint of its card and labels). The extractor is the standard Inception network
(`inception`) or the cheap deterministic stand-in (`stand-in`, for tests and smoke runs; its
numbers are NOT comparable with published FIDs).

Control metrics: `metrics.control.control_metrics`, all of them (`control`) or the registered
ones named (plus R on the dataset's own faces when a face reconstruction network is given).
"""

from __future__ import annotations

import math
import os
import platform
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from tqdm.auto import tqdm

from aniportraitgan.data.dataset import (
    CARD_FILE,
    LABELS_FILE,
    PortraitDataset,
    face_path,
    image_to_tensor,
    portrait_path,
    read_card,
    read_png,
)
from aniportraitgan.errors import AssetError, InputError, UserError
from aniportraitgan.facerecon import FaceRecon
from aniportraitgan.generator import RenderOptions, check_psi
from aniportraitgan.images import check_resolution
from aniportraitgan.inference import load_inference_model, resolve_device
from aniportraitgan.latents import LabelSampler
from aniportraitgan.render import RenderBackendError

from .control import CONTROL_METRICS, R_METRICS, ControlConfig, control_metrics, facerecon_dataset_errors
from .features import RealStatsCache, extract_features, fingerprint_files
from .fid import feature_statistics, frechet_distance, kid
from .inception import InceptionFeatures, RandomProjectionFeatures
from .report import write_report
from .response import data_response_metrics

__all__ = ["EXTRACTORS", "IMAGE_METRICS", "EvalConfig", "EvalReport", "evaluate", "known_metrics", "make_extractor",
           "parse_metrics", "run_evaluation"]

IMAGE_METRICS = ("fid", "kid")  # on Inception features of generated vs real images
CONTROL_GROUP = "control"  # every registered control metric
EXTRACTORS = ("inception", "stand-in")


def known_metrics() -> tuple[str, ...]:
    """What `--metrics` accepts: the image metrics, `control` (all control metrics) and each
    control metric registered in `metrics.control.CONTROL_METRICS`."""
    return (*IMAGE_METRICS, CONTROL_GROUP, *CONTROL_METRICS)


@dataclass
class EvalConfig:
    metrics: tuple[str, ...] = ("fid", "kid")  # names of `known_metrics()`
    num: int = 20000  # generated images (portraits and faces each); the paper uses 20K
    num_real: int | None = None  # real images; None: min(num, dataset size)
    resolution: int | None = None  # portrait side; None: the checkpoint's native resolution
    face_resolution: int | None = None  # face side; None: the checkpoint's
    batch: int = 16
    extractor: str = "inception"
    psi: float = 1.0  # truncation (1 = none, as FID is usually measured)
    seed: int = 0
    kid_subsets: int = 100
    kid_subset_size: int = 1000
    control: ControlConfig = field(default_factory=ControlConfig)
    facerecon: str | None = None  # R weights (.safetensors) for the expression / head-pose metrics
    device: str = "auto"
    progress: bool = True
    workers: int = 0  # DataLoader workers for the real images
    expected_preset: str | None = None  # fail unless the checkpoint has this generator config

    def validate(self) -> None:
        self.metrics = parse_metrics(self.metrics)
        if self.extractor not in EXTRACTORS:
            raise UserError(f"unknown extractor {self.extractor!r}; choose one of {', '.join(EXTRACTORS)}")
        for name in ("num", "batch", "kid_subsets"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise UserError(f"{name} must be a positive integer, got {v!r}")
        if ("fid" in self.metrics or "kid" in self.metrics) and self.num < 2:
            raise UserError(f"FID/KID need at least 2 generated images, got num={self.num}")
        if self.num_real is not None and (not isinstance(self.num_real, int) or self.num_real < 2):
            raise UserError(f"num_real must be an integer >= 2, got {self.num_real!r}")
        if self.kid_subset_size < 2:
            raise UserError(f"kid_subset_size must be >= 2, got {self.kid_subset_size}")
        for name in ("resolution", "face_resolution"):
            if getattr(self, name) is not None:
                check_resolution(getattr(self, name), name, UserError)
        check_psi(self.psi)
        if self.workers < 0:
            raise UserError(f"workers must be >= 0, got {self.workers}")
        try:
            self.control.validate()
        except InputError as exc:
            raise UserError(str(exc)) from None


@dataclass
class EvalReport:
    metrics: dict
    meta: dict


def parse_metrics(metrics) -> tuple[str, ...]:
    """'fid,kid,control' (or a sequence of names) -> validated tuple, in `known_metrics()` order."""
    names = [m.strip().lower() for m in metrics.split(",")] if isinstance(metrics, str) else [str(m).strip().lower() for m in metrics]
    names = [m for m in names if m]
    known = known_metrics()
    if not names:
        raise UserError(f"no metric requested; choose from {', '.join(known)}")
    unknown = [m for m in names if m not in known]
    if unknown:
        raise UserError(f"unknown metric(s) {', '.join(map(repr, unknown))}; choose from {', '.join(known)}")
    return tuple(m for m in known if m in names)


def control_selection(metrics: tuple[str, ...]) -> tuple[str, ...]:
    """The control metrics a parsed `metrics` tuple asks for, in registry order."""
    if CONTROL_GROUP in metrics:
        return tuple(CONTROL_METRICS)
    return tuple(m for m in CONTROL_METRICS if m in metrics)


def make_extractor(name: str, device="cpu") -> torch.nn.Module:
    """The feature network by CLI name: `inception` (standard FID weights) or `stand-in`."""
    if name == "inception":
        return InceptionFeatures().to(device).eval()
    if name == "stand-in":
        return RandomProjectionFeatures().to(device).eval()
    raise UserError(f"unknown extractor {name!r}; choose one of {', '.join(EXTRACTORS)}")


class _Images(torch.utils.data.Dataset):
    """One image kind ("image" = portraits or "face") of the first `num` dataset samples."""

    def __init__(self, dataset, key: str, num: int):
        self.dataset, self.key, self.num = dataset, key, num

    def __len__(self) -> int:
        return self.num

    def __getitem__(self, k: int) -> torch.Tensor:
        ds = self.dataset
        idx = int(ds.index[k])
        if self.key == "face":
            return image_to_tensor(read_png(face_path(ds.root, idx), ds.stored_face_resolution), ds.face_resolution)
        return image_to_tensor(read_png(portrait_path(ds.root, idx), ds.stored_resolution), ds.resolution)


def _check_dataset(data) -> Path:
    root = Path(data)
    if not root.is_dir():
        raise AssetError(f"dataset folder {root} does not exist")
    read_card(root)  # a clear error for a folder that is not a dataset
    return root


def _machine(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{platform.processor() or platform.machine()} ({os.cpu_count()} CPU threads)"


def _generated_features(model, sampler, cfg: EvalConfig, res: int, face_res: int, extractor, dev) -> tuple[np.ndarray, np.ndarray]:
    """Features of cfg.num generated portraits and their face renders (one render per batch)."""
    g = torch.Generator().manual_seed(cfg.seed)
    portraits, faces = [], []
    G = model.generator
    with torch.no_grad(), tqdm(total=cfg.num, desc="generated", unit="img", disable=not cfg.progress) as bar:
        for s in range(0, cfg.num, cfg.batch):
            n = min(cfg.batch, cfg.num - s)
            lat = sampler.sample(n, generator=g, eps_dim=G.config.noise_dim).to(dev)
            out = G(lat, lat.cameras(), options=RenderOptions(res, face_res, model.stage, cfg.psi))
            for images, acc in ((out.portrait, portraits), (out.face, faces)):
                acc.append(extract_features(images.float().clamp(-1.0, 1.0), extractor, batch_size=cfg.batch,
                                            device=dev, progress=False))
            bar.update(n)
    return np.concatenate(portraits), np.concatenate(faces)


def evaluate(ckpt, data, config: EvalConfig | None = None, model=None) -> EvalReport:
    """Evaluate a checkpoint (`demo`, a generator file, a checkpoint or run folder) against a
    dataset folder. `model` (an `inference.InferenceModel`) skips loading `ckpt`.

    Errors: UserError for bad settings (unknown metric or extractor, bad counts), AssetError for
    a missing/corrupt dataset, checkpoint or R, or a checkpoint whose codes do not fit the
    dataset's labels or R."""
    cfg = config or EvalConfig()
    cfg.validate()
    root = _check_dataset(data)
    if cfg.facerecon is not None and not Path(cfg.facerecon).is_file():
        raise AssetError(f"face reconstruction weights {cfg.facerecon} do not exist")
    dev = resolve_device(cfg.device)
    t0 = time.perf_counter()
    if model is None:
        model = load_inference_model(ckpt, dev, expected_config=cfg.expected_preset)
    G = model.generator
    dev = model.device
    res = cfg.resolution or model.portrait_resolution
    face_res = cfg.face_resolution or model.face_resolution
    dataset = PortraitDataset(root, resolution=res, face_resolution=face_res)
    if len(dataset) < 2:
        raise AssetError(f"dataset {root} has {len(dataset)} sample(s); evaluation needs at least 2")
    sampler = LabelSampler.from_dataset(dataset)
    if sampler.id_dim != G.config.id_dim:
        raise AssetError(
            f"checkpoint {model.source} generates identities with {G.config.id_dim} coefficients but dataset "
            f"{root} labels have {sampler.id_dim}: the checkpoint was made for another body model/config"
        )
    facerecon = None
    if cfg.facerecon is not None:
        facerecon = FaceRecon.load(cfg.facerecon, device=dev)
        rc = facerecon.config
        if (rc.id_dim, rc.exp_dim) != (G.config.id_dim, G.config.exp_dim):
            raise AssetError(
                f"face reconstruction network {cfg.facerecon} estimates (id {rc.id_dim}, exp {rc.exp_dim}) codes, the "
                f"checkpoint uses (id {G.config.id_dim}, exp {G.config.exp_dim})"
            )

    num_real = min(cfg.num_real or cfg.num, len(dataset))
    need_features = any(m in cfg.metrics for m in IMAGE_METRICS)
    control = control_selection(cfg.metrics)
    extractor = make_extractor(cfg.extractor, dev) if need_features or "identity" in control else None
    metrics: dict = {}
    meta: dict = {
        "checkpoint": str(model.source), "stage": model.stage, "step": model.step, "dataset": str(root),
        "metrics": ",".join(cfg.metrics), "resolution": res, "face_resolution": face_res, "psi": cfg.psi,
        "seed": cfg.seed, "device": str(dev), "machine": _machine(dev), "torch": torch.__version__,
    }
    if extractor is not None:
        meta["extractor"] = getattr(extractor, "name", cfg.extractor)
    if need_features:
        if num_real < 2:
            raise AssetError(f"dataset {root} has too few images for FID/KID ({num_real})")
        fake_p, fake_f = _generated_features(model, sampler, cfg, res, face_res, extractor, dev)
        cache = RealStatsCache(root, fingerprint=fingerprint_files(root / CARD_FILE, root / LABELS_FILE))
        for split, key, fake, side in (("portrait", "image", fake_p, res), ("face", "face", fake_f, face_res)):
            loader = torch.utils.data.DataLoader(_Images(dataset, key, num_real), batch_size=cfg.batch,
                                                 num_workers=cfg.workers)
            real = cache.get(extractor, split, num_real, side, loader, batch_size=cfg.batch, device=dev,
                             progress=cfg.progress)
            if "fid" in cfg.metrics:
                mu, sigma = feature_statistics(fake)
                metrics[f"fid_{split}"] = frechet_distance(real.mu, real.sigma, mu, sigma)
            if "kid" in cfg.metrics:
                k_mean, k_std = kid(real.features, fake, num_subsets=cfg.kid_subsets,
                                    subset_size=cfg.kid_subset_size, seed=cfg.seed)
                metrics[f"kid_{split}"] = k_mean
                metrics[f"kid_{split}_std"] = k_std
        meta.update(num_generated=cfg.num, num_real=num_real,
                    kid_subset_size=min(cfg.kid_subset_size, num_real, cfg.num), kid_subsets=cfg.kid_subsets)
    if control:
        ctrl = control_metrics(G, sampler, cfg.control, res, face_res, model.stage, cfg.psi, extractor, facerecon,
                               cfg.batch, cfg.seed, cfg.progress, metrics=control)
        if facerecon is not None and any(m in R_METRICS for m in control):
            ctrl.update(facerecon_dataset_errors(facerecon, G.body, dataset, cfg.control.num, cfg.batch,
                                                 cfg.progress, metrics=control))
        if "response" in control:
            ceiling, meta["response_real"] = _data_response(dataset, cfg.control.response_num, res, face_res, cfg.progress)
            ctrl.update(ceiling)
        # JSON has no NaN: an undefined number (no valid pixel) is recorded as null.
        metrics.update({k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in ctrl.items()})
        meta["control"] = asdict(cfg.control)
        meta["facerecon"] = cfg.facerecon or "none: expression and head-pose errors skipped (give --facerecon)"
    meta["seconds"] = round(time.perf_counter() - t0, 1)
    return EvalReport(metrics, meta)


def _data_response(dataset, num: int, res: int, face_res: int, progress: bool) -> tuple[dict[str, float], str]:
    """The control response of the dataset's own renderer (`response_*_real`: the ceiling) and
    a note of what was measured; none for a dataset no renderer can draw again."""
    try:
        return data_response_metrics(dataset, num, res, face_res, progress=progress), (
            f"the SynthPortraits renderer on the dataset's first {min(num, len(dataset))} samples")
    # UserError: photos, no renderer to apply the probes to; RenderBackendError: no OpenGL here.
    except (UserError, RenderBackendError) as exc:
        return {}, f"not measured: {exc}"


def run_evaluation(ckpt, data, out, config: EvalConfig | None = None, run: str | None = None,
                   model=None) -> tuple[EvalReport, Path, Path]:
    """`evaluate` and write the JSON report `out` plus its Markdown table (same name, .md)."""
    out = Path(out)
    if out.suffix.lower() != ".json":
        raise UserError(f"--out must name a .json file, got {out}")
    if out.exists() and out.is_dir():
        raise UserError(f"--out {out} is a folder; give a .json file name")
    report = evaluate(ckpt, data, config, model)
    json_path, md_path = write_report(report.metrics, out, run=run, meta=report.meta)
    return report, json_path, md_path
