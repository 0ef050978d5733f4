"""The clip fit of `track` on exact detections (the body model's own projected points, no
mediapipe): one identity, per-frame head rotation and expression, long clips in chunks, the
steady camera, and frames without a face filled in."""

from __future__ import annotations

import math

import numpy as np
import torch

from aniportraitgan.animation.keyframes import ARKIT_NAMES, Keyframes
from aniportraitgan.cameras import look_at_cameras
from aniportraitgan.frontend.fit_body import fit_body
from aniportraitgan.frontend.fitting import FitConfig
from aniportraitgan.frontend.track import ClipDetections, TrackConfig, steady_camera, track_detections
from aniportraitgan.rotations import axis_angle_to_matrix, matrix_to_axis_angle

N = 24


def _truth():
    t = torch.linspace(0, 1, N)
    pose = torch.zeros(N, 6, 3)
    turn = 0.5 * torch.sin(2 * math.pi * t)  # head yaw +-29 deg
    pose[:, 0, 1], pose[:, 3, 1] = 0.4 * turn, 0.6 * turn
    exp = torch.zeros(N, 52)
    exp[:, ARKIT_NAMES.index("jawOpen")] = 0.5 + 0.5 * torch.sin(4 * math.pi * t)
    return pose, exp


def _detections(found=None) -> ClipDetections:
    body = fit_body()
    pose, exp = _truth()
    with torch.no_grad():
        lms, shoulders, neck, _, size = body(torch.zeros(N, body.id_dim), exp, pose)
        cams = look_at_cameras(torch.zeros(N), torch.zeros(N), 1.65 * size, 20.0, neck + torch.tensor([0.0, 0.07, 0.0]) * size[:, None])
        uv, _ = cams.project(torch.cat([lms, shoulders], 1), 480, 480)
    uv = uv.numpy() * 0.8 + np.array([100.0, 20.0])  # somewhere in a 640 x 480 frame
    found = np.ones(N, bool) if found is None else found
    # what mediapipe gives as the start: the head's rotation in the (frontal) camera's OpenGL axes
    head = (axis_angle_to_matrix(pose[:, 0]) @ axis_angle_to_matrix(pose[:, 3])).numpy().astype(np.float32)
    return ClipDetections((480, 640), found, uv[:, :68].astype(np.float32), uv[:, 68:].astype(np.float32),
                          np.ones((N, 2), np.float32), exp.numpy(), head)


def _head_error_deg(kf: Keyframes, pose: torch.Tensor) -> np.ndarray:
    def head(p):
        return axis_angle_to_matrix(p[:, 0]) @ axis_angle_to_matrix(p[:, 3])

    return np.degrees(matrix_to_axis_angle(head(pose).transpose(1, 2) @ head(kf.pose)).norm(dim=-1).numpy())


def test_clip_fit_in_chunks_recovers_head_and_expression():
    pose, exp = _truth()
    cfg = TrackConfig(fit=FitConfig(steps=120, rigid_steps=30), chunk_frames=12, identity_frames=8)
    res = track_detections(_detections(), 25.0, cfg, progress=False)
    assert len(res) == N and res.z_id.shape == (40,) and not res.no_face.any()
    assert np.median(_head_error_deg(res.keyframes, pose)) < 3.0
    jaw = res.keyframes.expression[:, ARKIT_NAMES.index("jawOpen")].numpy()
    assert np.corrcoef(jaw, exp[:, ARKIT_NAMES.index("jawOpen")].numpy())[0, 1] > 0.95
    assert np.nanmedian(res.fit_error_px) < 1.5


def test_missing_frames_are_filled_between_their_neighbours():
    found = np.ones(N, bool)
    found[[0, 10, 11]] = False
    res = track_detections(_detections(found), 25.0, TrackConfig(fit=FitConfig(steps=40, rigid_steps=10)), progress=False)
    assert res.no_face.tolist() == (~found).tolist() and np.isnan(res.fit_error_px[[0, 10, 11]]).all()
    kf = res.keyframes
    assert torch.allclose(kf.expression[0], kf.expression[1])  # held before the first face
    jaw = kf.expression[:, ARKIT_NAMES.index("jawOpen")]
    assert torch.allclose(jaw[10], jaw[9] + (jaw[12] - jaw[9]) / 3, atol=1e-4)  # linear across the gap


def test_steady_camera_keeps_the_head_seen_from_the_camera():
    pose, exp = _truth()
    cam = torch.stack([0.2 * torch.sin(torch.linspace(0, 6, N)), torch.full((N,), 0.05)], 1)
    kf = Keyframes(exp, pose, cam)
    out = steady_camera(kf, 9)
    assert out.camera[:, 0].abs().max() < cam[:, 0].abs().max()
    rot = lambda c: look_at_cameras(c[:, 0], c[:, 1], 1.0, 20.0, torch.zeros(N, 3)).c2w[:, :3, :3]  # noqa: E731
    head = lambda p: axis_angle_to_matrix(p[:, 0]) @ axis_angle_to_matrix(p[:, 3])  # noqa: E731
    seen_before = rot(kf.camera).transpose(1, 2) @ head(kf.pose)
    seen_after = rot(out.camera).transpose(1, 2) @ head(out.pose)
    assert torch.allclose(seen_before, seen_after, atol=1e-5)
    assert torch.equal(out.expression, kf.expression) and torch.equal(out.pose[:, [1, 2, 4, 5]], kf.pose[:, [1, 2, 4, 5]])
    assert steady_camera(kf, 1) is kf
