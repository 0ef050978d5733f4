"""Keyframes: the driving signals of an animation, with interpolation and smoothing.

A ``Keyframes`` holds N frames of
  * ``expression`` [N, 52] ARKit coefficients in [0, 1], in ``ARKIT_NAMES`` order;
  * ``pose`` [N, 6, 3] axis-angle radians (|angle| <= pi) of the joints in ``POSE_JOINTS``
    (SMPL 12-17 order), rotation axes in scene space (docs/conventions.md: +X the subject's left,
    +Y up, +Z the face direction), so a nod is about +X, a head turn about +Y;
  * ``camera`` [N, 2] main-camera (yaw, pitch) radians from frontal (see ``aniportraitgan.cameras``).

Built-in clips are in ``animation.presets``, the file formats in ``animation.keyframe_files``.

Smoothing is a centred moving average (offline, zero lag, keeps the first and last frames): a
window shrinks symmetrically near the ends; rotations are averaged as sign-aligned unit
quaternions, which is the standard approximation of the rotation mean for nearby rotations.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from aniportraitgan.cameras import MAX_ABS_PITCH
from aniportraitgan.errors import InputError
from aniportraitgan.rotations import (
    axis_angle_to_quaternion,
    euler_zyx_to_matrix,
    matrix_to_axis_angle,
    quaternion_to_axis_angle,
    slerp,
)

ARKIT_NAMES: tuple[str, ...] = (
    "browDownLeft", "browDownRight", "browInnerUp", "browOuterUpLeft", "browOuterUpRight",
    "cheekPuff", "cheekSquintLeft", "cheekSquintRight", "eyeBlinkLeft", "eyeBlinkRight",
    "eyeLookDownLeft", "eyeLookDownRight", "eyeLookInLeft", "eyeLookInRight", "eyeLookOutLeft",
    "eyeLookOutRight", "eyeLookUpLeft", "eyeLookUpRight", "eyeSquintLeft", "eyeSquintRight",
    "eyeWideLeft", "eyeWideRight", "jawForward", "jawLeft", "jawOpen", "jawRight", "mouthClose",
    "mouthDimpleLeft", "mouthDimpleRight", "mouthFrownLeft", "mouthFrownRight", "mouthFunnel",
    "mouthLeft", "mouthLowerDownLeft", "mouthLowerDownRight", "mouthPressLeft", "mouthPressRight",
    "mouthPucker", "mouthRight", "mouthRollLower", "mouthRollUpper", "mouthShrugLower",
    "mouthShrugUpper", "mouthSmileLeft", "mouthSmileRight", "mouthStretchLeft", "mouthStretchRight",
    "mouthUpperUpLeft", "mouthUpperUpRight", "noseSneerLeft", "noseSneerRight", "tongueOut",
)
assert len(ARKIT_NAMES) == 52

POSE_JOINTS: tuple[str, ...] = ("neck", "left_collar", "right_collar", "head", "left_shoulder", "right_shoulder")
# How pose values are written: axis-angle, or per joint (z, y, x) Euler radians with R = Rz Ry Rx.
POSE_FORMATS: tuple[str, ...] = ("axis-angle", "euler-zyx")
EXP_DIM = len(ARKIT_NAMES)
NUM_JOINTS = len(POSE_JOINTS)

EXPRESSION_TOLERANCE = 1e-3  # values this far outside [0, 1] are clamped, further is an error
ANGLE_TOLERANCE = 1e-4  # axis-angle norms up to pi + this are accepted


def expression_index(name: str) -> int:
    """Index of an ARKit coefficient by name."""
    try:
        return ARKIT_NAMES.index(name)
    except ValueError:
        raise InputError(f"unknown ARKit expression name {name!r}") from None


def joint_index(name: str) -> int:
    """Index of a controlled joint by name (``POSE_JOINTS``)."""
    try:
        return POSE_JOINTS.index(name)
    except ValueError:
        raise InputError(f"unknown pose joint {name!r}; expected one of {', '.join(POSE_JOINTS)}") from None


# ----------------------------------------------------------------------------- the container


def as_float_tensor(x, name: str) -> torch.Tensor:
    """A numeric array or tensor as float32 (InputError naming `name` otherwise)."""
    if isinstance(x, torch.Tensor):
        t = x.detach()
    else:
        try:
            t = torch.as_tensor(np.asarray(x, dtype=np.float64))
        except (TypeError, ValueError) as exc:
            raise InputError(f"{name} is not a numeric array: {exc}") from None
    if not (t.is_floating_point() or t.dtype in (torch.int32, torch.int64, torch.int16, torch.int8, torch.uint8, torch.bool)):
        raise InputError(f"{name} must be numeric, got {t.dtype}")
    return t.to(torch.float32)


@dataclass
class Keyframes:
    """N frames of expression [N, 52], pose [N, 6, 3] (axis-angle) and camera [N, 2] (yaw, pitch).

    Construction validates shapes, finiteness and ranges (``InputError`` naming the problem),
    converts to float32 and clamps expression values within ``EXPRESSION_TOLERANCE`` of [0, 1].
    """

    expression: torch.Tensor
    pose: torch.Tensor
    camera: torch.Tensor

    def __post_init__(self) -> None:
        exp = as_float_tensor(self.expression, "expression")
        pose = as_float_tensor(self.pose, "pose")
        cam = as_float_tensor(self.camera, "camera")
        if exp.ndim != 2 or exp.shape[1] != EXP_DIM:
            raise InputError(f"expression must have shape [N, {EXP_DIM}], got {tuple(exp.shape)}")
        if pose.ndim != 3 or tuple(pose.shape[1:]) != (NUM_JOINTS, 3):
            raise InputError(f"pose must have shape [N, {NUM_JOINTS}, 3], got {tuple(pose.shape)}")
        if cam.ndim != 2 or cam.shape[1] != 2:
            raise InputError(f"camera must have shape [N, 2] (yaw, pitch), got {tuple(cam.shape)}")
        lengths = {"expression": exp.shape[0], "pose": pose.shape[0], "camera": cam.shape[0]}
        if len(set(lengths.values())) != 1:
            raise InputError(f"keyframe components have different frame counts: {lengths}")
        if exp.shape[0] == 0:
            raise InputError("keyframes are empty (N = 0)")
        for name, t in (("expression", exp), ("pose", pose), ("camera", cam)):
            if not torch.isfinite(t).all():
                bad = (~torch.isfinite(t)).reshape(t.shape[0], -1).any(1).nonzero()[0, 0].item()
                raise InputError(f"{name} contains NaN or inf (first at frame {bad})")
        lo, hi = exp.min().item(), exp.max().item()
        if lo < -EXPRESSION_TOLERANCE or hi > 1.0 + EXPRESSION_TOLERANCE:
            raise InputError(f"expression values must be in [0, 1], got range [{lo:.4g}, {hi:.4g}]")
        angles = pose.norm(dim=-1)
        if (angles > math.pi + ANGLE_TOLERANCE).any():
            f, j = (angles > math.pi + ANGLE_TOLERANCE).nonzero()[0].tolist()
            raise InputError(
                f"pose rotation angle |{angles[f, j].item():.4g}| rad exceeds pi "
                f"(frame {f}, joint {POSE_JOINTS[j]}); use the equivalent rotation with angle <= pi"
            )
        if (cam[:, 1].abs() > MAX_ABS_PITCH).any():
            raise InputError(f"camera pitch must be within +-{MAX_ABS_PITCH:.4f} rad, got {cam[:, 1].abs().max().item():.4g}")
        self.expression = exp.clamp(0.0, 1.0).contiguous()
        self.pose = pose.contiguous()
        self.camera = cam.contiguous()

    def __len__(self) -> int:
        return self.expression.shape[0]

    def __getitem__(self, idx) -> "Keyframes":
        if isinstance(idx, int):
            idx = slice(idx, idx + 1 if idx != -1 else None)
        return Keyframes(self.expression[idx], self.pose[idx], self.camera[idx])

    @staticmethod
    def neutral(n: int = 1) -> "Keyframes":
        """n frames of neutral expression, zero pose, frontal camera."""
        if n < 1:
            raise InputError(f"n must be >= 1, got {n}")
        return Keyframes(torch.zeros(n, EXP_DIM), torch.zeros(n, NUM_JOINTS, 3), torch.zeros(n, 2))

    @staticmethod
    def concat(parts: list["Keyframes"], drop_repeated: bool = True) -> "Keyframes":
        """Concatenate clips; a part whose first frame equals the previous last frame loses it."""
        if not parts:
            raise InputError("nothing to concatenate")
        exps, poses, cams = [parts[0].expression], [parts[0].pose], [parts[0].camera]
        prev = parts[0]
        for p in parts[1:]:
            start = 0
            if drop_repeated and len(p) > 1 and _same_frame(prev, len(prev) - 1, p, 0):
                start = 1
            exps.append(p.expression[start:])
            poses.append(p.pose[start:])
            cams.append(p.camera[start:])
            prev = p
        return Keyframes(torch.cat(exps), torch.cat(poses), torch.cat(cams))

    def to(self, device) -> "Keyframes":
        """A copy on ``device`` (validation runs on the CPU copy first)."""
        out = Keyframes(self.expression, self.pose, self.camera)
        out.expression, out.pose, out.camera = (t.to(device) for t in (self.expression, self.pose, self.camera))
        return out

    # conveniences mirroring the module functions
    def interpolate(self, frames_between: int) -> "Keyframes":
        return interpolate(self, frames_between)

    def smooth(self, window: int) -> "Keyframes":
        return smooth(self, window)

    def with_camera_orbit(self, amplitude: float, cycles: float = 1.0) -> "Keyframes":
        return add_camera_orbit(self, amplitude, cycles)


def _same_frame(a: Keyframes, i: int, b: Keyframes, j: int) -> bool:
    return (
        torch.equal(a.expression[i], b.expression[j])
        and torch.equal(a.pose[i], b.pose[j])
        and torch.equal(a.camera[i], b.camera[j])
    )


# ---------------------------------------------------------------------------- building and pose formats


def _pose_from_format(pose: torch.Tensor, pose_format: str) -> torch.Tensor:
    if pose_format not in POSE_FORMATS:
        raise InputError(f"pose_format must be one of {', '.join(POSE_FORMATS)}, got {pose_format!r}")
    if pose_format == "axis-angle":
        return pose
    if pose.ndim != 3 or tuple(pose.shape[1:]) != (NUM_JOINTS, 3):
        raise InputError(f"pose must have shape [N, {NUM_JOINTS}, 3], got {tuple(pose.shape)}")
    if not torch.isfinite(pose).all():
        raise InputError("pose contains NaN or inf")
    return matrix_to_axis_angle(euler_zyx_to_matrix(pose.double())).float()


def keyframes_from_components(
    expression=None, pose=None, camera=None, pose_format: str = "axis-angle"
) -> Keyframes:
    """Build Keyframes from any subset of components; missing ones are neutral / frontal."""
    given = {k: v for k, v in (("expression", expression), ("pose", pose), ("camera", camera)) if v is not None}
    if not given:
        raise InputError("no keyframe component given (expression, pose or camera)")
    tensors = {k: as_float_tensor(v, k) for k, v in given.items()}
    lengths = {k: (t.shape[0] if t.ndim > 0 else 0) for k, t in tensors.items()}
    if len(set(lengths.values())) != 1:
        raise InputError(f"keyframe components have different frame counts: {lengths}")
    n = next(iter(lengths.values()))
    exp = tensors.get("expression", torch.zeros(n, EXP_DIM))
    pose_t = tensors.get("pose")
    pose_t = torch.zeros(n, NUM_JOINTS, 3) if pose_t is None else _pose_from_format(pose_t, pose_format)
    cam = tensors.get("camera", torch.zeros(n, 2))
    return Keyframes(exp, pose_t, cam)


# ---------------------------------------------------------------------------- interpolation


def interpolate(kf: Keyframes, frames_between: int) -> Keyframes:
    """Insert ``frames_between`` frames between consecutive keyframes.

    Returns (N - 1) * (frames_between + 1) + 1 frames; keyframes appear unchanged at multiples of
    frames_between + 1. Expression and camera are interpolated linearly, rotations by slerp of
    their quaternions (shortest path), so a rotation moves at constant angular speed.
    """
    if isinstance(frames_between, bool) or not isinstance(frames_between, int) or frames_between < 0:
        raise InputError(f"frames_between must be an int >= 0, got {frames_between!r}")
    N = len(kf)
    if N == 1 or frames_between == 0:
        return Keyframes(kf.expression.clone(), kf.pose.clone(), kf.camera.clone())
    step = frames_between + 1
    t = torch.arange(1, step, dtype=torch.float64) / step  # [S-1] strictly inside (0, 1)

    def lerp(x: torch.Tensor) -> torch.Tensor:  # x [N, ...] -> [N-1, S-1, ...]
        a, b = x[:-1, None].double(), x[1:, None].double()
        tt = t.reshape((1, -1) + (1,) * (x.ndim - 1))
        return a + (b - a) * tt

    q = axis_angle_to_quaternion(kf.pose.double())  # [N, J, 4]
    q_mid = slerp(q[:-1, None], q[1:, None], t[None, :, None, None])  # [N-1, S-1, J, 4]
    pose_mid = quaternion_to_axis_angle(q_mid)

    def weave(keys: torch.Tensor, mids: torch.Tensor) -> torch.Tensor:
        # [key0, mids0..., key1, mids1..., key_{N-1}] with the keys copied bit-exactly
        segs = torch.cat([keys[:-1, None].double(), mids], 1).reshape((-1,) + keys.shape[1:])
        return torch.cat([segs, keys[-1:].double()]).float()

    out = Keyframes(
        weave(kf.expression, lerp(kf.expression)),
        weave(kf.pose, pose_mid),
        weave(kf.camera, lerp(kf.camera)),
    )
    return out


def smooth(kf: Keyframes, window: int) -> Keyframes:
    """Centred moving average over ``window`` frames (odd, >= 1; 1 = unchanged).

    Near the ends the window shrinks symmetrically, so the first and last frames are kept.
    Rotations: quaternions sign-aligned with the centre frame, averaged, renormalised.
    """
    if isinstance(window, bool) or not isinstance(window, int) or window < 1 or window % 2 == 0:
        raise InputError(f"smoothing window must be an odd int >= 1, got {window!r}")
    N = len(kf)
    h = window // 2
    if h == 0 or N < 3:
        return Keyframes(kf.expression.clone(), kf.pose.clone(), kf.camera.clone())
    idx = torch.arange(N)
    half = torch.minimum(torch.full((N,), h), torch.minimum(idx, N - 1 - idx))  # per-frame radius
    count = (2 * half + 1).double()
    exp = torch.zeros(N, EXP_DIM, dtype=torch.float64)
    cam = torch.zeros(N, 2, dtype=torch.float64)
    q = axis_angle_to_quaternion(kf.pose.double())
    q_sum = torch.zeros_like(q)
    for k in range(-h, h + 1):
        use = (half >= abs(k)).double()
        j = (idx + k).clamp(0, N - 1)
        exp += use[:, None] * kf.expression[j].double()
        cam += use[:, None] * kf.camera[j].double()
        qj = q[j]
        sign = torch.where((qj * q).sum(-1, keepdim=True) < 0, -1.0, 1.0)
        q_sum += use[:, None, None] * sign * qj
    q_avg = q_sum / q_sum.norm(dim=-1, keepdim=True)
    return Keyframes(
        (exp / count[:, None]).float(),
        quaternion_to_axis_angle(q_avg).float(),
        (cam / count[:, None]).float(),
    )


def add_camera_orbit(kf: Keyframes, amplitude: float, cycles: float = 1.0) -> Keyframes:
    """Add a yaw sweep ``amplitude * sin(2 pi cycles s)``, s from 0 (first frame) to 1 (last).

    With whole ``cycles`` the clip starts and ends at its own yaw. Apply it to the final
    (interpolated) frames so that the sweep is smooth.
    """
    for name, v in (("amplitude", amplitude), ("cycles", cycles)):
        if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v):
            raise InputError(f"orbit {name} must be a finite number, got {v!r}")
    N = len(kf)
    cam = kf.camera.clone()
    if N > 1:
        s = torch.arange(N, dtype=torch.float64) / (N - 1)
        cam[:, 0] += (amplitude * torch.sin(2.0 * math.pi * cycles * s)).float()
    return Keyframes(kf.expression.clone(), kf.pose.clone(), cam)
