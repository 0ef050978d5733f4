"""`aniportraitgan demo --out outputs [--ckpt demo]`: what `make demo` runs.

Writes `OUT/demo.mp4` (the `all` keyframe preset: every control in turn, >= 30 frames, with
the driving body model beside the portrait) and `OUT/demo_controls.png` (a Figure-3-style
contact sheet: camera, expression, head pose, shoulder pose for a few identities), and
`OUT/demo_face_controls.png` (the same sheet through the dual face camera, where expressions are
large enough to see).

Without a trained checkpoint (the bundled `demo` one not produced yet) it says so and renders
the body model instead: the video with the project's rasterizer and the contact sheet through
`aniportraitgan.body.preview.render_contact_sheet`.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

MIN_FRAMES = 30
DEMO_SEEDS = (0, 1, 2)


def register(subparsers) -> None:
    p = subparsers.add_parser("demo", help="render outputs/demo.mp4, outputs/demo_controls.png and outputs/demo_face_controls.png")
    p.add_argument("--out", default="outputs", help="output folder (default: outputs)")
    p.add_argument("--ckpt", default="demo", help="checkpoint (default: the bundled demo model)")
    p.add_argument("--seed", type=int, default=0, help="identity of the video (default 0)")
    p.add_argument("--frames-between", type=int, default=5, help="frames between preset keyframes (default 5)")
    p.add_argument("--fps", type=float, default=25.0)
    p.add_argument("--resolution", type=int, default=None, help="portrait side (default: the model's)")
    p.add_argument("--psi", type=float, default=0.7)
    p.add_argument("--device", default="auto", help="cpu, cuda or auto (default)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_run)


def demo_keyframes(frames_between: int):
    """The `all` preset interpolated to at least MIN_FRAMES frames."""
    from aniportraitgan.animation.keyframes import preset

    base = preset("all")
    fb = max(int(frames_between), math.ceil((MIN_FRAMES - 1) / max(1, len(base) - 1)) - 1)
    return base.interpolate(fb)


def _run(args: argparse.Namespace) -> int:
    from aniportraitgan.animation.video import check_writable_dir
    from aniportraitgan.errors import AssetError, UserError
    from aniportraitgan.inference import DEMO_NAME, load_inference_model

    if args.frames_between < 0 or args.frames_between > 1000:
        raise UserError(f"--frames-between must be in [0, 1000], got {args.frames_between}")
    if args.resolution is not None and not 8 <= args.resolution <= 4096:
        raise UserError(f"--resolution must be in [8, 4096], got {args.resolution}")
    out = check_writable_dir(args.out, create=True)
    video, sheet = out / "demo.mp4", out / "demo_controls.png"
    kf = demo_keyframes(args.frames_between)
    try:
        model = load_inference_model(args.ckpt, args.device)
    except AssetError as exc:
        if args.ckpt != DEMO_NAME:
            raise
        print(f"note: {exc}")
        print("note: rendering the driving body model instead of generated portraits.")
        return _body_fallback(args, kf, video, sheet)
    return _with_model(args, model, kf, video, sheet)


def _with_model(args, model, kf, video: Path, sheet: Path) -> int:
    from aniportraitgan.animation.animate import animate, generator_source
    from aniportraitgan.animation.contact_sheet import generator_contact_sheet
    from aniportraitgan.animation.video import save_image_atomic

    from aniportraitgan.errors import UserError

    try:
        source = generator_source(model, args.seed, psi=args.psi, resolution=args.resolution, side_by_side=True)
        what = "body model | generated portrait"
    except UserError as exc:  # no OpenGL here: the portrait alone
        print(f"note: {exc}; the video shows the generated portrait only")
        source = generator_source(model, args.seed, psi=args.psi, resolution=args.resolution)
        what = "generated portrait"
    res = animate(source, kf, video, fps=args.fps, progress=not args.quiet)
    print(f"wrote {res.path}: {res.frames} frames in {res.seconds:.1f} s ({what})")
    img = generator_contact_sheet(model, DEMO_SEEDS, columns=5, psi=args.psi, resolution=args.resolution,
                                  title=f"AniPortraitGAN controls ({model.source.name}, psi {args.psi:g})")
    save_image_atomic(sheet, img)
    print(f"wrote {sheet}")
    # The same controls seen by the face camera, where expressions are large enough to see.
    face_sheet = sheet.with_name("demo_face_controls.png")
    img = generator_contact_sheet(model, DEMO_SEEDS, columns=5, psi=args.psi, resolution=args.resolution,
                                  title=f"face camera ({model.source.name}, psi {args.psi:g})", view="face")
    save_image_atomic(face_sheet, img)
    print(f"wrote {face_sheet}")
    return 0


def _body_fallback(args, kf, video: Path, sheet: Path) -> int:
    from aniportraitgan.animation.animate import BodyFrames, animate
    from aniportraitgan.body import PortraitBodyModel

    body = PortraitBodyModel.load(device="cpu")
    source = BodyFrames(body, resolution=args.resolution or 256)
    res = animate(source, kf, video, fps=args.fps, progress=not args.quiet)
    print(f"wrote {res.path}: {res.frames} frames of the body model in {res.seconds:.1f} s")
    try:
        from aniportraitgan.body.preview import render_contact_sheet
    except ImportError:
        render_contact_sheet = None
    if render_contact_sheet is not None:
        render_contact_sheet(sheet)
    else:  # the lead's preview module is not there: use our own layout of the body model
        from aniportraitgan.animation.contact_sheet import body_contact_sheet
        from aniportraitgan.animation.video import save_image_atomic

        save_image_atomic(sheet, body_contact_sheet(body, title="body model controls"))
    print(f"wrote {sheet} (body-model contact sheet)")
    return 0
