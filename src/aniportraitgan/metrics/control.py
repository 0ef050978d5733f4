"""Control metrics: how well a generator obeys the codes it is given (docs/evaluation.md).

The paper reports FID/KID only. These numbers measure the controls themselves:

* Expression (needs the face reconstruction network R): R reads the generated face render and
  estimates (z_id, z_exp). `exp_coef_mae` is the mean absolute error of the 52 ARKit
  coefficients; `exp_landmark_mm` the mean distance (mm) between the body model's 68 centred
  landmarks at the asked identity with the asked vs the estimated expression (expression only);
  `landmark_mm` uses R's identity too, as eq. 9's landmark loss does. Because most of the 52
  coefficients barely change a small face, both errors sit near the mean predictor's even for a
  perfect generator; `exp_corr` (the correlation between asked and estimated coefficients over
  the samples, for the few coefficients a face shows clearly: `EXP_PROBE`) says whether the
  expression takes effect at all, against R's own correlation on real faces (`exp_corr_real`).
* Head pose (needs R, which also predicts the face camera's view angles relative to the head):
  the face camera is placed from the main camera and the *asked* head pose, so if the generator
  turned the head as asked, R sees the face from exactly those angles. `head_pose_deg` is the
  angle between R's view direction and the asked one. R is only as good as its training, so the
  evaluation also reports R on the dataset's own faces (`*_real`): the floor of each number.
* Head and shoulder geometry (no network needed): foreground pixels of the portrait are lifted
  to 3D with the rendered depth and compared with the posed body-model surface. Shoulders are
  invisible to R (it reads the face crop) and there is no trained body-pose estimator in the
  project, so the shoulder pose is judged by geometry: `shoulder_geom_mm` is the mean distance
  from generated surface points near the shoulders to the shoulder surface of the body posed
  as asked (points spread over its triangles ~4 mm apart, `RegionSurface`),
  `shoulder_geom_mm_ref` the same points against the body in another sample's pose. Hair and
  clothes put a floor under the first number; the gap to the reference is what says the pose
  is obeyed. `head_geom_mm` / `head_geom_mm_ref` do the same for the head.
* Identity consistency across an animation: K identities, each rendered in T frames whose
  expression and pose change (the same T label rows for every identity). Feature cosine
  similarity of the face renders between frames of one identity (`identity_cos_same`) vs between
  identities at the same frame (`identity_cos_other`); with R also the distance of R's identity
  estimates in units of the label std (`identity_R_dist_same` / `identity_R_dist_other`).
* Multi-view consistency: each sample is rendered from two main cameras; every foreground pixel
  of one view is lifted with its depth, projected into the other view, and where the other
  view sees the same surface (depth agrees within a relative tolerance) the colours are
  compared. `multiview_mae` is the mean absolute colour error in 8-bit levels (0-255) over
  mutually visible pixels, symmetric in the two views; `multiview_visible` the fraction of
  foreground pixels that were mutually visible.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from aniportraitgan.cameras import MainCameraPlacement
from aniportraitgan.generator import RenderOptions
from aniportraitgan.latents import LatentSample

from ..errors import InputError

__all__ = [
    "ControlConfig",
    "EXP_PROBE",
    "expression_correlation",
    "RegionSurface",
    "HEAD_BONES",
    "SHOULDER_BONES",
    "backproject",
    "facerecon_errors",
    "control_metrics",
    "facerecon_dataset_errors",
    "geometry_distance",
    "identity_consistency",
    "identity_distance",
    "landmark_errors_mm",
    "nanmean",
    "region_vertices",
    "reproject",
    "reprojection_error",
    "view_angle_error_deg",
]

HEAD_BONES = ("head", "eye.L", "eye.R")
SHOULDER_BONES = ("clavicle.L", "shoulder01.L", "upperarm01.L", "upperarm02.L",
                  "clavicle.R", "shoulder01.R", "upperarm01.R", "upperarm02.R")


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

    def validate(self) -> None:
        for name in ("num", "identities", "frames", "geometry_points"):
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


# ----------------------------------------------------------------------------- geometry helpers


def _check_maps(name: str, x: torch.Tensor, channels: int, B: int | None = None, HW=None) -> None:
    if not isinstance(x, torch.Tensor) or x.ndim != 4 or x.shape[1] != channels:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise InputError(f"{name} must be a tensor [B, {channels}, H, W], got {shape}")
    if B is not None and x.shape[0] != B:
        raise InputError(f"{name} has batch {x.shape[0]}, expected {B}")
    if HW is not None and tuple(x.shape[2:]) != tuple(HW):
        raise InputError(f"{name} is {tuple(x.shape[2:])}, expected {tuple(HW)}")
    if not torch.isfinite(x).all():
        raise InputError(f"{name} contains NaN or inf")


def backproject(depth: torch.Tensor, cams) -> torch.Tensor:
    """Scene points [B, H*W, 3] of every pixel centre (row-major) at camera z-depth [B, 1, H, W]."""
    B, _, H, W = depth.shape
    uv = cams.pixel_centers(H, W).to(depth.dtype)  # [HW, 2]
    f = cams.focal(H).to(depth.dtype)[:, None]  # [B, 1]
    z = depth.reshape(B, H * W)
    x = (uv[None, :, 0] - 0.5 * W) / f * z
    y = (uv[None, :, 1] - 0.5 * H) / f * z
    p_cam = torch.stack([x, y, z], -1)
    c2w = cams.c2w.to(depth.dtype)
    return p_cam @ c2w[:, :3, :3].transpose(-1, -2) + c2w[:, None, :3, 3]


def reproject(depth_src: torch.Tensor, cams_src, cams_dst, H_dst: int | None = None,
              W_dst: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixels of the source view lifted with their depth and projected into the destination
    view: uv [B, H*W, 2] (destination pixels) and camera z-depth [B, H*W] there."""
    _, _, H, W = depth_src.shape
    pts = backproject(depth_src, cams_src)
    return cams_dst.to(dtype=depth_src.dtype).project(pts, H_dst or H, W_dst or W)


