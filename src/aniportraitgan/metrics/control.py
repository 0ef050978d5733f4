"""Control metrics: how well a generator obeys the codes it is given (docs/evaluation.md).

The paper reports FID/KID only. These numbers measure the controls themselves. Each is a small
function registered in ``CONTROL_METRICS`` under the name ``evaluate --metrics`` takes (in
brackets below); ``control_metrics`` is the one runner: it draws the codes and cameras once,
renders each batch once, and hands the batch to every selected metric.

* Expression [``expression``] (needs the face reconstruction network R): R reads the generated face render and
  estimates (z_id, z_exp). `exp_coef_mae` is the mean absolute error of the 52 ARKit
  coefficients; `exp_landmark_mm` the mean distance (mm) between the body model's 68 centred
  landmarks at the asked identity with the asked vs the estimated expression (expression only);
  `landmark_mm` uses R's identity too, as eq. 9's landmark loss does. Because most of the 52
  coefficients barely change a small face, both errors sit near the mean predictor's even for a
  perfect generator; `exp_corr` (the correlation between asked and estimated coefficients over
  the samples, for the few coefficients a face shows clearly: `EXP_PROBE`) says whether the
  expression takes effect at all, against R's own correlation on real faces (`exp_corr_real`).
* Head pose [``head_pose``] (needs R, which also predicts the face camera's view angles relative to the head):
  the face camera is placed from the main camera and the *asked* head pose, so if the generator
  turned the head as asked, R sees the face from exactly those angles. `head_pose_deg` is the
  angle between R's view direction and the asked one. R is only as good as its training, so the
  evaluation also reports R on the dataset's own faces (`*_real`): the floor of each number.
* Head and shoulder geometry [``geometry``] (no network needed): foreground pixels of the portrait are lifted
  to 3D with the rendered depth and compared with the posed body-model surface. Shoulders are
  invisible to R (it reads the face crop) and there is no trained body-pose estimator in the
  project, so the shoulder pose is judged by geometry: `shoulder_geom_mm` is the mean distance
  from generated surface points near the shoulders to the shoulder surface of the body posed
  as asked (points spread over its triangles ~4 mm apart, `RegionSurface`),
  `shoulder_geom_mm_ref` the same points against the body in another sample's pose. Hair and
  clothes put a floor under the first number; the gap to the reference is what says the pose
  is obeyed. `head_geom_mm` / `head_geom_mm_ref` do the same for the head.
* Identity consistency across an animation [``identity``]: K identities, each rendered in T frames whose
  expression and pose change (the same T label rows for every identity). Feature cosine
  similarity of the face renders between frames of one identity (`identity_cos_same`) vs between
  identities at the same frame (`identity_cos_other`); with R also the distance of R's identity
  estimates in units of the label std (`identity_R_dist_same` / `identity_R_dist_other`).
* Multi-view consistency [``multiview``]: each sample is rendered from two main cameras; every foreground pixel
  of one view is lifted with its depth, projected into the other view, and where the other
  view sees the same surface (depth agrees within a relative tolerance) the colours are
  compared. `multiview_mae` is the mean absolute colour error in 8-bit levels (0-255) over
  mutually visible pixels, symmetric in the two views; `multiview_visible` the fraction of
  foreground pixels that were mutually visible.
* Control response [``response``] (no network needed; `metrics/response.py`): for each probe expression
  (jawOpen, eyeBlink, smile, browInnerUp) on the face camera and each joint rotation (head turn,
  nod, tilt, shoulder shrug) on the portrait, the mean pixel change inside the region the body
  model says the probe moves, over the change in the rest of the body's footprint
  (`response_<probe>`, with `_in` / `_out` in 8-bit levels), on the run's first `response_num` samples.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import cached_property
from typing import Callable, Iterator

import torch
from tqdm.auto import tqdm

from aniportraitgan.cameras import MAX_ABS_PITCH, Cameras, face_angles_from_main
from aniportraitgan.errors import InputError
from aniportraitgan.generator import Rendered, RenderOptions
from aniportraitgan.latents import LabelSampler, LatentSample

from .geometry import HEAD_BONES, SHOULDER_BONES, RegionSurface, geometry_values, region_vertices
from .identity import identity_metrics
from .recon_errors import expression_correlation, facerecon_errors, view_gains
from .reprojection import multiview_values
from .response import response_metrics

__all__ = [
    "CONTROL_METRICS",
    "ControlBatch",
    "ControlConfig",
    "ControlMetric",
    "ControlRun",
    "R_METRICS",
    "control_metrics",
    "facerecon_dataset_errors",
    "nanmean",
    "register_control_metric",
    "select_control_metrics",
]


@dataclass
class ControlConfig:
    """Sizes of the control evaluation (see the module docstring for each metric)."""

    num: int = 256  # samples for expression, head pose and geometry (and the multi-view pairs)
    identities: int = 8  # identity consistency: identities ...
    frames: int = 8  # ... times frames each
    view_delta_deg: float = 20.0  # yaw between the two views of the multi-view metric
    depth_tolerance: float = 0.02  # relative depth agreement for "the same surface"
    alpha_threshold: float = 0.5  # foreground: accumulated opacity above this
    geometry_points: int = 2048  # foreground pixels per image lifted for the geometry metric
    response_num: int = 32  # control response: the run's first samples, rendered 10 times each

    def validate(self) -> None:
        for name in ("num", "identities", "frames", "geometry_points", "response_num"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise InputError(f"ControlConfig.{name} must be a positive int, got {v!r}")
        if self.identities < 2 or self.frames < 2:
            raise InputError("identity consistency needs at least 2 identities and 2 frames")
        if not 0.0 < self.view_delta_deg < 90.0:
            raise InputError(f"view_delta_deg must be in (0, 90), got {self.view_delta_deg}")
        if not self.depth_tolerance > 0.0:
            raise InputError(f"depth_tolerance must be > 0, got {self.depth_tolerance}")
        if not 0.0 < self.alpha_threshold < 1.0:
            raise InputError(f"alpha_threshold must be in (0, 1), got {self.alpha_threshold}")


def nanmean(x: torch.Tensor) -> float:
    """Mean of the finite entries (NaN when there are none)."""
    x = x.double().flatten()
    x = x[torch.isfinite(x)]
    return float(x.mean()) if x.numel() else math.nan


# ----------------------------------------------------------------------------- what metrics share


@dataclass
class ControlRun:
    """What every control metric of one evaluation shares: the generator and its render options,
    the optional networks, and the codes and cameras of the `config.num` samples (drawn first
    from `rng`; metrics that draw more, like identity consistency, draw after them)."""

    generator: torch.nn.Module
    sampler: LabelSampler
    config: ControlConfig
    options: RenderOptions  # portrait and face resolution, stage, psi of every render
    extractor: torch.nn.Module | None
    facerecon: torch.nn.Module | None
    batch_size: int
    rng: torch.Generator
    progress: bool
    latents: LatentSample = field(init=False)

    def __post_init__(self) -> None:
        self.latents = self.sampler.sample(self.config.num, generator=self.rng, eps_dim=self.generator.config.noise_dim)

    @property
    def body(self):
        return self.generator.body

    @cached_property
    def device(self) -> torch.device:
        return next(self.generator.parameters()).device

    def render(self, latents: LatentSample, cams: Cameras, portrait_resolution: int | None = None,
               face_resolution: int | None = None) -> Rendered:
        """The generator's `Rendered` at this run's stage and psi (None sizes: the run's portrait
        size, no face)."""
        o = self.options
        return self.generator(latents, cams, options=RenderOptions(portrait_resolution or o.portrait_resolution,
                                                                   face_resolution, o.stage, o.psi))

    @cached_property
    def regions(self) -> dict[str, tuple[torch.Tensor, RegionSurface]]:
        """Head and shoulder vertex masks (within the vertices a point may be assigned to) and
        their surface samples, laid out on the first sample's mesh (edge lengths barely vary by
        identity)."""
        body, dev, lat = self.body, self.device, self.latents
        candidates = body.nn_valid.to(dev)
        masks = {"head": region_vertices(body, HEAD_BONES) & candidates,
                 "shoulder": region_vertices(body, SHOULDER_BONES) & candidates}
        ref_mesh = body(lat.z_id[:1].to(dev), torch.zeros_like(lat.z_exp[:1]).to(dev),
                        torch.zeros_like(lat.z_pose[:1]).to(dev)).vertices[0]
        return {k: (m, RegionSurface.build(ref_mesh, body.faces, m)) for k, m in masks.items()}

    def samples(self, sl: slice) -> LatentSample:
        """Codes and camera labels of the samples `sl` (CPU)."""
        lat = self.latents
        return LatentSample(lat.z_id[sl], lat.z_exp[sl], lat.z_pose[sl], lat.eps[sl], lat.cam_yaw[sl],
                            lat.cam_pitch[sl], lat.cam_radius[sl], lat.cam_fov[sl], lat.cam_look_at[sl])

    def batches(self) -> Iterator["ControlBatch"]:
        """The samples in batches, each rendered once from its main camera (portrait and face)."""
        n = self.config.num
        steps = range(0, n, self.batch_size)
        for s in tqdm(steps, desc="control", unit="batch", disable=not self.progress, leave=False):
            sl = slice(s, min(n, s + self.batch_size))
            part = self.samples(sl)
            cams = part.cameras().to(self.device)
            codes = LatentSample(*(t.to(self.device) for t in (part.z_id, part.z_exp, part.z_pose, part.eps)))
            out = self.render(codes, cams, face_resolution=self.options.face_resolution)
            yield ControlBatch(self, sl, part, codes, cams, out)


@dataclass
class ControlBatch:
    """One batch of the run's samples and its main-camera render; what several metrics need is
    computed once, on first use."""

    run: ControlRun
    index: slice  # of the run's samples
    labels: LatentSample  # codes and camera labels (CPU)
    codes: LatentSample  # z_id, z_exp, z_pose, eps on the device
    cams: Cameras
    out: Rendered

    @cached_property
    def body(self):
        """The body model posed as asked."""
        c = self.codes
        return self.run.body(c.z_id, c.z_exp, c.z_pose)

    @cached_property
    def recon(self) -> dict[str, torch.Tensor] | None:
        """R's errors on the face renders (`facerecon_errors`; None without R); R should see the
        face from the face camera's angles relative to the asked head pose."""
        R = self.run.facerecon
        if R is None:
            return None
        return facerecon_errors(R, self.run.body, self.out.face, self.codes.z_id, self.codes.z_exp, self.asked_view)

    @cached_property
    def asked_view(self) -> torch.Tensor:
        """[B, 2] the face camera's (yaw, pitch) relative to the asked head pose."""
        yaw_f, pitch_f = face_angles_from_main(self.cams, self.body.head_center, self.body.head_rotation)
        return torch.stack([yaw_f, pitch_f.clamp(-MAX_ABS_PITCH, MAX_ABS_PITCH)], -1)


