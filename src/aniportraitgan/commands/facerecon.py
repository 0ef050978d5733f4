"""`aniportraitgan facerecon train --data DIR --out R.safetensors --steps N`."""

from __future__ import annotations

import argparse


def register(subparsers) -> None:
    p = subparsers.add_parser("facerecon", help="train the face reconstruction network R (landmark loss)")
    sub = p.add_subparsers(dest="facerecon_command", metavar="ACTION")
    t = sub.add_parser("train", help="train R on a portrait dataset's face images and labels")
    t.add_argument("--data", required=True, help="portrait dataset folder (e.g. SynthPortraits)")
    t.add_argument("--out", required=True, help="output weights (.safetensors); a .json report is written beside")
    t.add_argument("--steps", type=int, default=2000)
    t.add_argument("--batch", type=int, default=32)
    t.add_argument("--lr", type=float, default=1e-3)
    t.add_argument("--resolution", type=int, default=64, help="input side of R")
    t.add_argument("--width", type=int, default=32, help="channels of R's first stage")
    t.add_argument("--holdout", type=float, default=0.1, help="fraction of samples held out for evaluation")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    t.set_defaults(func=_train)
    p.set_defaults(func=lambda args: (p.print_help(), 1)[1])


def _train(args: argparse.Namespace) -> int:
    import torch

    from aniportraitgan.errors import UserError
    from aniportraitgan.facerecon.model import FaceReconConfig
    from aniportraitgan.facerecon.train import FaceReconTrainConfig, train_facerecon

    if args.steps < 0:
        raise UserError("--steps must be >= 0")
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    cfg = FaceReconConfig(resolution=args.resolution, width=args.width)
    tcfg = FaceReconTrainConfig(steps=args.steps, batch_size=args.batch, lr=args.lr, holdout=args.holdout, seed=args.seed)
    train_facerecon(args.data, args.out, config=cfg, train_config=tcfg, device=device, progress=True)
    return 0
