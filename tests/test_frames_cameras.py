"""Frames (body/scene/canonical) and cameras (main look-at, face dual camera, rays, projection)."""

import math

import pytest
import torch

from aniportraitgan.cameras import (
    FACE_FOV,
    FACE_RADIUS,
    Cameras,
    MainCameraPlacement,
    face_angles_from_main,
    face_cameras,
    look_at_cameras,
    matching_face_cameras,
)
from aniportraitgan.errors import InputError
from aniportraitgan.frames import (
    SCENE_SCALE,
    body_to_scene_directions,
    body_to_scene_points,
    body_to_scene_rotations,
    body_to_scene_transforms,
    canonical_to_scene,
    canonical_to_scene_transforms,
    opencv_to_opengl_c2w,
    scene_to_body_directions,
    scene_to_body_points,
    scene_to_body_transforms,
    scene_to_canonical,
    scene_to_canonical_transforms,
)
from aniportraitgan.rotations import axis_angle_to_matrix, rigid


@pytest.fixture(autouse=True)
def float64_default():
    """Tight tolerances for geometry identities; restored so other test files are unaffected."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


def random_rotations(n, gen, max_angle=math.pi):
    v = torch.randn(n, 3, generator=gen)
    v = v / v.norm(dim=-1, keepdim=True) * torch.rand(n, 1, generator=gen) * max_angle
    return axis_angle_to_matrix(v)


# ------------------------------------------------------------------------------------ frames


def test_body_to_scene_axes():
    origin = torch.tensor([0.1, -0.05, 1.45])
    # body +Z (up) -> scene +Y; body -Y (face direction) -> scene +Z; body +X stays +X
    pts = origin + torch.tensor([[0.0, 0.0, 1.0], [0.0, -1.0, 0.0], [1.0, 0.0, 0.0]])
    out = body_to_scene_points(pts, origin)
    assert torch.allclose(out, torch.tensor([[0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [1.0, 0.0, 0.0]]))
    assert torch.allclose(body_to_scene_points(origin, origin), torch.zeros(3))
    dirs = body_to_scene_directions(torch.tensor([[0.0, 0.0, 1.0], [0.0, -1.0, 0.0]]))
    assert torch.allclose(dirs, torch.tensor([[0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]))


def test_body_scene_canonical_round_trips():
    g = torch.Generator().manual_seed(0)
    pts = torch.randn(4, 50, 3, generator=g)
    origin = torch.randn(4, 3, generator=g)
    s = body_to_scene_points(pts, origin)
    # batched origins pair with the batch: item 2 uses origin 2
    assert torch.allclose(s[2], body_to_scene_points(pts[2], origin[2]))
    assert torch.allclose(scene_to_body_points(s, origin), pts)
    c = scene_to_canonical(s)
    assert torch.allclose(c * SCENE_SCALE, s)
    assert torch.allclose(canonical_to_scene(c), s)
    v = torch.randn(7, 3, generator=g)
    assert torch.allclose(scene_to_body_directions(body_to_scene_directions(v)), v)


def test_rigid_transform_conversion_commutes_with_points():
    g = torch.Generator().manual_seed(1)
    B, J, N = 3, 5, 20
    T_b = rigid(random_rotations(B * J, g).reshape(B, J, 3, 3), torch.randn(B, J, 3, generator=g))
    origin = torch.randn(B, 3, generator=g)
    pts = torch.randn(B, N, 3, generator=g)
    T_s = body_to_scene_transforms(T_b, origin)
    assert T_s.shape == (B, J, 4, 4)
    # transform in body then convert == convert then transform in scene
    moved_b = torch.einsum("bjkl,bnl->bjnk", T_b[..., :3, :3], pts) + T_b[:, :, None, :3, 3]
    lhs = body_to_scene_points(moved_b.reshape(B, J * N, 3), origin).reshape(B, J, N, 3)
    ps = body_to_scene_points(pts, origin)
    rhs = torch.einsum("bjkl,bnl->bjnk", T_s[..., :3, :3], ps) + T_s[:, :, None, :3, 3]
    assert torch.allclose(lhs, rhs, atol=1e-10)
    assert torch.allclose(scene_to_body_transforms(T_s, origin), T_b, atol=1e-10)
    # rotation-only conversion agrees with the rotation block
    assert torch.allclose(body_to_scene_rotations(T_b[..., :3, :3]), T_s[..., :3, :3])
    # identity stays identity (zero pose)
    eye = torch.eye(4).expand(B, J, 4, 4)
    assert torch.allclose(body_to_scene_transforms(eye, origin), eye)
    # canonical transforms commute with the scaling of points
    Tc = scene_to_canonical_transforms(T_s[:, 0])
    p_c = scene_to_canonical(ps)
    a = scene_to_canonical(ps @ T_s[:, 0, :3, :3].transpose(-1, -2) + T_s[:, 0, None, :3, 3])
    b = p_c @ Tc[:, :3, :3].transpose(-1, -2) + Tc[:, None, :3, 3]
    assert torch.allclose(a, b)
    assert torch.allclose(canonical_to_scene_transforms(Tc), T_s[:, 0])


def test_frames_are_differentiable():
    pts = torch.randn(2, 4, 3, requires_grad=True)
    origin = torch.randn(3, requires_grad=True)
    scene_to_canonical(body_to_scene_points(pts, origin)).sum().backward()
    assert pts.grad is not None and origin.grad is not None
    assert torch.isfinite(pts.grad).all()


def test_frames_bad_inputs():
    with pytest.raises(InputError, match="points"):
        body_to_scene_points(torch.zeros(4, 2), torch.zeros(3))
    with pytest.raises(InputError, match="origin"):
        body_to_scene_points(torch.zeros(4, 5, 3), torch.zeros(3, 3))
    with pytest.raises(InputError, match="T"):
        body_to_scene_transforms(torch.zeros(4, 3, 3), torch.zeros(3))
    with pytest.raises(InputError, match="x"):
        scene_to_canonical(torch.zeros(5, 4))


# ------------------------------------------------------------------------------ main cameras


def test_projection_hand_computed():
    # camera at (0, 0, 2) looking down -Z, fov 90 -> f = H / 2
    cams = look_at_cameras(0.0, 0.0, 2.0, 90.0, torch.zeros(3))
    assert torch.allclose(cams.centers, torch.tensor([[0.0, 0.0, 2.0]]))
    uv, depth = cams.project(torch.tensor([[[0.5, 0.25, 0.0]]]), 100, 120)
    # x_cam = 0.5 (scene +X is image right), y_cam = -0.25 (scene up is image up), z = 2
    assert torch.allclose(uv, torch.tensor([[[50 * 0.5 / 2 + 60, 50 * -0.25 / 2 + 50]]]))
    assert torch.allclose(depth, torch.tensor([[2.0]]))
    K = cams.intrinsics(100, 120)
    assert torch.allclose(K[0], torch.tensor([[50.0, 0, 60], [0, 50.0, 50], [0, 0, 1]]))


def test_look_at_projects_to_centre():
    g = torch.Generator().manual_seed(2)
    B = 6
    yaw = (torch.rand(B, generator=g) - 0.5) * 2.0
    pitch = (torch.rand(B, generator=g) - 0.5) * 1.0
    target = torch.randn(B, 3, generator=g) * 0.1
    radius = 1.0 + torch.rand(B, generator=g)
    cams = look_at_cameras(yaw, pitch, radius, 25.0, target)
    uv, depth = cams.project(target[:, None], 64, 48)
    assert torch.allclose(uv, torch.tensor([24.0, 32.0]).expand(B, 1, 2), atol=1e-9)
    assert torch.allclose(depth[:, 0], radius)
    # c2w rotation is proper and orthonormal
    R = cams.c2w[:, :3, :3]
    assert torch.allclose(R.transpose(-1, -2) @ R, torch.eye(3).expand(B, 3, 3), atol=1e-12)
    assert torch.allclose(torch.det(R), torch.ones(B))
    # image "up" (-y_cam) has a positive scene-Y component: the upright convention
    assert (-R[:, 1, 1] > 0).all()


def test_yaw_and_pitch_directions():
    cams = look_at_cameras(torch.tensor([0.0, 0.3, -0.3, 0.0]), torch.tensor([0.0, 0.0, 0.0, 0.3]), 1.6, 20.0, torch.zeros(3))
    c = cams.centers
    assert c[0, 2] > 1.59 and abs(c[0, 0]) < 1e-12  # frontal: camera on +Z
    assert c[1, 0] > 0 and c[2, 0] < 0  # yaw > 0 toward +X
    assert c[3, 1] > 0  # pitch > 0: above
    # a camera above looks down: the viewing direction (+z_cam) has negative scene Y
    assert cams.c2w[3, 1, 2] < 0
    # subject's left (+X) appears on the image right for a frontal camera
    uv, _ = cams[0].project(torch.tensor([[0.1, 0.0, 0.0]]), 64, 64)
    assert uv[0, 0, 0] > 32


def test_main_camera_defaults():
    d = MainCameraPlacement()
    cams = d.cameras(torch.zeros(2), torch.zeros(2))
    assert len(cams) == 2
    assert torch.allclose(cams.fov_deg, torch.full((2,), d.fov_deg))
    assert torch.allclose(cams.centers[0], torch.tensor(d.look_at) + torch.tensor([0, 0, d.radius]))
    cams2 = look_at_cameras(torch.zeros(2), torch.zeros(2))
    assert torch.allclose(cams.c2w, cams2.c2w)


def test_rays_pass_through_pixels():
    g = torch.Generator().manual_seed(3)
    cams = look_at_cameras(torch.tensor([0.4, -0.2]), torch.tensor([0.1, -0.15]), 1.5, torch.tensor([20.0, 35.0]), None)
    H, W = 6, 8
    o, d = cams.rays(H, W)
    assert o.shape == (2, H * W, 3) and d.shape == (2, H * W, 3)
    assert torch.allclose(d.norm(dim=-1), torch.ones(2, H * W))
    t = 0.5 + torch.rand(2, H * W, 1, generator=g) * 2.0
    uv, depth = cams.project(o + t * d, H, W)
    i, j = torch.meshgrid(torch.arange(H), torch.arange(W), indexing="ij")
    expected = torch.stack([j + 0.5, i + 0.5], -1).reshape(H * W, 2).to(uv.dtype)
    assert torch.allclose(uv, expected.expand(2, -1, -1), atol=1e-9)
    assert (depth > 0).all()
    # row-major: ray 1 is one pixel right of ray 0
    assert torch.allclose(uv[:, 1] - uv[:, 0], torch.tensor([1.0, 0.0]).expand(2, 2))


def test_opengl_matrices_reproduce_projection():
    cams = look_at_cameras(torch.tensor([0.3, -0.5]), torch.tensor([0.2, 0.0]), 1.6, 20.0, None)
    H, W = 40, 60
    pts = torch.randn(2, 10, 3) * 0.1
    uv, depth = cams.project(pts, H, W)
    view, P = cams.opengl_matrices(H, W)
    ph = torch.cat([pts, torch.ones(2, 10, 1)], -1)
    clip = ph @ (P @ view).transpose(-1, -2)
    ndc = clip[..., :3] / clip[..., 3:]
    assert torch.allclose((ndc[..., 0] + 1) * W / 2, uv[..., 0], atol=1e-9)
    assert torch.allclose((1 - ndc[..., 1]) * H / 2, uv[..., 1], atol=1e-9)
    assert torch.allclose(clip[..., 3], depth)
    # GL conversion is an involution and keeps the centre
    c2w_gl = opencv_to_opengl_c2w(cams.c2w)
    assert torch.allclose(c2w_gl[:, :3, 3], cams.centers)
    assert torch.allclose(opencv_to_opengl_c2w(c2w_gl), cams.c2w)


def test_cameras_container():
    cams = look_at_cameras(torch.tensor([0.0, 0.1, 0.2]), 0.0)
    assert len(cams) == 3
    assert len(cams[1]) == 1 and torch.allclose(cams[1].c2w[0], cams.c2w[1])
    assert len(cams[-1]) == 1 and torch.allclose(cams[-1].c2w[0], cams.c2w[2])
    assert len(cams[1:]) == 2
    assert cams.to("cpu", torch.float32).c2w.dtype == torch.float32
    assert len(Cameras.cat([cams, cams[0]])) == 4
    with pytest.raises(IndexError):
        cams[3]


def test_camera_gradients():
    yaw = torch.tensor([0.2], requires_grad=True)
    cams = look_at_cameras(yaw, torch.tensor([0.1]), 1.6, 20.0, None)
    uv, _ = cams.project(torch.tensor([[[0.05, 0.1, 0.02]]]), 64, 64)
    uv.sum().backward()
    assert yaw.grad is not None and torch.isfinite(yaw.grad).all() and yaw.grad.abs() > 0


# ----------------------------------------------------------------------------- face cameras


def test_face_camera_centres_head_for_random_poses():
    g = torch.Generator().manual_seed(4)
    B = 16
    Rh = random_rotations(B, g)
    c = torch.randn(B, 3, generator=g) * 0.2
    yaw = (torch.rand(B, generator=g) - 0.5) * 2.0
    pitch = (torch.rand(B, generator=g) - 0.5) * 1.2
    face = face_cameras(c, Rh, yaw, pitch)
    uv, depth = face.project(c[:, None], 64, 64)
    assert torch.allclose(uv, torch.full((B, 1, 2), 32.0), atol=1e-9)
    assert torch.allclose(depth[:, 0], torch.full((B,), FACE_RADIUS))
    assert torch.allclose(face.fov_deg, torch.full((B,), FACE_FOV))
    # at yaw = pitch = 0 the camera sits on the head's +Z (face) axis, image up = head up
    front = face_cameras(c, Rh, torch.zeros(B), torch.zeros(B))
    assert torch.allclose(front.centers, c + FACE_RADIUS * Rh[:, :, 2], atol=1e-12)
    assert torch.allclose(-front.c2w[:, :3, 1], Rh[:, :, 1], atol=1e-12)


def test_face_camera_up_follows_head_roll():
    # roll the head about the viewing axis (+Z): the face camera rolls with it
    c = torch.tensor([[0.0, 0.1, 0.05]]).repeat(3, 1)
    rolls = torch.tensor([0.0, 0.4, -0.7])
    Rh = axis_angle_to_matrix(torch.stack([torch.zeros(3), torch.zeros(3), rolls], -1))
    face = face_cameras(c, Rh, 0.0, 0.0)
    up_img = -face.c2w[:, :3, 1]  # camera up in scene space
    assert torch.allclose(up_img, Rh[:, :, 1], atol=1e-12)
    # a point on the head's up axis projects straight above the centre in every image
    top = c + 0.1 * Rh[:, :, 1]
    uv, _ = face.project(top[:, None], 64, 64)
    assert torch.allclose(uv[:, 0, 0], torch.full((3,), 32.0), atol=1e-9)
    assert (uv[:, 0, 1] < 32).all()
    # whereas the main camera does not roll
    main = look_at_cameras(torch.zeros(3), torch.zeros(3), 1.6, 20.0, c)
    uv_m, _ = main.project(top[:, None], 64, 64)
    assert not torch.allclose(uv_m[1:, 0, 0], torch.full((2,), 32.0), atol=1e-3)


def test_face_angles_round_trip():
    g = torch.Generator().manual_seed(5)
    B = 12
    Rh = random_rotations(B, g)
    c = torch.randn(B, 3, generator=g) * 0.2
    yaw = (torch.rand(B, generator=g) - 0.5) * 5.0  # within (-pi, pi)
    pitch = (torch.rand(B, generator=g) - 0.5) * 2.0
    face = face_cameras(c, Rh, yaw, pitch)
    yaw2, pitch2 = face_angles_from_main(face, c, Rh)
    assert torch.allclose(yaw2, yaw, atol=1e-9)
    assert torch.allclose(pitch2, pitch, atol=1e-9)


def test_matching_face_camera_views_from_main_direction():
    g = torch.Generator().manual_seed(6)
    B = 8
    Rh = random_rotations(B, g, max_angle=0.6)
    c = torch.randn(B, 3, generator=g) * 0.05 + torch.tensor([0.0, 0.15, 0.0])
    main = look_at_cameras((torch.rand(B, generator=g) - 0.5), (torch.rand(B, generator=g) - 0.5) * 0.6, 1.6, 20.0, None)
    face = matching_face_cameras(main, c, Rh)
    # the face camera, head centre and main camera are collinear, on the same side
    to_main = main.centers - c
    to_face = face.centers - c
    cos = (to_main * to_face).sum(-1) / (to_main.norm(dim=-1) * to_face.norm(dim=-1))
    assert torch.allclose(cos, torch.ones(B), atol=1e-12)
    assert torch.allclose(to_face.norm(dim=-1), torch.full((B,), FACE_RADIUS))
    # identity head at the look-at point: the face camera is the main camera moved closer
    c0 = torch.tensor(MainCameraPlacement().look_at).expand(B, 3)
    face0 = matching_face_cameras(main, c0, torch.eye(3).expand(B, 3, 3))
    assert torch.allclose(face0.c2w[:, :3, :3], main.c2w[:, :3, :3], atol=1e-9)


# ------------------------------------------------------------------------------- bad inputs


@pytest.mark.parametrize(
    "kwargs, word",
    [
        (dict(yaw=float("nan"), pitch=0.0), "yaw"),
        (dict(yaw=0.0, pitch=torch.tensor([0.0, float("inf")])), "pitch"),
        (dict(yaw=0.0, pitch=0.0, radius=-1.0), "radius"),
        (dict(yaw=0.0, pitch=0.0, radius=0.0), "radius"),
        (dict(yaw=0.0, pitch=0.0, fov_deg=0.0), "fov_deg"),
        (dict(yaw=0.0, pitch=0.0, fov_deg=180.0), "fov_deg"),
        (dict(yaw=0.0, pitch=0.0, look_at=torch.zeros(2, 2)), "look_at"),
        (dict(yaw=torch.zeros(2, 2), pitch=0.0), "yaw"),
        (dict(yaw=torch.zeros(3), pitch=torch.zeros(2)), "batch"),
        (dict(yaw=0.0, pitch=1.6), "pitch"),
    ],
)
def test_look_at_bad_inputs(kwargs, word):
    with pytest.raises(InputError, match=word):
        look_at_cameras(**kwargs)


def test_cameras_and_face_bad_inputs():
    with pytest.raises(InputError, match="c2w"):
        Cameras(torch.zeros(2, 3, 4), torch.full((2,), 20.0))
    with pytest.raises(InputError, match="c2w"):
        Cameras(torch.full((1, 4, 4), float("nan")), torch.full((1,), 20.0))
    with pytest.raises(InputError, match="fov_deg"):
        Cameras(torch.eye(4)[None], torch.full((2,), 20.0))
    cams = look_at_cameras(torch.zeros(2), 0.0)
    with pytest.raises(InputError, match="points"):
        cams.project(torch.zeros(2, 5, 2), 8, 8)
    with pytest.raises(InputError, match="H"):
        cams.rays(0, 8)
    eye = torch.eye(3).expand(2, 3, 3)
    with pytest.raises(InputError, match="head_center"):
        face_cameras(torch.zeros(2, 4), eye, 0.0, 0.0)
    with pytest.raises(InputError, match="head_rotation"):
        face_cameras(torch.zeros(2, 3), torch.ones(2, 3, 3), 0.0, 0.0)
    with pytest.raises(InputError, match="yaw"):
        face_cameras(torch.zeros(2, 3), eye, torch.zeros(3), 0.0)
    with pytest.raises(InputError, match="head_rotation"):
        face_angles_from_main(cams, torch.zeros(2, 3), eye[:1])
    with pytest.raises(InputError, match="head_center"):
        matching_face_cameras(cams, torch.full((2, 3), float("nan")), eye)
    with pytest.raises(InputError, match="cams"):
        face_angles_from_main("not cameras", torch.zeros(2, 3), eye)


def test_float32_and_cuda_if_available():
    cams = look_at_cameras(torch.zeros(2, dtype=torch.float32), torch.zeros(2, dtype=torch.float32))
    assert cams.c2w.dtype == torch.float32
    o, d = cams.rays(4, 4)
    assert d.dtype == torch.float32
    if torch.cuda.is_available():
        cc = cams.to("cuda")
        uv, _ = cc.project(torch.zeros(2, 1, 3, device="cuda"), 4, 4)
        assert uv.is_cuda
