"""Rotation helpers (batched, differentiable, CPU and CUDA).

Axis-angle vectors are in radians; matrices act on column vectors (x' = R x); quaternions are
(w, x, y, z).
"""

from __future__ import annotations

import torch


def skew(v: torch.Tensor) -> torch.Tensor:
    """[..., 3] -> [..., 3, 3] cross-product matrix."""
    x, y, z = v.unbind(-1)
    zero = torch.zeros_like(x)
    return torch.stack(
        [zero, -z, y, z, zero, -x, -y, x, zero], dim=-1
    ).reshape(v.shape[:-1] + (3, 3))


def axis_angle_to_matrix(rotvec: torch.Tensor) -> torch.Tensor:
    """Rodrigues' formula, [..., 3] -> [..., 3, 3].

    Uses Taylor expansions of sin(t)/t and (1-cos t)/t^2 near 0 so that the gradient at the
    identity is finite (zero pose is the most common input).
    """
    theta2 = (rotvec * rotvec).sum(-1, keepdim=True)[..., None]  # [..., 1, 1]
    small = theta2 < 1e-8
    theta2_safe = torch.where(small, torch.ones_like(theta2), theta2)
    theta = theta2_safe.sqrt()
    a = torch.where(small, 1.0 - theta2 / 6.0, torch.sin(theta) / theta)
    b = torch.where(small, 0.5 - theta2 / 24.0, (1.0 - torch.cos(theta)) / theta2_safe)
    K = skew(rotvec)
    eye = torch.eye(3, dtype=rotvec.dtype, device=rotvec.device).expand_as(K)
    return eye + a * K + b * (K @ K)


def matrix_to_axis_angle(R: torch.Tensor) -> torch.Tensor:
    """[..., 3, 3] -> [..., 3] (angles in [0, pi]); via the quaternion for stability."""
    return quaternion_to_axis_angle(matrix_to_quaternion(R))


def matrix_to_quaternion(R: torch.Tensor) -> torch.Tensor:
    """[..., 3, 3] -> [..., 4] as (w, x, y, z) with w >= 0."""
    m = R
    trace = m[..., 0, 0] + m[..., 1, 1] + m[..., 2, 2]
    # Four candidate formulas; pick the best-conditioned one per element.
    cands = torch.stack(
        [
            torch.stack([1 + trace, m[..., 2, 1] - m[..., 1, 2], m[..., 0, 2] - m[..., 2, 0], m[..., 1, 0] - m[..., 0, 1]], -1),
            torch.stack([m[..., 2, 1] - m[..., 1, 2], 1 + m[..., 0, 0] - m[..., 1, 1] - m[..., 2, 2], m[..., 0, 1] + m[..., 1, 0], m[..., 0, 2] + m[..., 2, 0]], -1),
            torch.stack([m[..., 0, 2] - m[..., 2, 0], m[..., 0, 1] + m[..., 1, 0], 1 - m[..., 0, 0] + m[..., 1, 1] - m[..., 2, 2], m[..., 1, 2] + m[..., 2, 1]], -1),
            torch.stack([m[..., 1, 0] - m[..., 0, 1], m[..., 0, 2] + m[..., 2, 0], m[..., 1, 2] + m[..., 2, 1], 1 - m[..., 0, 0] - m[..., 1, 1] + m[..., 2, 2]], -1),
        ],
        dim=-2,
    )  # [..., 4, 4]
    diag = torch.stack([trace, m[..., 0, 0], m[..., 1, 1], m[..., 2, 2]], -1)
    best = diag.argmax(-1)
    q = torch.gather(cands, -2, best[..., None, None].expand(best.shape + (1, 4))).squeeze(-2)
    q = q / q.norm(dim=-1, keepdim=True)
    return torch.where(q[..., :1] < 0, -q, q)


def quaternion_to_axis_angle(q: torch.Tensor) -> torch.Tensor:
    """Unit quaternions [..., 4] (w, x, y, z) -> axis-angle [..., 3] with angle in [0, pi]
    (q and -q are the same rotation: the sign with w >= 0 is used)."""
    q = torch.where(q[..., :1] < 0, -q, q)
    w, xyz = q[..., :1], q[..., 1:]
    s = xyz.norm(dim=-1, keepdim=True)
    angle = 2.0 * torch.atan2(s, w)
    small = s < 1e-7
    scale = torch.where(small, 2.0 / w.clamp_min(1e-7), angle / torch.where(small, torch.ones_like(s), s))
    return xyz * scale


