"""The authors' release formats, tracked .npz files, missing-frame filling and ARKit CSVs."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from aniportraitgan.animation.arkit_csv import load_arkit_csv
from aniportraitgan.animation.driving_formats import (
    A_POSE_ARM_DIRECTIONS,
    camera_from_release,
    fill_missing_frames,
    pose_from_release_euler,
    pose_from_smpl_euler,
    release_camera_origin,
)
from aniportraitgan.animation.keyframe_files import driving_keyframes, load_keyframes
from aniportraitgan.animation.keyframes import ARKIT_NAMES, Keyframes, joint_index
from aniportraitgan.body import PortraitBodyModel
from aniportraitgan.cameras import orbit_directions
from aniportraitgan.cli import main
from aniportraitgan.errors import InputError
from aniportraitgan.rotations import euler_zyx_to_matrix, matrix_to_axis_angle

ARMS = {4: ("upperarm01.L", "upperarm02.L", (1.0, 0.0, 0.0), 1), 5: ("upperarm01.R", "upperarm02.R", (-1.0, 0.0, 0.0), 2)}


@pytest.fixture(scope="module")
def body():
    return PortraitBodyModel.load()


def _arm_directions(body, pose: torch.Tensor) -> dict[int, torch.Tensor]:
    out = body(torch.zeros(len(pose), body.id_dim), torch.zeros(len(pose), body.exp_dim), pose)
    names = body.bone_names
    dirs = {}
    for j, (a, b, _, _) in ARMS.items():
        d = out.joints[:, names.index(b)] - out.joints[:, names.index(a)]
        dirs[j] = d / d.norm(dim=-1, keepdim=True)
    return dirs


def _deg(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.rad2deg(torch.acos((a.double() * b.double()).sum(-1).clamp(-1, 1)))


def test_a_pose_constants_match_the_body_model(body):
    dirs = _arm_directions(body, torch.zeros(1, 6, 3))
    for j, d in A_POSE_ARM_DIRECTIONS.items():
        assert _deg(dirs[j][0], torch.tensor(d) / torch.tensor(d).norm()) < 0.05
    below = math.degrees(math.asin(-dirs[4][0, 1]))
    assert 51.0 < below < 52.2  # the A-pose: upper arms 51.6 deg below horizontal


def test_smpl_pose_gives_the_same_arm_direction(body):
    """SMPL local rotations from the T-pose (arms along +-x) -> the posed upper arm points where
    SMPL's would, collars included; measured error 0.003 deg."""
    e = torch.zeros(4, 6, 3, dtype=torch.float64)
    e[0, 4, 0], e[0, 5, 0] = -1.05, 1.05  # arms hanging 60 deg below horizontal
    e[1, 1, 0], e[1, 4] = 0.2, torch.tensor([-1.05, 0.3, 0.1])  # collar raised, arm forward and twisted
    e[2, 2, 0], e[2, 5] = -0.15, torch.tensor([0.9, -0.4, 0.0])
    # e[3]: T-pose, arms horizontal
    dirs = _arm_directions(body, pose_from_smpl_euler(e))
    R = euler_zyx_to_matrix(e)
    for j, (_, _, rest, collar) in ARMS.items():
        expect = R[:, collar] @ R[:, j] @ torch.tensor(rest, dtype=torch.float64)
        assert _deg(dirs[j], expect).max() < 0.05
    hang = math.degrees(math.asin(-dirs[4][0, 1]))
    assert abs(hang - math.degrees(1.05)) < 0.05 and abs(float(dirs[4][0, 2])) < 1e-3  # no A-pose forward tilt left
    assert abs(float(dirs[4][3, 1])) < 1e-3  # T-pose: horizontal


def test_release_euler_adds_the_mean_pose(body):
    """A zero release pose is arms 60 deg below horizontal and the head pitched 9 deg down."""
    pose = pose_from_release_euler(torch.zeros(1, 6, 3))
    dirs = _arm_directions(body, pose)
    for j in (4, 5):
        assert abs(math.degrees(math.asin(-dirs[j][0, 1])) - math.degrees(1.05)) < 0.05
    head = body(torch.zeros(1, body.id_dim), torch.zeros(1, body.exp_dim), pose).head_rotation[0]
    face = head @ torch.tensor([0.0, 0.0, 1.0])
    assert abs(math.degrees(math.asin(-face[1])) - math.degrees(0.15536945)) < 0.05  # looks down
    # given angles compose before the mean pose: E(given) M
    e = torch.zeros(1, 6, 3)
    e[0, 3, 1] = 0.4  # head turned (about y)
    R = euler_zyx_to_matrix(e.double())[0, 3] @ euler_zyx_to_matrix(torch.tensor([0.0, 0.0, 0.15536945], dtype=torch.float64))
    assert torch.allclose(pose_from_release_euler(e)[0, 3].double(), matrix_to_axis_angle(R), atol=1e-5)


