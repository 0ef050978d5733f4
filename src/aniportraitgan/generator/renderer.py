"""The ray renderer of the generator: rays, sample depths, the transform volume, the chunked
per-view loop, the ray-manifold intersections and their compositing (paper eq. 8).

Per view and per ray sample:

    x_t (scene, posed)  --inverse LBS (eq. 4) + Dp (eq. 5)-->  x_p  --De-->  x_c (scene)
    --/SCENE_SCALE-->  canonical  --M-->  s  --levels-->  intersections  --phi or U's maps-->
    colour, alpha  --eq. 8-->  pixel

Samples lie on planes of constant camera depth between the near and far depths of the
portrait's bounding box (face views: a sphere around the posed head), so the samples of all rays
form a regular (D, H, W) frustum grid: the transform volume that Dp convolves.

The functions take the generator (``generator.Generator``) as the representation they render,
as GRAM keeps its renderer apart from the networks: they read its sub-networks, its config and
``Generator.inverse_lbs``, and own no parameters.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from aniportraitgan.cameras import Cameras
from aniportraitgan.frames import SCENE_SCALE
from aniportraitgan.generator.compositing import composite
from aniportraitgan.generator.config import GeneratorConfig
from aniportraitgan.generator.deformation import apply_transforms, nearest_vertex, upsample_volume, upsample_volume_at
from aniportraitgan.generator.manifolds import intersect_levels, sort_by_depth
from aniportraitgan.generator.superres import sample_maps


@dataclass
class View:
    """One rendered view: image [B, 3, H, W] in [-1, 1], camera z-depth and opacity [B, 1, H, W]."""

    image: torch.Tensor
    depth: torch.Tensor
    alpha: torch.Tensor


# ----------------------------------------------------------------------- rays and samples
def sample_depths(cams: Cameras, bbox_corners: torch.Tensor, samples: int,
                  center: torch.Tensor | None = None, radius: float | None = None) -> torch.Tensor:
    """Camera z-depths [B, D] of the ``samples`` sample planes.

    They span the bounding box with corners [8, 3] (scene metres) or, given a bounding sphere
    (center [B, 3] scene metres, radius metres; the face view uses one around the posed head),
    that sphere.
    """
    c2w = cams.c2w.to(bbox_corners.dtype)
    forward = c2w[:, :3, 2]
    if center is None:
        rel = bbox_corners[None] - c2w[:, None, :3, 3]
        z = (rel * forward[:, None]).sum(-1)  # [B, 8]
        near, far = z.min(1).values, z.max(1).values
    else:
        zc = ((center.to(c2w.dtype) - c2w[:, :3, 3]) * forward).sum(-1)
        near, far = zc - radius, zc + radius
    near = near.clamp_min(1e-3)
    far = torch.maximum(far, near + 1e-3)
    steps = torch.linspace(0.0, 1.0, samples, device=near.device, dtype=near.dtype)
    return near[:, None] + (far - near)[:, None] * steps


def camera_rays(cams: Cameras, H: int, W: int, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """Ray origins [B, H*W, 3] and directions scaled to unit camera depth [B, H*W, 3]."""
    o, d = cams.rays(H, W)
    o, d = o.to(dtype), d.to(dtype)
    forward = cams.c2w[:, None, :3, 2].to(dtype)
    return o, d / (d * forward).sum(-1, keepdim=True)


def ray_points(rays: tuple[torch.Tensor, torch.Tensor], depths: torch.Tensor, start: int = 0,
               stop: int | None = None) -> torch.Tensor:
    """Samples [B, n, D, 3] on the depth planes for rays start:stop (row-major pixels)."""
    o, d = rays
    return o[:, start:stop, None, :] + d[:, start:stop, None, :] * depths[:, None, :, None]


def pixel_uv(cams: Cameras, H: int, W: int, dtype: torch.dtype) -> torch.Tensor:
    """Pixel centres of an H x W view in grid_sample's [-1, 1] convention: [B, H*W, 2]."""
    uv = cams.pixel_centers(H, W).to(dtype)
    uv = uv / torch.tensor([W, H], dtype=uv.dtype, device=uv.device) * 2.0 - 1.0
    return uv[None].expand(len(cams), -1, -1)


