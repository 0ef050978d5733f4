"""Argument checks of the camera functions: tensor type, batch shapes, rotations, field of view.

Each raises `InputError` with the argument's name, so that a wrong call fails at the camera
API rather than deep inside a matrix product.
"""

from __future__ import annotations

import torch

from aniportraitgan.errors import InputError


def check_tensor(x: torch.Tensor, name: str) -> None:
    if not isinstance(x, torch.Tensor):
        raise InputError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise InputError(f"{name} must be floating point, got {x.dtype}")
    if not torch.isfinite(x).all():
        raise InputError(f"{name} contains NaN or inf")


def scalar_batch(x, name: str, dtype: torch.dtype, device) -> torch.Tensor:
    """A float, 0-d or 1-d value -> a 1-d float tensor (length 1 for scalars)."""
    if isinstance(x, torch.Tensor):
        t = x.to(device=device, dtype=dtype if not x.is_floating_point() else x.dtype)
    else:
        try:
            t = torch.as_tensor(x, dtype=dtype, device=device)
        except (TypeError, ValueError, RuntimeError) as exc:
            raise InputError(f"{name} must be a number or a 1-d tensor: {exc}") from None
    if t.ndim == 0:
        t = t[None]
    if t.ndim != 1:
        raise InputError(f"{name} must be a scalar or have shape [B], got {tuple(t.shape)}")
    check_tensor(t, name)
    return t


def infer_dtype_device(*xs):
    for x in xs:
        if isinstance(x, torch.Tensor) and x.is_floating_point():
            return x.dtype, x.device
    for x in xs:
        if isinstance(x, torch.Tensor):
            return torch.float32, x.device
    return torch.float32, torch.device("cpu")


def broadcast_batch(named: dict[str, torch.Tensor]) -> int:
    sizes = {n: t.shape[0] for n, t in named.items()}
    B = max(sizes.values())
    bad = {n: s for n, s in sizes.items() if s not in (1, B)}
    if bad:
        raise InputError(f"batch sizes do not match: {sizes}")
    return B


def check_fov(fov: torch.Tensor, name: str = "fov_deg") -> None:
    if ((fov <= 0) | (fov >= 180)).any():
        raise InputError(f"{name} must be in (0, 180) degrees, got min {fov.min().item():.4g} max {fov.max().item():.4g}")


def check_rotations(R: torch.Tensor, name: str, B: int | None = None) -> None:
    check_tensor(R, name)
    if R.ndim != 3 or tuple(R.shape[1:]) != (3, 3) or (B is not None and R.shape[0] != B):
        want = f"[{B}, 3, 3]" if B is not None else "[B, 3, 3]"
        raise InputError(f"{name} must have shape {want}, got {tuple(R.shape)}")
    eye = torch.eye(3, dtype=R.dtype, device=R.device)
    err = (R.transpose(-1, -2) @ R - eye).abs().amax()
    if err > 1e-2 or (torch.det(R.float()) < 0).any():
        raise InputError(f"{name} is not a rotation matrix (|R^T R - I| = {err.item():.3g} or det < 0)")


def check_points(x: torch.Tensor, name: str, B: int | None = None) -> None:
    check_tensor(x, name)
    if x.ndim != 2 or x.shape[1] != 3 or (B is not None and x.shape[0] != B):
        want = f"[{B}, 3]" if B is not None else "[B, 3]"
        raise InputError(f"{name} must have shape {want}, got {tuple(x.shape)}")


def check_hw(H: int, W: int) -> None:
    for n, v in (("H", H), ("W", W)):
        if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
            raise InputError(f"{n} must be a positive int, got {v!r}")