# ----------------------------------------------------------------------------- the registry


def _means(run: ControlRun, values: dict[str, torch.Tensor]) -> dict[str, float]:
    return {k: nanmean(v) for k, v in values.items()}


@dataclass(frozen=True)
class ControlMetric:
    """A registered control metric. `per_batch(batch) -> {key: per-sample tensor [B, ...]}` runs on
    every batch's shared render; `reduce(run, values) -> {name: float}` turns each key's values of
    all samples into the reported numbers (default: their NaN-skipping mean). A metric without
    `per_batch` renders what it needs itself in `reduce` (values are then empty)."""

    name: str
    per_batch: Callable[[ControlBatch], dict[str, torch.Tensor]] | None = None
    reduce: Callable[[ControlRun, dict[str, torch.Tensor]], dict[str, float]] = _means


# Name -> metric, in the order they run and report.
CONTROL_METRICS: dict[str, ControlMetric] = {}


def register_control_metric(name: str, per_batch=None, reduce=None) -> ControlMetric:
    """Add a metric to ``CONTROL_METRICS`` (see ``ControlMetric``); returns it."""
    if name in CONTROL_METRICS:
        raise InputError(f"control metric {name!r} is registered already")
    metric = ControlMetric(name, per_batch, reduce or _means)
    CONTROL_METRICS[name] = metric
    return metric


