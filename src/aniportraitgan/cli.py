"""The single command line: `aniportraitgan <command> ...`.

Each command lives in `aniportraitgan.commands.<name>` and exposes `register(subparsers)`,
which adds its parser and sets `func(args) -> int`. Importing `aniportraitgan.commands` (first,
below) sets OMP_WAIT_POLICY=PASSIVE before torch loads; a command's `--threads` (added with
`commands.threads.add_threads_option`) is applied here before the command runs.

SIGTERM (what `timeout`, docker, SLURM and systemd send) raises like Ctrl-C inside a command
(`signals.signals_raise`), so half-written files are removed on the way out; the exit status is
130 for SIGINT and 143 for SIGTERM. `train` stops gracefully instead (a checkpoint first).
"""

from __future__ import annotations

import argparse
import sys

from aniportraitgan.commands import (
    animate, assets, bench, data, demo, evaluate, facerecon, generate, invert, serve, track, train,
)
from aniportraitgan.commands.threads import apply_threads
from aniportraitgan.errors import AssetError, InputError, UserError
from aniportraitgan.signals import signals_raise

# Command modules, in the order --help shows them.
COMMANDS = [assets, data, facerecon, train, generate, animate, track, invert, evaluate, bench, demo, serve]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="aniportraitgan",
        description="Animatable 3D-aware portrait GAN: assets, data, training, animation, metrics.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in COMMANDS:
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 1
    try:
        apply_threads(args)
        with signals_raise():
            return int(args.func(args) or 0)
    except (UserError, AssetError, InputError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:  # signals.Interrupted says which signal
        print(str(exc) or "interrupted", file=sys.stderr)
        return int(getattr(exc, "exit_code", 130))


if __name__ == "__main__":
    raise SystemExit(main())