def _sample(maps: torch.Tensor, uv: torch.Tensor) -> torch.Tensor:
    """Bilinear samples [B, N, C] of maps [B, C, H, W] at pixel positions uv [B, N, 2]."""
    H, W = maps.shape[-2:]
    grid = torch.stack([uv[..., 0] / W * 2.0 - 1.0, uv[..., 1] / H * 2.0 - 1.0], -1)[:, :, None]
    out = F.grid_sample(maps, grid, mode="bilinear", padding_mode="border", align_corners=False)
    return out[..., 0].transpose(1, 2)


def _warp_error(img_s, depth_s, alpha_s, cams_s, img_d, depth_d, alpha_d, cams_d, tol, thr):
    """Per-sample sum of |colour| errors, count of mutually visible pixels and of foreground
    pixels, looking from the source view into the destination view."""
    B, _, H, W = img_s.shape
    Hd, Wd = img_d.shape[-2:]
    uv, z = reproject(depth_s, cams_s, cams_d, Hd, Wd)
    fg = alpha_s.reshape(B, H * W) > thr
    inside = (uv[..., 0] >= 0) & (uv[..., 0] <= Wd) & (uv[..., 1] >= 0) & (uv[..., 1] <= Hd) & (z > 0)
    a_d = _sample(alpha_d, uv)[..., 0]
    z_d = _sample(depth_d, uv)[..., 0]
    same_surface = (z_d - z).abs() <= tol * z.abs()
    visible = fg & inside & (a_d > thr) & same_surface
    c_d = _sample(img_d, uv)  # [B, N, 3]
    c_s = img_s.reshape(B, 3, H * W).transpose(1, 2)
    err = (c_d - c_s).abs().mean(-1) * visible
    return err.sum(1), visible.sum(1), fg.sum(1)


