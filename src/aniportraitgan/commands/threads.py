"""`--threads N` for every heavy command: one option, one meaning, applied once by cli.main.

``add_threads_option(parser)`` adds it; ``apply_threads(args)`` (cli.main calls it after parsing,
before the command runs) sets torch's intra-op thread count. With the passive wait policy set by
``aniportraitgan.commands`` the default (one thread per core) no longer collapses under load, so
the option is for sharing a machine on purpose (e.g. ``--threads 1`` beside another job) or for
reproducible benchmarks. Worker processes (``data synth``/``prepare`` workers, DataLoader workers)
keep their own setting (one thread each).
"""

from __future__ import annotations

import argparse

import torch

from aniportraitgan.errors import UserError

HELP = "torch CPU threads of this process (default: torch's, one per core)"


def add_threads_option(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    parser.add_argument("--threads", type=int, default=None, metavar="N", help=HELP)


def apply_threads(args: argparse.Namespace) -> None:
    """Set torch's thread count from ``args.threads`` when the command has the option and it was given."""
    threads = getattr(args, "threads", None)
    if threads is None:
        return
    if not isinstance(threads, int) or threads < 1:
        raise UserError(f"--threads must be >= 1, got {threads}")
    torch.set_num_threads(threads)
