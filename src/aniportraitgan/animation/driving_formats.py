"""Driving signals in formats people already have, converted to the project's keyframes.

The authors' release (YueWuHKUST/AniPortraitGAN, `keyframes/`; facts measured from its code):

* poses are SMPL joints 12-17 as Euler angles, R = Rz(e0) Ry(e1) Rx(e2) (the project's
  `euler-zyx`), local rotations in SMPL's frame: x the subject's left, y up, z forward, which
  are the project's scene axes;
* its renderer multiplies a mean pose onto joints 15-17, R = E(given) M_j with head
  M = Rx(0.15536945), left shoulder M = Rz(-1.05) Rx(0.13), right Rz(+1.05) Rx(0.13):
  `keyframes/pose.npy`, `headpose.npy` and `shoulderpose.npy` are natural only with it
  (`release-euler`); `real_video_examples/*/joint_eulers.npy` are plain SMPL rotations from the
  T-pose (`smpl-euler`);
* SMPL's rest is a T-pose whose joint frames lie on the world axes; the project's rest (the
  body model's zero pose) is an A-pose with the upper arms `A_POSE_ARM_DEG` below horizontal.
  Both chains compose local rotations the same way (a bone's world rotation is the product of
  its ancestors' and its own, in world-aligned rest frames), so retargeting keeps every bone's
  posed direction: D_j = Q_parent R_j Q_j^-1, with Q_j the rotation from a bone's SMPL rest
  direction to the project's. Q is the identity for the spine, neck, head and collars (same
  rest directions) and the shortest rotation from horizontal to the A-pose for the upper arms;
* cameras `camera_pose.npy` [N, 2] hold (phi, theta): polar angle from +y and azimuth, frontal
  at (pi/2, pi/2); the renderer puts the camera at r (sin phi cos theta, cos phi, sin phi sin
  theta) in SMPL's world (x = the subject's left) with no flip, so yaw = pi/2 - theta (toward
  the subject's left is positive, as here) and pitch = pi/2 - phi (above is positive);
* expressions [N, 64] are Deep3DFaceRecon/BFM coefficients: refused (`check_foreign_array`).

Tracked clips (`aniportraitgan track`) are keyframe .npz files with the extra arrays in
`TRACK_KEYS`; `fill_missing_frames` interpolates the frames a tracker could not see.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from aniportraitgan.animation.keyframes import NUM_JOINTS, Keyframes
from aniportraitgan.errors import InputError
from aniportraitgan.rotations import (
    axis_angle_to_matrix,
    axis_angle_to_quaternion,
    euler_zyx_to_matrix,
    matrix_to_axis_angle,
    quaternion_to_axis_angle,
    slerp,
)

RETARGET_POSE_FORMATS: tuple[str, ...] = ("release-euler", "smpl-euler")
CAMERA_FORMATS: tuple[str, ...] = ("yaw-pitch", "release")
TRACK_FORMAT = "aniportraitgan-track/1"
# What a tracked .npz holds besides expression, pose, camera and pose_format.
TRACK_KEYS: tuple[str, ...] = ("format", "fps", "fit_error_px", "no_face", "z_id", "frame_size", "source", "frames_expected")
RELEASE_EXPRESSION_DIM = 64

# The release renderer's mean pose on joints 15-17 (pose indices 3-5), as (z, y, x) Euler angles.
RELEASE_MEAN_POSE_ZYX = {3: (0.0, 0.0, 0.15536945), 4: (-1.05, 0.0, 0.13), 5: (1.05, 0.0, 0.13)}
# Upper-arm directions at the body model's zero pose (scene axes; upperarm01 -> upperarm02 heads
# of the mean body): 51.6 deg below horizontal and 1.4 deg forward. tests/test_driving_formats.py
# checks them against the asset.
A_POSE_ARM_DIRECTIONS = {4: (0.6210, -0.7834, 0.0251), 5: (-0.6210, -0.7834, 0.0252)}
A_POSE_ARM_DEG = 51.6
T_POSE_ARM_DIRECTIONS = {4: (1.0, 0.0, 0.0), 5: (-1.0, 0.0, 0.0)}
PARENT = {0: None, 1: None, 2: None, 3: 0, 4: 1, 5: 2}  # within SMPL 12-17 (None: spine3)


def _shortest_rotation(a, b) -> torch.Tensor:
    """The rotation matrix [3, 3] (float64) turning unit direction a into b by the shortest arc."""
    a = torch.tensor(a, dtype=torch.float64)
    b = torch.tensor(b, dtype=torch.float64)
    a, b = a / a.norm(), b / b.norm()
    axis = torch.linalg.cross(a, b)
    angle = torch.atan2(axis.norm(), (a * b).sum())
    return axis_angle_to_matrix(axis / axis.norm().clamp_min(1e-12) * angle)


def rest_offsets() -> torch.Tensor:
    """Q [6, 3, 3] (float64): each joint's rotation from SMPL's T-pose to the project's rest."""
    Q = torch.eye(3, dtype=torch.float64).repeat(NUM_JOINTS, 1, 1)
    for j, d in A_POSE_ARM_DIRECTIONS.items():
        Q[j] = _shortest_rotation(T_POSE_ARM_DIRECTIONS[j], d)
    return Q