# ----------------------------------------------------------------------- transform volume (Dp)
def volume_shape(config: GeneratorConfig, H: int, W: int, D: int) -> tuple[int, int, int]:
    """(D, H, W) of the transform volume that Dp processes for an H x W view with D samples."""
    if not config.dp_half_resolution:
        return D, H, W
    h, w = (H + 1) // 2, (W + 1) // 2
    if config.dp_volume_max:
        scale = min(1.0, config.dp_volume_max / max(h, w))
        h, w = max(1, round(h * scale)), max(1, round(w * scale))
    return (D + 1) // 2, h, w


def volume_points(config: GeneratorConfig, cams: Cameras, H: int, W: int, depths: torch.Tensor) -> torch.Tensor:
    """Target-space points [B, h, w, Dv, 3] of the transform volume of an H x W view.

    Its voxel centres coincide with the full-resolution samples under trilinear,
    align_corners=False resampling (pixel centres across the same field of view; depth
    planes at the matching fractional sample index).
    """
    B, D = depths.shape
    Dv, h, w = volume_shape(config, H, W, D)
    m = torch.arange(Dv, dtype=depths.dtype, device=depths.device)
    index = (m + 0.5) * D / Dv - 0.5  # fractional full-resolution sample index
    near, far = depths[:, :1], depths[:, -1:]
    vdepths = near + (far - near) * index / max(D - 1, 1)
    return ray_points(camera_rays(cams, h, w, depths.dtype), vdepths).reshape(B, h, w, Dv, 3)


def transform_volume(G: nn.Module, cams: Cameras, H: int, W: int, depths: torch.Tensor,
                     body_out) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Inverse LBS transforms of the transform-volume samples [B, 16, Dv, h, w], and mesh
    guidance's expression offsets [B, 3, Dv, h, w] where they bypass Dp (else None)."""
    pts = volume_points(G.config, cams, H, W, depths)
    B, h, w, Dv, _ = pts.shape
    out = G.inverse_lbs(pts.reshape(B, -1, 3), body_out, split_offsets=G.offsets_bypass_dp)
    T, offsets = out if isinstance(out, tuple) else (out, None)
    as_volume = lambda x: x.reshape(B, h, w, Dv, -1).permute(0, 4, 3, 1, 2)  # noqa: E731
    return as_volume(T), None if offsets is None else as_volume(offsets)


def pose_volume(G: nn.Module, cams: Cameras, H: int, W: int, depths: torch.Tensor, body_out,
                aux: dict) -> tuple[torch.Tensor, torch.Tensor | None] | None:
    """Dp-processed transform volume and the full-resolution pixel grid to read it at.

    Adds L_pose_smooth (eq. 11) to ``aux`` when it holds the loss accumulators.
    """
    if not G.config.use_dp:
        return None
    B, D = depths.shape
    volume, offsets = transform_volume(G, cams, H, W, depths, body_out)
    processed = G.pose.process(volume)
    if aux:
        aux["pose_smooth"] = aux["pose_smooth"] + G.pose.smooth_loss(volume, processed)
    if offsets is not None:  # channels 16-18, read with the transforms but never through Dp
        processed = torch.cat([processed, offsets], 1)
    C = processed.shape[1]
    if B * C * D * H * W <= G.config.dp_dense_upsample_max:
        # Small views: one dense upsampling (its backward is far cheaper than grid_sample's),
        # laid out per ray for the chunks.
        dense = upsample_volume(processed, (D, H, W))
        return dense.permute(0, 3, 4, 2, 1).reshape(B, H * W, D, C), None
    return processed, pixel_uv(cams, H, W, depths.dtype)


# ----------------------------------------------------------------------- colour prior
COLOUR_STEP_M = 0.005
"""The colour prior's step: phi's colour change over 5 mm (in metres)."""
COLOUR_POINTS = 1024
"""Intersections per ray chunk the colour prior reads phi at again."""


def colour_roughness_at_hits(G: nn.Module, points: torch.Tensor, rad, valid: torch.Tensor, w_rad: torch.Tensor,
                             frame: torch.Tensor | None) -> torch.Tensor:
    """phi's colour roughness (``RadianceGenerator.colour_roughness``) at random intersections
    ``points`` [B, N, 3] of a chunk whose radiance ``rad`` is known, weighted by their opacity
    (detached: the prior should not pay the field to turn transparent)."""
    pick = torch.randint(points.shape[1], (min(points.shape[1], COLOUR_POINTS),), device=points.device)
    weight = (rad.alpha.detach() * valid.to(rad.alpha.dtype))[:, pick]
    return G.radiance.colour_roughness(points[:, pick], rad.color[:, pick], weight, w_rad, frame,
                                       COLOUR_STEP_M / SCENE_SCALE)


