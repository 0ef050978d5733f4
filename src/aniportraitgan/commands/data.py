"""`aniportraitgan data synth|preview`: build the synthetic portrait dataset, view a dataset."""

from __future__ import annotations

import argparse

from aniportraitgan.errors import UserError


def register(subparsers) -> None:
    p = subparsers.add_parser("data", help="build and inspect portrait datasets")
    sub = p.add_subparsers(dest="data_command", metavar="SUBCOMMAND")

    s = sub.add_parser("synth", help="render a labelled synthetic portrait dataset (resumable)")
    s.add_argument("--out", required=True, help="dataset folder (created; an existing one is completed)")
    s.add_argument("--num", type=int, default=1000, help="number of samples (default 1000)")
    s.add_argument("--resolution", type=int, default=512, help="portrait size in pixels; faces are half (default 512)")
    s.add_argument("--seed", type=int, default=0, help="dataset seed: same seed, same bytes (default 0)")
    s.add_argument("--workers", type=int, default=2, help="processes, one GL context each (default 2)")
    s.add_argument("--msaa", type=int, default=None, help="MSAA samples (0 = off; default from SynthConfig)")
    s.add_argument("--long-hair", type=float, default=None, help="share of samples with long hair (default 0.3)")
    s.add_argument("--no-progress", action="store_true", help="no progress bar")
    s.set_defaults(func=_synth)

    v = sub.add_parser("preview", help="grid of portraits and faces with landmarks drawn")
    v.add_argument("dataset", help="dataset folder")
    v.add_argument("--out", required=True, help="output PNG")
    v.add_argument("--num", type=int, default=16, help="samples shown (default 16)")
    v.add_argument("--cols", type=int, default=8, help="columns (default 8)")
    v.add_argument("--tile", type=int, default=192, help="cell size in pixels (default 192)")
    v.add_argument("--no-landmarks", action="store_true", help="do not draw landmarks")
    v.set_defaults(func=_preview)
    p.set_defaults(func=lambda args: (p.print_help(), 1)[1])


def _synth(args: argparse.Namespace) -> int:
    from aniportraitgan.data.synth import SynthConfig, synthesize
    from aniportraitgan.render import RenderBackendError

    if args.num < 0:
        raise UserError(f"--num must be >= 0, got {args.num}")
    if args.resolution < 16:
        raise UserError(f"--resolution must be >= 16, got {args.resolution}")
    if args.workers < 1:
        raise UserError(f"--workers must be >= 1, got {args.workers}")
    cfg = SynthConfig(num=args.num, resolution=args.resolution, seed=args.seed, workers=args.workers, progress=not args.no_progress)
    if args.msaa is not None:
        cfg.msaa = args.msaa
    if args.long_hair is not None:
        cfg.long_hair_fraction = args.long_hair
    try:
        report = synthesize(args.out, cfg)
    except RenderBackendError as exc:
        raise UserError(str(exc)) from None
    rate = f", {report.samples_per_second:.1f} samples/s" if report.rendered else ""
    print(f"{report.root}: {report.num_samples} samples ({report.rendered} rendered in {report.seconds:.1f} s{rate})")
    return 0


def _preview(args: argparse.Namespace) -> int:
    from aniportraitgan.data.preview import make_preview

    out = make_preview(args.dataset, args.out, num=args.num, cols=args.cols, tile=args.tile, landmarks=not args.no_landmarks)
    print(out)
    return 0
