"""Keyframes: presets, interpolation, smoothing, orbit, Euler input, files, validation."""

import json
import math

import numpy as np
import pytest
import torch

from aniportraitgan.animation import (
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
from aniportraitgan.animation.keyframes import keyframes_from_components
from aniportraitgan.errors import AssetError, InputError
from aniportraitgan.rotations import (
    axis_angle_to_matrix,
    axis_angle_to_quaternion,
    euler_zyx_to_matrix,
    matrix_to_euler_zyx,
)


def random_keyframes(n, seed=0, max_angle=1.0):
    g = torch.Generator().manual_seed(seed)
    axes = torch.randn(n, 6, 3, generator=g)
    axes = axes / axes.norm(dim=-1, keepdim=True)
    pose = axes * torch.rand(n, 6, 1, generator=g) * max_angle
    cam = (torch.rand(n, 2, generator=g) - 0.5) * torch.tensor([1.0, 0.5])
    return Keyframes(torch.rand(n, 52, generator=g), pose, cam)


def rotation_distance(a, b):
    """Geodesic angle between axis-angle rotations [..., 3]."""
    Ra, Rb = axis_angle_to_matrix(a.double()), axis_angle_to_matrix(b.double())
    tr = (Ra.transpose(-1, -2) @ Rb).diagonal(dim1=-2, dim2=-1).sum(-1)
    return torch.acos(((tr - 1) / 2).clamp(-1, 1))


def test_arkit_names():
    assert len(ARKIT_NAMES) == 52 and len(set(ARKIT_NAMES)) == 52
    assert ARKIT_NAMES[0] == "browDownLeft" and ARKIT_NAMES[24] == "jawOpen" and ARKIT_NAMES[-1] == "tongueOut"
    assert POSE_JOINTS == ("neck", "left_collar", "right_collar", "head", "left_shoulder", "right_shoulder")


@pytest.mark.parametrize("name", PRESET_NAMES)
def test_presets_valid(name):
    kf = preset(name)
    N = len(kf)
    assert N >= 3
    assert kf.expression.shape == (N, 52) and kf.pose.shape == (N, 6, 3) and kf.camera.shape == (N, 2)
    assert kf.expression.min() >= 0 and kf.expression.max() <= 1
    assert kf.pose.norm(dim=-1).max() <= math.pi
    # every preset starts and ends neutral, frontal
    for i in (0, -1):
        assert kf.expression[i].abs().sum() == 0 and kf.pose[i].abs().sum() == 0 and kf.camera[i].abs().sum() == 0
    # and does something
    assert kf.expression.abs().sum() + kf.pose.abs().sum() + kf.camera.abs().sum() > 0


def test_preset_semantics():
    idx = ARKIT_NAMES.index
    assert preset("smile").expression[:, idx("mouthSmileLeft")].max() == 1.0
    assert preset("jaw_open").expression[:, idx("jawOpen")].max() > 0.5
    assert preset("blink").expression[:, [idx("eyeBlinkLeft"), idx("eyeBlinkRight")]].min(1).values.max() == 1
    assert preset("brow_raise").expression[:, idx("browInnerUp")].max() > 0.5
    turn = preset("head_turn").pose
    assert turn[..., [0, 2]].abs().max() == 0 and turn[:, 3, 1].abs().max() > 0.3  # about +Y only
    nod = preset("nod").pose
    assert nod[..., [1, 2]].abs().max() == 0 and nod[:, 3, 0].abs().max() > 0.1  # about +X only
    shrug = preset("shoulder_shrug").pose
    assert shrug[..., :2].abs().max() == 0
    assert torch.equal(shrug[:, 1, 2], -shrug[:, 2, 2]) and shrug[:, 1, 2].max() > 0
    # left collar rotating about +Z by a positive angle lifts a point lying toward +X
    lifted = axis_angle_to_matrix(shrug[1, 1]) @ torch.tensor([1.0, 0.0, 0.0])
    assert lifted[1] > 0
    assert preset("camera_orbit").camera[:, 0].abs().max() > 0.3
    allkf = preset("all")
    parts = [len(preset(n)) for n in PRESET_NAMES if n != "all"]
    assert len(allkf) == sum(parts) - (len(parts) - 1)  # shared neutral boundaries once
    with pytest.raises(InputError, match="unknown keyframe preset 'wink'"):
        preset("wink")


@pytest.mark.parametrize("fb", [0, 1, 4])
def test_interpolation_counts_and_hits_keys(fb):
    kf = random_keyframes(4)
    out = interpolate(kf, fb)
    assert len(out) == (4 - 1) * (fb + 1) + 1
    keys = out[:: fb + 1]
    assert torch.equal(keys.expression, kf.expression)
    assert torch.equal(keys.pose, kf.pose)
    assert torch.equal(keys.camera, kf.camera)


def test_interpolation_linear_and_slerp():
    a = 0.7
    for axis in range(3):
        pose = torch.zeros(2, 6, 3)
        pose[1, :, axis] = 2 * a
        kf = Keyframes(torch.tensor([[0.0] * 52, [1.0] * 52]), pose, torch.tensor([[0.0, 0.0], [0.4, -0.2]]))
        out = interpolate(kf, 1)
        assert torch.allclose(out.pose[1, :, axis], torch.full((6,), a), atol=1e-6)
        assert out.pose[1, :, [i for i in range(3) if i != axis]].abs().max() < 1e-7
        assert torch.allclose(out.expression[1], torch.full((52,), 0.5))
        assert torch.allclose(out.camera[1], torch.tensor([0.2, -0.1]))
    # general rotations: constant angular speed along the geodesic
    kf = random_keyframes(2, seed=3, max_angle=2.5)
    out = interpolate(kf, 3)  # t = 0, 1/4, 1/2, 3/4, 1
    total = rotation_distance(kf.pose[0], kf.pose[1])
    for i in range(5):
        assert torch.allclose(rotation_distance(kf.pose[0], out.pose[i]), total * i / 4, atol=1e-5)
        assert torch.allclose(rotation_distance(out.pose[i], kf.pose[1]), total * (4 - i) / 4, atol=1e-5)
    # slerp differs from naive axis-angle lerp for non-coaxial rotations
    naive = 0.5 * (kf.pose[0] + kf.pose[1])
    assert rotation_distance(naive, out.pose[2]).max() > 1e-3


def test_interpolation_takes_short_path_across_pi():
    pose = torch.zeros(2, 6, 3)
    pose[0, 3, 1] = math.pi - 0.1
    pose[1, 3, 1] = -(math.pi - 0.1)  # 0.2 rad away through pi
    kf = Keyframes(torch.zeros(2, 52), pose, torch.zeros(2, 2))
    mid = interpolate(kf, 1).pose[1, 3]
    assert abs(mid.norm().item() - math.pi) < 1e-5


def test_euler_round_trip():
    kf = random_keyframes(5, seed=1, max_angle=2.0)
    euler = matrix_to_euler_zyx(axis_angle_to_matrix(kf.pose.double()))
    assert torch.allclose(euler_zyx_to_matrix(euler), axis_angle_to_matrix(kf.pose.double()), atol=1e-10)
    back = keyframes_from_components(kf.expression, euler, kf.camera, pose_format="euler-zyx")
    assert rotation_distance(back.pose, kf.pose).max() < 1e-5
    # a pure Z-Y-X Euler input matches the composition of axis rotations
    e = torch.zeros(1, 6, 3)
    e[0, 3] = torch.tensor([0.3, -0.2, 0.5])
    got = keyframes_from_components(pose=e, pose_format="euler-zyx").pose[0, 3]
    want = (
        axis_angle_to_matrix(torch.tensor([0.0, 0.0, 0.3]))
        @ axis_angle_to_matrix(torch.tensor([0.0, -0.2, 0.0]))
        @ axis_angle_to_matrix(torch.tensor([0.5, 0.0, 0.0]))
    )
    assert torch.allclose(axis_angle_to_matrix(got), want, atol=1e-6)


@pytest.mark.parametrize("suffix", [".npz", ".json", ".npy"])
def test_files_round_trip(tmp_path, suffix):
    kf = random_keyframes(6, seed=2)
    path = tmp_path / f"kf{suffix}"
    save_keyframes(kf, path)
    back = load_keyframes(path)
    assert torch.allclose(back.expression, kf.expression)
    assert torch.allclose(back.pose, kf.pose)
    assert torch.allclose(back.camera, kf.camera)
    assert torch.equal(resolve_keyframes(str(path)).camera, back.camera)


@pytest.mark.parametrize("suffix", [".npz", ".json"])
def test_euler_files_round_trip(tmp_path, suffix):
    kf = random_keyframes(4, seed=5, max_angle=1.2)
    path = tmp_path / f"kf{suffix}"
    save_keyframes(kf, path, pose_format="euler-zyx")
    back = load_keyframes(path)  # the stored pose_format is honoured
    assert rotation_distance(back.pose, kf.pose).max() < 1e-5
    with pytest.raises(InputError, match="file says 'euler-zyx'"):
        load_keyframes(path, pose_format="axis-angle")


def test_partial_files(tmp_path):
    p = tmp_path / "only_exp.npz"
    np.savez(p, expression=np.full((3, 52), 0.25, np.float32))
    kf = load_keyframes(p)
    assert len(kf) == 3 and kf.pose.abs().sum() == 0 and kf.camera.abs().sum() == 0
    p = tmp_path / "cam.npy"
    np.save(p, np.array([[0.1, 0.0], [0.2, 0.1]]))
    kf = load_keyframes(p)
    assert len(kf) == 2 and kf.expression.abs().sum() == 0 and torch.allclose(kf.camera[1], torch.tensor([0.2, 0.1]))
    # sparse JSON
    p = tmp_path / "sparse.json"
    p.write_text(json.dumps({"expression": [{}, {"jawOpen": 0.6}], "pose": [{}, {"head": [0.0, 0.3, 0.0]}]}))
    kf = load_keyframes(p)
    assert kf.expression[1, ARKIT_NAMES.index("jawOpen")] == pytest.approx(0.6)
    assert kf.expression[1].sum() == pytest.approx(0.6)
    assert kf.pose[1, 3, 1] == pytest.approx(0.3) and kf.pose[1].abs().sum() == pytest.approx(0.3)


def test_smoothing():
    kf = random_keyframes(20, seed=4)
    sm = smooth(kf, 5)
    assert len(sm) == 20
    for name in ("expression", "pose", "camera"):
        assert torch.equal(getattr(sm, name)[[0, -1]], getattr(kf, name)[[0, -1]])
    # interior frames of linear signals are preserved; noise variance drops
    lin = Keyframes(torch.linspace(0, 1, 20)[:, None].expand(20, 52), torch.zeros(20, 6, 3), torch.zeros(20, 2))
    assert torch.allclose(smooth(lin, 5).expression, lin.expression, atol=1e-6)
    assert sm.expression.diff(dim=0).abs().mean() < kf.expression.diff(dim=0).abs().mean()
    # rotation about one axis averages like the angles
    pose = torch.zeros(20, 6, 3)
    pose[:, 3, 1] = torch.linspace(-0.5, 0.5, 20) + 0.05 * torch.tensor([(-1.0) ** i for i in range(20)])
    rot = Keyframes(torch.zeros(20, 52), pose, torch.zeros(20, 2))
    expected = pose[:, 3, 1].clone()
    for i in range(1, 19):
        expected[i] = pose[i - 1 : i + 2, 3, 1].mean()
    got = smooth(rot, 3).pose[:, 3, 1]
    # quaternion averaging of coaxial rotations approximates the angle mean to second order
    assert torch.allclose(got, expected, atol=1e-3)
    assert torch.equal(smooth(kf, 1).expression, kf.expression)
    with pytest.raises(InputError, match="window"):
        smooth(kf, 4)


def test_camera_orbit():
    kf = interpolate(preset("smile"), 7)
    orb = add_camera_orbit(kf, 0.5)
    N = len(kf)
    assert torch.allclose(orb.camera[:, 0].abs().max(), torch.tensor(0.5), atol=0.05)
    assert abs(orb.camera[0, 0].item()) < 1e-6 and abs(orb.camera[-1, 0].item()) < 1e-6
    assert torch.equal(orb.camera[:, 1], kf.camera[:, 1]) and torch.equal(orb.expression, kf.expression)
    assert orb.camera[N // 4, 0] > 0.4 and orb.camera[3 * N // 4, 0] < -0.4
    with pytest.raises(InputError, match="amplitude"):
        add_camera_orbit(kf, float("nan"))


def test_quaternion_helper_matches_matrix():
    from aniportraitgan.rotations import matrix_to_quaternion

    v = torch.tensor([[0.3, -0.2, 0.9], [0.0, 0.0, 0.0], [1e-8, 0.0, 0.0]], dtype=torch.float64)
    assert torch.allclose(axis_angle_to_quaternion(v), matrix_to_quaternion(axis_angle_to_matrix(v)), atol=1e-10)


# ------------------------------------------------------------------------------ bad inputs

Z = dict(expression=torch.zeros(3, 52), pose=torch.zeros(3, 6, 3), camera=torch.zeros(3, 2))


def _with(**kw):
    return {**Z, **kw}


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (_with(expression=torch.zeros(3, 51)), r"expression must have shape \[N, 52\]"),
        (_with(pose=torch.zeros(3, 5, 3)), r"pose must have shape \[N, 6, 3\]"),
        (_with(camera=torch.zeros(3, 3)), r"camera must have shape \[N, 2\]"),
        (_with(camera=torch.zeros(4, 2)), "different frame counts"),
        (_with(expression=torch.full((3, 52), float("nan"))), "expression contains NaN or inf"),
        (_with(pose=torch.full((3, 6, 3), float("inf"))), "pose contains NaN or inf"),
        (_with(camera=torch.tensor([[0.0, 0.0], [0.0, float("nan")], [0.0, 0.0]])), "camera contains NaN.*frame 1"),
        (_with(expression=torch.full((3, 52), 1.01)), r"expression values must be in \[0, 1\]"),
        (_with(expression=torch.full((3, 52), -0.01)), r"expression values must be in \[0, 1\]"),
        (_with(pose=torch.tensor([0.0, 0.0, 3.3]).expand(3, 6, 3)), "exceeds pi"),
        (_with(camera=torch.tensor([0.0, 1.6]).expand(3, 2)), "pitch"),
        (dict(expression=torch.zeros(0, 52), pose=torch.zeros(0, 6, 3), camera=torch.zeros(0, 2)), "empty"),
        (_with(expression="abc"), "expression is not a numeric array"),
    ],
)
def test_bad_keyframes(kwargs, message):
    with pytest.raises(InputError, match=message):
        Keyframes(**kwargs)


