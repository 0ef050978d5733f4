"""`aniportraitgan generate --ckpt CKPT --seeds 0-7 --out DIR [--views K] [--psi 0.7] [--resolution R]`.

For each seed: `seedNNNN_portrait.png`, `seedNNNN_face.png` (the dual face camera),
`seedNNNN_depth.png` (colour-mapped portrait depth, near = warm, background white) and
`seedNNNN_depth.npy` (raw float32 camera z-depth in metres [H, W], NaN where the portrait is
transparent); with `--views K` (K >= 2) also `seedNNNN_views.png`, K camera yaws in a row.
Every file is written through a temporary name and a rename (`animation.stills.write_stills`).
"""

from __future__ import annotations

import argparse
import math
import re

from aniportraitgan import inference
from aniportraitgan.animation.stills import VIEW_YAW_RANGE, write_stills
from aniportraitgan.animation.video import check_writable_dir
from aniportraitgan.cameras import MAX_ABS_PITCH
from aniportraitgan.commands.progress import add_progress_option
from aniportraitgan.commands.threads import add_threads_option
from aniportraitgan.errors import UserError
from aniportraitgan.generator import DEFAULT_PSI, check_psi
from aniportraitgan.images import check_resolution

MAX_SEEDS = 100_000


def parse_seeds(text: str) -> list[int]:
    """'0-7', '3', '0,2,5-6' -> sorted unique seeds; UserError for anything else."""
    seeds: set[int] = set()
    for part in str(text).split(","):
        part = part.strip()
        m = re.fullmatch(r"(\d+)(?:-(\d+))?", part)
        if not m:
            raise UserError(f"--seeds: {part!r} is not a seed or range (examples: 0-7, 3, 0,2,5-6)")
        lo = int(m.group(1))
        hi = int(m.group(2)) if m.group(2) is not None else lo
        if hi < lo:
            raise UserError(f"--seeds: range {part!r} is empty (end before start)")
        if hi - lo + 1 + len(seeds) > MAX_SEEDS:
            raise UserError(f"--seeds: more than {MAX_SEEDS} seeds requested")
        seeds.update(range(lo, hi + 1))
    return sorted(seeds)


def register(subparsers) -> None:
    p = subparsers.add_parser("generate", help="generate portraits, faces, depth maps and multi-view grids")
    p.add_argument("--ckpt", required=True, help="'demo', an exported generator .safetensors, a checkpoint or run folder")
    p.add_argument("--seeds", default="0-7", help="seeds: 0-7, 3, or 0,2,5-6 (default 0-7)")
    p.add_argument("--identity", metavar="FILE", default=None,
                   help="an identity file of `aniportraitgan invert` instead of --seeds (files named after it)")
    p.add_argument("--out", required=True, help="output folder (created if missing)")
    p.add_argument("--views", type=int, default=0, help=f"also write a grid of K views (yaw -{math.degrees(VIEW_YAW_RANGE):.0f}"
                   f"..+{math.degrees(VIEW_YAW_RANGE):.0f} deg); K >= 2")
    p.add_argument("--psi", type=float, default=DEFAULT_PSI, help=f"truncation psi (1 = none; default {DEFAULT_PSI:g})")
    p.add_argument("--resolution", type=int, default=None, help="portrait side in pixels (default: the model's)")
    p.add_argument("--face-resolution", type=int, default=None, help="face side in pixels (default: the model's)")
    p.add_argument("--yaw", type=float, default=0.0, help="camera yaw in degrees for the portrait (default 0)")
    p.add_argument("--pitch", type=float, default=0.0, help="camera pitch in degrees (default 0)")
    p.add_argument("--batch", type=int, default=4, help="views rendered per batch")
    p.add_argument("--device", default="auto", help="cpu, cuda or auto (default)")
    add_threads_option(p)
    add_progress_option(p)
    p.set_defaults(func=_run)


def _check_args(args) -> None:
    if args.views < 0 or args.views == 1 or args.views > 64:
        raise UserError(f"--views must be 0 (none) or between 2 and 64, got {args.views}")
    check_psi(args.psi, "--psi")
    for name in ("resolution", "face_resolution"):
        if getattr(args, name) is not None:
            check_resolution(getattr(args, name), f"--{name.replace('_', '-')}", UserError)
    for name, limit in (("yaw", 180.0), ("pitch", math.degrees(MAX_ABS_PITCH))):
        v = getattr(args, name)
        if not (math.isfinite(v) and abs(v) <= limit):
            raise UserError(f"--{name} must be within +-{limit:g} degrees, got {v}")
    if args.batch < 1:
        raise UserError(f"--batch must be >= 1, got {args.batch}")


def _run(args: argparse.Namespace) -> int:
    _check_args(args)
    seeds = parse_seeds(args.seeds)
    out = check_writable_dir(args.out, create=True)  # before the (slow) model load and rendering
    model = inference.load_inference_model(args.ckpt, args.device)
    if args.identity is not None:
        seeds = [inference.load_identity(args.identity, model)]
    side = write_stills(model, seeds, out, args.psi, args.resolution, args.face_resolution, math.radians(args.yaw),
                        math.radians(args.pitch), args.views, args.batch, progress=not args.no_progress)
    print(f"wrote {len(seeds)} seed(s) to {out} (stage {model.stage}, {side}px, psi {args.psi})")
    return 0