def _check_pose_array(pose, what: str) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(pose, dtype=np.float64))
    if t.ndim != 3 or tuple(t.shape[1:]) != (NUM_JOINTS, 3):
        raise InputError(f"{what} poses must be [N, {NUM_JOINTS}, 3] Euler angles (SMPL joints 12-17), got {tuple(t.shape)}")
    if not torch.isfinite(t).all():
        raise InputError(f"{what} poses contain NaN or inf")
    return t


def smpl_rotations_to_pose(R: torch.Tensor) -> torch.Tensor:
    """SMPL local rotations [N, 6, 3, 3] of joints 12-17 (from the T-pose) -> project pose
    [N, 6, 3] axis-angle with every bone pointing where SMPL's would."""
    Q = rest_offsets()
    D = torch.empty_like(R)
    for j in range(NUM_JOINTS):
        p = PARENT[j]
        left = Q[p] if p is not None else torch.eye(3, dtype=R.dtype)
        D[:, j] = left @ R[:, j] @ Q[j].T
    return matrix_to_axis_angle(D)


def pose_from_smpl_euler(pose) -> torch.Tensor:
    """`smpl-euler`: plain SMPL local rotations from the T-pose, (z, y, x) Euler radians."""
    return smpl_rotations_to_pose(euler_zyx_to_matrix(_check_pose_array(pose, "smpl-euler"))).float()


def pose_from_release_euler(pose) -> torch.Tensor:
    """`release-euler`: the release's keyframe convention, E(given) M_j on joints 15-17."""
    R = euler_zyx_to_matrix(_check_pose_array(pose, "release-euler"))
    for j, zyx in RELEASE_MEAN_POSE_ZYX.items():
        R[:, j] = R[:, j] @ euler_zyx_to_matrix(torch.tensor(zyx, dtype=torch.float64))
    return smpl_rotations_to_pose(R).float()


def convert_pose(pose, pose_format: str) -> torch.Tensor:
    if pose_format == "release-euler":
        return pose_from_release_euler(pose)
    if pose_format == "smpl-euler":
        return pose_from_smpl_euler(pose)
    raise InputError(f"pose format {pose_format!r} is not one of {', '.join(RETARGET_POSE_FORMATS)}")


def camera_from_release(camera) -> torch.Tensor:
    """Release cameras [N, 2] (phi polar, theta azimuth; frontal (pi/2, pi/2)) -> (yaw, pitch)."""
    c = torch.as_tensor(np.asarray(camera, dtype=np.float64))
    if c.ndim != 2 or c.shape[1] != 2:
        raise InputError(f"release cameras must be [N, 2] (phi, theta) radians, got {tuple(c.shape)}")
    if not torch.isfinite(c).all():
        raise InputError("release cameras contain NaN or inf")
    if not ((c[:, 0] > 0) & (c[:, 0] < math.pi)).all():
        raise InputError("release camera polar angles phi must be in (0, pi) (frontal is pi/2); "
                         "is this a (yaw, pitch) file? then drop the release camera format")
    return torch.stack([math.pi / 2 - c[:, 1], math.pi / 2 - c[:, 0]], 1).float()


def release_camera_origin(phi, theta) -> torch.Tensor:
    """Where the release's renderer puts its camera (unit radius, SMPL world axes): tests check
    the (yaw, pitch) conversion against it."""
    phi, theta = torch.as_tensor(phi, dtype=torch.float64), torch.as_tensor(theta, dtype=torch.float64)
    return torch.stack([torch.sin(phi) * torch.cos(theta), torch.cos(phi), torch.sin(phi) * torch.sin(theta)], -1)