def test_tolerated_expression_is_clamped():
    kf = Keyframes(**_with(expression=torch.full((3, 52), 1.0005)))
    assert kf.expression.max() == 1.0


def test_bad_files(tmp_path):
    with pytest.raises(AssetError, match="not found"):
        load_keyframes(tmp_path / "missing.npz")
    bad = tmp_path / "kf.txt"
    bad.write_text("x")
    with pytest.raises(InputError, match=r"\.npz, \.npy or \.json"):
        load_keyframes(bad)
    p = tmp_path / "typo.npz"
    np.savez(p, expressions=np.zeros((2, 52)))
    with pytest.raises(InputError, match="unknown arrays"):
        load_keyframes(p)
    p = tmp_path / "n.npz"
    np.savez(p, expression=np.zeros((2, 52)), camera=np.zeros((3, 2)))
    with pytest.raises(InputError, match="different frame counts"):
        load_keyframes(p)
    p = tmp_path / "range.json"
    p.write_text(json.dumps({"expression": [[2.0] * 52]}))
    with pytest.raises(InputError, match=r"range\.json: expression values must be in \[0, 1\]"):
        load_keyframes(p)
    p = tmp_path / "name.json"
    p.write_text(json.dumps({"expression": [{"jawOpn": 0.5}]}))
    with pytest.raises(InputError, match="unknown ARKit expression name 'jawOpn'"):
        load_keyframes(p)
    p = tmp_path / "joint.json"
    p.write_text(json.dumps({"pose": [{"skull": [0, 0, 0]}]}))
    with pytest.raises(InputError, match="unknown pose joint 'skull'"):
        load_keyframes(p)
    p = tmp_path / "corrupt.json"
    p.write_text("{not json")
    with pytest.raises(AssetError, match="not valid JSON"):
        load_keyframes(p)
    p = tmp_path / "corrupt.npz"
    p.write_bytes(b"garbage")
    with pytest.raises(AssetError, match="cannot read"):
        load_keyframes(p)
    p = tmp_path / "shape.npy"
    np.save(p, np.zeros((4, 7)))
    with pytest.raises(InputError, match=r"shape \(4, 7\)"):
        load_keyframes(p)
    p = tmp_path / "fmt.npz"
    np.savez(p, pose=np.zeros((2, 6, 3)))
    with pytest.raises(InputError, match="pose_format"):
        load_keyframes(p, pose_format="quaternion")
    with pytest.raises(InputError, match="frames_between"):
        interpolate(preset("smile"), -1)
    with pytest.raises(InputError, match="neither a preset"):
        resolve_keyframes("smiley")


