"""Driving signals for animation: keyframes (expression, pose, camera), presets, interpolation."""

from aniportraitgan.animation.keyframes import (
    ARKIT_NAMES,
    POSE_JOINTS,
    PRESET_NAMES,
    Keyframes,
    add_camera_orbit,
    interpolate,
    load_keyframes,
    preset,
    resolve_keyframes,
    save_keyframes,
    smooth,
)

__all__ = [
    "ARKIT_NAMES",
    "POSE_JOINTS",
    "PRESET_NAMES",
    "Keyframes",
    "add_camera_orbit",
    "interpolate",
    "load_keyframes",
    "preset",
    "resolve_keyframes",
    "save_keyframes",
    "smooth",
]
