"""The full generator G (tiny preset): outputs, gradients, batching, cache, determinism, errors."""

from __future__ import annotations

import math

import pytest
import torch

from aniportraitgan.body import PortraitBodyModel
from aniportraitgan.cameras import look_at_cameras, matching_face_cameras
from aniportraitgan.errors import InputError
from aniportraitgan.generator import Generator, GeneratorConfig, RenderOptions
from aniportraitgan.latents import LatentSample

RES = 24


@pytest.fixture(scope="module")
def body():
    return PortraitBodyModel.load(device="cpu")


@pytest.fixture(scope="module")
def G(body):
    torch.manual_seed(0)
    g = Generator(GeneratorConfig.tiny(), body)
    g.eval()
    return g


def _inputs(B=2, seed=1):
    gen = torch.Generator().manual_seed(seed)
    z_id = torch.randn(B, 40, generator=gen)
    z_exp = torch.rand(B, 52, generator=gen) * 0.5
    z_pose = torch.randn(B, 6, 3, generator=gen) * 0.15
    eps = torch.randn(B, 16, generator=gen)
    cams = look_at_cameras(torch.rand(B, generator=gen) - 0.5, torch.rand(B, generator=gen) * 0.3 - 0.15)
    return z_id, z_exp, z_pose, eps, cams


def test_output_shapes_ranges_and_default_face_cameras(G):
    z_id, z_exp, z_pose, eps, cams = _inputs()
    with torch.no_grad():
        out = G(LatentSample(z_id, z_exp, z_pose, eps), cams, options=RenderOptions(portrait_resolution=RES, face_resolution=16))
    assert out.portrait.shape == (2, 3, RES, RES)
    assert out.portrait_depth.shape == out.portrait_alpha.shape == (2, 1, RES, RES)
    assert out.face.shape == (2, 3, 16, 16) and out.face_alpha.shape == (2, 1, 16, 16)
    for img in (out.portrait, out.face):
        assert img.min() >= -1 and img.max() <= 1
    assert out.portrait_alpha.min() >= 0 and out.portrait_alpha.max() <= 1 + 1e-6
    assert out.portrait_alpha.mean() > 0.1  # the shells cover the portrait
    # Depth of covered pixels lies within the sampled range (camera at 1.6 m).
    covered = out.portrait_alpha > 0.5
    assert out.portrait_depth[covered].min() > 1.0 and out.portrait_depth[covered].max() < 2.2
    body_out = G.body(z_id, z_exp, z_pose)
    ref = matching_face_cameras(cams, body_out.head_center, body_out.head_rotation)
    assert torch.allclose(out.face_cameras.c2w, ref.c2w)
    # Face views sample a sphere of face_bound_radius around the head (FACE_RADIUS = 0.8 m away).
    r = G.config.face_bound_radius
    assert out.face_depth.min() >= 0.8 - r - 1e-4 and out.face_depth.max() <= 0.8 + r + 1e-4
    none = G(LatentSample(z_id, z_exp, z_pose, eps), cams, options=RenderOptions(portrait_resolution=8, face_resolution=None))
    assert none.face is None


def test_explicit_face_cameras_and_white_background(G):
    z_id, z_exp, z_pose, eps, cams = _inputs(1)
    # A face camera looking away from the portrait sees only the white background.
    # (camera at z = 2 m in front of the face, looking along +Z, away from the body)
    away = look_at_cameras(torch.tensor([math.pi]), torch.tensor([0.0]), 1.0, 20.0,
                           torch.tensor([[0.0, 0.0, 3.0]]))
    assert away.c2w[0, 2, 3] == pytest.approx(2.0) and away.c2w[0, 2, 2] == pytest.approx(1.0)
    with torch.no_grad():
        out = G(LatentSample(z_id, z_exp, z_pose, eps), cams, away, options=RenderOptions(portrait_resolution=8, face_resolution=8))
    assert torch.allclose(out.face, torch.ones_like(out.face))
    assert out.face_alpha.abs().max() == 0