def select_control_metrics(names=None) -> tuple[str, ...]:
    """Registered names in registry order (None: all); InputError naming the known ones."""
    if names is None:
        return tuple(CONTROL_METRICS)
    names = [names] if isinstance(names, str) else list(names)
    unknown = [n for n in names if n not in CONTROL_METRICS]
    if unknown:
        raise InputError(f"unknown control metric(s) {', '.join(map(repr, unknown))}; "
                         f"registered: {', '.join(CONTROL_METRICS)}")
    return tuple(n for n in CONTROL_METRICS if n in names)


# ----------------------------------------------------------------------------- the metrics

_R_ERRORS = ("exp_coef_mae", "exp_landmark_mm", "landmark_mm")


def _expression_values(recon: dict | None, z_exp: torch.Tensor) -> dict[str, torch.Tensor]:
    if recon is None:
        return {}
    return {**{k: recon[k] for k in _R_ERRORS}, "asked": z_exp.cpu(), "estimated": recon["z_exp_hat"]}


def _expression_reduce(run, values: dict[str, torch.Tensor], names=None) -> dict[str, float]:
    if not values:
        return {}
    out = {k: nanmean(values[k]) for k in _R_ERRORS}
    names = names if names is not None else run.body.expression_names
    out.update(expression_correlation(values["asked"], values["estimated"], names))
    return out


