"""Pinhole cameras in scene space (docs/conventions.md).

* Extrinsics: camera-to-world ``c2w`` [B, 4, 4] with OpenCV camera axes (+X right, +Y down,
  +Z forward), world = scene space (metres, +Y up, the face looks toward +Z).
* Intrinsics: square pixels, principal point at the image centre, vertical field of view
  ``fov_deg``: ``f = 0.5 H / tan(fov / 2)`` pixels.
* Pixels: u right, v down; pixel (i, j) (row i, column j) has its centre at (j + 0.5, i + 0.5).
* Main camera: ``look_at_cameras`` from yaw (about +Y; 0 = camera on the +Z side, positive
  toward +X), pitch (positive = above, looking down), radius, fov and a look-at point.
* Face camera (the paper's dual camera, head-GAN convention): on a sphere of radius
  ``FACE_RADIUS`` around the posed head centre, at yaw/pitch measured in the head frame (the
  head rotation applied to scene axes), looking at the head centre, with the head's up axis as
  up vector, so face images are upright in the head's frame.

Everything is batched, differentiable and follows the device/dtype of its inputs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from aniportraitgan.camera_checks import (
    broadcast_batch,
    check_fov,
    check_hw,
    check_points,
    check_rotations,
    check_tensor,
    infer_dtype_device,
    scalar_batch,
)
from aniportraitgan.errors import InputError
from aniportraitgan.frames import opencv_to_opengl_c2w
from aniportraitgan.rotations import invert_rigid, rigid

FACE_RADIUS: float = 0.8  # metres from the posed head centre
FACE_FOV: float = 20.0  # degrees, vertical
# Beyond this |pitch| the look-at basis (up vector almost parallel to the view) is ill-defined.
MAX_ABS_PITCH: float = math.radians(89.0)


@dataclass(frozen=True)
class MainCameraPlacement:
    """Where the main camera orbits: the one type for the radius, field of view and look-at point.

    The defaults are the SynthPortraits framing; a trained model's placement comes from its
    training labels (``from_labels``, stored in the checkpoint's latent prior).
    """

    radius: float = 1.6  # metres from look_at
    fov_deg: float = 20.0  # vertical field of view, degrees
    look_at: tuple[float, float, float] = (0.0, 0.02, 0.0)  # scene metres (near the neck base)

    @staticmethod
    def from_labels(tables) -> "MainCameraPlacement":
        """The mean placement of label tables holding ``cam_radius``, ``cam_fov``, ``cam_look_at``."""
        look = torch.as_tensor(tables["cam_look_at"], dtype=torch.float64).reshape(-1, 3).mean(0)
        return MainCameraPlacement(float(torch.as_tensor(tables["cam_radius"], dtype=torch.float64).mean()),
                                   float(torch.as_tensor(tables["cam_fov"], dtype=torch.float64).mean()),
                                   tuple(float(v) for v in look))

    def cameras(self, yaw, pitch, device: torch.device | str | None = None) -> "Cameras":
        """Main cameras at the given yaw/pitch (radians, [B] or scalars) with this placement."""
        return look_at_cameras(yaw, pitch, self.radius, self.fov_deg, None, placement=self, device=device)


# --------------------------------------------------------------------------------- Cameras


@dataclass
class Cameras:
    """A batch of pinhole cameras: ``c2w`` [B, 4, 4] (OpenCV axes, scene space), ``fov_deg`` [B]."""

    c2w: torch.Tensor
    fov_deg: torch.Tensor

    def __post_init__(self) -> None:
        check_tensor(self.c2w, "c2w")
        if self.c2w.ndim != 3 or tuple(self.c2w.shape[1:]) != (4, 4):
            raise InputError(f"c2w must have shape [B, 4, 4], got {tuple(self.c2w.shape)}")
        B = self.c2w.shape[0]
        fov = scalar_batch(self.fov_deg, "fov_deg", self.c2w.dtype, self.c2w.device).to(self.c2w.dtype)
        if fov.shape[0] == 1 and B != 1:
            fov = fov.expand(B)
        if fov.shape[0] != B:
            raise InputError(f"fov_deg must have shape [{B}] to match c2w, got {tuple(fov.shape)}")
        check_fov(fov)
        self.fov_deg = fov

    # ---- container protocol
    def __len__(self) -> int:
        return self.c2w.shape[0]

    def __getitem__(self, idx) -> "Cameras":
        """Index the batch; an int keeps a batch dimension of 1."""
        if isinstance(idx, int):
            n = len(self)
            if not -n <= idx < n:
                raise IndexError(f"camera index {idx} out of range for {n} cameras")
            idx = slice(idx % n, idx % n + 1)
        return Cameras(self.c2w[idx], self.fov_deg[idx])

    def to(self, device=None, dtype: torch.dtype | None = None) -> "Cameras":
        return Cameras(self.c2w.to(device=device, dtype=dtype), self.fov_deg.to(device=device, dtype=dtype))

    @staticmethod
    def cat(cams: list["Cameras"]) -> "Cameras":
        return Cameras(torch.cat([c.c2w for c in cams]), torch.cat([c.fov_deg for c in cams]))

    @property
    def device(self) -> torch.device:
        return self.c2w.device

    @property
    def dtype(self) -> torch.dtype:
        return self.c2w.dtype

    @property
    def centers(self) -> torch.Tensor:
        """Camera centres [B, 3] in scene space."""
        return self.c2w[:, :3, 3]

    @property
    def w2c(self) -> torch.Tensor:
        """World(scene)-to-camera [B, 4, 4], OpenCV axes."""
        return invert_rigid(self.c2w)

    # ---- intrinsics and projection
    def focal(self, H: int) -> torch.Tensor:
        """Focal length [B] in pixels for an image of height H."""
        return 0.5 * H / torch.tan(torch.deg2rad(self.fov_deg) * 0.5)

    def intrinsics(self, H: int, W: int) -> torch.Tensor:
        """Pinhole matrices K [B, 3, 3] (pixels) for an H x W image."""
        check_hw(H, W)
        f = self.focal(H)
        K = torch.zeros(len(self), 3, 3, dtype=self.dtype, device=self.device)
        K[:, 0, 0] = f
        K[:, 1, 1] = f
        K[:, 0, 2] = 0.5 * W
        K[:, 1, 2] = 0.5 * H
        K[:, 2, 2] = 1.0
        return K

    def project(self, points: torch.Tensor, H: int, W: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Scene points [B, N, 3] (or [N, 3], shared) -> pixels uv [B, N, 2] and depth [B, N].

        Depth is the camera-space z (metres along the viewing axis). Points with depth <= 0 are
        behind the camera and their uv is meaningless; callers mask them with ``depth > 0``.
        """
        check_hw(H, W)
        check_tensor(points, "points")
        if points.ndim == 2:
            points = points[None].expand(len(self), -1, -1)
        if points.ndim != 3 or points.shape[-1] != 3 or points.shape[0] not in (1, len(self)):
            raise InputError(f"points must have shape [{len(self)}, N, 3] or [N, 3], got {tuple(points.shape)}")
        R = self.c2w[:, :3, :3]
        c = self.c2w[:, None, :3, 3]
        x_cam = (points - c) @ R  # R^T (p - c), row-vector form
        depth = x_cam[..., 2]
        # Keep the sign of z, avoid division by ~0 (such points are invalid anyway).
        z = torch.where(depth.abs() < 1e-9, torch.full_like(depth, 1e-9), depth)
        f = self.focal(H)[:, None]
        u = f * x_cam[..., 0] / z + 0.5 * W
        v = f * x_cam[..., 1] / z + 0.5 * H
        return torch.stack([u, v], -1), depth

    # ---- rays
    def rays_at(self, uv: torch.Tensor, H: int, W: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Rays through pixel positions uv [B, N, 2] (pixel units, u right, v down).

        Returns origins [B, N, 3] (the camera centres) and unit directions [B, N, 3] in scene space.
        """
        check_hw(H, W)
        check_tensor(uv, "uv")
        if uv.ndim == 2:
            uv = uv[None].expand(len(self), -1, -1)
        if uv.ndim != 3 or uv.shape[-1] != 2 or uv.shape[0] not in (1, len(self)):
            raise InputError(f"uv must have shape [{len(self)}, N, 2] or [N, 2], got {tuple(uv.shape)}")
        f = self.focal(H)[:, None]
        x = (uv[..., 0] - 0.5 * W) / f
        y = (uv[..., 1] - 0.5 * H) / f
        d_cam = torch.stack([x, y, torch.ones_like(x)], -1)
        d = d_cam @ self.c2w[:, :3, :3].transpose(-1, -2)
        d = d / d.norm(dim=-1, keepdim=True)
        o = self.c2w[:, None, :3, 3].expand_as(d)
        return o, d

    def pixel_centers(self, H: int, W: int) -> torch.Tensor:
        """Pixel-centre coordinates [H*W, 2] in row-major order: (j + 0.5, i + 0.5)."""
        check_hw(H, W)
        v, u = torch.meshgrid(
            torch.arange(H, dtype=self.dtype, device=self.device) + 0.5,
            torch.arange(W, dtype=self.dtype, device=self.device) + 0.5,
            indexing="ij",
        )
        return torch.stack([u, v], -1).reshape(H * W, 2)

    def rays(self, H: int, W: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Rays through every pixel centre, row-major: origins, unit directions [B, H*W, 3].

        Origins are an expanded (non-contiguous) view of the camera centres.
        """
        return self.rays_at(self.pixel_centers(H, W), H, W)

    # ---- rasteriser helpers
    def opengl_matrices(self, H: int, W: int, near: float = 0.05, far: float = 10.0) -> tuple[torch.Tensor, torch.Tensor]:
        """OpenGL view [B, 4, 4] (scene -> GL camera) and projection [B, 4, 4] matrices.

        They reproduce ``project``: ``u = (x_ndc + 1) W / 2`` and ``v = (1 - y_ndc) H / 2``, so a
        framebuffer read with row 0 at the bottom must be flipped vertically to get image rows.
        """
        check_hw(H, W)
        if not 0 < near < far:
            raise InputError(f"need 0 < near < far, got near={near} far={far}")
        view = invert_rigid(opencv_to_opengl_c2w(self.c2w))
        f = self.focal(H)
        P = torch.zeros(len(self), 4, 4, dtype=self.dtype, device=self.device)
        P[:, 0, 0] = 2.0 * f / W
        P[:, 1, 1] = 2.0 * f / H
        P[:, 2, 2] = -(far + near) / (far - near)
        P[:, 2, 3] = -2.0 * far * near / (far - near)
        P[:, 3, 2] = -1.0
        return view, P


# ------------------------------------------------------------------------------ construction


def _look_at_c2w(eye: torch.Tensor, target: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    """OpenCV camera-to-world [B, 4, 4] at ``eye`` looking at ``target`` with ``up`` roughly up."""
    fwd = target - eye
    fwd = fwd / fwd.norm(dim=-1, keepdim=True)
    right = torch.linalg.cross(fwd, up, dim=-1)
    right = right / right.norm(dim=-1, keepdim=True)
    down = torch.linalg.cross(fwd, right, dim=-1)
    R = torch.stack([right, down, fwd], -1)  # columns are the camera axes in world coordinates
    return rigid(R, eye)


def orbit_directions(yaw: torch.Tensor, pitch: torch.Tensor) -> torch.Tensor:
    """Unit vectors [B, 3] from the look-at point toward the camera (scene axes).

    yaw 0, pitch 0 -> +Z; yaw > 0 toward +X; pitch > 0 toward +Y.
    """
    cp = torch.cos(pitch)
    return torch.stack([cp * torch.sin(yaw), torch.sin(pitch), cp * torch.cos(yaw)], -1)


def look_at_cameras(
    yaw,
    pitch,
    radius=None,
    fov_deg=None,
    look_at: torch.Tensor | None = None,
    *,
    placement: MainCameraPlacement | None = None,
    device: torch.device | str | None = None,
) -> Cameras:
    """Main cameras orbiting a look-at point (scene space).

    yaw, pitch: radians, [B] or scalars; radius (metres) and fov_deg: [B] or scalars; look_at
    [B, 3] or [3]. ``None`` for radius / fov_deg / look_at takes ``MainCameraPlacement()`` (or the
    ``placement`` given). Scalars broadcast to the batch. The up vector is scene +Y.
    """
    d = placement or MainCameraPlacement()
    dtype, dev = infer_dtype_device(yaw, pitch, radius, fov_deg, look_at)
    if device is not None:
        dev = torch.device(device)
    yaw_t = scalar_batch(yaw, "yaw", dtype, dev)
    pitch_t = scalar_batch(pitch, "pitch", dtype, dev)
    radius_t = scalar_batch(d.radius if radius is None else radius, "radius", dtype, dev)
    fov_t = scalar_batch(d.fov_deg if fov_deg is None else fov_deg, "fov_deg", dtype, dev)
    if look_at is None:
        look_at = d.look_at
    target = torch.as_tensor(look_at, dtype=dtype, device=dev) if not isinstance(look_at, torch.Tensor) else look_at.to(device=dev, dtype=dtype)
    if target.ndim == 1:
        target = target[None]
    check_points(target, "look_at")
    if (radius_t <= 0).any():
        raise InputError(f"radius must be > 0, got min {radius_t.min().item():.4g}")
    check_fov(fov_t)
    if (pitch_t.abs() > MAX_ABS_PITCH).any():
        raise InputError(f"pitch must be within +-{MAX_ABS_PITCH:.4f} rad ({math.degrees(MAX_ABS_PITCH):.0f} deg), got {pitch_t.abs().max().item():.4g}")
    B = broadcast_batch({"yaw": yaw_t, "pitch": pitch_t, "radius": radius_t, "fov_deg": fov_t, "look_at": target})
    yaw_t, pitch_t, radius_t, fov_t = (t.expand(B) for t in (yaw_t, pitch_t, radius_t, fov_t))
    target = target.expand(B, 3)
    eye = target + radius_t[:, None] * orbit_directions(yaw_t, pitch_t)
    up = torch.tensor([0.0, 1.0, 0.0], dtype=dtype, device=dev).expand(B, 3)
    return Cameras(_look_at_c2w(eye, target, up), fov_t)


def face_cameras(
    head_center: torch.Tensor,
    head_rotation: torch.Tensor,
    yaw,
    pitch,
    *,
    radius: float = FACE_RADIUS,
    fov_deg: float = FACE_FOV,
) -> Cameras:
    """Face cameras around the posed head (head-GAN convention).

    head_center [B, 3] (scene metres), head_rotation [B, 3, 3] (scene axes -> head axes as
    columns); yaw, pitch [B] or scalars, radians relative to the head frame (0, 0 = in front of
    the face). The camera looks at the head centre from ``radius`` with up = head_rotation @ +Y.
    """
    check_points(head_center, "head_center")
    B = head_center.shape[0]
    check_rotations(head_rotation, "head_rotation", B)
    yaw_t = scalar_batch(yaw, "yaw", head_center.dtype, head_center.device)
    pitch_t = scalar_batch(pitch, "pitch", head_center.dtype, head_center.device)
    for name, t in (("yaw", yaw_t), ("pitch", pitch_t)):
        if t.shape[0] not in (1, B):
            raise InputError(f"{name} must have shape [{B}] (or be a scalar) to match head_center, got {tuple(t.shape)}")
    zero = torch.zeros(1, 3, dtype=head_center.dtype, device=head_center.device)
    local = look_at_cameras(yaw_t.expand(B), pitch_t.expand(B), radius, fov_deg, zero)
    # A look-at camera in the head frame, carried into the scene by the head's rigid motion.
    head_to_scene = rigid(head_rotation.to(head_center.dtype), head_center)
    return Cameras(head_to_scene @ local.c2w, local.fov_deg)


def face_angles_from_main(
    cams: Cameras, head_center: torch.Tensor, head_rotation: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Head-relative (yaw [B], pitch [B]) radians of each main camera's centre seen from the head.

    The direction from the head centre to the camera, expressed in the head frame, gives
    yaw = atan2(x, z) and pitch = atan2(y, sqrt(x^2 + z^2)).
    """
    if not isinstance(cams, Cameras):
        raise InputError(f"cams must be Cameras, got {type(cams).__name__}")
    B = len(cams)
    check_points(head_center, "head_center", B)
    check_rotations(head_rotation, "head_rotation", B)
    d_scene = cams.centers - head_center
    d_head = (d_scene[:, None, :] @ head_rotation.to(d_scene.dtype)).squeeze(1)  # R^T d
    x, y, z = d_head.unbind(-1)
    yaw = torch.atan2(x, z)
    pitch = torch.atan2(y, torch.sqrt(x * x + z * z + 1e-20))
    return yaw, pitch


def matching_face_cameras(
    cams: Cameras,
    head_center: torch.Tensor,
    head_rotation: torch.Tensor,
    *,
    radius: float = FACE_RADIUS,
    fov_deg: float = FACE_FOV,
) -> Cameras:
    """The dual face camera of each main camera: it views the head from the main camera's direction.

    Pitch is clamped to +-``MAX_ABS_PITCH`` so that a camera straight above the head still
    gives a valid (nearly top-down) face camera.
    """
    yaw, pitch = face_angles_from_main(cams, head_center, head_rotation)
    pitch = pitch.clamp(-MAX_ABS_PITCH, MAX_ABS_PITCH)
    return face_cameras(head_center, head_rotation, yaw, pitch, radius=radius, fov_deg=fov_deg)
