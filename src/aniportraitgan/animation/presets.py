"""Built-in keyframe clips (``preset(name)``, ``PRESET_NAMES``) and the one rule for turning a
head rotation into joint rotations (``NECK_SHARE``, ``set_head_rotation``)."""

from __future__ import annotations

import torch

from aniportraitgan.animation.keyframes import EXP_DIM, NUM_JOINTS, Keyframes, expression_index, joint_index
from aniportraitgan.errors import InputError

__all__ = ["NECK_SHARE", "PRESET_NAMES", "preset", "set_head_rotation"]

# Fraction of a head rotation given to the neck joint (the rest to the head joint): looks natural.
NECK_SHARE = 0.35


def set_head_rotation(pose: torch.Tensor, rotvec: torch.Tensor) -> torch.Tensor:
    """Write a head rotation (axis-angle [..., 3], scene axes) into pose [..., 6, 3], split between
    the neck and head joints by ``NECK_SHARE``; returns ``pose``."""
    pose[..., joint_index("neck"), :] = NECK_SHARE * rotvec
    pose[..., joint_index("head"), :] = (1.0 - NECK_SHARE) * rotvec
    return pose


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

    return {"neck": vec(NECK_SHARE * angle), "head": vec((1 - NECK_SHARE) * angle)}


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
