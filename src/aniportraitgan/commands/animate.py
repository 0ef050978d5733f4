"""`aniportraitgan animate --ckpt CKPT --seed S --out video.mp4 [driving signals] [options]`.

Driving signals: a built-in ``--preset`` and/or keyframe files ``--expression F`` ([N, 52]),
``--pose F`` ([N, 6, 3]; ``--pose-format euler-zyx`` for Euler angles) and ``--camera F``
([N, 2] yaw, pitch radians). A file replaces that component of the preset; components must
have the same number of frames, except that a single frame is held for the whole clip. With
nothing given the ``all`` preset plays. Then, in order: ``--frames-between`` interpolation,
``--smooth`` moving average, ``--orbit`` camera sweep. Everything is validated, and the output
path checked, before the checkpoint is loaded or a frame rendered.
"""

from __future__ import annotations

import argparse
import math

DEFAULT_FRAMES_BETWEEN_PRESET = 7  # presets hold a few keyframes; files are usually per-frame


def register(subparsers) -> None:
    from aniportraitgan.animation.keyframes import POSE_FORMATS, PRESET_NAMES

    p = subparsers.add_parser("animate", help="animate one identity from keyframes into an mp4 or gif")
    p.add_argument("--ckpt", required=True, help="'demo', an exported generator .safetensors, a checkpoint or run folder")
    p.add_argument("--seed", type=int, default=0, help="identity seed (default 0)")
    p.add_argument("--out", required=True, help="output video: .mp4 (H.264) or .gif")
    p.add_argument("--preset", choices=PRESET_NAMES, default=None, help="built-in keyframes (default: all, if no file is given)")
    p.add_argument("--expression", metavar="F", help="expression keyframes [N, 52] (.npy/.npz/.json)")
    p.add_argument("--pose", metavar="F", help="pose keyframes [N, 6, 3] (.npy/.npz/.json)")
    p.add_argument("--pose-format", choices=POSE_FORMATS, default=None,
                   help="pose file format (default: the file's own, else axis-angle)")
    p.add_argument("--camera", metavar="F", help="camera keyframes [N, 2] yaw, pitch radians (.npy/.npz/.json)")
    p.add_argument("--frames-between", type=int, default=None,
                   help=f"frames inserted between keyframes (default {DEFAULT_FRAMES_BETWEEN_PRESET} for presets, 0 for files)")
    p.add_argument("--smooth", type=int, default=1, help="centred moving-average window in frames, odd (default 1: none)")
    p.add_argument("--orbit", type=float, default=0.0, help="add a camera yaw sweep of this amplitude in degrees")
    p.add_argument("--fps", type=float, default=25.0, help="frames per second (default 25)")
    p.add_argument("--side-by-side", action="store_true", help="show the driving body model left of the portrait")
    p.add_argument("--psi", type=float, default=0.7, help="truncation psi (1 = none; default 0.7)")
    p.add_argument("--resolution", type=int, default=None, help="portrait side in pixels (default: the model's)")
    p.add_argument("--batch", type=int, default=4, help="frames rendered per batch (default 4)")
    p.add_argument("--no-cache", action="store_true", help="recompute the per-identity work every frame (slower)")
    p.add_argument("--device", default="auto", help="cpu, cuda or auto (default)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_run)


def build_keyframes(args: argparse.Namespace):
    """The clip the arguments describe (validated ``Keyframes``); UserError/InputError otherwise."""
    import torch

    from aniportraitgan.animation.keyframes import Keyframes, load_keyframes, preset
    from aniportraitgan.errors import InputError, UserError

    files = {k: getattr(args, k) for k in ("expression", "pose", "camera") if getattr(args, k)}
    if args.pose_format is not None and "pose" not in files:
        raise UserError("--pose-format applies to a --pose file, but none was given")
    base = preset(args.preset or "all") if (args.preset or not files) else None
    comps = {} if base is None else {"expression": base.expression, "pose": base.pose, "camera": base.camera}
    given = {}
    for name, path in files.items():
        kf = load_keyframes(path, args.pose_format if name == "pose" else None)
        given[name] = getattr(kf, name)
    comps.update(given)
    lengths = {k: v.shape[0] for k, v in comps.items()}
    n = max(lengths.values())
    for name, v in list(comps.items()):
        if v.shape[0] != n:
            if v.shape[0] != 1:
                raise InputError(f"keyframe components have different frame counts {lengths}; "
                                 "each must have the same N, or 1 frame to hold it")
            comps[name] = v.expand((n,) + tuple(v.shape[1:])).clone()
    exp = comps.get("expression", torch.zeros(n, 52))
    pose = comps.get("pose", torch.zeros(n, 6, 3))
    cam = comps.get("camera", torch.zeros(n, 2))
    kf = Keyframes(exp, pose, cam)

    frames_between = args.frames_between
    if frames_between is None:
        frames_between = DEFAULT_FRAMES_BETWEEN_PRESET if base is not None and not given else 0
    if frames_between < 0 or frames_between > 1000:
        raise UserError(f"--frames-between must be in [0, 1000], got {frames_between}")
    if args.smooth < 1 or args.smooth % 2 == 0:
        raise UserError(f"--smooth must be an odd window >= 1, got {args.smooth}")
    if not math.isfinite(args.orbit) or abs(args.orbit) > 180:
        raise UserError(f"--orbit must be within +-180 degrees, got {args.orbit}")
    kf = kf.interpolate(frames_between).smooth(args.smooth)
    if args.orbit:
        kf = kf.with_camera_orbit(math.radians(args.orbit))
    return kf


def _check_args(args: argparse.Namespace) -> None:
    from aniportraitgan.errors import UserError

    if args.seed < 0:
        raise UserError(f"--seed must be >= 0, got {args.seed}")
    if not (math.isfinite(args.fps) and 0 < args.fps <= 240):
        raise UserError(f"--fps must be in (0, 240], got {args.fps}")
    if not math.isfinite(args.psi):
        raise UserError(f"--psi must be a finite number, got {args.psi}")
    if args.resolution is not None and not 8 <= args.resolution <= 4096:
        raise UserError(f"--resolution must be in [8, 4096], got {args.resolution}")
    if args.batch < 1:
        raise UserError(f"--batch must be >= 1, got {args.batch}")


def _run(args: argparse.Namespace) -> int:
    from aniportraitgan.animation.animate import animate, generator_source
    from aniportraitgan.animation.video import check_output_path, video_format
    from aniportraitgan.inference import load_inference_model

    _check_args(args)
    video_format(args.out)
    check_output_path(args.out)
    kf = build_keyframes(args)
    model = load_inference_model(args.ckpt, args.device)
    source = generator_source(model, args.seed, psi=args.psi, resolution=args.resolution,
                              side_by_side=args.side_by_side, use_cache=not args.no_cache)
    result = animate(source, kf, args.out, fps=args.fps, batch_size=args.batch, progress=not args.quiet)
    H, W = result.size
    print(f"wrote {result.path}: {result.frames} frames {W}x{H} at {args.fps:g} fps "
          f"in {result.seconds:.1f} s ({result.frames / max(result.seconds, 1e-9):.2f} frames/s)")
    return 0
