"""`aniportraitgan serve --ckpt CKPT [--host 127.0.0.1] [--port 7860] [--threads N]`: the web demo.

A Gradio page (aniportraitgan.webapp) with every control: identity, psi, portrait or face
camera or both, resolution, camera, head, shoulders and expressions, preset animations to mp4,
downloads, and the reenactment of an uploaded talking video. Open the printed address in a
browser; Ctrl-C stops it. Needs the [web] extra (and [track] for video driving).
"""

from __future__ import annotations

import argparse

from aniportraitgan.commands.threads import add_threads_option
from aniportraitgan.webapp import serve


def register(subparsers) -> None:
    p = subparsers.add_parser("serve", help="web demo: a Gradio page with every control and preset videos",
                              description=__doc__.split("\n\n")[1])
    p.add_argument("--ckpt", default="demo", help="'demo' (default), an exported generator .safetensors, a checkpoint or run folder")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1; 0.0.0.0 for all)")
    p.add_argument("--port", type=int, default=7860, help="port (default 7860; 0 picks a free one)")
    add_threads_option(p)
    p.add_argument("--concurrency", type=int, default=1, help="renders in flight at once (default 1)")
    p.add_argument("--cache-identities", type=int, default=8, help="identities kept in memory, LRU (default 8)")
    p.add_argument("--device", default="auto", help="cpu, cuda or auto (default)")
    p.add_argument("--identity", metavar="FILE", action="append", default=[],
                   help="an identity file of `aniportraitgan invert` for the page's person picker (repeatable)")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    return serve(args.ckpt, args.host, args.port, threads=args.threads, device=args.device,
                 concurrency=args.concurrency, cache_identities=args.cache_identities, identities=args.identity)