def test_all_five_subnetworks_receive_gradients(body):
    torch.manual_seed(0)
    G = Generator(GeneratorConfig.tiny(), body)
    z_id, z_exp, z_pose, eps, cams = _inputs()
    out = G(LatentSample(z_id, z_exp, z_pose, eps), cams, options=RenderOptions(portrait_resolution=16, face_resolution=16, return_aux=True))
    for key in ("pose_smooth", "exp_imitation", "exp_smooth", "exp_minimal"):
        assert getattr(out.aux, key).ndim == 0 and torch.isfinite(getattr(out.aux, key))
    loss = out.portrait.square().mean() + out.face.square().mean() + out.aux.exp_imitation
    loss.backward()
    subs = G.subnetworks()
    def has_grad(m):
        return any(p.grad is not None and p.grad.abs().sum() > 0 for p in m.parameters())
    for name in ("M", "phi", "Dp", "De"):
        assert has_grad(subs[name]), name
    assert not has_grad(subs["U"])  # stage 1 does not use U
    G.zero_grad()
    out2 = G(LatentSample(z_id, z_exp, z_pose, eps), cams, options=RenderOptions(portrait_resolution=16, face_resolution=None, stage=2))
    out2.portrait.square().mean().backward()
    assert has_grad(subs["U"])
    assert has_grad(subs["M"]) and has_grad(subs["phi"])


def test_pose_smooth_loss_reaches_dp(body):
    torch.manual_seed(0)
    G = Generator(GeneratorConfig.tiny(), body)
    with torch.no_grad():
        G.pose.conv1.weight.add_(torch.randn_like(G.pose.conv1.weight) * 1e-3)
    z_id, z_exp, z_pose, eps, cams = _inputs(1)
    out = G(LatentSample(z_id, z_exp, z_pose, eps), cams, options=RenderOptions(portrait_resolution=16, face_resolution=None, return_aux=True))
    assert out.aux.pose_smooth > 0
    out.aux.pose_smooth.backward()
    assert G.pose.conv1.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("stage", [1, 2])
def test_batch_equals_samples_one_by_one(G, stage):
    z_id, z_exp, z_pose, eps, cams = _inputs(3)
    with torch.no_grad():
        full = G(LatentSample(z_id, z_exp, z_pose, eps), cams, options=RenderOptions(portrait_resolution=RES, face_resolution=16, stage=stage))
        for i in range(3):
            one = G(LatentSample(z_id[i:i + 1], z_exp[i:i + 1], z_pose[i:i + 1], eps[i:i + 1]), cams[i], options=RenderOptions(portrait_resolution=RES, face_resolution=16, stage=stage))
            assert torch.allclose(full.portrait[i:i + 1], one.portrait, atol=1e-5)
            assert torch.allclose(full.portrait_depth[i:i + 1], one.portrait_depth, atol=1e-5)
            assert torch.allclose(full.face[i:i + 1], one.face, atol=1e-5)


def test_ray_chunking_and_volume_reading_do_not_change_the_image(body):
    """Chunk sizes, and dense vs per-chunk reading of the Dp volume, are implementation details."""
    torch.manual_seed(0)
    a = Generator(GeneratorConfig.tiny(ray_chunk=100000), body).eval()
    torch.manual_seed(0)
    b = Generator(GeneratorConfig.tiny(ray_chunk=77, dp_dense_upsample_max=0), body).eval()
    z_id, z_exp, z_pose, eps, cams = _inputs(2)
    with torch.no_grad():
        ia = a(LatentSample(z_id, z_exp, z_pose, eps), cams, options=RenderOptions(portrait_resolution=RES, face_resolution=None)).portrait
        ib = b(LatentSample(z_id, z_exp, z_pose, eps), cams, options=RenderOptions(portrait_resolution=RES, face_resolution=None)).portrait
    assert torch.allclose(ia, ib, atol=1e-5)


@pytest.mark.parametrize("stage", [1, 2])
def test_cached_and_uncached_rendering_agree(G, stage):
    z_id, z_exp, z_pose, eps, cams = _inputs(2)
    G.compute_w_avg(256)
    with torch.no_grad():
        cache = G.build_cache(z_id, eps, psi=0.7, stage=stage)
        plain = G(LatentSample(z_id, z_exp, z_pose, eps), cams, options=RenderOptions(portrait_resolution=RES, face_resolution=16, stage=stage, psi=0.7))
        cached = G(LatentSample(z_id, z_exp, z_pose, eps), cams, options=RenderOptions(portrait_resolution=RES, face_resolution=16, stage=stage, psi=0.7, cache=cache))
    assert (cache.maps is not None) == (stage == 2)
    assert torch.allclose(plain.portrait, cached.portrait, atol=1e-6)
    assert torch.allclose(plain.face, cached.face, atol=1e-6)


