"""A photo -> an identity file: what ``aniportraitgan invert`` runs.

``invert_target`` does the work on an ``InversionTarget`` (the latent search, optional pivotal
tuning, the metrics) and returns an ``Inversion``; ``identity_of`` turns it into the
``StoredIdentity`` the file holds; ``invert_photo`` runs the front end on a photo first and writes
the identity file, the comparison image and the metrics JSON.

Nothing is written until everything is computed; the three files are written under temporary
names and renamed into place together at the end (the identity file last), so a failure at any
point (a photo without a face, a diverged search, Ctrl-C, a full disk) leaves none of them
behind, and an identity file on disk always comes with its comparison image and metrics.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from aniportraitgan import __version__
from aniportraitgan.artefacts.identities import (
    StoredIdentity,
    finite_info,
    generator_signature,
    write_identity,
)
from aniportraitgan.atomic import atomic_path, atomic_write_bytes
from aniportraitgan.errors import AssetError, UserError
from aniportraitgan.facerecon import FaceRecon
from aniportraitgan.generator import RenderOptions
from aniportraitgan.inversion.optimize import (
    InversionConfig,
    LatentCodes,
    ReconstructionLoss,
    invert_latents,
    psnr,
    render_target_view,
)
from aniportraitgan.inversion.perceptual import FeatureDistance, make_feature_distance
from aniportraitgan.inversion.report import (
    COMPARISON_LAYOUT,
    comparison_views,
    reconstruction_metrics,
    write_comparison,
)
from aniportraitgan.inversion.target import (
    InversionTarget,
    check_photo,
    target_from_photo,
)
from aniportraitgan.inversion.tuning import TuningConfig, locality_batch, pivotal_tune
from aniportraitgan.metrics.inception import find_inception_weights

LOCALITY_CHECK_SAMPLES = 4  # random other identities whose change the metrics report


@dataclass
class Inversion:
    codes: LatentCodes
    delta: dict[str, torch.Tensor]
    metrics: dict = field(default_factory=dict)
    history: dict = field(default_factory=dict)


def _features_or_none(kind: str, facerecon, device) -> FeatureDistance | None:
    try:
        return make_feature_distance(kind, facerecon, device)
    except AssetError:
        return None


@torch.no_grad()
def locality_psnr(model, tuned_generator, cfg: TuningConfig) -> float:
    """PSNR of random other identities' portraits, tuned vs original generator (higher: less change)."""
    gen = torch.Generator().manual_seed(cfg.seed + 1_000_003)
    check = TuningConfig(locality_samples=LOCALITY_CHECK_SAMPLES, locality_psi=cfg.locality_psi)
    lat, cams = locality_batch(model, check, gen)
    options = RenderOptions(model.portrait_resolution, None, model.stage, cfg.locality_psi)
    return psnr(tuned_generator(lat, cams, None, options).portrait, model.generator(lat, cams, None, options).portrait)


def invert_target(model, target: InversionTarget, cfg: InversionConfig, tuning: TuningConfig | None = None,
                  facerecon: FaceRecon | None = None, progress: bool = True) -> Inversion:
    """The latent search, then (``tuning.steps`` > 0) pivotal tuning, with the metrics of each."""
    tuning = tuning or TuningConfig()
    cfg.validate()
    tuning.validate()
    dev = model.device
    target = target.to(dev)
    loss_features = make_feature_distance(cfg.perceptual, facerecon, dev) if cfg.perceptual_weight > 0 else None
    # The metrics always use the Inception distance when its weights exist, even without a
    # perceptual loss term (then there is no loss network to share).
    shared = cfg.perceptual == "inception" and loss_features is not None
    metric_features = loss_features if shared else _features_or_none("inception", None, dev)
    with torch.no_grad():  # the baseline: where the search starts (near the truncation average)
        start = LatentCodes(target.z_id, torch.zeros(1, model.config.noise_dim, device=dev), cfg.psi)
        metrics = {"start": reconstruction_metrics(render_target_view(start, model, target), target, metric_features,
                                                   facerecon)}
    search = invert_latents(model, target, cfg, loss_features, progress)
    with torch.no_grad():
        found = reconstruction_metrics(render_target_view(search.codes, model, target), target, metric_features, facerecon)
    metrics["latent_search"] = {**found, "seconds": round(search.seconds, 2), "steps": cfg.steps}
    history = {"latent_search": search.history}
    delta: dict[str, torch.Tensor] = {}
    final = found
    if tuning.steps > 0:
        result = pivotal_tune(model, target, search.codes, ReconstructionLoss(target, cfg, loss_features), tuning, progress)
        delta = result.delta
        ident = StoredIdentity(search.codes.z_id, search.codes.eps, torch.zeros(1), None, "", delta=delta)
        tuned = ident.tuned_generator(model.generator)
        with torch.no_grad():
            final = reconstruction_metrics(render_target_view(search.codes, model, target, tuned), target,
                                           metric_features, facerecon)
        metrics["pivotal_tuning"] = {**final, "seconds": round(result.seconds, 2), "steps": tuning.steps,
                                     "other_identity_psnr": locality_psnr(model, tuned, tuning),
                                     "tuned_parameters": sum(d.numel() for d in delta.values())}
        history["pivotal_tuning"] = result.history
    metrics["final"] = final
    return Inversion(search.codes, delta, metrics, history)


