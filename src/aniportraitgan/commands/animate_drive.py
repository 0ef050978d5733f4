"""The driving-format options of `aniportraitgan animate` and its `--drive SOURCE` path.

``--drive talk.mp4`` tracks the video and writes [driving video | generated portrait] (with
``--side-by-side`` also the tracked body model) at the video's frame rate, with its audio;
``--drive drive.npz`` plays a tracked clip, ``--drive take.csv`` an ARKit blendshape recording
(`animation.reenact`). ``--drive`` is an option of `animate` rather than a command of its own:
identity, checkpoint, truncation, resolution, batching, device and output checks are the same,
and `animate` is where a user looks for "make a video from driving signals".

``--camera-format release`` reads the authors' (phi, theta) camera files; the release pose
conventions are ``--pose-format release-euler`` / ``smpl-euler`` (`animation.driving_formats`).
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from aniportraitgan import inference
from aniportraitgan.animation.driving_formats import CAMERA_FORMATS
from aniportraitgan.animation.video import check_output_path, video_format
from aniportraitgan.errors import UserError
from aniportraitgan.frontend.reenact import (
    DRIVE_SUFFIXES,
    drive_kind,
    load_drive,
    reenact,
)


def add_drive_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--drive", metavar="SOURCE", default=None,
                   help="drive the portrait with a video (tracked; shown beside the portrait at its frame rate, "
                        f"with its audio), a tracked .npz or an ARKit blendshape .csv ({', '.join(DRIVE_SUFFIXES)})")
    p.add_argument("--camera-format", choices=CAMERA_FORMATS, default=None,
                   help="camera file convention: yaw-pitch (default) or release: the authors' (phi, theta) camera_pose.npy")


def run_drive(args: argparse.Namespace) -> int:
    """`animate --drive SOURCE` (the other animate options are checked by the caller)."""
    given = [opt for opt, value in (("--preset", args.preset), ("--expression", args.expression), ("--pose", args.pose),
                                    ("--pose-format", args.pose_format), ("--camera", args.camera),
                                    ("--camera-format", args.camera_format), ("--frames-between", args.frames_between))
             if value is not None]
    if given:
        raise UserError(f"--drive gives every driving signal; drop {', '.join(given)}")
    kind = drive_kind(args.drive)
    if not Path(args.drive).is_file():
        raise UserError(f"--drive {args.drive}: no such file")
    if kind == "video" and video_format(args.out) == "gif":
        print("note: a gif has no sound; write an .mp4 to keep the driving video's audio")
    video_format(args.out)
    check_output_path(args.out)
    quiet = getattr(args, "no_progress", getattr(args, "quiet", False))
    model = inference.load_inference_model(args.ckpt, args.device)
    seed = args.seed if getattr(args, "identity", None) is None else inference.load_identity(args.identity, model)
    clip = load_drive(args.drive, progress=not quiet)
    print(clip.report)
    clip.keyframes = clip.keyframes.smooth(args.smooth)
    if args.orbit:
        clip.keyframes = clip.keyframes.with_camera_orbit(math.radians(args.orbit))
    result = reenact(model, clip, args.out, seed=seed, psi=args.psi, resolution=args.resolution,
                     show_body=args.side_by_side, batch_size=args.batch, progress=not quiet, use_cache=not args.no_cache)
    H, W = result.size
    sound = ", with the driving video's audio" if clip.has_audio and Path(args.out).suffix.lower() == ".mp4" else ""
    print(f"wrote {result.path}: {result.frames} frames {W}x{H} at {clip.fps:g} fps{sound} "
          f"in {result.seconds:.1f} s ({result.frames / max(result.seconds, 1e-9):.2f} frames/s)")
    return 0
