"""Control response: does each control change the image where it should, and only there?

For each probe -- an expression set from 0 to 1 (jawOpen, eyeBlink, smile, browInnerUp) on the
face camera, a joint rotation (head turn, nod, tilt, shoulder shrug) on the portrait -- every
sample is rendered without and with it. The *region* of a probe is where the body model says
it moves the person: the pixels near the projections, before and after, of the vertices the
probe displaces by more than ``max(floor, rel x the largest displacement)`` (the jaw and lips
for jawOpen, the eyelids for eyeBlink, the head for a turn, the shoulders for a shrug). The
*rest* is the remaining footprint of the body model: the head on the face camera, the whole
upper body on the portrait. Reported per probe, in 8-bit levels (0-255) of mean absolute
pixel change (mean over RGB):

* ``response_<probe>_in``: the mean change inside the region;
* ``response_<probe>_out``: the mean change over the rest;
* ``response_<probe>``: their ratio (means over the samples first). About 1 when a control
  changes the whole image alike (or only noise changes), large when it moves what it should,
  below 1 when it moves something else; undefined (null) when nothing changes at all.

Regions are splats of projected vertices (a few pixels wide, ``radius``) rather than a
rasterised mesh: the metric needs no renderer and runs wherever the generator runs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from aniportraitgan.body import CONTROLLED_JOINTS
from aniportraitgan.cameras import Cameras, matching_face_cameras
from aniportraitgan.data.synth_config import SynthConfig
from aniportraitgan.data.synth_worker import SynthWorker
from aniportraitgan.generator import RenderOptions
from aniportraitgan.latents import LatentSample

from .geometry import HEAD_BONES, region_vertices

__all__ = ["EXPRESSION_PROBES", "POSE_PROBES", "ResponseRegions", "data_response_metrics", "response_metrics", "splat_mask"]

# Probe name -> the ARKit coefficients it sets to 1.
EXPRESSION_PROBES: dict[str, tuple[str, ...]] = {
    "jawOpen": ("jawOpen",),
    "eyeBlink": ("eyeBlinkLeft", "eyeBlinkRight"),
    "smile": ("mouthSmileLeft", "mouthSmileRight"),
    "browInnerUp": ("browInnerUp",),
}
# Probe name -> {controlled joint (body bone name): axis-angle radians in scene axes (+Y up, the
# face looks toward +Z, the left collar points to +X)}; the animation presets' amplitudes.
POSE_PROBES: dict[str, dict[str, tuple[float, float, float]]] = {
    "head_turn": {"head": (0.0, 0.5, 0.0)},
    "head_nod": {"head": (0.3, 0.0, 0.0)},
    "head_tilt": {"head": (0.0, 0.0, 0.3)},
    "shoulder_shrug": {"clavicle.L": (0.0, 0.0, 0.25), "clavicle.R": (0.0, 0.0, -0.25)},
}
LEVELS = 127.5  # images in [-1, 1] -> 8-bit levels


def splat_mask(uv: torch.Tensor, valid: torch.Tensor, H: int, W: int, radius: int) -> torch.Tensor:
    """Bool [B, H, W]: pixels within `radius` (a square) of a valid projected point; uv [B, N, 2]
    in pixels (u right, v down), valid [B, N] bool."""
    B = uv.shape[0]
    col, row = uv[..., 0].floor().long(), uv[..., 1].floor().long()
    valid = valid & (col >= 0) & (col < W) & (row >= 0) & (row < H)
    flat = torch.zeros(B, H * W, device=uv.device)
    index = (row * W + col).clamp(0, H * W - 1)
    flat.scatter_(1, index, valid.to(flat.dtype))
    grid = flat.view(B, 1, H, W)
    if radius > 0:
        grid = F.max_pool2d(grid, 2 * radius + 1, stride=1, padding=radius)
    return grid[:, 0] > 0


@dataclass(frozen=True)
class ResponseRegions:
    """How a probe's region and the rest are found (see the module docstring)."""

    rel: float = 0.1  # moving: displaced by more than rel x the sample's largest displacement ...
    floor_m: float = 0.001  # ... and more than this (metres)
    radius_frac: float = 0.03  # splat radius: this share of the image side (2 px at 64)

    def masks(self, cams: Cameras, H: int, before: torch.Tensor, after: torch.Tensor,
              domain: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(region, rest) bool [B, H, H] of vertices `before`/`after` [B, V, 3] (scene) seen by
        `cams`; `domain` [V] bool: the vertices whose footprint the rest is taken from."""
        disp = (after - before).norm(dim=-1)  # [B, V]
        limit = torch.clamp(self.rel * disp.amax(1, keepdim=True), min=self.floor_m)
        moving = disp > limit
        radius = max(1, round(self.radius_frac * H))
        region = torch.zeros(len(cams), H, H, dtype=torch.bool, device=before.device)
        footprint = torch.zeros_like(region)
        for verts in (before, after):
            uv, depth = cams.project(verts.to(cams.dtype), H, H)
            region |= splat_mask(uv, moving & (depth > 0), H, H, radius)
            footprint |= splat_mask(uv, domain[None] & (depth > 0), H, H, radius)
        return region, footprint & ~region


def _change(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean absolute change [B] in 8-bit levels of images [B, 3, H, W] over mask [B, H, W]
    (NaN where the mask is empty)."""
    d = (a.float() - b.float()).abs().mean(1) * LEVELS
    m = mask.to(d.dtype)
    return (d * m).sum((1, 2)) / m.sum((1, 2))  # 0/0 -> NaN


def _probe_indices(body) -> tuple[dict[str, list[int]], dict[str, dict[int, torch.Tensor]]]:
    names = list(body.expression_names)
    exp = {p: [names.index(n) for n in coeffs] for p, coeffs in EXPRESSION_PROBES.items()}
    pose = {p: {CONTROLLED_JOINTS.index(j): torch.tensor(v) for j, v in joints.items()} for p, joints in POSE_PROBES.items()}
    return exp, pose


def _probe_changes(render, body, cams: Cameras, z_id, z_exp, z_pose, Hp: int, Hf: int,
                   regions: ResponseRegions) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """{probe: (change inside [B], change in the rest [B])} of one batch. `render(exp, pose,
    face_cams=None)` returns images [B, 3, H, W] in [-1, 1]: the face view (at Hf) when given
    face cameras, else the portrait (at Hp) from `cams`."""
    exp_idx, pose_idx = _probe_indices(body)
    dev = z_id.device
    out: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    # Expressions on the face camera, placed once from the un-probed head so that it stays put.
    exp0 = z_exp.clone()
    exp0[:, [i for idx in exp_idx.values() for i in idx]] = 0.0
    body0 = body(z_id, exp0, z_pose)
    face_cams = matching_face_cameras(cams, body0.head_center, body0.head_rotation)
    head = region_vertices(body, HEAD_BONES).to(dev)
    base = render(exp0, z_pose, face_cams)
    for name, idx in exp_idx.items():
        exp1 = exp0.clone()
        exp1[:, idx] = 1.0
        inside, rest = regions.masks(face_cams, Hf, body0.vertices, body(z_id, exp1, z_pose).vertices, head)
        img = render(exp1, z_pose, face_cams)
        out[name] = (_change(img, base, inside), _change(img, base, rest))
    # Joint rotations on the portrait, from the sample's pose with the probed joints at rest.
    pose0 = z_pose.clone()
    pose0[:, sorted({j for joints in pose_idx.values() for j in joints})] = 0.0
    body0 = body(z_id, z_exp, pose0)
    everything = torch.ones(body0.vertices.shape[1], dtype=torch.bool, device=dev)
    base = render(z_exp, pose0)
    for name, joints in pose_idx.items():
        pose1 = pose0.clone()
        for j, rotvec in joints.items():
            pose1[:, j] = rotvec.to(pose1)
        inside, rest = regions.masks(cams, Hp, body0.vertices, body(z_id, z_exp, pose1).vertices, everything)
        img = render(z_exp, pose1)
        out[name] = (_change(img, base, inside), _change(img, base, rest))
    return out


def _batch_values(run, part: LatentSample, regions: ResponseRegions) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """`_probe_changes` of one batch of the run's samples, rendered by its generator."""
    G, dev, o = run.generator, run.device, run.options
    Hp, Hf = o.portrait_resolution, o.face_resolution or o.portrait_resolution
    z_id, eps = part.z_id.to(dev), part.eps.to(dev)

    def render(exp, pose, face_cams=None):
        # Only one view is compared per probe: the other is rendered tiny (8 px) or not at all.
        opts = RenderOptions(8 if face_cams is not None else Hp, Hf if face_cams is not None else None, o.stage, o.psi)
        out = G(LatentSample(z_id, exp, pose, eps), cams, face_cams, options=opts)
        return out.face if face_cams is not None else out.portrait

    cams = part.cameras().to(dev)
    return _probe_changes(render, run.body, cams, z_id, part.z_exp.to(dev), part.z_pose.to(dev), Hp, Hf, regions)


def _reduce(sums: dict[str, list[list[torch.Tensor]]]) -> dict[str, float]:
    """{probe: [[inside per batch], [rest per batch]]} -> the three numbers of each probe."""
    metrics: dict[str, float] = {}
    for name, (inside, rest) in sums.items():
        i, r = torch.cat(inside), torch.cat(rest)
        i, r = i[torch.isfinite(i)].mean(), r[torch.isfinite(r)].mean()  # empty -> NaN
        # 0 when only the rest changes, inf when only the region does, NaN when nothing changes.
        metrics[f"response_{name}"] = float(i / r) if float(r) > 0 else (math.inf if float(i) > 0 else math.nan)
        metrics[f"response_{name}_in"] = float(i)
        metrics[f"response_{name}_out"] = float(r)
    return metrics


def _accumulate(sums: dict, values: dict[str, tuple[torch.Tensor, torch.Tensor]]) -> None:
    for name, (inside, rest) in values.items():
        acc = sums.setdefault(name, [[], []])
        acc[0].append(inside.double().cpu())
        acc[1].append(rest.double().cpu())


@torch.no_grad()
def response_metrics(run, values=None, regions: ResponseRegions = ResponseRegions()) -> dict[str, float]:
    """The registered `response` control metric of a `ControlRun`: its first
    `config.response_num` samples (no further draws), each rendered once per probe and once
    without."""
    n = min(run.config.num, run.config.response_num)
    sums: dict[str, list[list[torch.Tensor]]] = {}
    for s in range(0, n, run.batch_size):
        part = run.samples(slice(s, min(n, s + run.batch_size)))
        _accumulate(sums, _batch_values(run, part, regions))
    return _reduce(sums)


@torch.no_grad()
def data_response_metrics(dataset, num: int, portrait_resolution: int, face_resolution: int,
                          regions: ResponseRegions = ResponseRegions(), progress: bool = True) -> dict[str, float]:
    """The same probes on the renderer that made a SynthPortraits dataset: its first `num`
    samples (their own identities, codes and cameras) drawn again with each probe applied.
    What a generator that reproduced the data exactly would score, the ceiling of
    `response_metrics`: keys with the suffix `_real`. `dataset`: a `PortraitDataset`; raises
    `UserError` when it was not made by `data synth` (a photo set has no renderer to ask)."""
    config = SynthConfig.from_card(dataset.card, num=len(dataset))
    worker = SynthWorker(config)  # one torch thread until close()
    labels = dataset.labels
    sums: dict[str, list[list[torch.Tensor]]] = {}
    try:
        for pos in tqdm(range(min(int(num), len(dataset))), desc="response of the data", unit="sample",
                        disable=not progress, leave=False):
            k = int(dataset.index[pos])  # the sample's own number: its look is drawn from it
            row = {key: torch.as_tensor(np.asarray(labels[key][pos:pos + 1])) for key in ("z_id", "z_exp", "z_pose", "c2w", "cam_fov")}
            z_id, z_exp, z_pose = (row[key].float() for key in ("z_id", "z_exp", "z_pose"))
            cams = Cameras(row["c2w"].float(), row["cam_fov"].float())

            def render(exp, pose, face_cams=None, k=k, z_id=z_id):
                size = face_resolution if face_cams is not None else portrait_resolution
                img = worker.render_posed(k, worker.body(z_id, exp, pose),
                                         face_cams if face_cams is not None else cams, size)
                return torch.from_numpy(img).permute(0, 3, 1, 2).float() / LEVELS - 1.0

            _accumulate(sums, _probe_changes(render, worker.body, cams, z_id, z_exp, z_pose,
                                             portrait_resolution, face_resolution, regions))
    finally:
        worker.close()
    return {f"{key}_real": v for key, v in _reduce(sums).items()}
