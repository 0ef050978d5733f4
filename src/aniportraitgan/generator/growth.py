"""Growing a trained generator's phi without changing what it draws.

A fresh phi on a trained surface forgets the person (phi carries opacity as well as colour:
the surface renders as noise and the discriminators win from the first step), and a fresh phi
distilled from the old one relearns slowly how every code shapes the field. Growing keeps the
function instead, so fine-tuning starts from the trained images with more capacity:

- wider (Net2Net-style): the old units keep their weights and their FiLM rows of the mapping
  network; new units get the usual SIREN initialisation, and every weight from a new unit into
  an old unit (and into the head) is zero, so they change nothing until training moves them;
- deeper: each added sine layer is ``sin(1 * (a I h + 0) + 0)`` with ``a`` small (frequency 1
  and phase 0 from the mapping network's bias, its weights zero), i.e. ``a h`` to within
  ``a^2 / 6`` relative, and the head reads it with weights divided by ``a``.

A template (``add_template``) is added the same way: it starts at zero, so the generator
draws what it drew until the template is fitted (``scripts/fit_template.py``) or trained.
``smooth_template`` low-passes a fitted or trained one (its per-voxel speckle).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from aniportraitgan.errors import InputError
from aniportraitgan.generator.config import GeneratorConfig
from aniportraitgan.generator.generator import Generator
from aniportraitgan.generator.layers import FREQ_BIAS, FREQ_SCALE
from aniportraitgan.generator.radiance import RadianceGenerator

# Slope of added layers' pass-through: sin(0.1 h) = 0.1 h to within 0.17% for |h| <= 1.
DEFAULT_GAIN = 0.1


@torch.no_grad()
def grow_radiance(old: RadianceGenerator, new: RadianceGenerator, gain: float = DEFAULT_GAIN) -> None:
    """Copy ``old`` into the wider/deeper ``new`` (freshly initialised) so that both compute the
    same colour, opacity and features (to within ``gain**2 / 6`` relative in added layers)."""
    h0, l0, h1, l1 = old.siren.hidden, old.siren.num_layers, new.siren.hidden, new.siren.num_layers
    if h1 < h0 or l1 < l0 or old.num_features != new.num_features or old.input_scale != new.input_scale:
        raise InputError(f"phi can only grow ({h0} x {l0} -> {h1} x {l1} asked) and keep its features and input scale")
    if [p.shape for p in old.mapping.body.parameters()] != [p.shape for p in new.mapping.body.parameters()]:
        raise InputError("phi's mapping network must keep its hidden sizes to grow")
    new.mapping.body.load_state_dict(old.mapping.body.state_dict())
    old_lin, new_lin = old.siren.linears, new.siren.linears
    for i in range(l0):
        new_lin[i].weight[:h0, :old_lin[i].weight.shape[1]] = old_lin[i].weight
        if i > 0:
            new_lin[i].weight[:h0, h0:] = 0.0  # new units do not reach old ones
        new_lin[i].bias[:h0] = old_lin[i].bias
    # FiLM rows: w = [frequencies of every layer, then phases], layer-major.
    out_old, out_new = old.mapping.out, new.mapping.out
    for kind in (0, 1):
        for i in range(l0):
            src = slice(kind * l0 * h0 + i * h0, kind * l0 * h0 + (i + 1) * h0)
            dst = slice(kind * l1 * h1 + i * h1, kind * l1 * h1 + i * h1 + h0)
            out_new.weight[dst] = out_old.weight[src]
            out_new.bias[dst] = out_old.bias[src]
    scale = 1.0
    for i in range(l0, l1):  # added layers: a near-linear pass-through at frequency 1, phase 0
        new_lin[i].weight.copy_(gain * torch.eye(h1))
        new_lin[i].bias.zero_()
        freq = slice(i * h1, (i + 1) * h1)
        phase = slice(l1 * h1 + i * h1, l1 * h1 + (i + 1) * h1)
        out_new.weight[freq] = 0.0
        out_new.bias[freq] = (1.0 - FREQ_BIAS) / FREQ_SCALE
        out_new.weight[phase] = 0.0
        out_new.bias[phase] = 0.0
        scale /= gain
    new.head.weight.zero_()
    new.head.weight[:, :h0] = old.head.weight * scale
    new.head.bias.copy_(old.head.bias)


def grow_phi(generator: Generator, hidden: int, layers: int, gain: float = DEFAULT_GAIN) -> Generator:
    """A copy of ``generator`` whose phi is ``hidden`` wide and ``layers`` deep and draws the same
    images; its truncation centre of phi is left unset (the new w has another size)."""
    cfg = GeneratorConfig.from_dict({**generator.config.to_dict(), "radiance_hidden": hidden, "radiance_layers": layers})
    grown = Generator(cfg, generator.body).to(generator.nn_weights.device)
    phi = grown.subnetwork_prefixes(["phi"])
    grown.load_state_dict({k: v for k, v in generator.state_dict().items() if not k.startswith(phi)}, strict=False)
    grow_radiance(generator.radiance, grown.radiance, gain)
    return grown.train(generator.training)


def add_template(generator: Generator, voxels: int) -> Generator:
    """A copy of ``generator`` whose phi has a zero template of ``voxels`` per side
    (``GeneratorConfig.radiance_template``): the same images, a template to fit or train."""
    if generator.radiance.template is not None:
        raise InputError(f"phi already has a template ({generator.config.radiance_template} voxels)")
    cfg = GeneratorConfig.from_dict({**generator.config.to_dict(), "radiance_template": voxels})
    out = Generator(cfg, generator.body).to(generator.nn_weights.device)
    missing, unexpected = out.load_state_dict(generator.state_dict(), strict=False)
    assert not unexpected and missing == ["radiance.template"], (missing, unexpected)
    return out.train(generator.training)


def gaussian_kernel(sigma: float) -> torch.Tensor:
    """A normalised 1D Gaussian of standard deviation ``sigma`` (samples), 3 sigma each side."""
    radius = max(1, round(3 * sigma))
    x = torch.arange(-radius, radius + 1, dtype=torch.float64)
    k = torch.exp(-0.5 * (x / sigma) ** 2)
    return k / k.sum()


@torch.no_grad()
def smooth_template(generator: Generator, sigma: float) -> Generator:
    """``generator`` with its template blurred in place by a separable Gaussian of ``sigma``
    voxels (edges replicated): the speckle a voxel grid gathers under Adam
    (``RadianceGenerator.template_roughness``) goes, features wider than a few voxels stay."""
    template = generator.radiance.template
    if template is None:
        raise InputError("this generator's phi has no template to smooth")
    if not sigma > 0:
        raise InputError(f"the smoothing sigma must be > 0 voxels, got {sigma}")
    k = gaussian_kernel(sigma).to(template)
    r = (len(k) - 1) // 2
    y = template.transpose(0, 1)  # [4, 1, D, H, W]: each channel on its own
    for axis in range(3):  # D, H, W
        shape = [1, 1, 1, 1, 1]
        shape[2 + axis] = len(k)
        pad = [0] * 6
        pad[2 * (2 - axis)] = pad[2 * (2 - axis) + 1] = r  # F.pad lists the last axis first
        y = F.conv3d(F.pad(y, pad, mode="replicate"), k.view(shape))
    template.copy_(y.transpose(0, 1))
    return generator