# ----------------------------------------------------------------------- deformation chain
def deform(G: nn.Module, rays, depths: torch.Tensor, body_out, w_exp: torch.Tensor, volume,
           start: int, stop: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Samples of rays start:stop: x_t, x_p, x_c, all [B, n, D, 3] scene metres.

    ``volume`` is ``pose_volume``'s result (None without Dp: inverse LBS per sample).
    """
    B, D = depths.shape
    n = stop - start
    x_t = ray_points(rays, depths, start, stop)
    if volume is not None:
        processed, uv = volume
        if uv is None:  # already upsampled per ray
            T = processed[:, start:stop]
        else:
            T = upsample_volume_at(processed, uv[:, start:stop], D)  # [B, n, D, 16 or 19]
    else:
        T = G.inverse_lbs(x_t.reshape(B, n * D, 3), body_out).reshape(B, n, D, 16)
    x_p = apply_transforms(T[..., :16], x_t)
    if T.shape[-1] > 16:  # mesh guidance's expression offsets, past Dp
        x_p = x_p + T[..., 16:]
    x_c = G.expression(x_p.reshape(B, n * D, 3), w_exp).reshape(B, n, D, 3)
    return x_t, x_p, x_c


def geometry(G: nn.Module, rays, depths: torch.Tensor, body_out, w_exp: torch.Tensor, volume,
             start: int, stop: int, aux: dict, n_rays: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Canonical samples x_can [B, n, D, 3] and the field s [B, n, D] of rays start:stop.

    Adds the De loss terms (eqs. 12, 13) of these rays to ``aux`` (weighted by their share of
    n_rays).
    """
    B, D = depths.shape
    n = stop - start
    _, x_p, x_c = deform(G, rays, depths, body_out, w_exp, volume, start, stop)
    if aux:
        aux_step = max(1, (n_rays * D) // max(1, G.config.aux_points))
        x_p_flat = x_p.reshape(B, n * D, 3)
        aux["exp_minimal"] = aux["exp_minimal"] + G.expression.minimal_loss(
            x_p_flat, x_c.reshape(B, n * D, 3)) * (n / n_rays)
        sub = x_p_flat[:, ::aux_step]
        aux["exp_smooth"] = aux["exp_smooth"] + G.expression.smooth_loss(sub, w_exp) * (n / n_rays)
    x_can = x_c / SCENE_SCALE
    return x_can, G.manifold(x_can)


def _coarse_geometry(G: nn.Module, cams: Cameras, H: int, W: int, gmax: int, depths: torch.Tensor,
                     body_out, w_exp: torch.Tensor, aux: dict, chunk: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(x_can, s) on a ray grid of side at most gmax [B, 4, D, h, w], and the pixels to read it at."""
    B, D = depths.shape
    scale = gmax / max(H, W)
    h, w = max(1, round(H * scale)), max(1, round(W * scale))
    volume = pose_volume(G, cams, h, w, depths, body_out, aux)
    rays = camera_rays(cams, h, w, depths.dtype)
    parts = []
    for start in range(0, h * w, chunk):
        x_can, s = geometry(G, rays, depths, body_out, w_exp, volume, start, min(h * w, start + chunk), aux, h * w)
        parts.append(torch.cat([x_can, s[..., None]], -1))
    grid = torch.cat(parts, 1).reshape(B, h, w, D, 4).permute(0, 4, 3, 1, 2)
    return grid, pixel_uv(cams, H, W, depths.dtype)


# ----------------------------------------------------------------------- envelope
ENVELOPE_RAMP = 0.02  # metres over which the envelope fades an intersection's opacity out
ENVELOPE_MIN_ALPHA = 1e-3  # intersections more transparent than this are not looked up


@torch.no_grad()
def envelope_weight(G: nn.Module, rays, t: torch.Tensor, alpha: torch.Tensor, start: int, stop: int,
                    body_out) -> torch.Tensor:
    """[B, n, L] in [0, 1]: 1 within ``envelope_distance`` of the posed mesh, 0 beyond it plus
    ENVELOPE_RAMP. ``t``, ``alpha`` [B, n, L]: the intersections' camera depths and opacities on
    rays start:stop; only those with some opacity are looked up (the rest cannot show)."""
    o, d = rays
    B, n, L = t.shape
    points = o[:, start:stop, None, :] + d[:, start:stop, None, :] * t[..., None]  # [B, n, L, 3]
    verts = body_out.vertices[:, G.nn_index].to(points.dtype)
    weight = torch.ones_like(t)
    for b in range(B):
        seen = alpha[b] > ENVELOPE_MIN_ALPHA
        p = points[b][seen]
        if p.shape[0] == 0:
            continue
        idx = nearest_vertex(p[None], verts[b:b + 1])[0].to(p.device)
        dist = (p - verts[b, idx]).norm(dim=-1)
        weight[b][seen] = ((G.config.envelope_distance + ENVELOPE_RAMP - dist) / ENVELOPE_RAMP).clamp(0.0, 1.0)
    return weight


# ----------------------------------------------------------------------- one view
def render_view(G: nn.Module, cams: Cameras, H: int, W: int, body_out, w_rad: torch.Tensor,
                w_exp: torch.Tensor, maps: torch.Tensor | None, aux: dict,
                bound: tuple[torch.Tensor, float] | None = None, gmax: int = 0,
                frame: torch.Tensor | None = None) -> View:
    """Render an H x W view of each batch item, in chunks of rays.

    ``maps`` (stage 2): U's radiance maps, read at the intersections instead of phi. ``bound``:
    the bounding sphere of the samples (face view). ``gmax``: evaluate the deformation chain
    and M on a ray grid of at most this side and interpolate per pixel (0: full resolution).
    ``frame``: the template frames phi's template is read through (``Generator.template_frame``).
    """
    c = G.config
    B = w_rad.shape[0]
    depths = sample_depths(cams, G.bbox_corners, c.samples_per_ray, *(bound or (None, None)))  # [B, D]
    D = depths.shape[1]
    chunk = max(1, c.ray_chunk // B)
    coarse = None
    if gmax and max(H, W) > gmax:
        # Deformation and M on a coarser ray grid (same depth planes), read per pixel by
        # bilinear interpolation: the manifolds are smooth, the detail is in U's maps.
        coarse = _coarse_geometry(G, cams, H, W, gmax, depths, body_out, w_exp, aux, chunk)
    else:
        # Pose transforms: volume at (half) ray resolution, Dp, then read at full resolution.
        volume = pose_volume(G, cams, H, W, depths, body_out, aux)
    rays = camera_rays(cams, H, W, depths.dtype)
    levels = G.manifold.levels
    L = levels.shape[0]
    n_rays = H * W
    colors, dep, acc = [], [], []
    for start in range(0, n_rays, chunk):
        stop = min(n_rays, start + chunk)
        n = stop - start
        if coarse is None:
            x_can, s = geometry(G, rays, depths, body_out, w_exp, volume, start, stop, aux, n_rays)
        else:
            g = upsample_volume_at(coarse[0], coarse[1][:, start:stop], D)  # [B, n, D, 4]
            x_can, s = g[..., :3], g[..., 3]
        hits = intersect_levels(s, levels, depths[:, None, :], x_can)
        if maps is None:
            points = hits.points.reshape(B, n * L, 3)
            rad = G.radiance(points, w_rad, frame)
            color = rad.color.reshape(B, n, L, 3)
            alpha = rad.alpha.reshape(B, n, L)
            if "colour_rough" in aux:
                aux["colour_rough"] = aux["colour_rough"] + colour_roughness_at_hits(
                    G, points, rad, hits.valid.reshape(B, n * L), w_rad, frame) * (n / n_rays)
        else:
            color, alpha = sample_maps(maps, hits.points)
        alpha = alpha * hits.valid.to(alpha.dtype)
        if c.envelope_distance > 0:
            alpha = alpha * envelope_weight(G, rays, hits.t, alpha, start, stop, body_out).to(alpha.dtype)
        t, _, color, alpha = sort_by_depth(hits.t, hits.valid, color, alpha)
        comp = composite(color, alpha, t, background=1.0, far=depths[:, -1:])  # eq. 8
        colors.append(comp.color)
        dep.append(comp.depth)
        acc.append(comp.alpha)
    image = torch.cat(colors, 1).reshape(B, H, W, 3).permute(0, 3, 1, 2) * 2.0 - 1.0
    depth = torch.cat(dep, 1).reshape(B, 1, H, W)
    alpha = torch.cat(acc, 1).reshape(B, 1, H, W)
    return View(image, depth, alpha)
