"""Multi-view consistency: lift one render's pixels with their depth, project them into another
view and compare colours where both views see the same surface (docs/evaluation.md).

Also the map checks the other control metrics share (`check_maps`).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from aniportraitgan.cameras import look_at_cameras
from aniportraitgan.errors import InputError

__all__ = ["backproject", "check_maps", "multiview_values", "reproject", "reprojection_error"]


def check_maps(name: str, x: torch.Tensor, channels: int, B: int | None = None, HW=None) -> None:
    """InputError unless x is a finite tensor [B, channels, H, W] (of batch B and size HW when given)."""
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
    check_maps("image_a", image_a, 3)
    check_maps("depth_a", depth_a, 1, B, image_a.shape[2:])
    check_maps("alpha_a", alpha_a, 1, B, image_a.shape[2:])
    check_maps("image_b", image_b, 3, B)
    check_maps("depth_b", depth_b, 1, B, image_b.shape[2:])
    check_maps("alpha_b", alpha_b, 1, B, image_b.shape[2:])
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


def multiview_values(batch) -> dict[str, torch.Tensor]:
    """The registered `multiview` control metric on one `ControlBatch`: its main view against a
    second render turned `view_delta_deg` toward the front."""
    run, lab, out = batch.run, batch.labels, batch.out
    cfg = run.config
    delta = math.radians(cfg.view_delta_deg)
    yaw2 = torch.where(lab.cam_yaw >= 0, lab.cam_yaw - delta, lab.cam_yaw + delta)
    cams2 = look_at_cameras(yaw2, lab.cam_pitch, lab.cam_radius, lab.cam_fov, lab.cam_look_at).to(run.device)
    out2 = run.render(batch.codes, cams2)
    mv = reprojection_error(out.portrait.float(), out.portrait_depth.float(), out.portrait_alpha.float(), batch.cams,
                            out2.portrait.float(), out2.portrait_depth.float(), out2.portrait_alpha.float(), cams2,
                            cfg.depth_tolerance, cfg.alpha_threshold)
    return {"multiview_mae": mv["mae"], "multiview_visible": mv["visible"]}
