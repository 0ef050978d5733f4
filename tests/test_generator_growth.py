"""Growing phi (generator.growth): the grown generator draws the same images, its new units
learn, and phi cannot shrink; phi's template starts as no change, is read around each
person's head, and only inside its cube."""

from __future__ import annotations

import re
import runpy
import sys
from pathlib import Path
from unittest import mock

import pytest
import torch

from aniportraitgan.artefacts import load_generator, read_generator_file, save_generator
from aniportraitgan.body import PortraitBodyModel
from aniportraitgan.cameras import look_at_cameras
from aniportraitgan.data.synth import make_tiny_dataset
from aniportraitgan.errors import InputError
from aniportraitgan.generator import Generator, GeneratorConfig, RenderOptions
from aniportraitgan.frames import SCENE_SCALE
from aniportraitgan.generator.growth import add_template, gaussian_kernel, grow_phi, smooth_template
from aniportraitgan.latents import LatentSample


@pytest.fixture(scope="module")
def G():
    torch.manual_seed(0)
    g = Generator(GeneratorConfig.tiny(), PortraitBodyModel.load(device="cpu"))
    with torch.no_grad():  # a phi whose weights are not the initialisation's
        for p in g.radiance.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return g.eval()


def _render(G, B=2):
    gen = torch.Generator().manual_seed(3)
    lat = LatentSample(torch.randn(B, 40, generator=gen), torch.rand(B, 52, generator=gen) * 0.5,
                       torch.randn(B, 6, 3, generator=gen) * 0.1, torch.randn(B, 16, generator=gen))
    cams = look_at_cameras(torch.rand(B, generator=gen) - 0.5, torch.rand(B, generator=gen) * 0.3 - 0.15)
    return G(lat, cams, options=RenderOptions(portrait_resolution=16, face_resolution=16))


def test_grown_phi_draws_the_same_images_and_its_new_units_learn(G):
    grown = grow_phi(G, hidden=48, layers=4).eval()
    assert grown.config.radiance_hidden == 48 and grown.config.radiance_layers == 4
    assert len(grown.radiance.siren.linears) == 4 and grown.radiance.head.weight.shape[1] == 48
    with torch.no_grad():
        a, b = _render(G), _render(grown)
    for name in ("portrait", "face", "portrait_alpha"):
        err = (getattr(a, name) - getattr(b, name)).abs().max()
        assert err < 2e-3, (name, float(err))  # two added layers: sin(a h) = a h to 0.17%
    # Everything but phi is the old generator's.
    old = G.state_dict()
    for k, v in grown.state_dict().items():
        if not k.startswith(("radiance.", "w_avg_radiance.")):
            assert torch.equal(v, old[k]), k
    # The new units start unused but get a gradient: the head's weights from them move.
    grown.train()
    _render(grown).portrait.square().mean().backward()
    head_grad = grown.radiance.head.weight.grad
    assert not grown.radiance.head.weight[:, 32:].any() and head_grad[:, 32:].abs().sum() > 0


def test_phi_only_grows(G):
    with pytest.raises(InputError, match="phi can only grow"):
        grow_phi(G, hidden=16, layers=2)
    with pytest.raises(InputError, match="phi can only grow"):
        grow_phi(G, hidden=32, layers=1)


# ---------------------------------------------------------------- phi's template
def test_a_zero_template_draws_the_same_images_in_both_stages(G):
    t = add_template(G, 8).eval()
    assert t.config.radiance_template == 8 and t.radiance.template.shape == (1, 4, 8, 8, 8)
    with torch.no_grad():
        a, b = _render(G), _render(t)
        for name in ("portrait", "face"):
            assert torch.equal(getattr(a, name), getattr(b, name)), name
        z_id, eps = torch.randn(2, 40), torch.randn(2, 16)
        w_rad, w_sr = G.map_identity(z_id, eps, stage=2)
        assert torch.equal(G.radiance_maps(w_rad, w_sr), t.radiance_maps(w_rad, w_sr, z_id))
    with pytest.raises(InputError, match="already has a template"):
        add_template(t, 8)


