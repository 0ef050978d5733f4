"""`aniportraitgan animate --ckpt CKPT --seed S --out video.mp4 [driving signals] [options]`.

Driving signals: a built-in ``--preset`` and/or keyframe files ``--expression F`` ([N, 52]),
``--pose F`` ([N, 6, 3]; ``--pose-format euler-zyx`` for Euler angles) and ``--camera F``
([N, 2] yaw, pitch radians). A file replaces that component of the preset; components must
have the same number of frames, except that a single frame is held for the whole clip. With
nothing given the ``all`` preset plays. Then, in order: ``--frames-between`` interpolation,
``--smooth`` moving average, ``--orbit`` camera sweep (``animation.driving_keyframes``).
Everything is validated, and the output path checked, before the checkpoint is loaded or a
frame rendered. ``--drive VIDEO|track.npz|take.csv`` and the authors' release formats
(``--pose-format release-euler|smpl-euler``, ``--camera-format release``): `commands.animate_drive`.
"""

from __future__ import annotations

import argparse
import math

from aniportraitgan import inference
from aniportraitgan.animation.animate import DEFAULT_BATCH, animate, generator_source
from aniportraitgan.animation.driving_formats import RETARGET_POSE_FORMATS
from aniportraitgan.animation.keyframe_files import DEFAULT_FRAMES_BETWEEN_PRESET, driving_keyframes
from aniportraitgan.animation.keyframes import POSE_FORMATS
from aniportraitgan.animation.presets import PRESET_NAMES
from aniportraitgan.animation.video import check_output_path, video_format
from aniportraitgan.commands.animate_drive import add_drive_options, run_drive
from aniportraitgan.commands.progress import add_progress_option
from aniportraitgan.commands.threads import add_threads_option
from aniportraitgan.errors import UserError
from aniportraitgan.generator import DEFAULT_PSI, check_psi
from aniportraitgan.images import check_resolution

MAX_FRAMES_BETWEEN = 1000
MAX_ORBIT_DEG = 180.0


def register(subparsers) -> None:
    p = subparsers.add_parser("animate", help="animate one identity from keyframes into an mp4 or gif")
    p.add_argument("--ckpt", required=True, help="'demo', an exported generator .safetensors, a checkpoint or run folder")
    p.add_argument("--seed", type=int, default=0, help="identity seed (default 0)")
    p.add_argument("--identity", metavar="FILE", default=None,
                   help="an identity file of `aniportraitgan invert` (a person from a photo) instead of --seed")
    p.add_argument("--out", required=True, help="output video: .mp4 (H.264) or .gif")
    p.add_argument("--preset", choices=PRESET_NAMES, default=None, help="built-in keyframes (default: all, if no file is given)")
    p.add_argument("--expression", metavar="F", help="expression keyframes [N, 52] (.npy/.npz/.json)")
    p.add_argument("--pose", metavar="F", help="pose keyframes [N, 6, 3] (.npy/.npz/.json)")
    p.add_argument("--pose-format", choices=POSE_FORMATS + RETARGET_POSE_FORMATS, default=None,
                   help="pose file format (default: the file's own, else axis-angle); release-euler / smpl-euler: "
                        "the authors' release keyframes / SMPL joint Euler angles, retargeted")
    p.add_argument("--camera", metavar="F", help="camera keyframes [N, 2] yaw, pitch radians (.npy/.npz/.json)")
    add_drive_options(p)
    p.add_argument("--frames-between", type=int, default=None,
                   help=f"frames inserted between keyframes (default {DEFAULT_FRAMES_BETWEEN_PRESET} for presets, 0 for files)")
    p.add_argument("--smooth", type=int, default=1, help="centred moving-average window in frames, odd (default 1: none)")
    p.add_argument("--orbit", type=float, default=0.0, help="add a camera yaw sweep of this amplitude in degrees")
    p.add_argument("--fps", type=float, default=25.0, help="frames per second (default 25)")
    p.add_argument("--side-by-side", action="store_true", help="show the driving body model left of the portrait")
    p.add_argument("--psi", type=float, default=DEFAULT_PSI, help=f"truncation psi (1 = none; default {DEFAULT_PSI:g})")
    p.add_argument("--resolution", type=int, default=None, help="portrait side in pixels (default: the model's)")
    p.add_argument("--batch", type=int, default=DEFAULT_BATCH, help=f"frames rendered per batch (default {DEFAULT_BATCH})")
    p.add_argument("--no-cache", action="store_true", help="recompute the per-identity work every frame (slower)")
    p.add_argument("--device", default="auto", help="cpu, cuda or auto (default)")
    add_threads_option(p)
    add_progress_option(p)
    p.set_defaults(func=_run)


def _check_args(args: argparse.Namespace) -> None:
    if args.seed < 0:
        raise UserError(f"--seed must be >= 0, got {args.seed}")
    if not (math.isfinite(args.fps) and 0 < args.fps <= 240):
        raise UserError(f"--fps must be in (0, 240], got {args.fps}")
    check_psi(args.psi, "--psi")
    if args.resolution is not None:
        check_resolution(args.resolution, "--resolution", UserError)
    if args.batch < 1:
        raise UserError(f"--batch must be >= 1, got {args.batch}")
    if args.frames_between is not None and not 0 <= args.frames_between <= MAX_FRAMES_BETWEEN:
        raise UserError(f"--frames-between must be in [0, {MAX_FRAMES_BETWEEN}], got {args.frames_between}")
    if args.smooth < 1 or args.smooth % 2 == 0:
        raise UserError(f"--smooth must be an odd window >= 1, got {args.smooth}")
    if not math.isfinite(args.orbit) or abs(args.orbit) > MAX_ORBIT_DEG:
        raise UserError(f"--orbit must be within +-{MAX_ORBIT_DEG:g} degrees, got {args.orbit}")


def _run(args: argparse.Namespace) -> int:
    _check_args(args)
    if args.drive is not None:
        return run_drive(args)
    video_format(args.out)
    check_output_path(args.out)
    kf = driving_keyframes(args.preset, args.expression, args.pose, args.camera, args.pose_format,
                           args.frames_between, args.smooth, args.orbit, camera_format=args.camera_format)
    model = inference.load_inference_model(args.ckpt, args.device)
    seed = args.seed if args.identity is None else inference.load_identity(args.identity, model)
    source = generator_source(model, seed, psi=args.psi, resolution=args.resolution,
                              side_by_side=args.side_by_side, use_cache=not args.no_cache)
    result = animate(source, kf, args.out, fps=args.fps, batch_size=args.batch, progress=not args.no_progress)
    H, W = result.size
    print(f"wrote {result.path}: {result.frames} frames {W}x{H} at {args.fps:g} fps "
          f"in {result.seconds:.1f} s ({result.frames / max(result.seconds, 1e-9):.2f} frames/s)")
    return 0
