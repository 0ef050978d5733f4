"""`aniportraitgan data synth|prepare|merge|preview|verify`: build portrait datasets (synthetic
renders or real photos), view them, and check one before a long run."""

from __future__ import annotations

import argparse

from aniportraitgan.commands.progress import add_progress_option
from aniportraitgan.commands.threads import add_threads_option
from aniportraitgan.data.preview import make_preview
from aniportraitgan.data.synth import SynthConfig, synthesize
from aniportraitgan.data.verify import verify_dataset
from aniportraitgan.errors import UserError
from aniportraitgan.images import MAX_RESOLUTION
from aniportraitgan.frontend.align import AlignConfig
from aniportraitgan.frontend.prepare import PrepareConfig, merge, prepare
from aniportraitgan.render import RenderBackendError


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
    add_threads_option(s)
    add_progress_option(s)
    s.set_defaults(func=_synth)

    r = sub.add_parser("prepare", help="label a folder of real portrait photos (mediapipe + body-model fit; resumable)")
    r.add_argument("raw_dir", metavar="RAW_DIR", help="folder of photos (searched recursively)")
    r.add_argument("--out", required=True, help="dataset folder (created; an existing one is resumed)")
    r.add_argument("--resolution", type=int, default=512, help="portrait size in pixels; faces are half (default 512)")
    r.add_argument("--workers", type=int, default=2, help="processes (default 2)")
    r.add_argument("--shard", default="0/1", help="i/n: do the i-th of n shares (other machines do the rest; then `data merge`)")
    r.add_argument("--batch", type=int, default=64, help="photos fitted together; one resumable record each (default 64)")
    add_threads_option(r)
    add_progress_option(r)
    r.set_defaults(func=_prepare)

    m = sub.add_parser("merge", help="merge `data prepare` shards made in other folders into one dataset")
    m.add_argument("dataset", help="a `data prepare` output folder (receives the others)")
    m.add_argument("others", nargs="*", help="other output folders of the same photos and settings")
    m.set_defaults(func=_merge)

    v = sub.add_parser("preview", help="grid of portraits and faces with landmarks drawn")
    v.add_argument("dataset", help="dataset folder")
    v.add_argument("--out", required=True, help="output PNG")
    v.add_argument("--num", type=int, default=16, help="samples shown (default 16)")
    v.add_argument("--cols", type=int, default=8, help="columns (default 8)")
    v.add_argument("--tile", type=int, default=192, help="cell size in pixels (default 192)")
    v.add_argument("--no-landmarks", action="store_true", help="do not draw landmarks")
    v.set_defaults(func=_preview)

    c = sub.add_parser("verify", help="check a dataset before a long run: card, labels, counts, every image decoded")
    c.add_argument("dataset", help="dataset folder")
    c.add_argument("--fast", action="store_true", help="sizes and PNG headers only (what `train` checks before step 0)")
    add_progress_option(c)
    c.set_defaults(func=_verify)
    p.set_defaults(func=lambda args: (p.print_help(), 1)[1])


def _synth(args: argparse.Namespace) -> int:
    if args.num < 1:
        raise UserError(f"--num must be >= 1 (a dataset needs samples), got {args.num}")
    if not 16 <= args.resolution <= MAX_RESOLUTION:
        raise UserError(f"--resolution must be in [16, {MAX_RESOLUTION}], got {args.resolution}")
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


def _verify(args: argparse.Namespace) -> int:
    """Exit status 0 when the dataset is sound, 1 with the list of problems otherwise."""
    report = verify_dataset(args.dataset, full=not args.fast, progress=not args.no_progress)
    print(report.summary())
    return 0 if report.ok else 1


def _preview(args: argparse.Namespace) -> int:
    out = make_preview(args.dataset, args.out, num=args.num, cols=args.cols, tile=args.tile, landmarks=not args.no_landmarks)
    print(out)
    return 0


def _parse_shard(text: str) -> tuple[int, int]:
    try:
        i, n = (int(v) for v in text.split("/"))
    except ValueError:
        raise UserError(f"--shard must look like i/n (e.g. 0/4), got {text!r}") from None
    return i, n


def _print_summary(root: str, complete: bool, missing: int, accepted: int, rejected: dict) -> int:
    reasons = ", ".join(f"{k}: {v}" for k, v in sorted(rejected.items())) or "none"
    print(f"{root}: {accepted} accepted, rejected: {reasons}")
    if not complete:
        print(f"{missing} batch(es) still to do (other shards); run `aniportraitgan data merge` when all are done")
        return 0
    if accepted == 0:
        print(f"no photo was accepted; see {root}/report.csv")
        return 1
    print(f"dataset complete; per-photo report: {root}/report.csv")
    return 0


def _prepare(args: argparse.Namespace) -> int:
    cfg = PrepareConfig(align=AlignConfig(resolution=args.resolution), workers=args.workers, shard=_parse_shard(args.shard),
                        batch=args.batch, progress=not args.no_progress)
    s = prepare(args.raw_dir, args.out, cfg)
    print(f"{s.processed} photos processed in {s.seconds:.1f} s ({s.photos_per_second:.1f} photos/s)" if s.processed else "nothing to do")
    return _print_summary(s.root, s.complete, s.missing_batches, s.accepted, s.rejected)


def _merge(args: argparse.Namespace) -> int:
    complete, missing, counts = merge(args.dataset, args.others)
    accepted = counts.pop("accepted", 0)
    return _print_summary(args.dataset, complete, missing, accepted, dict(counts))