def _head_pose_values(recon: dict | None, batch: "ControlBatch | None" = None) -> dict[str, torch.Tensor]:
    # R predicts the view only when it was trained with face-camera labels.
    if recon is None or "head_pose_deg" not in recon:
        return {}
    values = {"head_pose_deg": recon["head_pose_deg"]}
    if batch is not None:  # the asked view split into the camera's part and the head's (view_gains)
        rest = torch.eye(3, dtype=batch.body.head_rotation.dtype, device=batch.body.head_rotation.device)
        camera = face_angles_from_main(batch.cams, batch.body.head_center, rest.expand_as(batch.body.head_rotation))
        values.update(view_read=recon["view_hat"], view_asked=batch.asked_view.cpu(),
                      view_camera=torch.stack(camera, -1).cpu())
    return values


def _head_pose_reduce(run, values: dict[str, torch.Tensor]) -> dict[str, float]:
    out = {"head_pose_deg": nanmean(values["head_pose_deg"])} if "head_pose_deg" in values else {}
    if "view_read" in values:
        out.update(view_gains(values["view_read"], values["view_asked"], values["view_camera"]))
    return out


register_control_metric("expression", lambda b: _expression_values(b.recon, b.codes.z_exp), _expression_reduce)
register_control_metric("head_pose", lambda b: _head_pose_values(b.recon, b), _head_pose_reduce)
register_control_metric("geometry", geometry_values)
register_control_metric("multiview", multiview_values)
register_control_metric("identity", reduce=identity_metrics)
register_control_metric("response", reduce=response_metrics)

# The metrics R's floor on real faces is measured for (`facerecon_dataset_errors`).
R_METRICS = ("expression", "head_pose")


# ----------------------------------------------------------------------------- the runners