def test_single_identity_cache_serves_a_batch_of_frames(G):
    z_id, z_exp, z_pose, eps, cams = _inputs(3)
    z_id1, eps1 = z_id[:1], eps[:1]
    with torch.no_grad():
        cache = G.build_cache(z_id1, eps1, stage=2)
        frames = G(LatentSample(z_id1.expand(3, -1), z_exp, z_pose, eps1.expand(3, -1)), cams, options=RenderOptions(portrait_resolution=16, face_resolution=None, stage=2, cache=cache))
        plain = G(LatentSample(z_id1.expand(3, -1), z_exp, z_pose, eps1.expand(3, -1)), cams, options=RenderOptions(portrait_resolution=16, face_resolution=None, stage=2))
    assert torch.allclose(frames.portrait, plain.portrait, atol=1e-6)
    with pytest.raises(InputError, match="different z_id"):
        G(LatentSample(z_id, z_exp, z_pose, eps), cams, options=RenderOptions(portrait_resolution=8, face_resolution=None, stage=2, cache=cache))
    with pytest.raises(InputError, match="stage 2"):
        G(LatentSample(z_id1, z_exp[:1], z_pose[:1], eps1), cams[0], options=RenderOptions(portrait_resolution=8, stage=1, cache=cache))


def test_stage_two_at_init_resembles_stage_one(G):
    z_id, z_exp, z_pose, eps, cams = _inputs(1)
    with torch.no_grad():
        s1 = G(LatentSample(z_id, z_exp, z_pose, eps), cams, options=RenderOptions(portrait_resolution=32, face_resolution=None, stage=1))
        s2 = G(LatentSample(z_id, z_exp, z_pose, eps), cams, options=RenderOptions(portrait_resolution=32, face_resolution=None, stage=2))
    # U starts as bilinear upsampling of the maps: only resampling differences remain.
    assert (s1.portrait - s2.portrait).abs().mean() < 0.05
    assert (s1.portrait_alpha - s2.portrait_alpha).abs().mean() < 0.05


def test_truncation(G):
    z_id, z_exp, z_pose, eps, _ = _inputs(3)
    G.compute_w_avg(512)
    w0, _ = G.map_identity(z_id, eps, psi=0.0)
    assert torch.allclose(w0, G.w_avg_radiance.w_avg.expand_as(w0))
    w1, _ = G.map_identity(z_id, eps, psi=1.0)
    wh, _ = G.map_identity(z_id, eps, psi=0.5)
    assert torch.allclose(wh, 0.5 * (w0 + w1), atol=1e-5)


def test_truncation_needs_an_average(body):
    g = Generator(GeneratorConfig.tiny(), body).eval()
    z_id, z_exp, z_pose, eps, cams = _inputs(1)
    with pytest.raises(InputError, match="average mapping output"):
        g(LatentSample(z_id, z_exp, z_pose, eps), cams, options=RenderOptions(portrait_resolution=8, psi=0.7))
    g.train()
    g(LatentSample(z_id, z_exp, z_pose, eps), cams, options=RenderOptions(portrait_resolution=8, face_resolution=None))  # running average
    assert g.w_avg_radiance.initialized


def test_cpu_results_are_deterministic_for_a_seed(body):
    outs = []
    for _ in range(2):
        torch.manual_seed(123)
        g = Generator(GeneratorConfig.tiny(), body)
        z_id, z_exp, z_pose, eps, cams = _inputs(2, seed=5)
        torch.manual_seed(7)
        o = g(LatentSample(z_id, z_exp, z_pose, eps), cams, options=RenderOptions(portrait_resolution=16, face_resolution=16, return_aux=True))
        outs.append(o)
    assert torch.equal(outs[0].portrait, outs[1].portrait)
    assert torch.equal(outs[0].face, outs[1].face)
    assert torch.equal(outs[0].aux.exp_smooth, outs[1].aux.exp_smooth)


def test_state_dict_excludes_the_body_model(G):
    keys = G.state_dict().keys()
    assert not any(k.startswith("body") for k in keys)
    assert any(k.startswith("manifold.") for k in keys) and any(k.startswith("superres.") for k in keys)