def test_driving_keyframes_holds_single_frames_and_picks_defaults(tmp_path):
    from aniportraitgan.animation import driving_keyframes
    from aniportraitgan.animation.keyframe_files import DEFAULT_FRAMES_BETWEEN_PRESET

    base = preset("smile")
    alone = driving_keyframes("smile")
    assert len(alone) == (len(base) - 1) * (DEFAULT_FRAMES_BETWEEN_PRESET + 1) + 1
    np.save(tmp_path / "cam.npy", np.array([[0.3, 0.1]], np.float32))
    held = driving_keyframes("smile", camera=tmp_path / "cam.npy")  # a file: no interpolation by default
    assert len(held) == len(base)
    assert torch.equal(held.expression, base.expression)
    assert torch.equal(held.camera, torch.tensor([[0.3, 0.1]]).expand(len(base), 2))
    only_file = driving_keyframes(camera=tmp_path / "cam.npy", frames_between=2)
    assert len(only_file) == 1 and torch.equal(only_file.pose, torch.zeros(1, 6, 3))
    with pytest.raises(InputError, match="pose file"):
        driving_keyframes("smile", pose_format="euler-zyx")
    np.save(tmp_path / "exp.npy", np.zeros((2, 52), np.float32))
    with pytest.raises(InputError, match="frame counts"):
        driving_keyframes("smile", expression=tmp_path / "exp.npy")
