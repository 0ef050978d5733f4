"""`aniportraitgan facerecon train --data DIR --out R.safetensors --steps N`.

The options are fields of `FaceReconTrainConfig` (how R trains) and `FaceReconConfig` (its shape).
"""

from __future__ import annotations

import argparse

from aniportraitgan.commands.config_args import add_field_options, apply_field_options
from aniportraitgan.commands.threads import add_threads_option
from aniportraitgan.facerecon import FaceReconConfig, FaceReconTrainConfig, train_facerecon

TRAIN_FIELDS = ["steps", "batch_size", "lr", "holdout", "seed"]
MODEL_FIELDS = ["resolution", "width"]


def register(subparsers) -> None:
    p = subparsers.add_parser("facerecon", help="train the face reconstruction network R (landmark loss)")
    sub = p.add_subparsers(dest="facerecon_command", metavar="ACTION")
    t = sub.add_parser("train", help="train R on a portrait dataset's face images and labels")
    t.add_argument("--data", required=True, help="portrait dataset folder (e.g. SynthPortraits)")
    t.add_argument("--out", required=True, help="output weights (.safetensors); a .json report is written beside")
    add_field_options(t, FaceReconTrainConfig, TRAIN_FIELDS, aliases={"batch_size": "--batch"})
    add_field_options(t, FaceReconConfig, MODEL_FIELDS)
    t.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    add_threads_option(t)
    t.set_defaults(func=_train)
    p.set_defaults(func=lambda args: (p.print_help(), 1)[1])


def _train(args: argparse.Namespace) -> int:
    cfg, tcfg = FaceReconConfig(), FaceReconTrainConfig()
    apply_field_options(args, cfg, MODEL_FIELDS)
    apply_field_options(args, tcfg, TRAIN_FIELDS)
    train_facerecon(args.data, args.out, config=cfg, train_config=tcfg, device=args.device, progress=True)
    return 0
