"""Procedural appearance: region labelling, deterministic painting, hair shell, torso skirt."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from aniportraitgan.render.appearance import (
    AppearanceConfig,
    clothing_mask,
    hair_mask,
    paint_texture,
    sample_appearance,
)
from aniportraitgan.render.extra_meshes import build_hair_shell, build_skirt
from aniportraitgan.render.texels import (
    BROW,
    IRIS,
    LIPS,
    MOUTH,
    PUPIL,
    SCLERA,
    portrait_uv_layout,
    rasterize_uv,
    texel_geometry,
)

body_mod = pytest.importorskip("aniportraitgan.body")


@pytest.fixture(scope="module")
def body():
    try:
        return body_mod.PortraitBodyModel.load()
    except Exception as exc:  # the asset is built by another command
        pytest.skip(f"body model asset unavailable: {exc}")


@pytest.fixture(scope="module")
def geo(body):
    return texel_geometry(body, 256)


def test_rasterize_uv_covers_a_triangle_exactly():
    uvs = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    tri, bary = rasterize_uv(uvs, np.array([[0, 1, 2]]), 8)
    covered = tri.reshape(8, 8) >= 0
    # Texel (r, c) centre: u = (c + .5) / 8, v = 1 - (r + .5) / 8; inside when u + v <= 1.
    r, c = np.mgrid[0:8, 0:8]
    expect = (c + 0.5) / 8 + 1 - (r + 0.5) / 8 <= 1 + 1e-9
    assert np.array_equal(covered, expect)
    np.testing.assert_allclose(bary[tri >= 0].sum(1), 1.0, atol=1e-6)


def test_eye_patches_do_not_overlap_the_atlas(body):
    uvs, face_uvs = portrait_uv_layout(body)
    assert face_uvs.shape == tuple(body.face_uvs.shape)
    assert uvs.min() >= 0 and uvs.max() <= 1
    orig = body.uvs.numpy()
    changed = np.any(face_uvs != body.face_uvs.numpy(), axis=1)
    assert changed.sum() > 100  # both eyeballs remapped
    new_pts = uvs[np.unique(face_uvs[changed])]
    lo, hi = new_pts.min(0), new_pts.max(0)
    inside = np.all((orig >= lo) & (orig <= hi), axis=1)
    assert not inside.any()


def test_fixed_regions_are_on_the_right_body_parts(body, geo):
    counts = np.bincount(geo.region, minlength=7)
    for rid in (LIPS, BROW, SCLERA, IRIS, PUPIL, MOUTH):
        assert counts[rid] > 0
    assert counts[IRIS] > counts[PUPIL]
    with torch.no_grad():
        out = body(*body.neutral_codes(1))
    lm = out.landmarks[0].numpy()
    lips = geo.pos[geo.region == LIPS]
    assert np.abs(lips[:, 1].mean() - lm[48:60, 1].mean()) < 0.01
    brows = geo.pos[geo.region == BROW]
    assert brows[:, 1].min() > lm[36:48, 1].max() - 0.005  # above the eyes
    iris = geo.pos[geo.region == IRIS]
    assert np.all(iris[:, 2] > geo.head_center[2])  # on the front of the eyeballs


def test_painting_is_deterministic_and_varied(geo):
    def paint(seed):
        rng = np.random.default_rng(seed)
        return paint_texture(geo, sample_appearance(rng), rng)

    a, b, c = paint(1), paint(1), paint(2)
    assert a.shape == (256, 256, 4) and a.dtype == np.uint8
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)
    flat = a.reshape(-1, 4)
    assert np.all(flat[geo.covered, 3] == 255)


def test_hair_and_clothing_masks_follow_the_parameters(geo):
    rng = np.random.default_rng(0)
    p = sample_appearance(rng, AppearanceConfig(bald_fraction=0.0))
    p.hair_front, p.hair_back = 0.10, -0.05
    full = len(hair_mask(geo, p))
    p.hair_front = 0.13
    assert len(hair_mask(geo, p)) < full  # a higher hair line covers less scalp
    p.bald = True
    assert len(hair_mask(geo, p)) == 0
    p.neckline, p.tank_top = 0, False
    crew = len(clothing_mask(geo, p))
    p.neckline, p.neck_depth = 1, 0.08
    assert len(clothing_mask(geo, p)) < crew  # a V neck shows more skin
    texels = geo.body_pos[clothing_mask(geo, p)]
    assert texels[:, 1].max() < 0.0  # clothing stays below the neck base


def test_hair_shell_wraps_the_back_of_the_head(body, geo):
    with torch.no_grad():
        out = body(*body.neutral_codes(1))
    w = body.skinning_weights.numpy()
    head_w = w[:, body.bone_names.index("head")]
    rng = np.random.default_rng(0)
    p = sample_appearance(rng)
    p.long_hair_length = 0.2
    c = geo.head_center
    shell = build_hair_shell(out.neutral_vertices[0].numpy(), head_w, c, p, rng)
    v = shell.vertices
    assert shell.faces.max() < len(v) and shell.uvs.shape == (len(v), 2)
    assert v[:, 1].max() > out.neutral_vertices[0, :, 1].max()  # above the scalp
    assert v[:, 1].min() == pytest.approx(c[1] - 0.2, abs=1e-4)  # falls to the chosen length
    # The face stays open: shell points in front of the head centre and below the forehead
    # are off to the sides.
    front = (v[:, 2] > c[2] + 0.02) & (v[:, 1] < c[1] + 0.06)
    assert front.any() and np.all(np.abs(v[front, 0] - c[0]) > 0.06)


def test_skirt_closes_the_bottom_of_the_torso(body):
    with torch.no_grad():
        v = body(*body.neutral_codes(1)).vertices[0].numpy()
    faces = body.faces.numpy()
    sk = build_skirt(faces, body.face_uvs.numpy(), v)
    assert len(sk.boundary_vertices) > 20
    assert np.all(v[sk.boundary_vertices, 1] < -0.1)
    ext = sk.extend(v)
    assert ext.shape == (len(v) + len(sk.boundary_vertices), 3)
    assert sk.faces.max() < len(ext)
    assert ext[len(v):, 1].max() < v[:, 1].min()  # the copies hang below the whole body
    # The mesh with the skirt has no open edge left low on the torso except at the skirt hem.
    allf = np.concatenate([faces, sk.faces])
    e = np.sort(np.concatenate([allf[:, [0, 1]], allf[:, [1, 2]], allf[:, [2, 0]]]), axis=1)
    uniq, counts = np.unique(e, axis=0, return_counts=True)
    open_e = uniq[counts == 1]
    open_low_body = open_e[(open_e < len(v)).all(1) & (ext[open_e, 1] < -0.1).all(1)]
    assert len(open_low_body) == 0
