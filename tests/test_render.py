"""Renderer: pixels agree with the cameras module's pinhole projection; mask, depth, errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from aniportraitgan.errors import InputError
from aniportraitgan.render import (
    Light,
    MeshRenderer,
    MeshTopology,
    RenderBackendError,
    TexturedMesh,
    vertex_normals,
)

cameras = pytest.importorskip("aniportraitgan.cameras")


@pytest.fixture(scope="module")
def renderer():
    try:
        r = MeshRenderer(samples=0)
    except RenderBackendError as exc:
        pytest.skip(str(exc))
    yield r
    r.release()


def _flat_texture(rgb=(200, 100, 50)):
    return np.full((4, 4, 3), rgb, dtype=np.uint8)


def _cube(center, half):
    c = np.asarray(center, np.float32)
    corners = np.array([[x, y, z] for x in (-1, 1) for y in (-1, 1) for z in (-1, 1)], np.float32)
    v = c + half * corners
    quads = [(0, 1, 3, 2), (4, 6, 7, 5), (0, 4, 5, 1), (2, 3, 7, 6), (0, 2, 6, 4), (1, 5, 7, 3)]
    faces = np.array([t for a, b, c_, d in quads for t in ((a, b, c_), (a, c_, d))], np.int64)
    return v, faces


def _mesh(v, faces, tex=None):
    uvs = np.zeros((1, 2), np.float32)
    return TexturedMesh(v, faces, uvs, np.zeros_like(faces), tex if tex is not None else _flat_texture())


def _camera(yaw_deg, pitch_deg, radius=1.5, fov=25.0, look_at=(0.02, -0.01, 0.03)):
    cam = cameras.look_at_cameras(
        torch.tensor([math.radians(yaw_deg)], dtype=torch.float64),
        torch.tensor([math.radians(pitch_deg)], dtype=torch.float64),
        radius, fov, torch.tensor(look_at, dtype=torch.float64),
    )
    return cam


@pytest.mark.parametrize("yaw,pitch,H,W", [(0.0, 0.0, 64, 64), (25.0, -12.0, 48, 80), (-30.0, 15.0, 96, 72)])
def test_small_quad_lands_on_projected_pixel(renderer, yaw, pitch, H, W):
    cam = _camera(yaw, pitch)
    target = torch.tensor([[0.05, 0.04, -0.02]], dtype=torch.float64)
    uv, depth = cam.project(target[None], H, W)
    u, v = uv[0, 0].tolist()
    # A tiny square facing the camera around the target point: a fraction of a pixel wide.
    R = cam.c2w[0, :3, :3].numpy()
    f = float(cam.focal(H)[0])
    half = 0.3 * float(depth[0, 0]) / f  # 0.3 pixel in scene units
    p = target[0].numpy()
    quad = np.stack([p + half * (sx * R[:, 0] + sy * R[:, 1]) for sx, sy in ((-1, -1), (1, -1), (1, 1), (-1, 1))])
    out = renderer.render(_mesh(quad.astype(np.float32), np.array([[0, 1, 2], [0, 2, 3]])), cam.c2w[0].numpy(), 25.0, H, W)
    # Move the quad's centre onto the nearest pixel centre so exactly one pixel is covered.
    j, i = int(math.floor(u)), int(math.floor(v))
    shift = (j + 0.5 - u) * R[:, 0] + (i + 0.5 - v) * R[:, 1]
    quad2 = quad + shift * float(depth[0, 0]) / f
    out = renderer.render(_mesh(quad2.astype(np.float32), np.array([[0, 1, 2], [0, 2, 3]])), cam.c2w[0].numpy(), 25.0, H, W)
    ii, jj = np.nonzero(out.mask)
    assert list(zip(ii.tolist(), jj.tolist())) == [(i, j)]
    assert out.depth[i, j] == pytest.approx(float(depth[0, 0]), abs=2e-4)


def test_mask_covers_projected_vertices_and_depth_is_camera_z(renderer):
    H, W = 64, 64
    cam = _camera(20.0, 10.0, fov=30.0)
    v, faces = _cube((0.0, 0.0, 0.0), 0.12)
    out = renderer.render(_mesh(v, faces), cam.c2w[0].numpy(), 30.0, H, W)
    # Dense points on the cube surface (triangle centroids): each lies inside the mask.
    cent = torch.tensor(v[faces].mean(1), dtype=torch.float64)
    uv, _ = cam.project(cent[None], H, W)
    cols = uv[0, :, 0].floor().long().clamp(0, W - 1)
    rows = uv[0, :, 1].floor().long().clamp(0, H - 1)
    assert out.mask[rows.numpy(), cols.numpy()].all()
    # Depth of every foreground pixel equals the camera z of the nearest cube surface along the ray.
    o, d = cam.rays(H, W)
    o, d = o[0].numpy(), d[0].numpy()
    lo, hi = -0.12 * np.ones(3), 0.12 * np.ones(3)
    with np.errstate(divide="ignore", invalid="ignore"):
        t1, t2 = (lo - o) / d, (hi - o) / d
    tnear = np.minimum(t1, t2).max(1)
    tfar = np.maximum(t1, t2).min(1)
    hit = (tnear <= tfar).reshape(H, W)
    fwd = cam.c2w[0, :3, 2].numpy()
    z = (tnear * (d @ fwd)).reshape(H, W)
    inner = hit & out.mask
    assert inner.sum() > 200
    np.testing.assert_allclose(out.depth[inner], z[inner], atol=1e-4)
    # Coverage agrees with the analytic silhouette except on boundary pixels.
    assert (hit != out.mask).sum() <= 0.02 * H * W
    assert np.all(out.depth[~out.mask] == 0)
    assert np.all(out.rgb[~out.mask] == 255)


def test_texture_orientation_and_lambert_shading(renderer):
    H = W = 32
    cam = _camera(0.0, 0.0, radius=1.0, fov=20.0, look_at=(0.0, 0.0, 0.0))
    quad = np.array([[-0.1, -0.1, 0], [0.1, -0.1, 0], [0.1, 0.1, 0], [-0.1, 0.1, 0]], np.float32)
    faces = np.array([[0, 1, 2], [0, 2, 3]])
    uvs = np.array([[0, 0], [1, 0], [1, 1], [0, 1]], np.float32)
    tex = np.zeros((8, 8, 3), np.uint8)
    tex[:4] = (255, 0, 0)  # top half of the image: v near 1
    tex[4:] = (0, 0, 255)
    mesh = TexturedMesh(quad, faces, uvs, faces, tex)
    out = renderer.render(mesh, cam.c2w[0].numpy(), 20.0, H, W, light=Light((0, 0, 1), ambient=0.0, diffuse=1.0))
    assert tuple(out.rgb[12, 16]) == (255, 0, 0)  # scene +Y is up in the image
    assert tuple(out.rgb[20, 16]) == (0, 0, 255)
    # Light at 60 degrees from the normal halves the diffuse term.
    d = (0.0, math.sin(math.radians(60)), math.cos(math.radians(60)))
    out = renderer.render(mesh, cam.c2w[0].numpy(), 20.0, H, W, light=Light(d, ambient=0.1, diffuse=1.0))
    assert out.rgb[12, 16, 0] == pytest.approx(255 * 0.6, abs=1.5)


def test_msaa_gives_fractional_edges_and_same_depth():
    try:
        r = MeshRenderer(samples=4)
    except RenderBackendError as exc:
        pytest.skip(str(exc))
    try:
        cam = _camera(10.0, 5.0)
        v, faces = _cube((0.0, 0.0, 0.0), 0.1)
        out = r.render(_mesh(v, faces), cam.c2w[0].numpy(), 25.0, 48, 48)
        frac = (out.alpha > 0) & (out.alpha < 1)
        assert frac.sum() > 10
        full = out.alpha == 1
        r0 = MeshRenderer(samples=0)
        ref = r0.render(_mesh(v, faces), cam.c2w[0].numpy(), 25.0, 48, 48)
        r0.release()
        both = full & ref.mask
        # Fully covered pixels match, except a few on creases where two faces share a pixel.
        close = np.abs(out.depth[both] - ref.depth[both]) < 2e-3
        assert close.mean() > 0.95
    finally:
        r.release()


def test_vertex_normals_point_outward():
    v, faces = _cube((0, 0, 0), 1.0)
    n = vertex_normals(v, faces)
    assert np.all(np.sum(n * v, 1) > 0)
    np.testing.assert_allclose(np.linalg.norm(n, axis=1), 1.0, atol=1e-6)


def test_bad_inputs_raise_input_error(renderer):
    v, faces = _cube((0, 0, 0), 0.1)
    c2w = _camera(0, 0).c2w[0].numpy()
    with pytest.raises(InputError, match="c2w"):
        renderer.render(_mesh(v, faces), np.eye(3), 20.0, 16, 16)
    with pytest.raises(InputError, match="NaN"):
        bad = v.copy()
        bad[0, 0] = np.nan
        renderer.render(_mesh(bad, faces), c2w, 20.0, 16, 16)
    with pytest.raises(InputError, match="out of range"):
        renderer.render(_mesh(v, faces + 100), c2w, 20.0, 16, 16)
    with pytest.raises(InputError, match="texture"):
        renderer.render(_mesh(v, faces, tex=np.zeros((4, 4), np.uint8)), c2w, 20.0, 16, 16)


def test_set_meshes_then_several_draws_match_render(renderer):
    v, faces = _cube((0.0, 0.0, 0.0), 0.1)
    uvs = np.array([[0.1, 0.1], [0.9, 0.1], [0.5, 0.9]], np.float32)
    face_uvs = np.tile(np.array([0, 1, 2]), (len(faces), 1))
    tex = np.random.default_rng(0).integers(0, 255, (16, 16, 3), dtype=np.uint8)
    mesh = TexturedMesh(v, faces, uvs, face_uvs, tex)
    cams = [_camera(15.0, 5.0), _camera(-20.0, -10.0)]
    refs = [renderer.render(mesh, c.c2w[0].numpy(), 25.0, 40, 40) for c in cams]
    topo = MeshTopology.build(faces, face_uvs, uvs)
    assert len(topo.vertex_ids) <= len(faces) * 3 and topo.indices.max() < len(topo.vertex_ids)
    renderer.set_meshes(TexturedMesh(v, faces, uvs, face_uvs, tex, topology=topo))
    for c, ref in zip(cams, refs):
        out = renderer.draw(c.c2w[0].numpy(), 25.0, 40, 40, with_depth=False)
        assert np.array_equal(out.rgb, ref.rgb) and out.depth is None


def test_missing_egl_gives_a_clear_error(monkeypatch):
    import moderngl

    def fail(*args, **kwargs):
        raise Exception("eglGetDisplay failed")

    monkeypatch.setattr(moderngl, "create_standalone_context", fail)
    with pytest.raises(RenderBackendError, match="libegl1 libegl-mesa0 libgl1-mesa-dri"):
        MeshRenderer()
