"""Low-pass the template of a trained generator's phi (``generator.growth.smooth_template``).

A voxel grid trained or fitted with Adam gathers per-voxel speckle that the face renders show as
a fine hatching (``RadianceGenerator.template_roughness``). This blurs it with a Gaussian of
``--sigma`` voxels and writes the generator with everything else unchanged (its configuration,
latent prior, step, stage and training configuration), noting the sigma in its metadata
(``template_smoothing_sigma``):

    python scripts/smooth_template.py GEN --out smoothed.safetensors [--sigma 0.7]

GEN is 'demo', an exported generator or a checkpoint; prints the roughness before and after.
Measure the result before shipping it (`aniportraitgan evaluate`, docs/evaluation.md).
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch

from aniportraitgan.artefacts import open_generator
from aniportraitgan.artefacts.generator_files import export_generator
from aniportraitgan.errors import AssetError, InputError
from aniportraitgan.generator.growth import smooth_template

SMOOTHING_KEY = "template_smoothing_sigma"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("ckpt", help="'demo', an exported generator .safetensors or a checkpoint")
    ap.add_argument("--out", required=True, help="the generator with its smoothed template (.safetensors)")
    ap.add_argument("--sigma", type=float, default=0.7, help="Gaussian standard deviation in voxels")
    args = ap.parse_args()
    try:
        stored = open_generator(args.ckpt)
        G = stored.generator
        with torch.no_grad():
            before = float(G.radiance.template_roughness())
            smooth_template(G, args.sigma)
            after = float(G.radiance.template_roughness())
    except (AssetError, InputError) as exc:
        ap.error(str(exc))
    # The stored metadata carried over: export_generator's own keys (config, prior, step, ...)
    # take its arguments' values, extras only fill in what it does not write.
    extra = dict(stored.metadata)
    # Provenance: the sigmas applied so far, in order (a file smoothed twice lists both).
    extra[SMOOTHING_KEY] = ",".join(filter(None, [extra.get(SMOOTHING_KEY, ""), f"{args.sigma:g}"]))
    out = export_generator(args.out, G.state_dict(), G.config.to_dict(), stored.train_config, stored.step,
                           stored.stage, extra_metadata=extra, prior=stored.prior)
    print(f"template roughness {before:.4f} -> {after:.4f} (sigma {args.sigma} voxels); wrote {out}")


if __name__ == "__main__":
    main()
