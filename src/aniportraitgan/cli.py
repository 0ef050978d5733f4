"""The single command line: `aniportraitgan <command> ...`.

Each command lives in `aniportraitgan.commands.<name>` and exposes `register(subparsers)`,
which adds its parser and sets `func(args) -> int`.
"""

from __future__ import annotations

import argparse
import sys

from aniportraitgan.commands import animate, assets, bench, data, demo, evaluate, facerecon, generate, serve, train
from aniportraitgan.errors import AssetError, InputError, UserError

# Command modules, in the order --help shows them.
COMMANDS = [assets, data, facerecon, train, generate, animate, evaluate, bench, demo, serve]


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
        return int(args.func(args) or 0)
    except (UserError, AssetError, InputError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
