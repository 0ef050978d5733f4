"""`aniportraitgan demo --out outputs [--ckpt demo]`: what `make demo` runs.

Writes `OUT/demo.mp4`, `OUT/demo_controls.png` and `OUT/demo_face_controls.png`; without a
trained checkpoint it renders the driving body model instead (see `animation.demo`).
"""

from __future__ import annotations

import argparse

from aniportraitgan.animation.demo import render_demo
from aniportraitgan.animation.video import check_writable_dir
from aniportraitgan.artefacts import DEMO_NAME
from aniportraitgan.commands.progress import add_progress_option
from aniportraitgan.commands.threads import add_threads_option
from aniportraitgan.errors import UserError
from aniportraitgan.generator import DEFAULT_PSI, check_psi
from aniportraitgan.images import check_resolution

MAX_FRAMES_BETWEEN = 1000


def register(subparsers) -> None:
    p = subparsers.add_parser("demo", help="render outputs/demo.mp4, outputs/demo_controls.png and outputs/demo_face_controls.png")
    p.add_argument("--out", default="outputs", help="output folder (default: outputs)")
    p.add_argument("--ckpt", default=DEMO_NAME, help="checkpoint (default: the bundled demo model)")
    p.add_argument("--seed", type=int, default=0, help="identity of the video (default 0)")
    p.add_argument("--frames-between", type=int, default=5, help="frames between preset keyframes (default 5)")
    p.add_argument("--fps", type=float, default=25.0)
    p.add_argument("--resolution", type=int, default=None, help="portrait side (default: the model's)")
    p.add_argument("--psi", type=float, default=DEFAULT_PSI)
    p.add_argument("--device", default="auto", help="cpu, cuda or auto (default)")
    add_threads_option(p)
    add_progress_option(p)
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    if not 0 <= args.frames_between <= MAX_FRAMES_BETWEEN:
        raise UserError(f"--frames-between must be in [0, {MAX_FRAMES_BETWEEN}], got {args.frames_between}")
    if args.resolution is not None:
        check_resolution(args.resolution, "--resolution", UserError)
    check_psi(args.psi, "--psi")
    out = check_writable_dir(args.out, create=True)
    render_demo(out, args.ckpt, args.seed, args.frames_between, args.fps, args.resolution, args.psi, args.device,
                progress=not args.no_progress)
    return 0
