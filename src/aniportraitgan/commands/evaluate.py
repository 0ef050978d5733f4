"""`aniportraitgan evaluate --ckpt CKPT --data DIR --metrics fid,kid,control --num N --out metrics.json`.

`--metrics` takes fid, kid, control (every control metric) or the names of single control
metrics registered in `metrics.control.CONTROL_METRICS` (e.g. `--metrics fid,multiview`).

Writes the JSON report and a Markdown table beside it (same name, .md) and prints the table.
`--compare A.json B.json ...` prints several reports side by side (with --ckpt: the new result
is the last column; without --ckpt: only the comparison). See docs/evaluation.md.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from aniportraitgan.commands.progress import add_progress_option
from aniportraitgan.commands.threads import add_threads_option
from aniportraitgan.errors import UserError
from aniportraitgan.metrics.control import ControlConfig
from aniportraitgan.metrics.evaluate import EvalConfig, known_metrics, run_evaluation
from aniportraitgan.metrics.report import compare, markdown_table


def register(subparsers) -> None:
    p = subparsers.add_parser("evaluate", help="FID/KID (paper protocol) and control metrics of a checkpoint")
    p.add_argument("--ckpt", help="'demo', an exported generator .safetensors, a checkpoint or run folder")
    p.add_argument("--data", help="dataset folder (real images and the label distribution)")
    p.add_argument("--metrics", default="fid,kid",
                   help=f"comma-separated: {', '.join(known_metrics())} (control = all control metrics; default fid,kid)")
    p.add_argument("--num", type=int, default=20000, help="generated images (paper: 20000; default 20000)")
    p.add_argument("--num-real", type=int, default=None, help="real images (default: min(num, dataset size))")
    p.add_argument("--out", default=None, help="report JSON path (a Markdown table is written beside it)")
    p.add_argument("--run", default=None, help="run name in the report (default: the file name)")
    p.add_argument("--resolution", type=int, default=None, help="portrait side (default: the checkpoint's)")
    p.add_argument("--face-resolution", type=int, default=None, help="face side (default: the checkpoint's)")
    p.add_argument("--batch", type=int, default=16, help="images per generator/extractor batch")
    p.add_argument("--extractor", default="inception", choices=("inception", "stand-in"),
                   help="feature network: the standard Inception (default) or a quick stand-in")
    p.add_argument("--facerecon", default=None, help="R weights (.safetensors) for expression/head-pose errors")
    p.add_argument("--psi", type=float, default=1.0, help="truncation psi (default 1 = none)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--control-num", type=int, default=256, help="samples for the control metrics")
    p.add_argument("--identities", type=int, default=8, help="identities for identity consistency")
    p.add_argument("--frames", type=int, default=8, help="frames per identity for identity consistency")
    p.add_argument("--response-num", type=int, default=32,
                   help="control response: the first N control samples, rendered once per probe (default 32)")
    p.add_argument("--kid-subset-size", type=int, default=1000)
    p.add_argument("--preset", default=None, help="fail unless the checkpoint has this generator preset's config")
    p.add_argument("--compare", nargs="+", default=None, metavar="RUN.json", help="reports to print side by side")
    p.add_argument("--device", default="auto", help="cpu, cuda or auto (default)")
    add_threads_option(p)
    p.add_argument("--workers", type=int, default=0, help="DataLoader workers for real images")
    add_progress_option(p, "progress bars")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    if args.ckpt is None:
        if not args.compare:
            raise UserError("give --ckpt and --data to evaluate, or --compare RUN.json ... to compare reports")
        print(compare(args.compare), end="")
        return 0
    if args.data is None or args.out is None:
        raise UserError("evaluate needs --data DIR and --out metrics.json with --ckpt")
    control = ControlConfig(num=args.control_num, identities=args.identities, frames=args.frames,
                            response_num=args.response_num)
    cfg = EvalConfig(
        metrics=args.metrics, num=args.num, num_real=args.num_real, resolution=args.resolution,
        face_resolution=args.face_resolution, batch=args.batch, extractor=args.extractor, psi=args.psi,
        seed=args.seed, kid_subset_size=args.kid_subset_size, control=control, facerecon=args.facerecon,
        device=args.device, progress=not args.no_progress, workers=args.workers, expected_preset=args.preset,
    )
    cfg.validate()  # bad settings fail before the (slow) model load
    for path in args.compare or []:
        if not Path(path).is_file():
            raise UserError(f"--compare: report {path} does not exist")
    report, json_path, md_path = run_evaluation(args.ckpt, args.data, args.out, cfg, run=args.run)
    print(markdown_table({"run": args.run or json_path.stem, "metrics": report.metrics, "meta": {}}), end="")
    print(f"wrote {json_path} and {md_path}")
    if args.compare:
        print()
        print(compare([*args.compare, json_path]), end="")
    return 0
