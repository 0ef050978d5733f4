"""Animation: keyframes (expression, pose, camera), presets, keyframe files, and rendering them.

The names the web app and other front ends build on are importable from here: ``Keyframes``,
``preset``, ``NECK_SHARE`` / ``set_head_rotation``, ``GeneratorFrames`` and ``animate``.
"""

from aniportraitgan.animation.animate import AnimationResult, BodyFrames, GeneratorFrames, animate, generator_source
from aniportraitgan.animation.keyframe_files import (
    driving_keyframes,
    load_keyframes,
    resolve_keyframes,
    save_keyframes,
)
from aniportraitgan.animation.keyframes import (
    ARKIT_NAMES,
    EXP_DIM,
    NUM_JOINTS,
    POSE_FORMATS,
    POSE_JOINTS,
    Keyframes,
    add_camera_orbit,
    expression_index,
    interpolate,
    joint_index,
    keyframes_from_components,
    smooth,
)
from aniportraitgan.animation.presets import NECK_SHARE, PRESET_NAMES, preset, set_head_rotation

__all__ = [
    "ARKIT_NAMES",
    "AnimationResult",
    "BodyFrames",
    "EXP_DIM",
    "GeneratorFrames",
    "Keyframes",
    "NECK_SHARE",
    "NUM_JOINTS",
    "POSE_FORMATS",
    "POSE_JOINTS",
    "PRESET_NAMES",
    "add_camera_orbit",
    "animate",
    "driving_keyframes",
    "expression_index",
    "generator_source",
    "interpolate",
    "joint_index",
    "keyframes_from_components",
    "load_keyframes",
    "preset",
    "resolve_keyframes",
    "save_keyframes",
    "set_head_rotation",
    "smooth",
]
