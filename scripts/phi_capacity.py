"""Can a generator configuration draw a face at all? A supervised capacity check.

The GAN has to discover faces through the discriminators; this asks the easier question first:
fit a generator (fixed codes) directly to a few real face-camera images of a dataset with their
exact labels, by L2 on the face render, and report the PSNR it reaches. With ``--init GEN
--fresh phi`` the geometry (M, Dp) of a trained generator is kept and phi starts afresh, so the
number measures what phi can draw on a working surface. A configuration that cannot fit four
faces in a few hundred steps will not learn eyes and mouths from a discriminator either.

    python scripts/phi_capacity.py DATA [--init GEN --fresh phi] [--faces 4] [--steps 300] \
        [--resolution 64] [--override radiance_input_scale=2] [--override radiance_hidden=64] ...

Prints one line: the configuration's overrides, the PSNR every 50 steps and the seconds taken.
"""

from __future__ import annotations

import argparse
import json
import os
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np
import torch
from PIL import Image

from aniportraitgan.artefacts import load_generator
from aniportraitgan.body import PortraitBodyModel
from aniportraitgan.cameras import matching_face_cameras
from aniportraitgan.generator import Generator, GeneratorConfig, RenderOptions
from aniportraitgan.images import from_uint8
from aniportraitgan.latents import LabelSampler


def _faces(root: str, rows: list[int], size: int) -> torch.Tensor:
    ims = [np.asarray(Image.open(f"{root}/faces/{i:06d}.png").convert("RGB").resize((size, size), Image.LANCZOS))
           for i in rows]
    return from_uint8(torch.from_numpy(np.stack(ims)).permute(0, 3, 1, 2))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("data")
    ap.add_argument("--faces", type=int, default=4)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--resolution", type=int, default=64)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--override", action="append", default=[], help="GeneratorConfig field=JSON value")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--init", default=None, help="a trained generator (file) to start from")
    ap.add_argument("--fresh", default="", help="comma-separated sub-networks of --init that start afresh")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    overrides = {k: json.loads(v) for k, v in (o.split("=", 1) for o in args.override)}
    body = PortraitBodyModel.load()
    if args.init:
        stored = load_generator(args.init, body_model=body)
        G = Generator(GeneratorConfig.from_dict({**stored.config.to_dict(), **overrides}), body)
        fresh = G.subnetwork_prefixes([n for n in args.fresh.split(",") if n])
        G.load_state_dict({k: v for k, v in stored.state_dict().items() if not k.startswith(fresh)}, strict=False)
    else:
        G = Generator(GeneratorConfig.preset(args.preset, **overrides), body)
    G.train()
    sampler = LabelSampler.from_dataset(args.data)
    rows = list(range(args.faces))
    lat = sampler.rows(rows, torch.randn(args.faces, G.config.noise_dim))
    cams = lat.cameras()
    with torch.no_grad():
        posed = body(lat.z_id, lat.z_exp, lat.z_pose)
    face_cams = matching_face_cameras(cams, posed.head_center, posed.head_rotation)
    target = _faces(args.data, rows, args.resolution)
    G.set_trainable(1)
    # stage 1's parameter groups as training makes them: Dp learns 100x slower (training/config.py)
    opt = torch.optim.Adam(G.param_groups(1, args.lr, {"Dp": 0.01}), lr=args.lr, betas=(0.9, 0.99))
    options = RenderOptions(8, args.resolution, 1, 1.0)
    t0, log = time.perf_counter(), []
    for step in range(1, args.steps + 1):
        face = G(lat, cams, face_cams, options=options).face
        loss = (face - target).square().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % 50 == 0 or step == args.steps:
            mse = float(((face.detach().clamp(-1, 1) - target) / 2).square().mean())
            log.append(f"{step}:{10 * np.log10(1 / mse):.1f}")
    params = sum(p.numel() for p in G.parameters())
    start = f"{args.init} (fresh {args.fresh or 'nothing'})" if args.init else args.preset
    print(f"{start} {overrides or '{}'} params {params}: PSNR dB by step {' '.join(log)} "
          f"({time.perf_counter() - t0:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
