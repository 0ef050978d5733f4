"""Known-answer tests of the generator's building blocks: intersections, compositing, layers, U, config."""

from __future__ import annotations

import json
import math

import pytest
import torch

from aniportraitgan.errors import InputError
from aniportraitgan.generator.compositing import composite
from aniportraitgan.generator.config import GeneratorConfig
from aniportraitgan.generator.layers import FiLMSiren, MappingNetwork
from aniportraitgan.generator.manifolds import ManifoldPredictor, intersect_levels, sort_by_depth
from aniportraitgan.generator.superres import (
    ManifoldSuperResolution,
    map_intersections,
    sample_maps,
    texel_centers,
)


def _ray_sphere_entry(o, d, c, r):
    """Analytic first intersection distance of unit rays o + t d with the sphere |x - c| = r."""
    oc = o - c
    b = (oc * d).sum(-1)
    disc = b * b - ((oc * oc).sum(-1) - r * r)
    hit = disc > 0
    t = -b - disc.clamp_min(0).sqrt()
    return t, hit


def test_intersections_with_concentric_spheres_are_exact():
    torch.manual_seed(0)
    center = torch.tensor([0.1, -0.2, 0.3], dtype=torch.float64)
    radii = torch.tensor([1.5, 1.2, 0.9, 0.6, 0.3], dtype=torch.float64)
    R = 200
    o = torch.tensor([0.0, 0.0, 4.0], dtype=torch.float64).expand(R, 3)
    target = center + (torch.rand(R, 3, dtype=torch.float64) - 0.5) * 2.4
    d = target - o
    d = d / d.norm(dim=-1, keepdim=True)
    N = 2000
    t = torch.linspace(0.5, 8.0, N, dtype=torch.float64)
    pts = o[:, None] + d[:, None] * t[None, :, None]  # [R, N, 3]
    s = (pts - center).norm(dim=-1)
    hits = intersect_levels(s, radii, t, pts)
    t_ref, hit_ref = _ray_sphere_entry(o[:, None], d[:, None], center, radii)  # [R, L]
    # Grazing rays (tangent within a sample step) may legitimately differ in validity.
    b = ((o[:, None] - center) * d[:, None]).sum(-1)
    disc = b * b - ((o[:, None] - center).pow(2).sum(-1) - radii ** 2)
    clear = disc.abs() > 1e-2
    assert hits.valid.shape == (R, 5)
    assert torch.equal(hits.valid[clear], hit_ref[clear])
    ok = hits.valid & hit_ref & clear
    assert ok.sum() > 300
    # Linear interpolation of the curved field: error O(step^2), step = 3.75e-3 here.
    err = (hits.t[ok] - t_ref[ok]).abs()
    assert err.max() < 1e-4 and err.median() < 2e-6
    p_ref = o[:, None] + d[:, None] * t_ref[..., None]
    assert (hits.points[ok] - p_ref[ok]).norm(dim=-1).max() < 1e-4
    # The points lie on their level set.
    assert ((hits.points[ok] - center).norm(dim=-1) - radii.expand(R, 5)[ok]).abs().max() < 1e-5


def test_intersection_exact_for_linear_field_and_missing_levels():
    # s linear along the ray: linear interpolation is exact even with few samples.
    t = torch.linspace(0.0, 1.0, 5)
    s = 3.0 - 2.0 * t  # from 3 down to 1
    levels = torch.tensor([2.5, 1.2, 0.5, 4.0])
    hits = intersect_levels(s[None], levels, t, torch.stack([t, 2 * t, -t], -1)[None])
    assert hits.valid.tolist() == [[True, True, False, False]]
    assert torch.allclose(hits.t[0, :2], torch.tensor([0.25, 0.9]), atol=1e-6)
    assert torch.allclose(hits.points[0, 1], torch.tensor([0.9, 1.8, -0.9]), atol=1e-6)
    assert hits.t[0, 2] == t[-1]  # missing levels sit at the far end


def test_intersection_takes_first_crossing_and_hits_exact_samples():
    t = torch.arange(6.0)
    s = torch.tensor([2.0, 1.0, 0.0, 1.0, 2.0, 0.5])  # level 1 crossed at t=1 exactly, again later
    hits = intersect_levels(s[None], torch.tensor([1.0, 0.0]), t)
    assert hits.valid.all()
    assert torch.allclose(hits.t[0], torch.tensor([1.0, 2.0]))


