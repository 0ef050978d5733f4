"""Give a trained generator a template (``GeneratorConfig.radiance_template``) and fit it.

The template is a grid of colour and opacity logits around the head, shared by every identity and
read through an affine frame fitted to each person's face landmarks (``generator/radiance.py``).
It is fitted here by L2 between the generator's face renders and a dataset's real faces, with the
real samples' exact labels (expression, pose, camera) and a fresh ``eps`` each step, everything
else frozen. Over many people the fit converges to the mean residual at each canonical point: where the
mesh puts lips, eyes, brows and the mouth's inside, the mean face has them, which is what the
SIREN alone did not learn to draw (docs/training.md). The GAN then fine-tunes the result
(``train --init OUT`` with ``radiance_template`` in the run's ``generator_overrides``).

    python scripts/fit_template.py DATA --init GEN --out templated.safetensors [--voxels 96] \
        [--steps 200] [--batch 8] [--lr 0.02] [--resolution 64] [--smooth 0] [--threads 1]

Prints the face PSNR against the real faces of a fixed held-out batch before and after.
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np
import torch
from tqdm import tqdm

from aniportraitgan.artefacts import open_generator, save_generator
from aniportraitgan.body import PortraitBodyModel
from aniportraitgan.data.dataset import PortraitDataset
from aniportraitgan.generator import RenderOptions
from aniportraitgan.generator.growth import add_template
from aniportraitgan.inversion.optimize import psnr
from aniportraitgan.latents import LabelSampler


def batch(data: PortraitDataset, sampler: LabelSampler, rows: np.ndarray, noise_dim: int, gen):
    """(latents, main cameras, real faces) of the dataset rows; the generator's own face cameras
    around the posed heads are the ones the dataset's faces were rendered with."""
    lat = sampler.rows(rows, torch.randn(len(rows), noise_dim, generator=gen))
    return lat, lat.cameras(), torch.stack([data[int(r)]["face"] for r in rows])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("data", help="dataset with real faces and their labels")
    ap.add_argument("--init", required=True, help="the trained generator ('demo', a file or a checkpoint)")
    ap.add_argument("--out", required=True, help="the generator with its fitted template (.safetensors)")
    ap.add_argument("--voxels", type=int, default=96, help="template side (radiance_template)")
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--lr", type=float, default=0.02)
    ap.add_argument("--resolution", type=int, default=64, help="face render and target size")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--smooth", type=float, default=0.0,
                    help="weight of the template's total-variation prior (0: none; cf. loss.template_smooth)")
    args = ap.parse_args()
    if args.voxels < 1 or args.steps < 1 or args.batch < 1:
        ap.error("--voxels, --steps and --batch must be >= 1")
    if args.smooth < 0:
        ap.error("--smooth must be >= 0")
    torch.set_num_threads(args.threads)
    gen = torch.Generator().manual_seed(args.seed)
    stored = open_generator(args.init, body_model=PortraitBodyModel.load())
    G = add_template(stored.generator, args.voxels).eval()
    G.requires_grad_(False)
    G.radiance.template.requires_grad_(True)
    data = PortraitDataset(args.data, face_resolution=args.resolution)
    sampler = LabelSampler.from_dataset(args.data)
    n = len(data)
    held_out = np.arange(n - 8, n)  # the last 8 rows, never fitted
    options = RenderOptions(8, args.resolution, 1, 1.0)  # the portrait at 8 px: only the face is fitted

    def held_out_psnr() -> float:
        lat, cams, real = batch(data, sampler, held_out, G.config.noise_dim, torch.Generator().manual_seed(1))
        with torch.no_grad():
            return psnr(G(lat, cams, options=options).face, real)

    before = held_out_psnr()
    opt = torch.optim.Adam([G.radiance.template], lr=args.lr, betas=(0.9, 0.99))
    t0 = time.perf_counter()
    rng = np.random.default_rng(args.seed)
    for _ in tqdm(range(args.steps), desc="template", unit="step"):
        rows = rng.choice(n - len(held_out), args.batch, replace=False)
        lat, cams, real = batch(data, sampler, rows, G.config.noise_dim, gen)
        loss = (G(lat, cams, options=options).face - real).square().mean()
        if args.smooth > 0:  # the grid's total-variation prior (loss.template_smooth in training)
            loss = loss + args.smooth * G.radiance.template_roughness()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    after = held_out_psnr()
    print(f"held-out face PSNR {before:.2f} -> {after:.2f} dB after {args.steps} steps of {args.batch} "
          f"({time.perf_counter() - t0:.0f} s); template |logit| max {float(G.radiance.template.detach().abs().max()):.2f}, "
          f"roughness {float(G.radiance.template_roughness().detach()):.4f}",
          flush=True)
    G.requires_grad_(True)
    save_generator(args.out, G, stage=stored.stage, step=stored.step, prior=stored.prior)
    print(f"wrote {args.out} ({args.voxels}^3 template, {G.radiance.template.numel()} logits)")


if __name__ == "__main__":
    main()
