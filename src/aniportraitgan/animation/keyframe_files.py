"""Keyframe files and the clip ``aniportraitgan animate`` plays (presets and/or files).

``.npz``  keys ``expression``, ``pose``, ``camera`` (each optional: missing ones are neutral /
          frontal) and optionally ``pose_format`` (a string).
``.json`` an object with the same keys; an expression frame may be a list of 52 numbers or a
          sparse ``{"jawOpen": 0.7}`` object, a pose frame a list of 6 triples or a sparse
          ``{"head": [0, 0.3, 0]}`` object keyed by ``POSE_JOINTS``.
``.npy``  one array, recognised by shape: [N, 52] expression, [N, 6, 3] pose, [N, 2] camera, or
          [N, 72] = expression | pose flattened (18) | camera.
``pose_format`` is ``"axis-angle"`` (default) or ``"euler-zyx"``: per joint (z, y, x) radians
with R = Rz Ry Rx, converted to axis-angle on load.

A file passed for one component (``animate --expression F``, ``--pose F``, ``--camera F``) is
read as that component, whatever its shape looks like: a .npy must have that component's shape
(or the [N, 72] layout, of which it takes the component's columns), a .npz / .json must hold
that key. ``--expression cam.npy`` is an error naming the shape expected, not a camera path.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from aniportraitgan.animation.driving_formats import TRACK_KEYS, check_foreign_array, convert_components
from aniportraitgan.animation.keyframes import (
    EXP_DIM,
    NUM_JOINTS,
    POSE_FORMATS,
    Keyframes,
    expression_index,
    joint_index,
    keyframes_from_components,
)
from aniportraitgan.animation.presets import PRESET_NAMES, preset
from aniportraitgan.errors import AssetError, InputError
from aniportraitgan.rotations import axis_angle_to_matrix, matrix_to_euler_zyx

FLAT_DIM = EXP_DIM + NUM_JOINTS * 3 + 2  # the [N, 72] .npy layout
DEFAULT_FRAMES_BETWEEN_PRESET = 7  # presets hold a few keyframes; files are usually per-frame


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
                unknown = set(z.files) - {"expression", "pose", "camera", "pose_format"} - set(TRACK_KEYS)
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
    except InputError:
        raise
    except Exception as exc:  # noqa: BLE001 - a damaged .npy/.npz raises many kinds (zipfile, ast, tokenize)
        raise AssetError(f"{path}: cannot read keyframes ({type(exc).__name__}: {exc})") from None
    if not comps:
        raise InputError(f"{path}: holds none of expression, pose, camera")
    return comps, stored_format


def _split_npy(arr: np.ndarray, path: Path) -> dict[str, np.ndarray]:
    check_foreign_array(arr, path)  # e.g. the release's [N, 64] BFM expressions: say why not
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


def load_keyframes(path: str | Path, pose_format: str | None = None, camera_format: str | None = None) -> Keyframes:
    """Load keyframes from .npz / .json / .npy (see the module docstring).

    ``pose_format`` None uses the file's stored ``pose_format`` (default "axis-angle"); giving
    one that contradicts the file's is an error. The release's conventions (``pose_format``
    ``release-euler`` / ``smpl-euler``, ``camera_format`` ``release``) are converted by
    ``driving_formats``.
    """
    path = Path(path)
    comps, stored = _read_components(path)
    comps, pose_format = convert_components(comps, pose_format, camera_format, stored, path)
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


COMPONENT_SHAPES = {"expression": f"[N, {EXP_DIM}]", "pose": f"[N, {NUM_JOINTS}, 3]", "camera": "[N, 2]"}


def load_component(path: str | Path, name: str, pose_format: str | None = None, camera_format: str | None = None):
    """The ``name`` component ("expression", "pose" or "camera") of a keyframe file passed for it."""
    path = Path(path)
    option = f"--{name} {path}"
    if path.suffix.lower() == ".npy" and path.is_file():
        try:
            arr = np.load(path, allow_pickle=False)
        except Exception as exc:  # noqa: BLE001 - as in _read_components
            raise AssetError(f"{path}: cannot read keyframes ({type(exc).__name__}: {exc})") from None
        check_foreign_array(arr, path)  # e.g. the release's [N, 64] BFM expressions: say why not
        found = _split_npy(arr, path) if _npy_kind(arr) else {}
        if name not in found:
            other = _npy_kind(arr)
            hint = f" (that is the shape of {other} keyframes: pass it with --{other})" if other else ""
            raise InputError(f"{option}: a .npy of {name} keyframes must have shape {COMPONENT_SHAPES[name]} or "
                             f"[N, {FLAT_DIM}], got {tuple(arr.shape)}{hint}")
    else:
        comps, _ = _read_components(path)
        if name not in comps:
            raise InputError(f"{option}: the file holds no {name!r} keyframes ({COMPONENT_SHAPES[name]}); "
                             f"it has {', '.join(sorted(comps))}")
    return getattr(load_keyframes(path, pose_format, camera_format), name)


def _npy_kind(arr: np.ndarray) -> str | None:
    """The component a .npy array's shape is (None: [N, 72] all of them, or none)."""
    if arr.ndim == 3 and arr.shape[1:] == (NUM_JOINTS, 3):
        return "pose"
    if arr.ndim == 2 and arr.shape[1] in (EXP_DIM, 2):
        return "expression" if arr.shape[1] == EXP_DIM else "camera"
    return "all" if arr.ndim == 2 and arr.shape[1] == FLAT_DIM else None


