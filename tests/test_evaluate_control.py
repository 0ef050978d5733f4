"""Control metrics: multi-view reprojection on a rendered scene, geometry, identity, R errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from aniportraitgan.cameras import look_at_cameras
from aniportraitgan.errors import InputError
from aniportraitgan.metrics.control import CONTROL_METRICS, ControlConfig, select_control_metrics
from aniportraitgan.metrics.geometry import HEAD_BONES, SHOULDER_BONES, RegionSurface, geometry_distance, region_vertices
from aniportraitgan.metrics.identity import identity_consistency, identity_distance
from aniportraitgan.metrics.recon_errors import EXP_PROBE, expression_correlation, facerecon_errors, view_angle_error_deg, view_gains
from aniportraitgan.metrics.reprojection import backproject, reproject, reprojection_error


def _sphere(n_lat=48, n_lon=96, r=0.3):
    th = np.linspace(0, math.pi, n_lat + 1)[:, None]
    ph = np.linspace(0, 2 * math.pi, n_lon + 1)[None, :]
    v = np.stack([r * np.sin(th) * np.sin(ph), r * np.cos(th) * np.ones_like(ph), r * np.sin(th) * np.cos(ph)], -1)
    uv = np.stack(np.broadcast_arrays(ph / (2 * math.pi), 1 - th / math.pi), -1)
    i, j = np.meshgrid(np.arange(n_lat), np.arange(n_lon), indexing="ij")
    a = (i * (n_lon + 1) + j).reshape(-1)
    b = a + n_lon + 1
    f = np.concatenate([np.stack([a, b, a + 1], 1), np.stack([a + 1, b, b + 1], 1)])
    return v.reshape(-1, 3).astype(np.float32), f.astype(np.int64), uv.reshape(-1, 2).astype(np.float32)


@pytest.fixture(scope="module")
def scene():
    from aniportraitgan.render import Light, MeshRenderer, RenderBackendError, TexturedMesh

    try:
        renderer = MeshRenderer(samples=0)
    except RenderBackendError as exc:
        pytest.skip(str(exc))
    v, f, uv = _sphere()
    n = 128
    yy, xx = np.mgrid[0:n, 0:n] / n
    tex = np.stack([0.5 + 0.5 * np.sin(2 * math.pi * 2 * xx), 0.5 + 0.5 * np.sin(2 * math.pi * 2 * yy),
                    0.5 + 0.5 * np.cos(2 * math.pi * (xx + yy))], -1)
    mesh = TexturedMesh(v, f, uv, f.copy(), (tex * 255).astype(np.uint8))
    light = Light(ambient=1.0, diffuse=0.0)  # unlit texture: the colour of a point is view-independent

    def render(yaw: float, size: int = 64):
        cams = look_at_cameras(torch.tensor([yaw]), torch.tensor([0.1]), 1.6, 30.0, torch.zeros(1, 3))
        out = renderer.render(mesh, cams.c2w[0].numpy(), 30.0, size, size, light=light)
        img = torch.from_numpy(out.rgb).permute(2, 0, 1).float()[None] / 127.5 - 1.0
        return cams, img, torch.from_numpy(out.depth)[None, None], torch.from_numpy(out.alpha)[None, None]

    yield render
    renderer.release()


def test_reprojection_is_small_for_a_consistent_scene_and_large_when_perturbed(scene):
    ca, ia, da, aa = scene(0.0)
    cb, ib, db, ab = scene(0.35)
    good = reprojection_error(ia, da, aa, ca, ib, db, ab, cb)
    assert good["mae"].item() < 1.5  # 8-bit levels: texture resampling only
    assert good["visible"].item() > 0.7
    # The second image was taken 5.7 degrees further round than its camera says.
    _, ib2, db2, ab2 = scene(0.45)
    bad = reprojection_error(ia, da, aa, ca, ib2, db2, ab2, cb)
    assert bad["mae"].item() > 4 * good["mae"].item()
    # A colour-shifted image keeps the geometry but not the colours.
    shifted = reprojection_error(ia, da, aa, ca, ib.roll(2, 3), db, ab, cb)
    assert shifted["mae"].item() > 4 * good["mae"].item()
    # Views of different sizes work too.
    cc, ic, dc, ac = scene(0.35, size=96)
    assert reprojection_error(ia, da, aa, ca, ic, dc, ac, cc)["mae"].item() < 2.0


def test_reprojection_ignores_occluded_pixels():
    cams = look_at_cameras(torch.tensor([0.0]), torch.tensor([0.0]), 2.0, 30.0, torch.zeros(1, 3))
    img = torch.zeros(1, 3, 8, 8)
    depth = torch.full((1, 1, 8, 8), 2.0)
    alpha = torch.ones(1, 1, 8, 8)
    other = img.clone()
    other[..., :4] = 1.0  # a different colour, but at another depth: not the same surface
    odepth = depth.clone()
    odepth[..., :4] = 1.5
    r = reprojection_error(img, depth, alpha, cams, other, odepth, alpha, cams)
    assert r["mae"].item() == pytest.approx(0.0, abs=1e-4)
    assert r["visible"].item() == pytest.approx(0.5, abs=0.01)
    # Nothing in the foreground: NaN error, zero visibility.
    r = reprojection_error(img, depth, alpha * 0, cams, img, depth, alpha * 0, cams)
    assert math.isnan(r["mae"].item()) and r["visible"].item() == 0.0


def test_backproject_then_project_returns_pixel_centres():
    cams = look_at_cameras(torch.tensor([0.3, -0.2]), torch.tensor([0.1, 0.0]), 1.6, 20.0, torch.zeros(2, 3),
                           device="cpu").to(dtype=torch.float64)
    depth = 1.2 + torch.rand(2, 1, 6, 5, dtype=torch.float64)
    uv, z = reproject(depth, cams, cams)
    assert torch.allclose(uv, cams.pixel_centers(6, 5)[None].expand(2, -1, -1), atol=1e-9)
    assert torch.allclose(z, depth.reshape(2, -1), atol=1e-9)
    assert backproject(depth, cams).shape == (2, 30, 3)


def test_reprojection_bad_input():
    cams = look_at_cameras(torch.zeros(1), torch.zeros(1))
    img, d, a = torch.zeros(1, 3, 4, 4), torch.ones(1, 1, 4, 4), torch.ones(1, 1, 4, 4)
    with pytest.raises(InputError, match="depth_a"):
        reprojection_error(img, torch.ones(1, 1, 5, 4), a, cams, img, d, a, cams)
    with pytest.raises(InputError, match="NaN"):
        reprojection_error(img * float("nan"), d, a, cams, img, d, a, cams)
    with pytest.raises(InputError, match="cameras"):
        reprojection_error(img, d, a, look_at_cameras(torch.zeros(2), torch.zeros(2)), img, d, a, cams)


@pytest.fixture(scope="module")
def body():
    from aniportraitgan.body import PortraitBodyModel

    return PortraitBodyModel.load(device="cpu")


def test_geometry_distance_zero_on_the_body_and_larger_for_another_pose(body):
    z_id = torch.zeros(1, body.id_dim)
    z_exp = torch.zeros(1, body.exp_dim)
    pose = torch.zeros(1, 6, 3)
    other = pose.clone()
    other[0, 1, 2] = 0.4  # raise the left collar
    other[0, 4, 2] = 0.4  # and the left shoulder
    verts = body(z_id, z_exp, pose).vertices
    ref = body(z_id, z_exp, other).vertices
    region = region_vertices(body, SHOULDER_BONES) & body.nn_valid
    pts = verts[:, region]  # points on the asked body's shoulders
    mask = torch.ones(pts.shape[:2], dtype=torch.bool)
    own, far = geometry_distance(pts, mask, verts, body.nn_valid, region, ref)
    assert own.item() == pytest.approx(0.0, abs=1e-4)  # cdist rounding (float32)
    assert far.item() > 0.005  # metres
    empty, _ = geometry_distance(pts, mask & False, verts, body.nn_valid, region)
    assert math.isnan(empty.item())
    with pytest.raises(InputError, match="no bones"):
        region_vertices(body, ("tail",))


def test_identity_consistency_and_distance():
    base = torch.randn(3, 1, 16)
    same = base.expand(3, 4, 16)
    s = identity_consistency(same)
    assert s["same"] == pytest.approx(1.0)
    assert s["other"] < 0.9
    d = identity_distance(same)
    assert d["same"] == pytest.approx(0.0, abs=1e-9) and d["other"] > 1.0
    with pytest.raises(InputError):
        identity_consistency(torch.randn(1, 4, 16))


def test_view_angle_error():
    z = torch.zeros(1)
    assert view_angle_error_deg(z, z, z, z).item() == pytest.approx(0.0, abs=1e-3)
    assert view_angle_error_deg(z, z, z + math.radians(30), z).item() == pytest.approx(30.0, abs=1e-3)
    assert view_angle_error_deg(z, z, z, z - math.radians(10)).item() == pytest.approx(10.0, abs=1e-3)


def test_facerecon_errors_keys_and_values(body):
    from aniportraitgan.facerecon import FaceRecon, FaceReconConfig

    R = FaceRecon(FaceReconConfig(resolution=16, width=4, max_width=8, hidden=8)).eval()
    faces = torch.rand(3, 3, 16, 16) * 2 - 1
    z_id = torch.zeros(3, body.id_dim)
    z_exp = R.exp_mean.expand(3, -1).clone()  # the untrained R predicts exactly the label means
    view = torch.zeros(3, 2)
    e = facerecon_errors(R, body, faces, z_id, z_exp, view)
    assert set(e) == {"exp_coef_mae", "exp_landmark_mm", "landmark_mm", "head_pose_deg", "z_id_hat", "z_exp_hat",
                      "view_hat"}
    for k in ("exp_coef_mae", "exp_landmark_mm", "landmark_mm", "head_pose_deg"):
        assert e[k].shape == (3,) and torch.allclose(e[k], torch.zeros(3), atol=1e-3), k
    z_exp2 = z_exp.clone()
    z_exp2[:, 0] += 0.5  # ask for a different expression: errors appear
    e2 = facerecon_errors(R, body, faces, z_id, z_exp2, view)
    assert (e2["exp_coef_mae"] > 0.005).all() and torch.isfinite(e2["exp_landmark_mm"]).all()


def test_view_gains_recover_known_gains():
    """R's reading = 0.6 camera + 0.35 head + bias (the bundled model's yaw, docs/evaluation.md)
    is recovered; an obeying generator reads 1, 1, 0; a head drawn facing the camera reads 0."""
    g = torch.Generator().manual_seed(0)
    camera, head = torch.randn(300, 2, generator=g) * 0.25, torch.randn(300, 2, generator=g) * 0.3
    asked = camera + head
    bias = torch.tensor([0.02, -0.1])
    got = view_gains(0.6 * camera + 0.35 * head + bias, asked, camera)
    for axis, b in zip(("yaw", "pitch"), bias.tolist()):
        assert got[f"camera_gain_{axis}"] == pytest.approx(0.6, abs=1e-6)
        assert got[f"head_pose_gain_{axis}"] == pytest.approx(0.35, abs=1e-6)
        assert got[f"view_bias_{axis}_deg"] == pytest.approx(math.degrees(b), abs=1e-5)
    obeyed = view_gains(asked + torch.randn(300, 2, generator=g) * 0.02, asked, camera)
    assert obeyed["head_pose_gain_yaw"] == pytest.approx(1.0, abs=0.05)
    assert obeyed["camera_gain_pitch"] == pytest.approx(1.0, abs=0.05)
    assert view_gains(camera, asked, camera)["head_pose_gain_pitch"] == pytest.approx(0.0, abs=1e-9)
    assert math.isnan(view_gains(asked[:2], asked[:2], camera[:2])["camera_gain_yaw"])


def test_expression_correlation():
    names = ["browDownLeft", *EXP_PROBE]
    g = torch.Generator().manual_seed(0)
    asked = torch.rand(200, len(names), generator=g)
    perfect = expression_correlation(asked, asked * 0.5 + 0.1, names)  # affine: correlation 1
    assert perfect["exp_corr"] == pytest.approx(1.0) and perfect["exp_corr_jawOpen"] == pytest.approx(1.0)
    ignored = expression_correlation(asked, torch.rand(200, len(names), generator=g), names)
    assert abs(ignored["exp_corr"]) < 0.15
    opposite = expression_correlation(asked, -asked, names)
    assert opposite["exp_corr_eyeBlinkLeft"] == pytest.approx(-1.0)
    constant = expression_correlation(asked, torch.zeros_like(asked), names)
    assert math.isnan(constant["exp_corr"])  # no estimate varies: undefined, not 0
    with pytest.raises(InputError, match="one shape"):
        expression_correlation(asked, asked[:10], names)


def test_expression_correlation_standard_error():
    """exp_corr_se is the sampling noise of exp_corr: for five independent coefficients with
    correlation r over n samples, (1 - r^2) / sqrt(5 n); it halves with four times the samples."""
    g = torch.Generator().manual_seed(1)
    ses = []
    for n in (400, 1600):
        asked = torch.randn(n, len(EXP_PROBE), generator=g)
        estimated = 0.1 * asked + torch.randn(n, len(EXP_PROBE), generator=g)  # r ~ 0.1
        out = expression_correlation(asked, estimated, EXP_PROBE)
        expected = (1 - 0.1 ** 2) / math.sqrt(5 * n)
        assert 0.7 * expected < out["exp_corr_se"] < 1.3 * expected, (n, out["exp_corr_se"], expected)
        ses.append(out["exp_corr_se"])
    assert ses[1] < 0.65 * ses[0]
    assert out == expression_correlation(asked, estimated, EXP_PROBE)  # seeded: reruns agree
    assert math.isnan(expression_correlation(asked[:1], estimated[:1], EXP_PROBE)["exp_corr_se"])


def test_control_metric_registry():
    assert list(CONTROL_METRICS) == ["expression", "head_pose", "geometry", "multiview", "identity", "response"]
    assert select_control_metrics(None) == tuple(CONTROL_METRICS)
    assert select_control_metrics(["identity", "geometry"]) == ("geometry", "identity")  # registry order
    with pytest.raises(InputError, match="registered: expression, head_pose, geometry, multiview, identity, response"):
        select_control_metrics(["geometry", "lpips"])


def test_control_config_validation():
    ControlConfig().validate()
    with pytest.raises(InputError):
        ControlConfig(identities=1).validate()
    with pytest.raises(InputError):
        ControlConfig(num=0).validate()


def test_geometry_metric_on_a_rendered_body(body):
    """Depth of the body mesh drawn by the project's rasterizer, lifted with `backproject`:
    ~0 against the body posed as asked, clearly more against another shoulder pose."""
    from aniportraitgan.render import MeshRenderer, RenderBackendError, TexturedMesh

    try:
        renderer = MeshRenderer(samples=0)
    except RenderBackendError as exc:
        pytest.skip(str(exc))
    z_id, z_exp = torch.zeros(1, body.id_dim), torch.zeros(1, body.exp_dim)
    pose = torch.zeros(1, 6, 3)
    other = pose.clone()
    other[0, 1, 2], other[0, 2, 2] = 0.35, -0.35  # both collars raised
    other[0, 3, 1] = 0.5  # head turned
    verts = body(z_id, z_exp, pose).vertices
    ref = body(z_id, z_exp, other).vertices
    faces = body.faces.numpy()
    tex = np.full((4, 4, 3), 128, np.uint8)
    mesh = TexturedMesh(verts[0].numpy(), faces, body.uvs.numpy(), body.face_uvs.numpy(), tex)
    cams = look_at_cameras(torch.tensor([0.3]), torch.tensor([0.1]))
    out = renderer.render(mesh, cams.c2w[0].numpy(), float(cams.fov_deg[0]), 64, 64)
    renderer.release()
    depth = torch.from_numpy(out.depth)[None, None]
    pts = backproject(depth, cams)
    mask = torch.from_numpy(out.alpha >= 0.99).reshape(1, -1)
    for bones in (SHOULDER_BONES, HEAD_BONES):
        region = region_vertices(body, bones) & body.nn_valid
        coarse, _ = geometry_distance(pts, mask, verts, body.nn_valid, region, ref)
        surface = RegionSurface.build(verts[0], body.faces, region)
        own, far = geometry_distance(pts, mask, verts, body.nn_valid, region, ref, surface=surface)
        assert own.item() < 0.003, bones  # metres: surface sampling and depth-map resolution only
        assert own.item() <= coarse.item() + 1e-6
        assert far.item() > 2 * own.item() + 0.003, bones
