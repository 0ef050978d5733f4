"""`aniportraitgan serve --ckpt CKPT [--host 127.0.0.1] [--port 8000]`: the web demo.

A page with sliders for camera, head, shoulders and expression that renders each change with the
generator (aniportraitgan.webdemo). Open the printed address in a browser; Ctrl-C stops it.
"""

from __future__ import annotations

import argparse


def register(subparsers) -> None:
    p = subparsers.add_parser("serve", help="web demo: sliders for camera, head, shoulders and expression",
                              description=__doc__.split("\n\n")[1])
    p.add_argument("--ckpt", default="demo", help="'demo' (default), an exported generator .safetensors, a checkpoint or run folder")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1; 0.0.0.0 for all)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000; 0 picks a free one)")
    p.add_argument("--psi", type=float, default=0.7, help="truncation psi (default 0.7)")
    p.add_argument("--device", default="auto", help="cpu, cuda or auto (default)")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from aniportraitgan.errors import UserError
    from aniportraitgan.inference import load_inference_model
    from aniportraitgan.webdemo import WebRenderer, make_server

    if not 0 <= args.port <= 65535:
        raise UserError(f"--port must be in [0, 65535], got {args.port}")
    if not 0.0 <= args.psi <= 1.0:
        raise UserError(f"--psi must be in [0, 1], got {args.psi}")
    model = load_inference_model(args.ckpt, args.device)
    try:
        server = make_server(WebRenderer(model, args.psi), args.host, args.port)
    except OSError as exc:
        raise UserError(f"cannot listen on {args.host}:{args.port} ({exc.strerror or exc})") from None
    host, port = server.server_address[:2]
    print(f"serving {model.source.name} at http://{host}:{port}/ (Ctrl-C stops)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0