@torch.no_grad()
def control_metrics(
    generator,
    sampler,
    config: ControlConfig | None = None,
    resolution: int = 128,
    face_resolution: int = 128,
    stage: int = 1,
    psi: float = 1.0,
    extractor=None,
    facerecon=None,
    batch_size: int = 8,
    seed: int = 0,
    progress: bool = True,
    metrics=None,
) -> dict[str, float]:
    """The selected control metrics of a generator (`metrics`: registered names, None = all; see
    the module docstring for their meaning).

    sampler: a `latents.LabelSampler` of the evaluation dataset (codes and cameras are drawn from
    its labels); extractor: a feature network for the identity cosine similarity (None skips it);
    facerecon: a `FaceRecon` (None skips the expression / head-pose errors and R's identity
    distances). Deterministic for a given seed, whichever metrics are selected. Returns a flat
    dict of floats (NaN where a metric had no valid pixel, e.g. an empty render)."""
    cfg = config or ControlConfig()
    cfg.validate()
    chosen = [CONTROL_METRICS[n] for n in select_control_metrics(metrics)]
    if batch_size < 1:
        raise InputError(f"batch_size must be >= 1, got {batch_size}")
    if sampler.id_dim != generator.config.id_dim:
        raise InputError(f"dataset labels have z_id of size {sampler.id_dim}, the generator expects {generator.config.id_dim}")
    run = ControlRun(generator, sampler, cfg, RenderOptions(resolution, face_resolution, stage, psi), extractor,
                     facerecon, batch_size, torch.Generator().manual_seed(seed), progress)
    values: dict[str, dict[str, list[torch.Tensor]]] = {m.name: {} for m in chosen}
    if any(m.per_batch is not None for m in chosen):
        for batch in run.batches():
            for m in chosen:
                if m.per_batch is not None:
                    for k, v in m.per_batch(batch).items():
                        values[m.name].setdefault(k, []).append(v.detach().double().cpu())
    out: dict[str, float] = {}
    for m in chosen:
        out.update(m.reduce(run, {k: torch.cat(v) for k, v in values[m.name].items()}))
    return out


@torch.no_grad()
def facerecon_dataset_errors(facerecon, body, dataset, num: int, batch_size: int = 32, progress: bool = True,
                             metrics=R_METRICS) -> dict[str, float]:
    """R's errors on the dataset's own face images against their labels (the floor of the
    generated-image numbers of the R metrics among `metrics`): keys with the suffix `_real`.
    `dataset`: a `PortraitDataset` (its first `num` samples are used; faces needed)."""
    chosen = [n for n in select_control_metrics(metrics) if n in R_METRICS]
    num = min(int(num), len(dataset))
    if num < 1:
        raise InputError("facerecon_dataset_errors: the dataset is empty")
    has_view = "face_yaw" in dataset.labels and "face_pitch" in dataset.labels
    values: dict[str, dict[str, list[torch.Tensor]]] = {n: {} for n in chosen}
    for s in tqdm(range(0, num, batch_size), desc="R on real faces", unit="batch", disable=not progress, leave=False):
        items = [dataset[i] for i in range(s, min(num, s + batch_size))]
        faces = torch.stack([it["face"] for it in items])
        z_id = torch.stack([it["z_id"] for it in items])
        z_exp = torch.stack([it["z_exp"] for it in items])
        view = torch.stack([torch.stack([it["face_yaw"], it["face_pitch"]]) for it in items]) if has_view else None
        recon = facerecon_errors(facerecon, body, faces, z_id, z_exp, view)
        per_metric = {"expression": _expression_values(recon, z_exp), "head_pose": _head_pose_values(recon)}
        for n in chosen:
            for k, v in per_metric[n].items():
                values[n].setdefault(k, []).append(v.detach().double().cpu())
    out: dict[str, float] = {}
    for n in chosen:
        vals = {k: torch.cat(v) for k, v in values[n].items()}
        out.update(_expression_reduce(None, vals, body.expression_names) if n == "expression" else _means(None, vals))
    return {f"{k}_real": v for k, v in out.items()}
