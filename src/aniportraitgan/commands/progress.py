"""The one spelling of "no progress bar" across commands: `--no-progress` (`--quiet` is the same
option, kept for the commands that used it first)."""

from __future__ import annotations

import argparse


def add_progress_option(parser: argparse.ArgumentParser, what: str = "progress bar") -> None:
    """`--no-progress` / `--quiet`, read as `args.no_progress`."""
    parser.add_argument("--no-progress", "--quiet", dest="no_progress", action="store_true",
                        help=f"no {what} (--quiet is the same)")
