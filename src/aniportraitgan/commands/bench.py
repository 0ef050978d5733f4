"""`aniportraitgan bench <target> ...`: timing benchmarks of the product's hot paths.

Targets are sub-subcommands registered in ``TARGETS`` (name -> register function taking the
`bench` sub-parsers); each prints its measurements and a one-line summary last.

    aniportraitgan bench generator --preset tiny|paper [--batch B] [--repeats N] [--device cpu|cuda]
        [--resolutions 128,512] [--geometry-res 128] [--threads N] [--json FILE]
    aniportraitgan bench body [--repeats N] [--device cpu|cuda]
    aniportraitgan bench train [--config tiny] [--resolution 64] [--face-resolution 64] [--batch B]
        [--variants unpatched,exact,reuse] [--rounds N] [--steps N] [--threads N]
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import torch

from aniportraitgan.animation.bench import bench_generator, machine_name, summary_line
from aniportraitgan.body.bench import bench_body
from aniportraitgan.commands.config_args import load_train_config
from aniportraitgan.commands.threads import add_threads_option
from aniportraitgan.errors import UserError
from aniportraitgan.training.bench import DEFAULT_VARIANTS, VARIANTS, bench_config, bench_train


# ------------------------------------------------------------------ bench generator
def _register_generator(sub) -> None:
    g = sub.add_parser(
        "generator",
        help="ms per frame of the generator: portrait 128 and 512, with and without the identity cache",
        description="Time the generator's portrait rendering (random weights; speed does not depend on "
        "training). Rows: stage 1 at 128 (phi at the intersections, the training path) and stage 2 at "
        "128 and 512 (super-resolved maps), each without and with the identity cache (mapping outputs "
        "and super-resolved maps precomputed per identity, as in animation).",
    )
    g.add_argument("--preset", default="tiny", choices=["tiny", "paper"], help="generator size")
    g.add_argument("--batch", type=int, default=1, help="frames per forward call")
    g.add_argument("--repeats", type=int, default=1, help="timed repeats per row (the median is reported)")
    g.add_argument("--warmup", type=int, default=1, help="untimed runs before each row")
    g.add_argument("--resolutions", default="128,512", help="comma-separated portrait resolutions")
    g.add_argument("--device", default="cpu", help="cpu or cuda")
    add_threads_option(g)
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--geometry-res", type=int, default=128,
                   help="also time larger portraits with deformation and M on this ray grid "
                   "(RenderOptions.geometry_max_resolution); 0 skips that row")
    g.add_argument("--json", default=None, help="also write the results to this JSON file")
    g.set_defaults(func=run_generator)


def run_generator(args: argparse.Namespace) -> int:
    if args.batch < 1 or args.repeats < 1 or args.warmup < 0:
        raise UserError("--batch and --repeats must be >= 1, --warmup >= 0")
    try:
        resolutions = [int(r) for r in args.resolutions.split(",") if r.strip()]
    except ValueError:
        raise UserError(f"--resolutions must be comma-separated integers, got {args.resolutions!r}") from None
    if not resolutions or min(resolutions) < 1:
        raise UserError("--resolutions needs at least one positive resolution")
    _set_device_and_threads(args)
    result = bench_generator(args.preset, resolutions, args.batch, args.repeats, args.warmup, args.device, args.seed,
                             args.geometry_res, say=lambda line: print(line, flush=True))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    print(summary_line(result))
    return 0


def _set_device_and_threads(args: argparse.Namespace) -> None:
    if torch.device(args.device).type == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda requested but CUDA is not available")


# ------------------------------------------------------------------ bench body
BODY_TARGET_MS = 20.0  # issue 2: batch 64 on a 2-core CPU


def _register_body(sub) -> None:
    b = sub.add_parser("body", help="ms per forward call of the portrait body model at batch 1 and 64")
    b.add_argument("--repeats", type=int, default=20, help="timed repeats per batch size (median reported)")
    b.add_argument("--device", default="cpu", help="cpu or cuda")
    add_threads_option(b)
    b.set_defaults(func=run_body)


def run_body(args: argparse.Namespace) -> int:
    if args.repeats < 1:
        raise UserError("--repeats must be >= 1")
    _set_device_and_threads(args)
    results = bench_body((1, 64), args.repeats, args.device)
    for batch, ms in results.items():
        print(f"body forward batch {batch:<3d} {ms:8.2f} ms", flush=True)
    verdict = "meets" if results[64] <= BODY_TARGET_MS else "misses"
    print(f"bench body device={args.device} ({machine_name(torch.device(args.device))}): batch 64 {results[64]:.2f} ms "
          f"({verdict} the {BODY_TARGET_MS:.0f} ms target)")
    return 0


# ------------------------------------------------------------------ bench train
def _register_train(sub) -> None:
    t = sub.add_parser(
        "train", help="seconds per training step (stage 1) with and without the speed-ups, as ratios",
        description="Time stage-1 training steps of a configuration (D and G phases, optimisers, EMA; "
        "noise as real images, no dataset needed) for each variant in alternating rounds, and print each "
        "variant's time as a ratio to the first: " + "; ".join(VARIANTS) + " (training/bench.py).",
    )
    t.add_argument("--config", default="tiny", help="training preset (default tiny: the demo model's) or a "
                   "TrainConfig JSON file such as a run's config.json")
    t.add_argument("--resolution", type=int, default=64, help="stage-1 portrait side (default 64)")
    t.add_argument("--face-resolution", type=int, default=64, help="stage-1 face side (default 64)")
    t.add_argument("--batch", type=int, default=None, help="batch size (default: the preset's)")
    t.add_argument("--variants", default=",".join(DEFAULT_VARIANTS), help=f"comma-separated from {', '.join(VARIANTS)}; "
                   f"the first is the reference (default {','.join(DEFAULT_VARIANTS)})")
    t.add_argument("--rounds", type=int, default=3, help="alternating timed rounds (the median is reported)")
    t.add_argument("--steps", type=int, default=2, help="steps per variant and round")
    t.add_argument("--warmup", type=int, default=1, help="untimed steps per variant first")
    t.add_argument("--no-facerecon", action="store_true", help="without R's landmark loss (eq. 9)")
    t.add_argument("--device", default="cpu", help="cpu or cuda")
    add_threads_option(t)
    t.set_defaults(func=run_train)


def run_train(args: argparse.Namespace) -> int:
    _set_device_and_threads(args)
    load = os.getloadavg()[0]
    cfg = bench_config(load_train_config(args.config), args.resolution, args.face_resolution, args.batch)
    names = [v.strip() for v in args.variants.split(",") if v.strip()]
    res = bench_train(cfg, names, args.rounds, args.steps, args.warmup, args.device, not args.no_facerecon,
                      say=lambda line: print(line, flush=True))
    for name, r in res.items():
        print(f"{name:<10s} {r['seconds']:7.3f} s/step  x{r['ratio']:.2f}   CPU {r['cpu_seconds']:7.3f} s/step  "
              f"x{r['cpu_ratio']:.2f}", flush=True)
    st = cfg.stage1
    print(f"bench train {args.config} {st.portrait_resolution}/{st.face_resolution} px batch {st.batch_size} "
          f"({machine_name(torch.device(args.device))}, load {load:.1f}-{os.getloadavg()[0]:.1f}): "
          + ", ".join(f"{n} {r['seconds']:.2f} s (x{r['ratio']:.2f}; CPU x{r['cpu_ratio']:.2f})" for n, r in res.items()))
    return 0


# ------------------------------------------------------------------ registry
# Add a target by writing `_register_<name>(sub)` and listing it here (e.g. "body").
TARGETS = {
    "generator": _register_generator,
    "body": _register_body,
    "train": _register_train,
}


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "bench",
        help="timing benchmarks (generator, body, train)",
        description="Timing benchmarks; each target prints a one-line summary last.",
    )
    sub = p.add_subparsers(dest="bench_target", metavar="TARGET")
    for add in TARGETS.values():
        add(sub)

    def no_target(args: argparse.Namespace) -> int:
        p.print_help()
        return 1

    p.set_defaults(func=no_target)