def test_the_template_is_read_through_each_persons_frame_and_only_inside_its_cube(G):
    phi = add_template(G, 4).radiance
    with torch.no_grad():
        phi.template.fill_(2.0)  # every colour and opacity logit +2 inside the cube
    w = phi.map(torch.randn(2, 40), torch.randn(2, 16))
    origin = torch.tensor([[0.0, 0.36, 0.30], [0.05, 0.10, 0.25]])
    frame = torch.cat([torch.eye(3).expand(2, 3, 3), -origin[:, None]], 1)  # u = x - origin
    e = phi.template_extent
    # at each head centre, at a point inside the cube, and one outside it (by the same offsets)
    offsets = torch.tensor([[0.0, 0.0, 0.0], [0.3 * e, -0.2 * e, 0.1 * e], [1.5 * e, 0.0, 0.0]])
    x = origin[:, None] + offsets[None]
    with torch.no_grad():
        with_t = phi(x, w, frame)
        phi.template.zero_()
        without = phi(x, w, frame)
    logit = lambda c: torch.logit(c.double(), eps=1e-12)  # noqa: E731
    shift = torch.cat([logit(with_t.color) - logit(without.color),
                       (logit(with_t.alpha) - logit(without.alpha))[..., None]], -1)
    inside = shift[:, :2][(without.alpha[:, :2] > 1e-6) & (without.alpha[:, :2] < 1 - 1e-6)]  # unsaturated
    assert torch.allclose(shift[:, :2, :3], torch.full_like(shift[:, :2, :3], 2.0), atol=1e-4)  # both people alike
    assert torch.allclose(inside, torch.full_like(inside, 2.0), atol=1e-3)
    assert shift[:, 2].abs().max() < 1e-6  # outside the cube: phi alone
    assert torch.equal(with_t.features, without.features)  # U's features are phi's alone
    with pytest.raises(InputError, match="template frames"):
        phi(x, w)


def test_the_template_frame_maps_each_face_onto_the_mean_face(G):
    t = add_template(G, 4)
    z_id = torch.cat([torch.zeros(1, 40), torch.randn(4, 40)])
    frame = t.template_frame(z_id)
    neutral = G.body(z_id, torch.zeros(5, 52), torch.zeros(5, 6, 3))
    lm, head = neutral.landmarks / SCENE_SCALE, neutral.head_center / SCENE_SCALE
    mapped = torch.baddbmm(frame[:, 3:4], lm, frame[:, :3])
    mean = lm[0] - head[0]
    # the mean person's frame is the shift of its head centre to 0 ...
    assert torch.allclose(frame[0, :3], torch.eye(3), atol=1e-4) and torch.allclose(frame[0, 3], -head[0], atol=1e-4)
    # ... and every face lands on the mean face much closer than by its head centre alone
    err_frame = (mapped[1:] - mean).norm(dim=-1).mean() * SCENE_SCALE
    err_centre = (lm[1:] - head[1:, None] - mean).norm(dim=-1).mean() * SCENE_SCALE
    assert err_frame < 0.5 * err_centre, (float(err_frame), float(err_centre))
    assert G.template_frame(z_id) is None
    with pytest.raises(InputError, match="z_id are needed"):
        t.template_frame(None)
    with pytest.raises(InputError, match="radiance_template must be >= 0"):
        GeneratorConfig.tiny(radiance_template=-1)


def test_a_template_survives_export_and_loading(G, tmp_path):
    t = add_template(G, 4).eval()
    with torch.no_grad():
        t.radiance.template.normal_()
    save_generator(tmp_path / "t.safetensors", t, stage=1, step=7)
    back = load_generator(tmp_path / "t.safetensors", body_model=G.body)
    assert back.config.radiance_template == 4 and torch.equal(back.radiance.template, t.radiance.template)
    with torch.no_grad():
        assert torch.equal(_render(back).face, _render(t).face)