def test_intersection_gradient_flows_to_field():
    t = torch.linspace(0.0, 1.0, 8)
    s = (2.0 - t).clone().requires_grad_(True)
    hits = intersect_levels(s[None], torch.tensor([1.5]), t)
    hits.t.sum().backward()
    assert s.grad is not None and s.grad.abs().sum() > 0


def _composite_reference(color, alpha, t, bg):
    color, alpha, t = color.double(), alpha.double(), t.double()
    out_c = torch.zeros(color.shape[:-2] + (color.shape[-1],), dtype=torch.float64)
    out_d = torch.zeros(alpha.shape[:-1], dtype=torch.float64)
    out_a = torch.zeros(alpha.shape[:-1], dtype=torch.float64)
    for idx in torch.cartesian_prod(*[torch.arange(n) for n in alpha.shape[:-1]]):
        idx = tuple(idx.tolist())
        T = 1.0
        c_acc = torch.zeros(color.shape[-1], dtype=torch.float64)
        w_sum = d_sum = 0.0
        for i in range(alpha.shape[-1]):
            w = T * alpha[idx + (i,)]
            c_acc += w * color[idx + (i,)]
            w_sum += w
            d_sum += w * t[idx + (i,)]
            T = T * (1 - alpha[idx + (i,)])
        out_c[idx] = c_acc + (1 - w_sum) * bg
        out_a[idx] = w_sum
        out_d[idx] = d_sum / w_sum
    return out_c, out_d, out_a


def test_compositing_matches_float64_reference():
    torch.manual_seed(1)
    color = torch.rand(3, 4, 6, 3)
    alpha = torch.rand(3, 4, 6)
    t = torch.sort(torch.rand(3, 4, 6) * 3 + 1, -1).values
    comp = composite(color, alpha, t, background=1.0)
    rc, rd, ra = _composite_reference(color, alpha, t, 1.0)
    assert torch.allclose(comp.color.double(), rc, atol=1e-6)
    assert torch.allclose(comp.depth.double(), rd, atol=1e-5)
    assert torch.allclose(comp.alpha.double(), ra, atol=1e-6)
    # Fully transparent rays show the white background.
    empty = composite(color[:1], torch.zeros(1, 4, 6), t[:1], background=1.0, far=9.0)
    assert torch.allclose(empty.color, torch.ones(1, 4, 3))
    assert torch.allclose(empty.depth, torch.full((1, 4), 9.0))


def test_sort_by_depth_orders_valid_levels_front_to_back():
    t = torch.tensor([[3.0, 1.0, 2.0, 0.5]])
    valid = torch.tensor([[True, True, True, False]])
    col = torch.arange(12.0).reshape(1, 4, 3)
    ts, vs, cs = sort_by_depth(t, valid, col)
    assert ts.tolist() == [[1.0, 2.0, 3.0, 0.5]]
    assert vs.tolist() == [[True, True, True, False]]
    assert torch.equal(cs[0, 0], col[0, 1]) and torch.equal(cs[0, 3], col[0, 3])


def test_manifold_predictor_starts_as_concentric_shells():
    torch.manual_seed(0)
    M = ManifoldPredictor(32, 3, (0.0, 0.0, -1.5), (0.9, 2.1, 24))
    x = torch.rand(1000, 3) * 2 - 1
    r = (x - torch.tensor([0.0, 0.0, -1.5])).norm(dim=-1)
    assert (M(x) - r).abs().max() < 0.05
    assert M.levels[0] == 2.1 and M.levels[-1] == pytest.approx(0.9) and M.levels.shape == (24,)


def test_film_siren_and_mapping_shapes_and_init():
    torch.manual_seed(0)
    siren = FiLMSiren(3, 16, 3)
    mapping = MappingNetwork(10, 32, 2, siren.w_dim)
    w = mapping(torch.randn(2, 10))
    assert w.shape == (2, 2 * 3 * 16)
    h = siren(torch.rand(2, 50, 3), w)
    assert h.shape == (2, 50, 16) and h.abs().max() <= 1.0
    bound = math.sqrt(6 / 16) / 25
    assert siren.linears[1].weight.abs().max() <= bound
    assert siren.linears[0].weight.abs().max() <= 1 / 3


