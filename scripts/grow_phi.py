"""Grow a trained generator's phi (wider, deeper) so that it draws exactly what it drew.

How and why: ``aniportraitgan.generator.growth``. Everything but phi is copied; the result, an
exported generator, is what ``train --init FILE`` fine-tunes with the grown sizes in the run's
``generator_overrides`` (``radiance_hidden``, ``radiance_layers``).

    python scripts/grow_phi.py DATA --init demo --out grown.safetensors --hidden 128 --layers 3

Prints the PSNR of the grown generator's renders against the old one's (portrait and face).
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch

from aniportraitgan.artefacts import fill_missing_averages, open_generator, save_generator
from aniportraitgan.body import PortraitBodyModel
from aniportraitgan.generator import Generator, RenderOptions
from aniportraitgan.generator.growth import DEFAULT_GAIN, grow_phi
from aniportraitgan.inversion.optimize import psnr
from aniportraitgan.latents import LabelSampler


def render(G: Generator, lat, resolution: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Portraits and faces (G's own face cameras around the posed heads) at ``resolution``."""
    with torch.no_grad():
        out = G(lat, lat.cameras(), options=RenderOptions(resolution, resolution, 1, 1.0))
    return out.portrait, out.face


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("data", help="dataset whose labels drive the check renders")
    ap.add_argument("--init", default="demo", help="the trained generator ('demo' or a file)")
    ap.add_argument("--out", required=True, help="the grown generator (.safetensors)")
    ap.add_argument("--hidden", type=int, required=True, help="phi's new width (radiance_hidden)")
    ap.add_argument("--layers", type=int, required=True, help="phi's new depth (radiance_layers)")
    ap.add_argument("--gain", type=float, default=DEFAULT_GAIN, help="added layers' pass-through slope a")
    ap.add_argument("--resolution", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.manual_seed(args.seed)
    body = PortraitBodyModel.load()
    stored = open_generator(args.init, body_model=body)
    old = stored.generator
    new = grow_phi(old, args.hidden, args.layers, args.gain).eval()
    fill_missing_averages(new, stored.prior)  # phi's truncation centre, re-estimated for the new w
    sampler = LabelSampler.from_dataset(args.data)
    lat = sampler.sample(8, generator=torch.Generator().manual_seed(args.seed), eps_dim=old.config.noise_dim)
    (op, of), (np_, nf) = render(old, lat, args.resolution), render(new, lat, args.resolution)
    print(f"new vs old renders of 8 identities at {args.resolution} px: portrait {psnr(np_, op):.1f} dB, "
          f"face {psnr(nf, of):.1f} dB", flush=True)
    save_generator(args.out, new, stage=stored.stage, step=stored.step, prior=stored.prior)
    print(f"wrote {args.out} (phi {args.hidden} x {args.layers}, "
          f"{sum(p.numel() for p in new.radiance.parameters())} parameters)")


if __name__ == "__main__":
    main()