def test_fit_template_script_fits_a_template_that_brings_renders_closer_to_the_faces(G, tmp_path, capsys):
    data = make_tiny_dataset(tmp_path / "data", num=16, resolution=32)
    save_generator(tmp_path / "g.safetensors", G, stage=1, step=3)
    argv = ["fit_template.py", str(data), "--init", str(tmp_path / "g.safetensors"), "--out", str(tmp_path / "t.safetensors"),
            "--voxels", "16", "--steps", "30", "--batch", "4", "--lr", "0.1", "--resolution", "16"]
    with mock.patch.object(sys, "argv", argv):
        runpy.run_path(str(Path(__file__).parents[1] / "scripts" / "fit_template.py"), run_name="__main__")
    line = next(s for s in capsys.readouterr().out.splitlines() if s.startswith("held-out face PSNR"))
    before, after = (float(v) for v in re.search(r"PSNR ([\d.]+) -> ([\d.]+) dB", line).groups())
    assert after > before + 0.5, line  # the 8 held-out faces were never fitted
    fitted = load_generator(tmp_path / "t.safetensors", body_model=G.body)
    assert fitted.config.radiance_template == 16 and fitted.radiance.template.abs().max() > 0
    # With the total-variation prior the same fit still fits (measured +0.5 dB) with a grid
    # hundreds of times smoother (roughness 0.0055 against 1.61 without).
    argv[argv.index(str(tmp_path / "t.safetensors"))] = str(tmp_path / "s.safetensors")
    with mock.patch.object(sys, "argv", argv + ["--smooth", "10"]):
        runpy.run_path(str(Path(__file__).parents[1] / "scripts" / "fit_template.py"), run_name="__main__")
    line = next(s for s in capsys.readouterr().out.splitlines() if s.startswith("held-out face PSNR"))
    before, after = (float(v) for v in re.search(r"PSNR ([\d.]+) -> ([\d.]+) dB", line).groups())
    assert after > before + 0.2, line
    smoothed = load_generator(tmp_path / "s.safetensors", body_model=G.body)
    with torch.no_grad():
        assert float(smoothed.radiance.template_roughness()) < 0.05 * float(fitted.radiance.template_roughness())


def test_template_roughness_is_the_mean_squared_neighbour_difference(G):
    t = add_template(G, 6)
    with torch.no_grad():
        assert float(t.radiance.template_roughness()) == 0.0  # zero template
        assert float(G.radiance.template_roughness()) == 0.0  # no template at all
    with torch.no_grad():
        z = torch.arange(6.0).view(1, 1, 6, 1, 1)
        t.radiance.template.copy_((2.0 * z).expand(1, 4, 6, 6, 6))  # a ramp along D of slope 2
    # neighbours differ by 2 along D (squared: 4) and not at all along H and W: (4 + 0 + 0) / 3
    assert float(t.radiance.template_roughness().detach()) == pytest.approx(4.0 / 3)
    with torch.no_grad():
        t.radiance.template.copy_(torch.randn(1, 4, 6, 6, 6))
    rough = t.radiance.template_roughness()
    rough.backward()  # differentiable: the prior trains the grid
    assert t.radiance.template.grad.abs().sum() > 0


def test_smoothing_keeps_broad_features_and_removes_voxel_speckle(G):
    k = gaussian_kernel(0.7)
    assert float(k.sum()) == pytest.approx(1.0) and len(k) == 5 and torch.equal(k, k.flip(0))
    t = add_template(G, 24)
    gen = torch.Generator().manual_seed(0)
    x = torch.linspace(-1, 1, 24)
    broad = torch.cos(2.0 * x).view(1, 1, 1, 1, 24) * torch.cos(2.0 * x).view(1, 1, 24, 1, 1)
    speckle = 0.3 * torch.randn(1, 4, 24, 24, 24, generator=gen)
    with torch.no_grad():
        t.radiance.template.copy_(broad + speckle)
    before = float(t.radiance.template_roughness().detach())
    smooth_template(t, 1.0)
    after_t = t.radiance.template.detach()
    assert float(t.radiance.template_roughness().detach()) < 0.1 * before
    inner = (slice(None), slice(None), slice(4, -4), slice(4, -4), slice(4, -4))  # away from the replicated edges
    assert (after_t - broad)[inner].abs().mean() < 0.25 * speckle[inner].abs().mean()
    # a constant stays exactly what it is, edges included
    with torch.no_grad():
        t.radiance.template.fill_(1.5)
    smooth_template(t, 0.7)
    assert torch.allclose(t.radiance.template, torch.full_like(t.radiance.template, 1.5), atol=1e-6)
    with pytest.raises(InputError, match="no template"):
        smooth_template(G, 1.0)
    with pytest.raises(InputError, match="sigma must be > 0"):
        smooth_template(t, 0.0)