def test_bad_inputs_raise_input_error(G):
    z_id, z_exp, z_pose, eps, cams = _inputs(2)
    kw = dict(portrait_resolution=8, face_resolution=None)
    with pytest.raises(InputError, match="z_id"):
        G(LatentSample(z_id[:, :10], z_exp, z_pose, eps), cams, options=RenderOptions(**kw))
    with pytest.raises(InputError, match="z_exp has batch 1"):
        G(LatentSample(z_id, z_exp[:1], z_pose, eps), cams, options=RenderOptions(**kw))
    with pytest.raises(InputError, match=r"z_pose must have shape \[B, 6, 3\]"):
        G(LatentSample(z_id, z_exp, z_pose.reshape(2, 18), eps), cams, options=RenderOptions(**kw))
    bad = eps.clone()
    bad[0, 0] = float("nan")
    with pytest.raises(InputError, match="eps contains NaN"):
        G(LatentSample(z_id, z_exp, z_pose, bad), cams, options=RenderOptions(**kw))
    with pytest.raises(InputError, match="cameras holds 1 cameras"):
        G(LatentSample(z_id, z_exp, z_pose, eps), cams[0], options=RenderOptions(**kw))
    with pytest.raises(InputError, match="cameras must be"):
        G(LatentSample(z_id, z_exp, z_pose, eps), cams.c2w, options=RenderOptions(**kw))
    with pytest.raises(InputError, match="stage"):
        G(LatentSample(z_id, z_exp, z_pose, eps), cams, options=RenderOptions(stage=3, **kw))
    with pytest.raises(InputError, match="portrait_resolution"):
        G(LatentSample(z_id, z_exp, z_pose, eps), cams, options=RenderOptions(portrait_resolution=0))
    with pytest.raises(InputError, match="body model codes"):
        Generator(GeneratorConfig.tiny(id_dim=12), G.body)


def test_coarse_geometry_rendering_approximates_per_pixel_rendering(body):
    torch.manual_seed(0)
    exact = Generator(GeneratorConfig.tiny(), body).eval()
    torch.manual_seed(0)
    fast = Generator(GeneratorConfig.tiny(geometry_max_resolution=24), body).eval()
    z_id, z_exp, z_pose, eps, cams = _inputs(1)
    with torch.no_grad():
        kw = dict(face_resolution=None, stage=2)
        a = exact(LatentSample(z_id, z_exp, z_pose, eps), cams, options=RenderOptions(portrait_resolution=48, **kw))
        b = fast(LatentSample(z_id, z_exp, z_pose, eps), cams, options=RenderOptions(portrait_resolution=48, **kw))
        # At or below the cap both are the same computation.
        same_a = exact(LatentSample(z_id, z_exp, z_pose, eps), cams, options=RenderOptions(portrait_resolution=24, **kw))
        same_b = fast(LatentSample(z_id, z_exp, z_pose, eps), cams, options=RenderOptions(portrait_resolution=24, **kw))
    assert torch.equal(same_a.portrait, same_b.portrait)
    assert b.portrait.shape == a.portrait.shape
    assert (a.portrait - b.portrait).abs().mean() < 0.02
    assert (a.portrait_alpha - b.portrait_alpha).abs().mean() < 0.02


def test_stage_parameters_and_param_groups_come_from_the_model(body):
    G = Generator(GeneratorConfig.tiny(), body)
    u = {id(p) for p in G.superres.parameters()}
    dp = {id(p) for p in G.pose.parameters()}
    stage1 = G.set_trainable(1)
    assert [id(p) for p in stage1] == [id(p) for p in G.parameters() if id(p) not in u]
    assert all(p.requires_grad == (id(p) not in u) for p in G.parameters())
    groups = G.param_groups(1, 2e-3, {"Dp": 0.01})
    assert [g["name"] for g in groups] == ["rest", "Dp"]  # the order resumed optimiser states rely on
    assert [id(p) for p in groups[0]["params"]] == [id(p) for p in stage1 if id(p) not in dp]
    assert [id(p) for p in groups[1]["params"]] == [id(p) for p in G.pose.parameters()]
    assert groups[0]["lr"] == 2e-3 and groups[1]["lr"] == 2e-3 * 0.01
    stage2 = G.set_trainable(2)
    assert [id(p) for p in stage2] == [id(p) for p in G.superres.parameters()]
    assert all(p.requires_grad == (id(p) in u) for p in G.parameters())
    groups = G.param_groups(2, 1e-3, {"Dp": 0.01, "U": 0.5})
    assert [g["name"] for g in groups] == ["U"] and groups[0]["lr"] == 1e-3 * 0.5
    assert [g["name"] for g in G.param_groups(2, 1e-3, {})] == ["rest"]
    with pytest.raises(InputError, match=r"unknown generator sub-networks \['X'\]; known: \['De', 'Dp', 'M', 'U', 'phi'\]"):
        G.param_groups(1, 1e-3, {"X": 1.0})
    with pytest.raises(InputError, match="stage must be 1 or 2"):
        G.trainable_parameters(3)