def reprojection_error(
    image_a: torch.Tensor, depth_a: torch.Tensor, alpha_a: torch.Tensor, cams_a,
    image_b: torch.Tensor, depth_b: torch.Tensor, alpha_b: torch.Tensor, cams_b,
    depth_tolerance: float = 0.02, alpha_threshold: float = 0.5,
) -> dict[str, torch.Tensor]:
    """Multi-view consistency of two renders of the same scenes.

    image_* [B, 3, H, W] in [-1, 1], depth_* [B, 1, H, W] camera z-depth (metres), alpha_*
    [B, 1, H, W] accumulated opacity, cams_*: B cameras each (the two views may differ in
    size). A pixel is mutually visible when it is foreground in its view, lands inside the
    other view on foreground, and the other view's depth there agrees with the reprojected
    depth within `depth_tolerance` (relative). Returns per-sample tensors [B]:
    "mae" mean absolute colour error in 8-bit levels over mutually visible pixels of both
    directions (NaN where none), "visible" the fraction of foreground pixels mutually visible.
    """
    B = image_a.shape[0] if isinstance(image_a, torch.Tensor) else None
    _check_maps("image_a", image_a, 3)
    _check_maps("depth_a", depth_a, 1, B, image_a.shape[2:])
    _check_maps("alpha_a", alpha_a, 1, B, image_a.shape[2:])
    _check_maps("image_b", image_b, 3, B)
    _check_maps("depth_b", depth_b, 1, B, image_b.shape[2:])
    _check_maps("alpha_b", alpha_b, 1, B, image_b.shape[2:])
    for name, cams in (("cams_a", cams_a), ("cams_b", cams_b)):
        if len(cams) != B:
            raise InputError(f"{name} holds {len(cams)} cameras for a batch of {B}")
    if not depth_tolerance > 0:
        raise InputError(f"depth_tolerance must be > 0, got {depth_tolerance}")
    args = dict(tol=float(depth_tolerance), thr=float(alpha_threshold))
    e1, v1, f1 = _warp_error(image_a, depth_a, alpha_a, cams_a, image_b, depth_b, alpha_b, cams_b, **args)
    e2, v2, f2 = _warp_error(image_b, depth_b, alpha_b, cams_b, image_a, depth_a, alpha_a, cams_a, **args)
    vis = (v1 + v2).to(e1.dtype)
    # Images are in [-1, 1]: one 8-bit level is 2 / 255.
    mae = torch.where(vis > 0, (e1 + e2) / vis.clamp_min(1) * 127.5, torch.full_like(vis, float("nan")))
    visible = vis / (f1 + f2).clamp_min(1).to(vis.dtype)
    return {"mae": mae, "visible": visible}


def region_vertices(body, bones: tuple[str, ...], min_weight: float = 0.5) -> torch.Tensor:
    """Bool mask [V] of the vertices whose skinning weight on `bones` sums to at least min_weight."""
    names = list(body.bone_names)
    missing = [b for b in bones if b not in names]
    if missing:
        raise InputError(f"body model has no bones {missing} (it has {names})")
    idx = torch.tensor([names.index(b) for b in bones], device=body.skinning_weights.device)
    return body.skinning_weights[:, idx].sum(1) >= min_weight


