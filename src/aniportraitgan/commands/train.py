"""`aniportraitgan train --config tiny|small|paper --data DIR --out RUN --steps N [--resume] [--stage 1|2|both]`.

Also runs under torchrun: `torchrun --nproc_per_node N -m aniportraitgan train ...` (one process
per GPU, or gloo processes on CPU). The first SIGINT / SIGTERM finishes the step, writes a
checkpoint and exits 130 / 143 (every rank at the same step); a second one stops at once. The schedule and ablation options are the fields of
`TrainConfig` and `AblationConfig`; they override the chosen config.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from aniportraitgan.commands.config_args import add_field_options, apply_field_options, load_train_config
from aniportraitgan.commands.progress import add_progress_option
from aniportraitgan.commands.threads import add_threads_option
from aniportraitgan.errors import UserError
from aniportraitgan.training import AblationConfig, RunOptions, TrainConfig, train

# TrainConfig fields the command line may override (default: the config's value).
SCHEDULE_FIELDS = ["seed", "num_workers", "checkpoint_every", "image_every", "log_every", "amp", "compile_networks", "reuse_fakes"]
ABLATION_FIELDS = [f.name for f in dataclasses.fields(AblationConfig)]


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "train",
        help="train the generator (two stages, resumable, multi-GPU through torchrun)",
        description="Train AniPortraitGAN on a portrait dataset. A run folder holds config.json, "
        "checkpoints/, generator.safetensors (the EMA generator), samples/, tensorboard/ and train.log.",
    )
    p.add_argument("--config", default="tiny", help="training preset (tiny, small or paper) or a TrainConfig JSON file "
                   "(e.g. a run's config.json, edited)")
    p.add_argument("--data", required=True, help="portrait dataset folder (e.g. made by `aniportraitgan data synth`)")
    p.add_argument("--out", required=True, help="run folder")
    p.add_argument("--steps", type=int, default=None, help="target number of steps of each stage (default: the preset's)")
    p.add_argument("--stage2-steps", type=int, default=None, help="target steps of stage 2 when it differs from --steps")
    p.add_argument("--stage", default="1", choices=["1", "2", "both"], help="stage 1 (128, all but U), stage 2 (U and high-res discriminators) or both in sequence")
    p.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in --out")
    p.add_argument("--init", default=None, help="stage 2: the stage-1 checkpoint folder (of another run) to start from; "
                   "stage 1: a trained generator to fine-tune ('demo', an exported .safetensors, a checkpoint or run folder)")
    p.add_argument("--init-fresh", default="", metavar="NAMES",
                   help="stage 1 with --init: comma-separated generator sub-networks (M, phi, Dp, De, U) that start "
                   "fresh instead of from --init (e.g. De of a generator trained without mesh guidance); their sizes may differ from --init's (a wider phi on a trained surface)")
    p.add_argument("--init-discriminators", default=None, metavar="CHECKPOINT_DIR",
                   help="stage 1 with --init: continue D_whole, D_face and D_torso (and their optimiser) from this "
                   "stage-1 checkpoint instead of fresh ones (e.g. the checkpoint --init's generator was derived from)")
    p.add_argument("--facerecon", default=None, help="trained face reconstruction network R (from `aniportraitgan facerecon train`) for the landmark loss")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    add_threads_option(p)
    p.add_argument("--batch", type=int, default=None, help="override the global batch size of the stages run")
    add_field_options(p, TrainConfig, SCHEDULE_FIELDS, aliases={"num_workers": "--workers"},
                      amp={"choices": ["bf16", "fp16", "none"]})
    p.add_argument("--max-minutes", type=float, default=None, help="wall-clock budget: write a checkpoint and stop when it runs out (continue with --resume)")
    add_progress_option(p, "progress bar (log lines instead)")
    add_field_options(p.add_argument_group("ablations (paper Table 2)"), AblationConfig, ABLATION_FIELDS)
    p.set_defaults(func=run)


def build_config(args: argparse.Namespace) -> TrainConfig:
    """The chosen preset or config file with the command line's overrides."""
    cfg = load_train_config(args.config)
    apply_field_options(args, cfg.ablation, ABLATION_FIELDS)
    for name in ("batch", "checkpoint_every"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise UserError(f"--{name.replace('_', '-')} must be >= 1, got {value}")
    if args.batch is not None:
        cfg.stage1.batch_size = cfg.stage2.batch_size = args.batch
    apply_field_options(args, cfg, SCHEDULE_FIELDS)
    return cfg


def run(args: argparse.Namespace) -> int:
    opts = RunOptions(
        data=Path(args.data), out=Path(args.out), stage=args.stage, steps=args.steps, stage2_steps=args.stage2_steps,
        resume=args.resume, device=args.device, facerecon=Path(args.facerecon) if args.facerecon else None,
        init=Path(args.init) if args.init else None,
        init_discriminators=Path(args.init_discriminators) if args.init_discriminators else None,
        init_fresh=tuple(n.strip() for n in args.init_fresh.split(",") if n.strip()), progress=not args.no_progress, max_minutes=args.max_minutes,
    )
    opts.validate()  # before the config: a wrong option is the likelier mistake
    if not opts.data.exists():
        raise UserError(f"--data {opts.data} does not exist")
    summary = train(build_config(args), opts)
    code = int(summary.get("exit_code", 0))
    if code:  # a stop signal: the step in progress finished and was checkpointed
        print(f"train: stopped by a signal with a checkpoint in {opts.out}; --resume continues", file=sys.stderr)
    return code