def axis_angle_to_quaternion(v: torch.Tensor) -> torch.Tensor:
    """[..., 3] axis-angle -> [..., 4] unit quaternion (w, x, y, z)."""
    theta = v.norm(dim=-1, keepdim=True)
    half = 0.5 * theta
    small = theta < 1e-6
    # sin(t/2)/t with its Taylor expansion near 0
    k = torch.where(small, 0.5 - theta * theta / 48.0, torch.sin(half) / torch.where(small, torch.ones_like(theta), theta))
    return torch.cat([torch.cos(half), v * k], -1)


def slerp(q0: torch.Tensor, q1: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Shortest-path spherical interpolation of unit quaternions [..., 4]; t broadcasts as [..., 1]."""
    dot = (q0 * q1).sum(-1, keepdim=True)
    q1 = torch.where(dot < 0, -q1, q1)
    dot = dot.abs().clamp(max=1.0)
    theta = torch.acos(dot)
    sin_theta = torch.sin(theta)
    near = sin_theta < 1e-6
    safe = torch.where(near, torch.ones_like(sin_theta), sin_theta)
    w0 = torch.where(near, 1.0 - t, torch.sin((1.0 - t) * theta) / safe)
    w1 = torch.where(near, t, torch.sin(t * theta) / safe)
    q = w0 * q0 + w1 * q1
    return q / q.norm(dim=-1, keepdim=True)


def euler_zyx_to_matrix(angles: torch.Tensor) -> torch.Tensor:
    """Intrinsic Z-Y-X Euler angles [..., 3] = (z, y, x) radians -> R = Rz @ Ry @ Rx."""
    z, y, x = angles.unbind(-1)
    ex = torch.stack([x, torch.zeros_like(x), torch.zeros_like(x)], -1)
    ey = torch.stack([torch.zeros_like(y), y, torch.zeros_like(y)], -1)
    ez = torch.stack([torch.zeros_like(z), torch.zeros_like(z), z], -1)
    return axis_angle_to_matrix(ez) @ axis_angle_to_matrix(ey) @ axis_angle_to_matrix(ex)


def matrix_to_euler_zyx(R: torch.Tensor) -> torch.Tensor:
    """Inverse of ``euler_zyx_to_matrix``: [..., 3, 3] -> (z, y, x) radians, |y| <= pi/2."""
    z = torch.atan2(R[..., 1, 0], R[..., 0, 0])
    y = torch.atan2(-R[..., 2, 0], torch.sqrt(R[..., 2, 1] ** 2 + R[..., 2, 2] ** 2))
    x = torch.atan2(R[..., 2, 1], R[..., 2, 2])
    return torch.stack([z, y, x], -1)


def nearest_rotation(M: torch.Tensor) -> torch.Tensor:
    """Closest proper rotation (Frobenius norm) to each [..., 3, 3] matrix, via SVD in float64
    (as exact as roma.special_procrustes's float64 closed form; returned in M's dtype). Autograd's
    plain SVD gradient, which is unbounded for equal singular values: the body model uses roma's
    damped one when a gradient is needed."""
    X = M.double()
    U, _, Vh = torch.linalg.svd(X)
    det = torch.det(U @ Vh)
    D = torch.ones(X.shape[:-1], dtype=X.dtype, device=X.device)
    D = torch.cat([D[..., :2], det[..., None]], -1)
    return ((U * D[..., None, :]) @ Vh).to(M.dtype)


def rigid(R: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Homogeneous [..., 4, 4] from a rotation [..., 3, 3] and a translation [..., 3]."""
    top = torch.cat([R, t[..., None]], -1)
    bottom = torch.zeros(R.shape[:-2] + (1, 4), dtype=R.dtype, device=R.device)
    bottom[..., 0, 3] = 1.0
    return torch.cat([top, bottom], -2)


def invert_rigid(T: torch.Tensor) -> torch.Tensor:
    """Inverse of rigid [..., 4, 4] transforms by transposition."""
    Rt = T[..., :3, :3].transpose(-1, -2)
    return rigid(Rt, -(Rt @ T[..., :3, 3:]).squeeze(-1))
