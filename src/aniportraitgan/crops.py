"""Image crops by the portrait's geometry: the torso strip D_torso sees and the aligned face
crop around the projected head (the `face_from_crop` ablation of Table 2, and the alignment of
real photos in `frontend`)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from aniportraitgan.errors import InputError


def torso_crop(images: torch.Tensor) -> torch.Tensor:
    """The lower quarter of each portrait at full width: [B, C, H, W] -> [B, C, H/4, W].

    A plain slice (no resampling): D_torso sees the generator's pixels unchanged."""
    if images.dim() != 4 or images.shape[-2] % 4:
        raise InputError(f"torso_crop expects [B, C, H, W] with H divisible by 4, got {tuple(images.shape)}")
    h = images.shape[-2]
    return images[..., 3 * h // 4 :, :]


def face_crop(
    images: torch.Tensor,
    cameras,
    head_center: torch.Tensor,
    head_rotation: torch.Tensor,
    out_resolution: int,
    face_radius: float,
    face_fov_deg: float,
) -> torch.Tensor:
    """Crop and align faces from portraits (the `face_from_crop` ablation of Table 2).

    The crop is centred on the projected head centre, rotated so that the head's up axis points
    up, and sized to show what the face camera (distance `face_radius`, field of view
    `face_fov_deg`) sees in the plane of the head centre. Pixels outside the portrait are white
    (the background). Bilinear resampling: exactly the low-pass crop the paper argues against.
    """
    if images.dim() != 4:
        raise InputError(f"face_crop expects images [B, C, H, W], got {tuple(images.shape)}")
    b, _, h, w = images.shape
    if head_center.shape != (b, 3) or head_rotation.shape != (b, 3, 3):
        raise InputError(
            f"face_crop: head_center must be [{b}, 3] and head_rotation [{b}, 3, 3], "
            f"got {tuple(head_center.shape)} and {tuple(head_rotation.shape)}"
        )
    dtype = images.dtype
    head_center = head_center.to(images.device, torch.float32)
    up = head_rotation.to(images.device, torch.float32)[:, :, 1]  # head +Y axis in scene space
    pts = torch.stack([head_center, head_center + 0.05 * up], dim=1)  # [B, 2, 3]
    uv, depth = cameras.project(pts, h, w)
    uv = uv.float()
    centre = uv[:, 0]
    up2d = uv[:, 1] - uv[:, 0]
    down = -up2d / up2d.norm(dim=-1, keepdim=True).clamp_min(1e-8)
    right = torch.stack([down[:, 1], -down[:, 0]], dim=-1)
    focal = cameras.intrinsics(h, w)[:, 0, 0].to(images.device).float()
    half_extent = face_radius * math.tan(math.radians(face_fov_deg) / 2)
    half_px = focal * half_extent / depth[:, 0].float().clamp_min(1e-6)  # [B]
    scale = torch.tensor([2.0 / w, 2.0 / h], device=images.device)
    theta = torch.stack(
        [
            right * half_px[:, None] * scale,
            down * half_px[:, None] * scale,
            centre * scale - 1.0,
        ],
        dim=-1,
    )  # [B, 2, 3]: columns act on output x, output y, 1
    grid = F.affine_grid(theta, [b, images.shape[1], out_resolution, out_resolution], align_corners=False)
    # Sample (img - 1) with zero padding so that outside the portrait reads as white (+1).
    crops = F.grid_sample(images.float() - 1.0, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return (crops + 1.0).to(dtype)