def test_smooth_template_script_keeps_everything_but_the_template(G, tmp_path, capsys):
    t = add_template(G, 8).eval()
    with torch.no_grad():
        t.radiance.template.normal_()
        t.compute_w_avg(n=64)  # as a trained generator records them
    save_generator(tmp_path / "t.safetensors", t, stage=1, step=11)
    script = str(Path(__file__).parents[1] / "scripts" / "smooth_template.py")
    argv = ["smooth_template.py", str(tmp_path / "t.safetensors"), "--out", str(tmp_path / "s.safetensors"), "--sigma", "1"]
    with mock.patch.object(sys, "argv", argv):
        runpy.run_path(script, run_name="__main__")
    before, after = (float(v) for v in re.search(r"roughness ([\d.]+) -> ([\d.]+)", capsys.readouterr().out).groups())
    assert after < 0.2 * before
    back = load_generator(tmp_path / "s.safetensors", body_model=G.body)
    assert read_generator_file(tmp_path / "s.safetensors")[1]["template_smoothing_sigma"] == "1"
    sd_t, sd_b = t.state_dict(), back.state_dict()
    assert not torch.equal(sd_b["radiance.template"], sd_t["radiance.template"])
    assert all(torch.equal(sd_b[k], v) for k, v in sd_t.items() if k != "radiance.template")
    save_generator(tmp_path / "g.safetensors", G, stage=1, step=3)  # no template: a clear refusal
    argv[1] = str(tmp_path / "g.safetensors")
    with mock.patch.object(sys, "argv", argv), pytest.raises(SystemExit):
        runpy.run_path(script, run_name="__main__")
    assert "no template to smooth" in capsys.readouterr().err


def test_colour_roughness_known_answers():
    """phi's colour_roughness: 0 for a constant colour; for colour logits that rise linearly
    along x by k per canonical unit, the colours rise by about k/4 (sigmoid at 0), so steps of
    length s in random directions change the three channels by 3 (k s / 4)^2 / 3 on average."""
    from aniportraitgan.generator.radiance import RadianceGenerator

    torch.manual_seed(0)
    phi = RadianceGenerator(4, 2, 16, 2, 2, 16, 2, template=16, template_extent=0.5)
    with torch.no_grad():
        phi.head.weight.zero_()
        phi.head.bias.zero_()
    x = (torch.rand(2, 4000, 3) - 0.5) * 0.4  # inside the cube, away from its faces
    w = phi.map(torch.randn(2, 4), torch.randn(2, 2)).detach()
    frame = torch.cat([torch.eye(3), torch.zeros(1, 3)]).expand(2, 4, 3)  # u = x
    k, step = 2.0, 0.02
    centres = ((torch.arange(16.0) + 0.5) / 16 * 2 - 1) * 0.5  # grid_sample's voxel centres
    ones = torch.ones(x.shape[:2])

    def rough(s):
        return float(phi.colour_roughness(x, phi(x, w, frame).color, ones, w, frame, s))

    with torch.no_grad():
        assert rough(0.01) == 0.0
        phi.template.copy_((k * centres).view(1, 1, 1, 1, 16).expand(1, 4, 16, 16, 16))
        expect = (k * step / 4) ** 2
        assert rough(step) == pytest.approx(expect, rel=0.1)
        assert rough(2 * step) == pytest.approx(4 * expect, rel=0.1)
        # the weights make it a weighted mean: weight only the first half, read that half's change
        half = ones.clone()
        half[:, 2000:] = 0
        torch.manual_seed(1)
        weighted = float(phi.colour_roughness(x, phi(x, w, frame).color, half, w, frame, step))
        assert weighted == pytest.approx(expect, rel=0.15)


def test_colour_roughness_is_measured_at_the_rendered_intersections_when_asked():
    """RenderOptions.colour_roughness: Aux.colour_rough reads phi again 5 mm from the rendered
    intersections (stage 1); 0 when not asked; larger for a phi with 4x the frequencies."""
    body = PortraitBodyModel.load(device="cpu")
    gen = torch.Generator().manual_seed(3)
    lat = LatentSample(torch.randn(2, 40, generator=gen), torch.zeros(2, 52), torch.zeros(2, 6, 3),
                       torch.randn(2, 16, generator=gen))
    cams = look_at_cameras(torch.zeros(2), torch.zeros(2))
    rough = {}
    for scale in (1.0, 4.0):
        torch.manual_seed(0)
        g = Generator(GeneratorConfig.tiny(radiance_input_scale=scale), body)
        for asked in (False, True):
            aux = g(lat, cams, options=RenderOptions(portrait_resolution=16, face_resolution=16, return_aux=True,
                                                     colour_roughness=asked)).aux
            if not asked:
                assert float(aux.colour_rough) == 0.0
        rough[scale] = aux.colour_rough
    assert 0 < float(rough[1.0].detach()) < float(rough[4.0].detach()) / 4, rough  # 4x the frequencies: ~16x the squared change
    rough[1.0].backward()  # differentiable: the prior trains phi
