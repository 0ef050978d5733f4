"""Keyframes: the driving signals of an animation, with presets, files, interpolation, smoothing.

A ``Keyframes`` holds N frames of
  * ``expression`` [N, 52] ARKit coefficients in [0, 1], in ``ARKIT_NAMES`` order;
  * ``pose`` [N, 6, 3] axis-angle radians (|angle| <= pi) of the joints in ``POSE_JOINTS``
    (SMPL 12-17 order), rotation axes in scene space (docs/conventions.md: +X the subject's left,
    +Y up, +Z the face direction), so a nod is about +X, a head turn about +Y;
  * ``camera`` [N, 2] main-camera (yaw, pitch) radians from frontal (see ``aniportraitgan.cameras``).

Files
-----
``.npz``  keys ``expression``, ``pose``, ``camera`` (each optional: missing ones are neutral /
          frontal) and optionally ``pose_format`` (a string).
``.json`` an object with the same keys; an expression frame may be a list of 52 numbers or a
          sparse ``{"jawOpen": 0.7}`` object, a pose frame a list of 6 triples or a sparse
          ``{"head": [0, 0.3, 0]}`` object keyed by ``POSE_JOINTS``.
``.npy``  one array, recognised by shape: [N, 52] expression, [N, 6, 3] pose, [N, 2] camera, or
          [N, 72] = expression | pose flattened (18) | camera.
``pose_format`` is ``"axis-angle"`` (default) or ``"euler-zyx"``: per joint (z, y, x) radians
with R = Rz Ry Rx, converted to axis-angle on load.

Smoothing is a centred moving average (offline, zero lag, keeps the first and last frames): a
window shrinks symmetrically near the ends; rotations are averaged as sign-aligned unit
quaternions, which is the standard approximation of the rotation mean for nearby rotations.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from aniportraitgan.errors import AssetError, InputError
from aniportraitgan.rotations import euler_zyx_to_matrix, matrix_to_axis_angle, quaternion_to_axis_angle

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
POSE_FORMATS: tuple[str, ...] = ("axis-angle", "euler-zyx")
EXP_DIM = len(ARKIT_NAMES)
NUM_JOINTS = len(POSE_JOINTS)
FLAT_DIM = EXP_DIM + NUM_JOINTS * 3 + 2  # the [N, 72] .npy layout

EXPRESSION_TOLERANCE = 1e-3  # values this far outside [0, 1] are clamped, further is an error
ANGLE_TOLERANCE = 1e-4  # axis-angle norms up to pi + this are accepted
# The main camera's pitch limit (look-at basis degenerates at +-90 deg); mirrors cameras.MAX_ABS_PITCH.
MAX_ABS_PITCH = math.radians(89.0)


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


def _as_float_tensor(x, name: str) -> torch.Tensor:
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
        exp = _as_float_tensor(self.expression, "expression")
        pose = _as_float_tensor(self.pose, "pose")
        cam = _as_float_tensor(self.camera, "camera")
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

    def save(self, path: str | Path, pose_format: str = "axis-angle") -> None:
        save_keyframes(self, path, pose_format)

    @staticmethod
    def load(path: str | Path, pose_format: str | None = None) -> "Keyframes":
        return load_keyframes(path, pose_format)


def _same_frame(a: Keyframes, i: int, b: Keyframes, j: int) -> bool:
    return (
        torch.equal(a.expression[i], b.expression[j])
        and torch.equal(a.pose[i], b.pose[j])
        and torch.equal(a.camera[i], b.camera[j])
    )


# ---------------------------------------------------------------------------- rotation helpers


def axis_angle_to_quaternion(v: torch.Tensor) -> torch.Tensor:
    """[..., 3] axis-angle -> [..., 4] unit quaternion (w, x, y, z)."""
    theta = v.norm(dim=-1, keepdim=True)
    half = 0.5 * theta
    small = theta < 1e-6
    # sin(t/2)/t with its Taylor expansion near 0
    k = torch.where(small, 0.5 - theta * theta / 48.0, torch.sin(half) / torch.where(small, torch.ones_like(theta), theta))
    return torch.cat([torch.cos(half), v * k], -1)


def _quaternion_to_axis_angle(q: torch.Tensor) -> torch.Tensor:
    """Unit quaternion -> axis-angle with angle in [0, pi] (canonical sign w >= 0)."""
    q = torch.where(q[..., :1] < 0, -q, q)
    return quaternion_to_axis_angle(q)


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


def matrix_to_euler_zyx(R: torch.Tensor) -> torch.Tensor:
    """Inverse of ``rotations.euler_zyx_to_matrix``: [..., 3, 3] -> (z, y, x) radians, |y| <= pi/2."""
    z = torch.atan2(R[..., 1, 0], R[..., 0, 0])
    y = torch.atan2(-R[..., 2, 0], torch.sqrt(R[..., 2, 1] ** 2 + R[..., 2, 2] ** 2))
    x = torch.atan2(R[..., 2, 1], R[..., 2, 2])
    return torch.stack([z, y, x], -1)


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
    pose_mid = _quaternion_to_axis_angle(q_mid)

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
        _quaternion_to_axis_angle(q_avg).float(),
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


# ------------------------------------------------------------------------------------- files


def _frames_from_json_component(value, name: str) -> np.ndarray:
    """JSON expression/pose lists may use sparse per-frame objects keyed by name."""
    if not isinstance(value, list):
        raise InputError(f"{name} must be a list of frames, got {type(value).__name__}")
    if name == "expression" and any(isinstance(f, dict) for f in value):
        out = np.zeros((len(value), EXP_DIM))
        for i, f in enumerate(value):
            if isinstance(f, dict):
                for k, v in f.items():
                    out[i, expression_index(k)] = v
            else:
                row = np.asarray(f, dtype=np.float64)
                if row.shape != (EXP_DIM,):
                    raise InputError(f"expression frame {i} must have {EXP_DIM} values, got shape {row.shape}")
                out[i] = row
        return out
    if name == "pose" and any(isinstance(f, dict) for f in value):
        out = np.zeros((len(value), NUM_JOINTS, 3))
        for i, f in enumerate(value):
            if isinstance(f, dict):
                for k, v in f.items():
                    vec = np.asarray(v, dtype=np.float64)
                    if vec.shape != (3,):
                        raise InputError(f"pose frame {i} joint {k} must be 3 numbers, got shape {vec.shape}")
                    out[i, joint_index(k)] = vec
            else:
                row = np.asarray(f, dtype=np.float64)
                if row.shape != (NUM_JOINTS, 3):
                    raise InputError(f"pose frame {i} must have shape ({NUM_JOINTS}, 3), got {row.shape}")
                out[i] = row
        return out
    try:
        return np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InputError(f"{name} is not a rectangular numeric array: {exc}") from None


def _read_components(path: Path) -> tuple[dict[str, np.ndarray], str | None]:
    suffix = path.suffix.lower()
    if suffix not in (".npz", ".npy", ".json"):
        raise InputError(f"keyframe file {path} must end in .npz, .npy or .json")
    if not path.is_file():
        raise AssetError(f"keyframe file not found: {path}")
    stored_format = None
    try:
        if suffix == ".json":
            data = json.loads(path.read_text())
            if not isinstance(data, dict):
                raise InputError(f"{path}: expected a JSON object with expression/pose/camera keys")
            stored_format = data.pop("pose_format", None)
            unknown = set(data) - {"expression", "pose", "camera"}
            if unknown:
                raise InputError(f"{path}: unknown keys {sorted(unknown)}; expected expression, pose, camera, pose_format")
            comps = {k: _frames_from_json_component(v, k) for k, v in data.items()}
        elif suffix == ".npz":
            with np.load(path, allow_pickle=False) as z:
                unknown = set(z.files) - {"expression", "pose", "camera", "pose_format"}
                if unknown:
                    raise InputError(f"{path}: unknown arrays {sorted(unknown)}; expected expression, pose, camera, pose_format")
                if "pose_format" in z.files:
                    stored_format = str(z["pose_format"])
                comps = {k: z[k] for k in ("expression", "pose", "camera") if k in z.files}
        else:
            arr = np.load(path, allow_pickle=False)
            comps = _split_npy(arr, path)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise AssetError(f"{path}: not valid JSON ({exc})") from None
    except (ValueError, OSError, EOFError) as exc:
        if isinstance(exc, InputError):
            raise
        raise AssetError(f"{path}: cannot read keyframes ({exc})") from None
    if not comps:
        raise InputError(f"{path}: holds none of expression, pose, camera")
    return comps, stored_format


def _split_npy(arr: np.ndarray, path: Path) -> dict[str, np.ndarray]:
    if arr.ndim == 3 and arr.shape[1:] == (NUM_JOINTS, 3):
        return {"pose": arr}
    if arr.ndim == 2 and arr.shape[1] == EXP_DIM:
        return {"expression": arr}
    if arr.ndim == 2 and arr.shape[1] == 2:
        return {"camera": arr}
    if arr.ndim == 2 and arr.shape[1] == FLAT_DIM:
        n = arr.shape[0]
        return {
            "expression": arr[:, :EXP_DIM],
            "pose": arr[:, EXP_DIM : EXP_DIM + NUM_JOINTS * 3].reshape(n, NUM_JOINTS, 3),
            "camera": arr[:, EXP_DIM + NUM_JOINTS * 3 :],
        }
    raise InputError(
        f"{path}: .npy array of shape {arr.shape} is not one of [N, {EXP_DIM}] expression, "
        f"[N, {NUM_JOINTS}, 3] pose, [N, 2] camera, [N, {FLAT_DIM}] all"
    )


def keyframes_from_components(
    expression=None, pose=None, camera=None, pose_format: str = "axis-angle"
) -> Keyframes:
    """Build Keyframes from any subset of components; missing ones are neutral / frontal."""
    given = {k: v for k, v in (("expression", expression), ("pose", pose), ("camera", camera)) if v is not None}
    if not given:
        raise InputError("no keyframe component given (expression, pose or camera)")
    tensors = {k: _as_float_tensor(v, k) for k, v in given.items()}
    lengths = {k: (t.shape[0] if t.ndim > 0 else 0) for k, t in tensors.items()}
    if len(set(lengths.values())) != 1:
        raise InputError(f"keyframe components have different frame counts: {lengths}")
    n = next(iter(lengths.values()))
    exp = tensors.get("expression", torch.zeros(n, EXP_DIM))
    pose_t = tensors.get("pose")
    pose_t = torch.zeros(n, NUM_JOINTS, 3) if pose_t is None else _pose_from_format(pose_t, pose_format)
    cam = tensors.get("camera", torch.zeros(n, 2))
    return Keyframes(exp, pose_t, cam)


def load_keyframes(path: str | Path, pose_format: str | None = None) -> Keyframes:
    """Load keyframes from .npz / .json / .npy (see the module docstring).

    ``pose_format`` None uses the file's stored ``pose_format`` (default "axis-angle"); giving
    one that contradicts the file's is an error.
    """
    path = Path(path)
    comps, stored = _read_components(path)
    if pose_format is not None and pose_format not in POSE_FORMATS:
        raise InputError(f"pose_format must be one of {', '.join(POSE_FORMATS)}, got {pose_format!r}")
    if stored is not None and stored not in POSE_FORMATS:
        raise InputError(f"{path}: stored pose_format {stored!r} is not one of {', '.join(POSE_FORMATS)}")
    if pose_format is not None and stored is not None and pose_format != stored:
        raise InputError(f"{path}: pose_format {pose_format!r} requested but the file says {stored!r}")
    fmt = pose_format or stored or "axis-angle"
    try:
        return keyframes_from_components(pose_format=fmt, **comps)
    except InputError as exc:
        raise InputError(f"{path}: {exc}") from None


def save_keyframes(kf: Keyframes, path: str | Path, pose_format: str = "axis-angle") -> None:
    """Save to .npz / .json / .npy (the .npy [N, 72] layout only holds axis-angle poses)."""
    path = Path(path)
    if pose_format not in POSE_FORMATS:
        raise InputError(f"pose_format must be one of {', '.join(POSE_FORMATS)}, got {pose_format!r}")
    suffix = path.suffix.lower()
    pose = kf.pose.double()
    if pose_format == "euler-zyx":
        from aniportraitgan.rotations import axis_angle_to_matrix

        pose = matrix_to_euler_zyx(axis_angle_to_matrix(pose))
    exp, cam, pose_np = kf.expression.cpu().numpy(), kf.camera.cpu().numpy(), pose.cpu().numpy().astype(np.float32)
    if suffix == ".npz":
        np.savez(path, expression=exp, pose=pose_np, camera=cam, pose_format=np.array(pose_format))
    elif suffix == ".json":
        path.write_text(
            json.dumps(
                {"pose_format": pose_format, "expression": exp.tolist(), "pose": pose_np.tolist(), "camera": cam.tolist()}
            )
        )
    elif suffix == ".npy":
        if pose_format != "axis-angle":
            raise InputError(".npy keyframes store axis-angle poses only; use .npz or .json for euler-zyx")
        np.save(path, np.concatenate([exp, pose_np.reshape(len(kf), -1), cam], 1))
    else:
        raise InputError(f"keyframe file {path} must end in .npz, .npy or .json")


# ------------------------------------------------------------------------------------ presets

# Fraction of a head rotation given to the neck (the rest to the head joint): looks natural.
_NECK_SHARE = 0.35


def _frame(exp: dict[str, float] | None = None, pose: dict[str, tuple[float, float, float]] | None = None, camera=(0.0, 0.0)):
    e = torch.zeros(EXP_DIM)
    for k, v in (exp or {}).items():
        e[expression_index(k)] = v
    p = torch.zeros(NUM_JOINTS, 3)
    for k, v in (pose or {}).items():
        p[joint_index(k)] = torch.tensor(v)
    return e, p, torch.tensor(camera, dtype=torch.float32)


def _head(axis: int, angle: float) -> dict[str, tuple[float, float, float]]:
    """A head rotation about a scene axis split between neck and head joints."""
    def vec(a):
        v = [0.0, 0.0, 0.0]
        v[axis] = a
        return tuple(v)

    return {"neck": vec(_NECK_SHARE * angle), "head": vec((1 - _NECK_SHARE) * angle)}


def _clip(*frames) -> Keyframes:
    e, p, c = zip(*frames)
    return Keyframes(torch.stack(e), torch.stack(p), torch.stack(c))


def _preset_table() -> dict[str, Keyframes]:
    n = _frame()
    both = lambda base, v: {base + "Left": v, base + "Right": v}  # noqa: E731
    smile = {**both("mouthSmile", 1.0), **both("cheekSquint", 0.4), **both("eyeSquint", 0.2)}
    brows = {"browInnerUp": 1.0, **both("browOuterUp", 0.9), **both("eyeWide", 0.3)}
    shrug = 0.25  # rad; the left collar points to +X so it rises with +Z rotation, the right with -Z
    return {
        "smile": _clip(n, _frame(smile), n),
        "jaw_open": _clip(n, _frame({"jawOpen": 0.8}), n),
        "brow_raise": _clip(n, _frame(brows), n),
        "blink": _clip(n, _frame(both("eyeBlink", 1.0)), n),
        "head_turn": _clip(n, _frame(pose=_head(1, 0.6)), n, _frame(pose=_head(1, -0.6)), n),
        # +X rotation turns the face (+Z) toward -Y: looking down first, then up
        "nod": _clip(n, _frame(pose=_head(0, 0.35)), _frame(pose=_head(0, -0.2)), n),
        "shoulder_shrug": _clip(
            n, _frame(pose={"left_collar": (0.0, 0.0, shrug), "right_collar": (0.0, 0.0, -shrug)}), n
        ),
        "camera_orbit": _clip(n, _frame(camera=(0.5, 0.0)), n, _frame(camera=(-0.5, 0.0)), n),
    }


PRESET_NAMES: tuple[str, ...] = (
    "smile", "jaw_open", "brow_raise", "blink", "head_turn", "nod", "shoulder_shrug", "camera_orbit", "all",
)


def preset(name: str) -> Keyframes:
    """Built-in keyframes by name (``PRESET_NAMES``); each starts and ends neutral and frontal.

    ``all`` plays the others in order (shared neutral boundary frames appear once).
    """
    table = _preset_table()
    if name == "all":
        return Keyframes.concat([table[k] for k in PRESET_NAMES if k != "all"])
    if name not in table:
        raise InputError(f"unknown keyframe preset {name!r}; choose from {', '.join(PRESET_NAMES)}")
    return table[name]


def resolve_keyframes(spec: str | Path, pose_format: str | None = None) -> Keyframes:
    """A preset name or a keyframe file path (what ``aniportraitgan animate`` accepts)."""
    if isinstance(spec, str) and spec in PRESET_NAMES:
        return preset(spec)
    p = Path(spec)
    if p.suffix.lower() not in (".npz", ".npy", ".json"):
        raise InputError(f"{spec!r} is neither a preset ({', '.join(PRESET_NAMES)}) nor a .npz/.npy/.json file")
    return load_keyframes(p, pose_format)
