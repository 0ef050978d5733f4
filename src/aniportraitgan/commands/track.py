"""`aniportraitgan track VIDEO --out drive.npz`: a talking video -> the project's keyframes.

mediapipe per frame (VIDEO mode), one body-model fit over the clip (one identity, per-frame
expression, pose and camera, temporal smoothness), frames without a face interpolated and
reported (`aniportraitgan.frontend.track`). The .npz holds expression [N, 52], pose [N, 6, 3],
camera [N, 2], the frame rate, the per-frame fit error and the frames without a face; `animate
--drive drive.npz` plays it, `--expression/--pose/--camera drive.npz` take one component.
"""

from __future__ import annotations

import argparse
import math
from dataclasses import replace

from aniportraitgan.animation.video import check_output_path
from aniportraitgan.commands.progress import add_progress_option
from aniportraitgan.commands.threads import add_threads_option
from aniportraitgan.errors import UserError
from aniportraitgan.frontend.track import TrackConfig, track_video


def register(subparsers) -> None:
    p = subparsers.add_parser("track", help="track a talking video into keyframes (expression, pose, camera)")
    p.add_argument("video", metavar="VIDEO", help="the driving video (mp4, mov, mkv, webm, avi)")
    p.add_argument("--out", required=True, help="keyframe file to write (.npz)")
    defaults = TrackConfig()
    p.add_argument("--steps", type=int, default=defaults.fit.steps, help=f"fit iterations (default {defaults.fit.steps})")
    p.add_argument("--smoothness", type=float, default=defaults.temporal_weight,
                   help=f"temporal prior weight at 25 frames/s, 0 = none (default {defaults.temporal_weight:g})")
    p.add_argument("--max-side", type=int, default=defaults.max_side,
                   help=f"frames are scaled down to this longer side for detection (default {defaults.max_side})")
    add_threads_option(p)
    add_progress_option(p)
    p.set_defaults(func=_run)


def track_config(steps: int, smoothness: float, max_side: int) -> TrackConfig:
    """The TrackConfig of the command-line options (UserError for bad values)."""
    if steps < 1:
        raise UserError(f"--steps must be >= 1, got {steps}")
    if not (math.isfinite(smoothness) and smoothness >= 0):
        raise UserError(f"--smoothness must be >= 0, got {smoothness}")
    if max_side < 64:
        raise UserError(f"--max-side must be >= 64, got {max_side}")
    cfg = TrackConfig(max_side=max_side, temporal_weight=smoothness)
    cfg.fit = replace(cfg.fit, steps=steps, rigid_steps=min(cfg.fit.rigid_steps, steps // 2))
    return cfg


def _run(args: argparse.Namespace) -> int:
    check_output_path(args.out, (".npz",))
    cfg = track_config(args.steps, args.smoothness, args.max_side)
    result = track_video(args.video, cfg, progress=not args.no_progress)
    result.save(args.out)
    print(result.summary())
    print(f"wrote {args.out}")
    return 0
