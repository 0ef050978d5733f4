"""`aniportraitgan train --config tiny|paper --data DIR --out RUN --steps N [--resume] [--stage 1|2|both]`.

Also runs under torchrun: `torchrun --nproc_per_node N -m aniportraitgan train ...` (one process
per GPU, or gloo processes on CPU).
"""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "train",
        help="train the generator (two stages, resumable, multi-GPU through torchrun)",
        description="Train AniPortraitGAN on a portrait dataset. A run folder holds config.json, "
        "checkpoints/, generator.safetensors (the EMA generator), samples/, tensorboard/ and train.log.",
    )
    p.add_argument("--config", default="tiny", help="training preset (tiny or paper) or a TrainConfig JSON file "
                   "(e.g. a run's config.json, edited)")
    p.add_argument("--data", required=True, help="portrait dataset folder (e.g. made by `aniportraitgan data synth`)")
    p.add_argument("--out", required=True, help="run folder")
    p.add_argument("--steps", type=int, default=None, help="target number of steps of each stage (default: the preset's)")
    p.add_argument("--stage2-steps", type=int, default=None, help="target steps of stage 2 when it differs from --steps")
    p.add_argument("--stage", default="1", choices=["1", "2", "both"], help="stage 1 (128, all but U), stage 2 (U and high-res discriminators) or both in sequence")
    p.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in --out")
    p.add_argument("--init", default=None, help="stage 2: the stage-1 checkpoint folder (of another run) to start from; "
                   "stage 1: a trained generator to fine-tune ('demo', an exported .safetensors, a checkpoint or run folder)")
    p.add_argument("--facerecon", default=None, help="trained face reconstruction network R (from `aniportraitgan facerecon train`) for the landmark loss")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    p.add_argument("--batch", type=int, default=None, help="override the global batch size of the stages run")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--workers", type=int, default=None, help="data-loading worker processes")
    p.add_argument("--checkpoint-every", type=int, default=None)
    p.add_argument("--image-every", type=int, default=None)
    p.add_argument("--log-every", type=int, default=None)
    p.add_argument("--amp", choices=["bf16", "fp16", "none"], default=None, help="mixed precision on CUDA (CPU is always fp32)")
    p.add_argument("--max-minutes", type=float, default=None, help="wall-clock budget: write a checkpoint and stop when it runs out (continue with --resume)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    ab = p.add_argument_group("ablations (paper Table 2)")
    ab.add_argument("--no-face-disc", action="store_true", help="train without D_face")
    ab.add_argument("--no-torso-disc", action="store_true", help="train without D_torso")
    ab.add_argument("--face-from-crop", action="store_true", help="D_face sees faces cropped from the portrait instead of the face camera")
    ab.add_argument("--no-dp", action="store_true", help="no pose-deformation CNN Dp (plain nearest-vertex skinning)")
    p.set_defaults(func=run)


def build_config(args: argparse.Namespace):
    from aniportraitgan.training.config import TrainConfig

    cfg = _load_config(args.config)
    cfg.ablation.no_face_disc = bool(args.no_face_disc)
    cfg.ablation.no_torso_disc = bool(args.no_torso_disc)
    cfg.ablation.face_from_crop = bool(args.face_from_crop)
    cfg.ablation.no_dp = bool(args.no_dp)
    if args.batch is not None:
        cfg.stage1.batch_size = cfg.stage2.batch_size = args.batch
    for attr, name in (("seed", "seed"), ("workers", "num_workers"), ("checkpoint_every", "checkpoint_every"),
                       ("image_every", "image_every"), ("log_every", "log_every"), ("amp", "amp")):
        value = getattr(args, attr)
        if value is not None:
            setattr(cfg, name, value)
    return cfg


def _load_config(name: str):
    """A preset name, or a JSON file written by TrainConfig.to_json (a run's config.json)."""
    from aniportraitgan.errors import UserError
    from aniportraitgan.training.config import TrainConfig

    if name.endswith(".json") or Path(name).is_file():
        path = Path(name)
        if not path.is_file():
            raise UserError(f"--config {path} does not exist")
        cfg = TrainConfig.from_json(path.read_text())
        cfg.validate()
        return cfg
    return TrainConfig.preset(name)


def run(args: argparse.Namespace) -> int:
    from aniportraitgan.errors import UserError
    from aniportraitgan.training.loop import RunOptions, train

    if args.max_minutes is not None and not args.max_minutes > 0:
        raise UserError(f"--max-minutes must be > 0, got {args.max_minutes}")
    for name in ("steps", "stage2_steps", "batch", "checkpoint_every"):
        value = getattr(args, name)
        if value is not None and value < (1 if name in ("batch", "checkpoint_every") else 0):
            raise UserError(f"--{name.replace('_', '-')} must be {'>= 1' if name in ('batch', 'checkpoint_every') else '>= 0'}, got {value}")
    data = Path(args.data)
    if not data.exists():
        raise UserError(f"--data {data} does not exist")
    cfg = build_config(args)
    opts = RunOptions(
        data=data,
        out=Path(args.out),
        stage=args.stage,
        steps=args.steps,
        stage2_steps=args.stage2_steps,
        resume=args.resume,
        device=args.device,
        facerecon=Path(args.facerecon) if args.facerecon else None,
        init=Path(args.init) if args.init else None,
        progress=not args.no_progress,
        max_minutes=args.max_minutes,
    )
    train(cfg, opts)
    return 0