def test_release_pose_files_through_the_loader_and_cli(tmp_path):
    f = tmp_path / "pose.npy"
    np.save(f, np.zeros((4, 6, 3)))
    kf = load_keyframes(f, "release-euler")
    assert torch.allclose(kf.pose, pose_from_release_euler(torch.zeros(4, 6, 3)))
    plain = load_keyframes(f, "smpl-euler")
    assert plain.pose[:, joint_index("head")].abs().max() < 1e-6  # no mean pose
    np.save(tmp_path / "bad.npy", np.zeros((4, 6)))
    with pytest.raises(InputError):
        load_keyframes(tmp_path / "bad.npy", "release-euler")
    np.save(tmp_path / "nan.npy", np.full((4, 6, 3), np.nan))
    with pytest.raises(InputError, match="NaN"):
        load_keyframes(tmp_path / "nan.npy", "smpl-euler")


def test_release_camera_conversion_matches_the_release_renderer():
    """The release puts its camera at (sin phi cos theta, cos phi, sin phi sin theta) in SMPL's
    world (x = the subject's left); the converted (yaw, pitch) put ours in the same direction."""
    g = torch.Generator().manual_seed(0)
    cam = torch.stack([math.pi / 2 + 0.5 * (torch.rand(50, generator=g) - 0.5), math.pi / 2 + (torch.rand(50, generator=g) - 0.5)], 1)
    yp = camera_from_release(cam)
    ours = orbit_directions(yp[:, 0].double(), yp[:, 1].double())
    assert torch.allclose(ours, release_camera_origin(cam[:, 0], cam[:, 1]), atol=1e-6)
    # frontal -> (0, 0); theta below pi/2 puts the camera at +x, the subject's left: positive yaw
    assert torch.allclose(camera_from_release(torch.tensor([[math.pi / 2, math.pi / 2 - 0.3]])), torch.tensor([[0.3, 0.0]]), atol=1e-6)
    assert camera_from_release(torch.tensor([[math.pi / 2 - 0.2, math.pi / 2]]))[0, 1] > 0  # camera above
    for bad in (torch.zeros(3, 3), torch.tensor([[0.0, 1.57]]), torch.tensor([[float("nan"), 1.57]])):
        with pytest.raises(InputError):
            camera_from_release(bad)


def test_release_camera_file_through_driving_keyframes(tmp_path):
    f = tmp_path / "camera_pose.npy"
    np.save(f, np.array([[math.pi / 2, math.pi / 2], [math.pi / 2 - 0.1, math.pi / 2 + 0.2]]))
    kf = driving_keyframes(camera=str(f), camera_format="release")
    assert torch.allclose(kf.camera, torch.tensor([[0.0, 0.0], [-0.2, 0.1]]), atol=1e-6)


def test_release_expression_is_refused_with_the_reason(tmp_path, capsys):
    f = tmp_path / "expression.npy"
    np.save(f, np.zeros((10, 64)))
    with pytest.raises(InputError, match="BFM"):
        load_keyframes(f)
    np.savez(tmp_path / "exp.npz", expression=np.zeros((10, 64)))
    with pytest.raises(InputError, match="licensed"):
        load_keyframes(tmp_path / "exp.npz")
    out = tmp_path / "x.mp4"
    assert main(["animate", "--ckpt", "demo", "--out", str(out), "--expression", str(f)]) == 2
    err = capsys.readouterr().err
    assert "Basel Face Model" in err and "ARKit" in err and "shape" not in err.split("BFM")[0]
    assert not out.exists()


def test_tracked_npz_loads_as_keyframes(tmp_path):
    f = tmp_path / "drive.npz"
    np.savez(f, format=np.array("aniportraitgan-track/1"), expression=np.zeros((3, 52)), pose=np.zeros((3, 6, 3)),
             camera=np.zeros((3, 2)), pose_format=np.array("axis-angle"), fps=np.array(30.0), fit_error_px=np.zeros(3),
             no_face=np.zeros(3, bool), z_id=np.zeros(40), frame_size=np.array([240, 320]), source=np.array("v.mp4"),
             frames_expected=np.array(3))
    assert len(load_keyframes(f)) == 3
    assert len(driving_keyframes(expression=str(f), pose=str(f))) == 3
    np.savez(tmp_path / "other.npz", expression=np.zeros((3, 52)), junk=np.zeros(3))
    with pytest.raises(InputError, match="unknown"):
        load_keyframes(tmp_path / "other.npz")