@torch.no_grad()
def identity_of(model, inversion: Inversion, target: InversionTarget, info: dict | None = None) -> StoredIdentity:
    """The identity file's content for an inversion on ``model`` (its signature included)."""
    codes = inversion.codes
    w_rad, w_sr = codes.mapped(model.generator, model.stage)
    photo = {"z_exp": target.z_exp, "z_pose": target.z_pose, "c2w": target.cameras.c2w.float(),
             "fov": target.cameras.fov_deg.float().reshape(1)}
    return StoredIdentity(codes.z_id.cpu(), codes.eps.cpu(), w_rad.cpu(), None if w_sr is None else w_sr.cpu(),
                          generator_signature(model.generator), {k: v.detach().cpu() for k, v in photo.items()},
                          {k: v.cpu() for k, v in inversion.delta.items()}, dict(info or {}))


def output_paths(out: str | Path, comparison: str | Path | None = None,
                 metrics: str | Path | None = None) -> tuple[Path, Path, Path]:
    """(identity, comparison image, metrics JSON); the defaults sit beside the identity file."""
    out = Path(out)
    if out.suffix.lower() != ".safetensors":
        raise UserError(f"--out {out} must end in .safetensors (an identity file)")
    if out.is_dir():
        raise UserError(f"--out {out} is a folder; give a file name")
    folder = out.parent if str(out.parent) else Path(".")
    if not folder.is_dir():
        raise UserError(f"the folder of --out {out} does not exist")
    comp = Path(comparison) if comparison else out.with_name(out.stem + "_comparison.png")
    met = Path(metrics) if metrics else out.with_name(out.stem + "_metrics.json")
    for p in (comp, met):
        if not (p.parent if str(p.parent) else Path(".")).is_dir():
            raise UserError(f"the folder of {p} does not exist")
    return out, comp, met


def invert_photo(photo: str | Path, model, out: str | Path, cfg: InversionConfig, tuning: TuningConfig,
                 facerecon: FaceRecon | None = None, comparison: str | Path | None = None,
                 metrics_path: str | Path | None = None, progress: bool = True, aligner=None) -> dict:
    """Photo -> identity file + comparison image + metrics JSON (see the module doc). Returns the
    metrics dict (also written)."""
    out, comp, met = output_paths(out, comparison, metrics_path)
    check_photo(photo)
    t0 = time.perf_counter()
    target = target_from_photo(photo, model, aligner=aligner)
    front_end_s = time.perf_counter() - t0
    inv = invert_target(model, target, cfg, tuning, facerecon, progress)
    info = {
        "photo": str(photo), "checkpoint": str(model.source), "stage": model.stage, "version": __version__,
        "resolution": target.resolution, "face_resolution": target.face_resolution,
        "front_end": {"fit_error_px": target.fit_error_px, "seconds": round(front_end_s, 2)},
        "settings": {"inversion": cfg.to_dict(), "tuning": tuning.to_dict()},
        "device": str(model.device), "threads": torch.get_num_threads(),
        "metrics": finite_info(inv.metrics),
        "feature_network": _feature_name(), "identity_network": "R" if facerecon is not None else None,
        "comparison": COMPARISON_LAYOUT, "seconds": round(time.perf_counter() - t0, 2),
    }
    ident = identity_of(model, inv, target, info)
    views = comparison_views(model, inv.codes, target, ident.tuned_generator(model.generator))
    report = finite_info({**info, "identity": str(out), "signature": ident.signature, "history": inv.history})
    # Three temporary files renamed into place together at the end (the identity file last).
    with atomic_path(out) as tmp_out, atomic_path(met) as tmp_met, atomic_path(comp) as tmp_comp:
        write_comparison(tmp_comp, views)
        atomic_write_bytes(tmp_met, (json.dumps(report, indent=2, allow_nan=False, default=str) + "\n").encode())
        write_identity(tmp_out, ident)
    return report


def _feature_name() -> str | None:
    try:
        find_inception_weights()
    except AssetError:
        return None
    return "inception-2015-12-05 early layers (conv_2, conv_4, mixed_2), LPIPS-like"


__all__ = ["Inversion", "identity_of", "invert_photo", "invert_target", "locality_psnr", "output_paths"]
