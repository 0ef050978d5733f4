"""`aniportraitgan invert PHOTO --ckpt CKPT --out person.safetensors [--steps N] [--finetune M]`.

Fits the body model to the photo (the front end of `data prepare`) for its expression, pose and
camera, searches the identity latents whose renders match the aligned photo, optionally
fine-tunes the generator around them (pivotal tuning), and writes the identity file (usable as
`generate --identity`, `animate --identity`, the web demo's identity picker), a comparison image
(`<out>_comparison.png`) and the metrics (`<out>_metrics.json`). See docs/inversion.md.
"""

from __future__ import annotations

import argparse
import json

from aniportraitgan import inference
from aniportraitgan.commands.config_args import add_field_options, apply_field_options
from aniportraitgan.commands.progress import add_progress_option
from aniportraitgan.commands.threads import add_threads_option
from aniportraitgan.errors import InputError, UserError
from aniportraitgan.facerecon import FaceRecon
from aniportraitgan.inversion.optimize import SPACES, InversionConfig
from aniportraitgan.inversion.perceptual import PERCEPTUAL_KINDS
from aniportraitgan.inversion.pipeline import invert_photo, output_paths
from aniportraitgan.inversion.target import check_photo
from aniportraitgan.inversion.tuning import TuningConfig

SEARCH_OPTIONS = ["space", "psi", "lr_z", "lr_w", "lr_z_id", "pixel_weight", "face_weight", "mask_weight",
                  "perceptual", "perceptual_weight", "z_id_weight"]


def register(subparsers) -> None:
    p = subparsers.add_parser("invert", help="a photo of a person -> an identity file the generator animates")
    p.add_argument("photo", help="portrait photo (head and shoulders, one face)")
    p.add_argument("--ckpt", required=True, help="'demo', an exported generator .safetensors, a checkpoint or run folder")
    p.add_argument("--out", required=True, help="identity file to write (.safetensors)")
    p.add_argument("--steps", type=int, default=InversionConfig.steps,
                   help=f"latent search steps (default {InversionConfig.steps})")
    p.add_argument("--finetune", type=int, default=0, metavar="M",
                   help="pivotal tuning steps after the search (default 0: none)")
    p.add_argument("--finetune-lr", type=float, default=TuningConfig.lr, help=f"pivotal tuning learning rate "
                   f"(default {TuningConfig.lr:g})")
    p.add_argument("--locality-weight", type=float, default=TuningConfig.locality_weight,
                   help=f"weight of the regulariser that keeps other identities intact (default {TuningConfig.locality_weight:g})")
    p.add_argument("--facerecon", default=None, metavar="R",
                   help="R weights (.safetensors): identity cosine in the metrics, and --perceptual facerecon")
    p.add_argument("--comparison", default=None, help="comparison image (default: <out>_comparison.png)")
    p.add_argument("--metrics", default=None, help="metrics JSON (default: <out>_metrics.json)")
    p.add_argument("--device", default="auto", help="cpu, cuda or auto (default)")
    group = p.add_argument_group("latent search")
    add_field_options(group, InversionConfig, SEARCH_OPTIONS,
                      space={"choices": SPACES}, perceptual={"choices": PERCEPTUAL_KINDS})
    add_threads_option(p)
    add_progress_option(p)
    p.set_defaults(func=_run)


def _configs(args: argparse.Namespace) -> tuple[InversionConfig, TuningConfig]:
    if args.steps < 1:
        raise UserError(f"--steps must be >= 1, got {args.steps}")
    if args.finetune < 0:
        raise UserError(f"--finetune must be >= 0, got {args.finetune}")
    cfg = InversionConfig(steps=args.steps)
    apply_field_options(args, cfg, SEARCH_OPTIONS)
    tuning = TuningConfig(steps=args.finetune, lr=args.finetune_lr, locality_weight=args.locality_weight)
    try:
        cfg.validate()
        tuning.validate()
    except InputError as exc:
        raise UserError(str(exc)) from None
    if cfg.perceptual == "facerecon" and args.facerecon is None:
        raise UserError("--perceptual facerecon needs --facerecon R.safetensors")
    return cfg, tuning


def _run(args: argparse.Namespace) -> int:
    cfg, tuning = _configs(args)
    out, comparison, metrics = output_paths(args.out, args.comparison, args.metrics)
    check_photo(args.photo)  # before the (slow) model and front-end loads
    model = inference.load_inference_model(args.ckpt, args.device)
    facerecon = FaceRecon.load(args.facerecon, model.device) if args.facerecon else None
    report = invert_photo(args.photo, model, out, cfg, tuning, facerecon, comparison, metrics,
                          progress=not args.no_progress)
    final = report["metrics"]["final"]
    extra = "" if final.get("identity_cosine") is None else f", identity cosine {final['identity_cosine']:.3f}"
    print(f"wrote {out} (stage {model.stage}, {report['resolution']}px): PSNR {final['psnr']:.2f} dB, face "
          f"{final['face_psnr']:.2f} dB{extra} in {report['seconds']:.1f} s; {comparison}, {metrics}")
    if not args.no_progress:
        print(json.dumps(final, indent=None))
    return 0