def test_fill_missing_frames_interpolates_and_holds():
    found = np.array([False, True, False, False, True, False])
    exp = torch.zeros(2, 52)
    exp[1, 0] = 0.9
    pose = torch.zeros(2, 6, 3)
    pose[1, 3, 1] = 0.6
    cam = torch.tensor([[0.0, 0.0], [0.3, -0.3]])
    out = fill_missing_frames(Keyframes(exp, pose, cam), found)
    assert len(out) == 6
    assert torch.allclose(out.expression[:, 0], torch.tensor([0.0, 0.0, 0.3, 0.6, 0.9, 0.9]), atol=1e-6)
    assert torch.allclose(out.pose[:, 3, 1], torch.tensor([0.0, 0.0, 0.2, 0.4, 0.6, 0.6]), atol=1e-5)  # slerp about one axis
    assert torch.allclose(out.camera[2], torch.tensor([0.1, -0.1]), atol=1e-6)
    with pytest.raises(InputError):
        fill_missing_frames(Keyframes(exp, pose, cam), np.zeros(6, bool))


def _csv(path, header, rows):
    path.write_text(",".join(header) + "\n" + "\n".join(",".join(str(v) for v in r) for r in rows) + "\n")
    return path


def test_arkit_csv_names_head_angles_timecode_and_unknown_columns(tmp_path, body):
    header = ["Timecode", "BlendShapeCount", "EyeBlinkLeft", "JAWOPEN", "mouth_smile_left", "HeadYaw", "HeadPitch", "HeadRoll",
              "LeftEyeYaw", "Mystery"]
    rows = []
    for i in range(150):  # 2.5 s at 60 frames/s
        s, f = divmod(i, 60)
        rows.append([f"10:00:{s + 1:02d}:{f:02d}.{i % 7}", 61, 0.1, i / 150, 0.5, 0.3 if i < 75 else 0.0, 0.1, -0.05, 0.0, 7])
    clip = load_arkit_csv(_csv(tmp_path / "take.csv", header, rows))
    kf = clip.keyframes
    assert len(kf) == 150 and clip.fps == 60 and clip.fps_source == "timecode"
    assert kf.expression[10, ARKIT_NAMES.index("jawOpen")] == pytest.approx(10 / 150)
    assert kf.expression[0, ARKIT_NAMES.index("mouthSmileLeft")] == pytest.approx(0.5)
    assert kf.expression[:, ARKIT_NAMES.index("tongueOut")].abs().max() == 0
    assert clip.unknown_columns == ["Mystery"] and "Mystery" in clip.summary()
    assert "eyeBlinkRight" in clip.missing_blendshapes and clip.head
    # head angles -> the head joints: the body model's head rotation is Ry(yaw) Rx(pitch) Rz(roll)
    R = body(torch.zeros(1, body.id_dim), kf.expression[:1], kf.pose[:1]).head_rotation[0].double()
    Ry = euler_zyx_to_matrix(torch.tensor([0.0, 0.3, 0.0], dtype=torch.float64))
    Rx = euler_zyx_to_matrix(torch.tensor([0.0, 0.0, 0.1], dtype=torch.float64))
    Rz = euler_zyx_to_matrix(torch.tensor([-0.05, 0.0, 0.0], dtype=torch.float64))
    assert torch.allclose(R, Ry @ Rx @ Rz, atol=1e-5)
    face = R @ torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64)
    assert face[0] > 0 and face[1] < 0  # positive yaw: toward the subject's left; positive pitch: down


def test_arkit_csv_bad_inputs(tmp_path):
    with pytest.raises(InputError, match="no ARKit blendshape"):
        load_arkit_csv(_csv(tmp_path / "a.csv", ["Timecode", "Foo"], [["00:00:00:00", 1]]))
    with pytest.raises(InputError, match=r"row 3, column JawOpen.*NaN"):
        load_arkit_csv(_csv(tmp_path / "b.csv", ["JawOpen"], [[0.1], ["nan"]]))
    with pytest.raises(InputError, match="not a number"):
        load_arkit_csv(_csv(tmp_path / "c.csv", ["JawOpen", "EyeBlinkLeft"], [[0.1, 0.2], [0.1, ""]]))
    with pytest.raises(InputError, match="cells"):
        load_arkit_csv(_csv(tmp_path / "d.csv", ["JawOpen", "EyeBlinkLeft"], [[0.1, 0.2], [0.1]]))
    with pytest.raises(InputError, match="HeadYaw, HeadPitch, HeadRoll"):
        load_arkit_csv(_csv(tmp_path / "e.csv", ["JawOpen", "HeadYaw"], [[0.1, 0.2]]))
    with pytest.raises(InputError, match="degrees"):
        load_arkit_csv(_csv(tmp_path / "f.csv", ["HeadYaw", "HeadPitch", "HeadRoll"], [[25, 0, 0]]))
    with pytest.raises(InputError, match=r"\[0, 1\]"):
        load_arkit_csv(_csv(tmp_path / "g.csv", ["JawOpen"], [[1.5]]))
    with pytest.raises(InputError, match="timecode"):
        load_arkit_csv(_csv(tmp_path / "h.csv", ["Timecode", "JawOpen"], [["noon", 0.1]]))
    clip = load_arkit_csv(_csv(tmp_path / "i.csv", ["JawOpen"], [[1.004], [-0.002]]))
    assert clip.fps_source == "default" and clip.clipped_values == 2