def _nearest(points: torch.Tensor, verts: torch.Tensor, chunk: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """Distance and index of the nearest vertex [N] for points [N, 3], verts [V, 3]."""
    dists, idxs = [], []
    for s in range(0, points.shape[0], chunk):
        d = torch.cdist(points[s:s + chunk], verts)
        m = d.min(1)
        dists.append(m.values)
        idxs.append(m.indices)
    return torch.cat(dists), torch.cat(idxs)


@dataclass
class RegionSurface:
    """Points spread over the triangles of a body region: point k is the blend of the vertices
    `ids[k]` with barycentric `weights[k]`, so it follows any posing of the mesh.

    Shoulder triangles have ~2 cm edges, so the nearest *vertex* would be up to ~1 cm from a
    point lying exactly on the surface; sampling each triangle at about `spacing` brings that
    error under a few millimetres."""

    ids: torch.Tensor  # [P, 3] long
    weights: torch.Tensor  # [P, 3] float

    @classmethod
    def build(cls, vertices: torch.Tensor, faces: torch.Tensor, region: torch.Tensor,
              spacing: float = 0.004, max_level: int = 8) -> "RegionSurface":
        """vertices [V, 3] of a reference mesh (edge lengths), faces [F, 3], region [V] bool:
        triangles with any corner in the region are sampled on a barycentric grid of
        ceil(longest edge / spacing) steps (at most max_level)."""
        faces = faces.to(vertices.device).long()
        tri = faces[region[faces].any(1)]  # border triangles too: points near the border lie on them
        if tri.shape[0] == 0:
            raise InputError("RegionSurface: no triangle touches the region")
        corners = vertices[tri]  # [T, 3, 3]
        edges = (corners - corners.roll(1, 1)).norm(dim=-1).max(1).values
        levels = (edges / spacing).ceil().clamp(1, max_level).long()
        ids, weights = [], []
        for n in levels.unique().tolist():
            grid = [(i / n, j / n, (n - i - j) / n) for i in range(n + 1) for j in range(n + 1 - i)]
            w = torch.tensor(grid, dtype=vertices.dtype, device=vertices.device)  # [S, 3]
            t = tri[levels == n]
            ids.append(t[:, None, :].expand(-1, w.shape[0], -1).reshape(-1, 3))
            weights.append(w[None].expand(t.shape[0], -1, -1).reshape(-1, 3))
        return cls(torch.cat(ids), torch.cat(weights))

    def points(self, vertices: torch.Tensor) -> torch.Tensor:
        """[B, P, 3] surface points of posed vertices [B, V, 3]."""
        return (vertices[:, self.ids] * self.weights.to(vertices.dtype)[None, :, :, None]).sum(-2)


def geometry_distance(
    points: torch.Tensor, mask: torch.Tensor, vertices: torch.Tensor, candidates: torch.Tensor,
    region: torch.Tensor, reference_vertices: torch.Tensor | None = None, max_points: int = 2048,
    surface: RegionSurface | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Distance (metres) from generated surface points to a body-model region.

    points [B, N, 3] scene points (e.g. `backproject` of the rendered depth), mask [B, N] bool
    (foreground), vertices [B, V, 3] the body posed as asked, candidates [V] bool (vertices a
    point may be assigned to), region [V] bool. Each foreground point is assigned to its nearest
    candidate vertex; points assigned to the region are kept, and their mean distance to the
    region (its `surface` samples when given, else its vertices) is returned per sample [B]
    (NaN when no point is kept). With `reference_vertices` [B, V, 3] (the body in another pose)
    the second result holds the same points' mean distance to that body's region, else NaN.
    At most `max_points` foreground points per sample (evenly strided) are used.
    """
    B = points.shape[0]
    cand_idx = candidates.nonzero().squeeze(1)
    in_region = region[cand_idx]
    reg_idx = region.nonzero().squeeze(1)
    if reg_idx.numel() == 0 or cand_idx.numel() == 0:
        raise InputError("geometry_distance: empty region or candidate vertex set")

    def targets(verts: torch.Tensor) -> torch.Tensor:
        return surface.points(verts) if surface is not None else verts[:, reg_idx]

    own_t = targets(vertices)
    ref_t = targets(reference_vertices) if reference_vertices is not None else None
    nan = points.new_tensor(float("nan"))
    own, ref = [], []
    for b in range(B):
        p = points[b][mask[b]]
        if p.shape[0] > max_points:
            p = p[torch.linspace(0, p.shape[0] - 1, max_points, device=p.device).long()]
        if p.shape[0] == 0:
            own.append(nan)
            ref.append(nan)
            continue
        _, nearest = _nearest(p, vertices[b, cand_idx])
        p = p[in_region[nearest]]
        if p.shape[0] == 0:
            own.append(nan)
            ref.append(nan)
            continue
        own.append(_nearest(p, own_t[b])[0].mean())
        ref.append(_nearest(p, ref_t[b])[0].mean() if ref_t is not None else nan)
    return torch.stack(own), torch.stack(ref)


# ----------------------------------------------------------------------------- R-based errors


def _view_directions(yaw: torch.Tensor, pitch: torch.Tensor) -> torch.Tensor:
    cp = torch.cos(pitch)
    return torch.stack([cp * torch.sin(yaw), torch.sin(pitch), cp * torch.cos(yaw)], -1)


def view_angle_error_deg(yaw_a, pitch_a, yaw_b, pitch_b) -> torch.Tensor:
    """Angle (degrees) [B] between the view directions given by two (yaw, pitch) pairs (radians)."""
    da, db = _view_directions(yaw_a, pitch_a), _view_directions(yaw_b, pitch_b)
    cos = (da * db).sum(-1).clamp(-1.0, 1.0)
    return torch.rad2deg(torch.acos(cos))


def landmark_errors_mm(body, z_id: torch.Tensor, z_exp: torch.Tensor, z_id_hat: torch.Tensor,
                       z_exp_hat: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-sample landmark errors (mm) [B] through the body model's 68 centred landmarks at zero pose.

    "exp": asked identity with the estimated vs the asked expression (expression alone);
    "full": estimated identity and expression vs the asked ones (what eq. 9 compares)."""
    from aniportraitgan.training.losses import body_landmarks

    dev = next(iter(body.buffers())).device
    z_id, z_exp = z_id.float().to(dev), z_exp.float().to(dev)
    z_id_hat, z_exp_hat = z_id_hat.float().to(dev), z_exp_hat.float().to(dev)
    target = body_landmarks(body, z_id, z_exp)
    exp_only = body_landmarks(body, z_id, z_exp_hat)
    full = body_landmarks(body, z_id_hat, z_exp_hat)
    return {
        "exp": (exp_only - target).norm(dim=-1).mean(-1) * 1000.0,
        "full": (full - target).norm(dim=-1).mean(-1) * 1000.0,
    }


@torch.no_grad()
def facerecon_errors(facerecon, body, faces: torch.Tensor, z_id: torch.Tensor, z_exp: torch.Tensor,
                     view: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """Per-sample errors [B] of R's estimate from face images against the asked codes.

    faces [B, 3, H, W] in [-1, 1]; z_id [B, id_dim], z_exp [B, exp_dim]; view [B, 2] the face
    camera's (yaw, pitch) relative to the head, radians (None: no head-pose error). Keys:
    exp_coef_mae, exp_landmark_mm, landmark_mm, and head_pose_deg (when view is given and R
    predicts it). Also returns R's identity estimate under "z_id_hat"."""
    _check_maps("faces", faces, 3, z_id.shape[0])
    dev = next(facerecon.parameters()).device
    pred = facerecon(faces.to(dev).float())
    z_exp_hat, z_id_hat = pred["z_exp"], pred["z_id"]
    lm = landmark_errors_mm(body, z_id, z_exp, z_id_hat, z_exp_hat)
    out = {
        "exp_coef_mae": (z_exp_hat.cpu() - z_exp.float().cpu()).abs().mean(-1),
        "exp_landmark_mm": lm["exp"].cpu(),
        "landmark_mm": lm["full"].cpu(),
        "z_id_hat": z_id_hat.cpu(),
        "z_exp_hat": z_exp_hat.cpu(),
    }
    if view is not None and "view" in pred:
        v_hat, v = pred["view"].cpu(), view.float().cpu()
        out["head_pose_deg"] = view_angle_error_deg(v_hat[:, 0], v_hat[:, 1], v[:, 0], v[:, 1])
    return out


# Coefficients whose effect a face image shows clearly (a 32-pixel R reads jawOpen with a
# correlation of ~0.65 on held-out SynthPortraits); the rest barely change a small face.
EXP_PROBE = ("jawOpen", "eyeBlinkLeft", "eyeBlinkRight", "mouthSmileLeft", "mouthSmileRight")


def expression_correlation(asked: torch.Tensor, estimated: torch.Tensor, names) -> dict[str, float]:
    """Pearson correlation between asked and R-estimated coefficients over samples [N, E].

    ``exp_corr``: mean over the ``EXP_PROBE`` coefficients; ``exp_corr_<name>`` for each. A
    generator whose expressions take effect scores near R's own correlation on real faces;
    one whose faces ignore the expression scores near 0. NaN where a coefficient never varies."""
    if asked.shape != estimated.shape or asked.ndim != 2:
        raise InputError(f"expression_correlation needs two [N, E] arrays of one shape, got "
                         f"{tuple(asked.shape)} and {tuple(estimated.shape)}")
    names = list(names)
    a, e = asked.double(), estimated.double()
    out: dict[str, float] = {}
    for n in EXP_PROBE:
        if n not in names:
            continue
        x, y = a[:, names.index(n)], e[:, names.index(n)]
        x, y = x - x.mean(), y - y.mean()
        den = (x.pow(2).sum() * y.pow(2).sum()).sqrt()
        out[f"exp_corr_{n}"] = float((x * y).sum() / den) if den > 1e-12 else math.nan
    vals = [v for v in out.values() if not math.isnan(v)]
    out["exp_corr"] = sum(vals) / len(vals) if vals else math.nan
    return out


# ----------------------------------------------------------------------------- identity


def identity_consistency(features: torch.Tensor) -> dict[str, float]:
    """Cosine similarity of features [K, T, D] (K identities x T frames).

    same: mean over identities of the mean similarity between distinct frames of one identity;
    other: mean similarity between distinct identities at the same frame."""
    if features.ndim != 3 or features.shape[0] < 2 or features.shape[1] < 2:
        raise InputError(f"identity_consistency needs features [K>=2, T>=2, D], got {tuple(features.shape)}")
    K, T, _ = features.shape
    f = F.normalize(features.double(), dim=-1)
    within = f @ f.transpose(1, 2)  # [K, T, T]
    same = (within.sum((1, 2)) - within.diagonal(dim1=1, dim2=2).sum(-1)) / (T * (T - 1))
    ft = f.transpose(0, 1)  # [T, K, D]
    across = ft @ ft.transpose(1, 2)  # [T, K, K]
    other = (across.sum((1, 2)) - across.diagonal(dim1=1, dim2=2).sum(-1)) / (K * (K - 1))
    return {"same": float(same.mean()), "other": float(other.mean())}


def identity_distance(codes: torch.Tensor, scale: torch.Tensor | None = None) -> dict[str, float]:
    """Mean Euclidean distance of identity codes [K, T, D] (divided by `scale` [D]) between frames
    of one identity ("same") and between identities at the same frame ("other")."""
    if codes.ndim != 3 or codes.shape[0] < 2 or codes.shape[1] < 2:
        raise InputError(f"identity_distance needs codes [K>=2, T>=2, D], got {tuple(codes.shape)}")
    c = codes.double()
    if scale is not None:
        c = c / scale.double().clamp_min(1e-6)
    K, T, _ = c.shape
    within = torch.cdist(c, c)  # diagonal is 0
    across = torch.cdist(c.transpose(0, 1), c.transpose(0, 1))
    return {"same": float(within.sum() / (K * T * (T - 1))), "other": float(across.sum() / (T * K * (K - 1)))}


def nanmean(x: torch.Tensor) -> float:
    """Mean of the finite entries (NaN when there are none)."""
    x = x.double().flatten()
    x = x[torch.isfinite(x)]
    return float(x.mean()) if x.numel() else math.nan


# ----------------------------------------------------------------------------- the runner


def _render(generator, z_id, z_exp, z_pose, eps, cams, resolution, face_resolution, stage, psi):
    return generator(LatentSample(z_id, z_exp, z_pose, eps), cams,
                     options=RenderOptions(resolution, face_resolution, stage, psi))


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
) -> dict[str, float]:
    """All control metrics of a generator (see the module docstring for their meaning).

    sampler: a `latents.LabelSampler` of the evaluation dataset (codes and cameras are
    drawn from its labels); extractor: a feature network for the identity cosine similarity
    (None skips it); facerecon: a `FaceRecon` (None skips the expression / head-pose errors and
    R's identity distances). Deterministic for a given seed. Returns a flat dict of floats
    (NaN where a metric had no valid pixel, e.g. an empty render)."""
    from tqdm.auto import tqdm

    from aniportraitgan.cameras import MAX_ABS_PITCH, face_angles_from_main, look_at_cameras

    cfg = config or ControlConfig()
    cfg.validate()
    if batch_size < 1:
        raise InputError(f"batch_size must be >= 1, got {batch_size}")
    body = generator.body
    dev = next(generator.parameters()).device
    noise_dim = generator.config.noise_dim
    if sampler.id_dim != generator.config.id_dim:
        raise InputError(f"dataset labels have z_id of size {sampler.id_dim}, the generator expects {generator.config.id_dim}")
    g = torch.Generator().manual_seed(seed)
    lat = sampler.sample(cfg.num, generator=g, eps_dim=noise_dim)
    ref_pose = lat.z_pose.roll(1, 0) if cfg.num > 1 else torch.zeros_like(lat.z_pose)
    candidates = body.nn_valid.to(dev)
    regions = {"head": region_vertices(body, HEAD_BONES) & candidates,
               "shoulder": region_vertices(body, SHOULDER_BONES) & candidates}
    # Surface samples laid out on the first sample's mesh (edge lengths barely vary by identity).
    ref_mesh = body(lat.z_id[:1].to(dev), torch.zeros_like(lat.z_exp[:1]).to(dev),
                    torch.zeros_like(lat.z_pose[:1]).to(dev)).vertices[0]
    surfaces = {k: RegionSurface.build(ref_mesh, body.faces, r) for k, r in regions.items()}
    acc: dict[str, list[torch.Tensor]] = {}

    def add(key, value):
        acc.setdefault(key, []).append(value.detach().double().cpu().reshape(-1))

    asked_exp: list[torch.Tensor] = []
    estimated_exp: list[torch.Tensor] = []
    delta = math.radians(cfg.view_delta_deg)
    steps = range(0, cfg.num, batch_size)
    for s in tqdm(steps, desc="control", unit="batch", disable=not progress, leave=False):
        sl = slice(s, min(cfg.num, s + batch_size))
        z_id, z_exp, z_pose, eps = (lat.z_id[sl].to(dev), lat.z_exp[sl].to(dev), lat.z_pose[sl].to(dev),
                                    lat.eps[sl].to(dev))
        cams = look_at_cameras(lat.cam_yaw[sl], lat.cam_pitch[sl], lat.cam_radius[sl], lat.cam_fov[sl],
                               lat.cam_look_at[sl]).to(dev)
        out = _render(generator, z_id, z_exp, z_pose, eps, cams, resolution, face_resolution, stage, psi)
        body_out = body(z_id, z_exp, z_pose)
        # Expression and head pose through R.
        if facerecon is not None:
            yaw_f, pitch_f = face_angles_from_main(cams, body_out.head_center, body_out.head_rotation)
            view = torch.stack([yaw_f, pitch_f.clamp(-MAX_ABS_PITCH, MAX_ABS_PITCH)], -1)
            errs = facerecon_errors(facerecon, body, out.face, z_id, z_exp, view)
            for k in ("exp_coef_mae", "exp_landmark_mm", "landmark_mm", "head_pose_deg"):
                if k in errs:
                    add(k, errs[k])
            asked_exp.append(z_exp.cpu())
            estimated_exp.append(errs["z_exp_hat"])
        # Head and shoulder geometry against the posed body (and a body in another pose).
        pts = backproject(out.portrait_depth.float(), cams)
        mask = out.portrait_alpha.reshape(pts.shape[0], -1) > cfg.alpha_threshold
        ref_verts = body(z_id, z_exp, ref_pose[sl].to(dev)).vertices
        for name, region in regions.items():
            own, ref = geometry_distance(pts, mask, body_out.vertices, candidates, region, ref_verts,
                                         cfg.geometry_points, surfaces[name])
            add(f"{name}_geom_mm", own * 1000.0)
            add(f"{name}_geom_mm_ref", ref * 1000.0)
        # Multi-view consistency: a second view turned toward the frontal side.
        yaw = lat.cam_yaw[sl]
        yaw2 = torch.where(yaw >= 0, yaw - delta, yaw + delta)
        cams2 = look_at_cameras(yaw2, lat.cam_pitch[sl], lat.cam_radius[sl], lat.cam_fov[sl],
                                lat.cam_look_at[sl]).to(dev)
        out2 = _render(generator, z_id, z_exp, z_pose, eps, cams2, resolution, None, stage, psi)
        mv = reprojection_error(out.portrait.float(), out.portrait_depth.float(), out.portrait_alpha.float(), cams,
                                out2.portrait.float(), out2.portrait_depth.float(), out2.portrait_alpha.float(), cams2,
                                cfg.depth_tolerance, cfg.alpha_threshold)
        add("multiview_mae", mv["mae"])
        add("multiview_visible", mv["visible"])

    metrics = {k: nanmean(torch.cat(v)) for k, v in acc.items()}
    if asked_exp:
        metrics.update(expression_correlation(torch.cat(asked_exp), torch.cat(estimated_exp), body.expression_names))
    metrics.update(_identity_metrics(generator, sampler, cfg, face_resolution, stage, psi, extractor, facerecon,
                                     batch_size, g, dev))
    return metrics


def _identity_metrics(generator, sampler, cfg, face_resolution, stage, psi, extractor, facerecon,
                      batch_size, g, dev) -> dict[str, float]:
    """Identity consistency: K identities x T frames of changing expression and pose."""
    if extractor is None and facerecon is None:
        return {}
    K, T = cfg.identities, cfg.frames
    ids = sampler.sample(K, generator=g, eps_dim=generator.config.noise_dim)
    frames = sampler.sample(T, generator=g)
    z_id = ids.z_id.repeat_interleave(T, 0)
    eps = ids.eps.repeat_interleave(T, 0)
    z_exp = frames.z_exp.repeat(K, 1)
    z_pose = frames.z_pose.repeat(K, 1, 1)
    faces, codes = [], []
    # The portrait is not needed: render it tiny, the face at the evaluation resolution.
    for s in range(0, K * T, batch_size):
        sl = slice(s, min(K * T, s + batch_size))
        n = sl.stop - sl.start
        zeros = torch.zeros(n, device=dev)
        cams = MainCameraPlacement.from_labels(sampler.tables).cameras(zeros, zeros)
        out = _render(generator, z_id[sl].to(dev), z_exp[sl].to(dev), z_pose[sl].to(dev), eps[sl].to(dev), cams,
                      8, face_resolution, stage, psi)
        face = out.face.float().clamp(-1.0, 1.0)
        faces.append(face.cpu())
        if facerecon is not None:
            codes.append(facerecon(face.to(next(facerecon.parameters()).device))["z_id"].cpu())
    faces = torch.cat(faces)
    metrics: dict[str, float] = {}
    if extractor is not None:
        from .features import extract_features

        feats = extract_features(faces, extractor, batch_size=batch_size, device=dev, progress=False)
        sim = identity_consistency(torch.from_numpy(feats).reshape(K, T, -1))
        metrics["identity_cos_same"] = sim["same"]
        metrics["identity_cos_other"] = sim["other"]
    if facerecon is not None:
        dist = identity_distance(torch.cat(codes).reshape(K, T, -1), facerecon.id_std.cpu())
        metrics["identity_R_dist_same"] = dist["same"]
        metrics["identity_R_dist_other"] = dist["other"]
    return metrics


@torch.no_grad()
def facerecon_dataset_errors(facerecon, body, dataset, num: int, batch_size: int = 32,
                             progress: bool = True) -> dict[str, float]:
    """R's errors on the dataset's own face images against their labels (the floor of the
    generated-image numbers): keys with the suffix `_real`. `dataset`: a `PortraitDataset`
    (its first `num` samples are used; faces needed)."""
    from tqdm.auto import tqdm

    num = min(int(num), len(dataset))
    if num < 1:
        raise InputError("facerecon_dataset_errors: the dataset is empty")
    has_view = "face_yaw" in dataset.labels and "face_pitch" in dataset.labels
    acc: dict[str, list[torch.Tensor]] = {}
    asked_exp: list[torch.Tensor] = []
    estimated_exp: list[torch.Tensor] = []
    for s in tqdm(range(0, num, batch_size), desc="R on real faces", unit="batch", disable=not progress, leave=False):
        items = [dataset[i] for i in range(s, min(num, s + batch_size))]
        faces = torch.stack([it["face"] for it in items])
        z_id = torch.stack([it["z_id"] for it in items])
        z_exp = torch.stack([it["z_exp"] for it in items])
        view = torch.stack([torch.stack([it["face_yaw"], it["face_pitch"]]) for it in items]) if has_view else None
        errs = facerecon_errors(facerecon, body, faces, z_id, z_exp, view)
        for k in ("exp_coef_mae", "exp_landmark_mm", "landmark_mm", "head_pose_deg"):
            if k in errs:
                acc.setdefault(k, []).append(errs[k].double())
        asked_exp.append(z_exp)
        estimated_exp.append(errs["z_exp_hat"])
    out = {k: nanmean(torch.cat(v)) for k, v in acc.items()}
    out.update(expression_correlation(torch.cat(asked_exp), torch.cat(estimated_exp), body.expression_names))
    return {f"{k}_real": v for k, v in out.items()}