def resolve_keyframes(spec: str | Path, pose_format: str | None = None) -> Keyframes:
    """A preset name or a keyframe file path (what ``aniportraitgan animate`` accepts)."""
    if isinstance(spec, str) and spec in PRESET_NAMES:
        return preset(spec)
    p = Path(spec)
    if p.suffix.lower() not in (".npz", ".npy", ".json"):
        raise InputError(f"{spec!r} is neither a preset ({', '.join(PRESET_NAMES)}) nor a .npz/.npy/.json file")
    return load_keyframes(p, pose_format)


def driving_keyframes(preset_name: str | None = None, expression=None, pose=None, camera=None,
                      pose_format: str | None = None, frames_between: int | None = None, smooth_window: int = 1,
                      orbit_deg: float = 0.0, camera_format: str | None = None) -> Keyframes:
    """The clip ``aniportraitgan animate`` plays.

    A preset (default ``all`` when no file is given) and/or keyframe files per component
    (``expression``, ``pose`` with its ``pose_format``, ``camera``): a file replaces that component
    of the preset (``camera_format`` ``release`` reads the authors' (phi, theta) cameras);
    components must have the same number of frames, except that a single frame is
    held for the whole clip. Then, in order: ``frames_between`` interpolation (None:
    ``DEFAULT_FRAMES_BETWEEN_PRESET`` for a preset alone, 0 with files), ``smooth_window``
    moving average, an ``orbit_deg`` camera yaw sweep."""
    files = {k: v for k, v in (("expression", expression), ("pose", pose), ("camera", camera)) if v}
    if pose_format is not None and "pose" not in files:
        raise InputError("a pose format applies to a pose file, but none was given")
    base = preset(preset_name or "all") if (preset_name or not files) else None
    comps = {} if base is None else {"expression": base.expression, "pose": base.pose, "camera": base.camera}
    for name, path in files.items():
        comps[name] = load_component(path, name, pose_format if name == "pose" else None,
                                     camera_format if name == "camera" else None)
    lengths = {k: v.shape[0] for k, v in comps.items()}
    n = max(lengths.values())
    for name, v in list(comps.items()):
        if v.shape[0] != n:
            if v.shape[0] != 1:
                raise InputError(f"keyframe components have different frame counts {lengths}; "
                                 "each must have the same N, or 1 frame to hold it")
            comps[name] = v.expand((n,) + tuple(v.shape[1:])).clone()
    kf = keyframes_from_components(**comps)
    if frames_between is None:
        frames_between = DEFAULT_FRAMES_BETWEEN_PRESET if base is not None and not files else 0
    kf = kf.interpolate(frames_between).smooth(smooth_window)
    if orbit_deg:
        kf = kf.with_camera_orbit(math.radians(orbit_deg))
    return kf