def convert_camera(camera, camera_format: str | None):
    if camera_format in (None, "yaw-pitch"):
        return camera
    if camera_format == "release":
        return camera_from_release(camera)
    raise InputError(f"camera format {camera_format!r} is not one of {', '.join(CAMERA_FORMATS)}")


def check_foreign_array(arr: np.ndarray, path: str | Path) -> None:
    """Explain arrays that are another project's format (called before a generic shape error)."""
    if arr.ndim == 2 and arr.shape[1] == RELEASE_EXPRESSION_DIM:
        raise InputError(
            f"{path}: [N, {RELEASE_EXPRESSION_DIM}] is the authors' release expression format: Deep3DFaceRecon "
            "coefficients of the Basel Face Model (BFM), which only mean something with the licensed BFM "
            "basis. This project's expressions are the 52 ARKit blendshapes of its open body model, and "
            "there is no licence-free map between the two. Track the driving video instead "
            "(`aniportraitgan track VIDEO --out drive.npz`, or `animate --drive VIDEO`), or give ARKit "
            "coefficients [N, 52] (e.g. a Live Link Face CSV with `animate --drive take.csv`)."
        )


def fill_missing_frames(found_kf: Keyframes, found) -> Keyframes:
    """Keyframes for all N frames from those of the `found` ones ([N] bool, M true, M >= 1):
    a missing frame between two found ones is interpolated (expression and camera linearly,
    rotations by slerp), one before the first or after the last holds that frame."""
    found = np.asarray(found, dtype=bool)
    idx = np.nonzero(found)[0]
    if len(idx) != len(found_kf) or len(idx) == 0:
        raise InputError(f"{len(found_kf)} keyframes for {len(idx)} found frames")
    N = len(found)
    frames = np.arange(N)
    nxt = np.clip(np.searchsorted(idx, frames), 0, len(idx) - 1)  # first found >= frame
    prv = np.clip(np.searchsorted(idx, frames, side="right") - 1, 0, len(idx) - 1)  # last found <= frame
    span = (idx[nxt] - idx[prv]).astype(np.float64)
    t = np.where(span > 0, (frames - idx[prv]) / np.maximum(span, 1.0), 0.0)
    a, b, tt = torch.from_numpy(prv), torch.from_numpy(nxt), torch.from_numpy(t)

    def lerp(x: torch.Tensor) -> torch.Tensor:
        x = x.double()
        return (x[a] + (x[b] - x[a]) * tt.reshape(-1, *([1] * (x.ndim - 1)))).float()

    q = axis_angle_to_quaternion(found_kf.pose.double())
    pose = quaternion_to_axis_angle(slerp(q[a], q[b], tt[:, None, None])).float()
    out = Keyframes(lerp(found_kf.expression), pose, lerp(found_kf.camera))
    keep = torch.from_numpy(found)
    out.expression[keep], out.pose[keep], out.camera[keep] = found_kf.expression, found_kf.pose, found_kf.camera
    return out


def convert_components(comps: dict, pose_format: str | None, camera_format: str | None, stored: str | None,
                       path: str | Path) -> tuple[dict, str | None]:
    """The hook of `keyframe_files.load_keyframes`: raw file components with the release's pose
    and camera conventions converted to the project's (the pose then reads as axis-angle); an
    expression in another project's format is explained (`check_foreign_array`)."""
    comps = dict(comps)
    if "expression" in comps:
        check_foreign_array(np.asarray(comps["expression"]), path)
    if pose_format in RETARGET_POSE_FORMATS:
        if stored is not None:
            raise InputError(f"{path}: pose_format {pose_format!r} requested but the file says {stored!r}")
        if "pose" in comps:
            try:
                comps["pose"] = convert_pose(comps["pose"], pose_format).numpy()
            except InputError as exc:
                raise InputError(f"{path}: {exc}") from None
        pose_format = "axis-angle"
    if camera_format not in (None, "yaw-pitch") and "camera" in comps:
        try:
            comps["camera"] = convert_camera(comps["camera"], camera_format).numpy()
        except InputError as exc:
            raise InputError(f"{path}: {exc}") from None
    return comps, pose_format
