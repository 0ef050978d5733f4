"""Growing phi (generator.growth): the grown generator draws the same images, its new units
learn, and phi cannot shrink."""

from __future__ import annotations

import pytest
import torch

from aniportraitgan.body import PortraitBodyModel
from aniportraitgan.cameras import look_at_cameras
from aniportraitgan.errors import InputError
from aniportraitgan.generator import Generator, GeneratorConfig, RenderOptions
from aniportraitgan.generator.growth import grow_phi
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
