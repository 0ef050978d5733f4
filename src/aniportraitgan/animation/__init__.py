"""Animation: keyframes (expression, pose, camera), presets, keyframe files, and rendering them.

The names the web app and other front ends build on are importable from here: ``Keyframes``,
``preset``, ``NECK_SHARE`` / ``set_head_rotation``, ``GeneratorFrames`` and ``animate``; the
driving formats people already have (``load_arkit_csv``, ``pose_from_release_euler``,
``pose_from_smpl_euler``, ``camera_from_release``). A video in: ``frontend.reenact``.
"""

from aniportraitgan.animation.animate import AnimationResult, BodyFrames, GeneratorFrames, animate, generator_source
from aniportraitgan.animation.arkit_csv import ArkitClip, load_arkit_csv
from aniportraitgan.animation.driving_formats import (
    CAMERA_FORMATS,
    RETARGET_POSE_FORMATS,
    camera_from_release,
    fill_missing_frames,
    pose_from_release_euler,
    pose_from_smpl_euler,
)
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
    "ArkitClip",
    "BodyFrames",
    "CAMERA_FORMATS",
    "EXP_DIM",
    "GeneratorFrames",
    "Keyframes",
    "NECK_SHARE",
    "NUM_JOINTS",
    "POSE_FORMATS",
    "POSE_JOINTS",
    "PRESET_NAMES",
    "RETARGET_POSE_FORMATS",
    "add_camera_orbit",
    "animate",
    "camera_from_release",
    "driving_keyframes",
    "expression_index",
    "fill_missing_frames",
    "generator_source",
    "interpolate",
    "joint_index",
    "keyframes_from_components",
    "load_arkit_csv",
    "load_keyframes",
    "pose_from_release_euler",
    "pose_from_smpl_euler",
    "preset",
    "resolve_keyframes",
    "save_keyframes",
    "set_head_rotation",
    "smooth",
]