def test_superres_starts_as_bilinear_upsampling_and_is_style_modulated():
    torch.manual_seed(0)
    U = ManifoldSuperResolution(4 + 2, 8, 4, 1, 4, id_dim=3, noise_dim=2, style_dim=8,
                                mapping_hidden=8, mapping_layers=1)
    low = torch.rand(2, 3, 6, 8, 8).clamp(0.05, 0.95)
    style = U.map(torch.randn(2, 3), torch.randn(2, 2))
    out = U(low, style)
    assert out.shape == (2, 3, 4, 32, 32)
    base = torch.nn.functional.interpolate(low[:, :, :4].reshape(6, 4, 8, 8), scale_factor=4,
                                           mode="bilinear", align_corners=False).reshape(2, 3, 4, 32, 32)
    assert torch.allclose(out, base, atol=1e-5)
    out.sum().backward()
    assert U.conv_last.weight.grad.abs().sum() > 0


def test_map_intersections_and_sampling_roundtrip():
    M = ManifoldPredictor(8, 1, (0.0, 0.0, -1.5), (0.9, 2.1, 4))
    with torch.no_grad():
        M.out.weight.zero_()
    hits = map_intersections(M, 16, 400, z_front=1.0, z_back=-1.0)
    xy = texel_centers(16)
    # Texel points lie on the shells, straight above their texel.
    assert torch.allclose(hits.points[..., :2], xy[:, None, :].expand(-1, 4, 2), atol=1e-6)
    r = (hits.points - torch.tensor([0.0, 0.0, -1.5])).norm(dim=-1)
    assert (r - M.levels)[hits.valid].abs().max() < 1e-4
    # A map holding x as its colour reads back x at arbitrary canonical points.
    maps = torch.zeros(1, 4, 4, 16, 16)
    maps[:, :, 0] = xy[:, 0].reshape(16, 16)
    maps[:, :, 3] = 1.0
    pts = torch.rand(1, 10, 4, 3) * 1.6 - 0.8
    col, alpha = sample_maps(maps, pts)
    assert torch.allclose(col[..., 0], pts[..., 0].clamp(-15 / 16, 15 / 16), atol=1e-5)
    far = torch.full((1, 1, 4, 3), 3.0)
    assert sample_maps(maps, far)[1].abs().max() == 0  # outside the map: transparent


def test_config_presets_roundtrip_and_validation():
    paper = GeneratorConfig.paper()
    assert (paper.radiance_hidden, paper.num_levels, paper.samples_per_ray) == (256, 24, 64)
    assert (paper.sr_map_resolution, paper.sr_output_resolution, paper.sr_blocks) == (128, 512, 4)
    assert paper.dp_kernel == (5, 9, 9)
    tiny = GeneratorConfig.preset("tiny")
    again = GeneratorConfig.from_dict(json.loads(tiny.to_json()))
    assert again == tiny and again.exp_mesh_guided
    # A config saved before mesh guidance existed describes a generator trained without it.
    old = tiny.to_dict()
    del old["exp_mesh_guided"], old["exp_input_scale"]
    assert not GeneratorConfig.from_dict(old).exp_mesh_guided
    assert GeneratorConfig.from_dict(old).exp_input_scale == 1.0
    with pytest.raises(InputError, match="unknown generator preset"):
        GeneratorConfig.preset("huge")
    with pytest.raises(InputError, match="dp_kernel"):
        GeneratorConfig.tiny(dp_kernel=(4, 9, 9))
    assert GeneratorConfig.from_dict(old).radiance_input_scale == 1.0  # as every generator before it
    with pytest.raises(InputError, match="radiance_input_scale must be > 0"):
        GeneratorConfig.tiny(radiance_input_scale=0.0)


def test_radiance_input_scale_scales_phis_coordinates():
    """phi with input scale s at x is phi with scale 1 at s x (same weights): it only raises
    the spatial frequencies."""
    from aniportraitgan.generator.radiance import RadianceGenerator

    torch.manual_seed(0)
    plain = RadianceGenerator(4, 3, 16, 2, 2, 16, 2)
    scaled = RadianceGenerator(4, 3, 16, 2, 2, 16, 2, input_scale=3.0)
    scaled.load_state_dict(plain.state_dict())
    x, w = torch.rand(2, 5, 3) * 2 - 1, plain.map(torch.randn(2, 4), torch.randn(2, 3))
    torch.testing.assert_close(scaled(x, w).color, plain(3.0 * x, w).color)
    assert not torch.allclose(scaled(x, w).color, plain(x, w).color)
    with pytest.raises(InputError, match="unknown GeneratorConfig fields"):
        GeneratorConfig.from_dict({"bogus": 1})
