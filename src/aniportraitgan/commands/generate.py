"""`aniportraitgan generate --ckpt CKPT --seeds 0-7 --out DIR [--views K] [--psi 0.7] [--resolution R]`.

For each seed: `seedNNNN_portrait.png`, `seedNNNN_face.png` (the dual face camera),
`seedNNNN_depth.png` (colour-mapped portrait depth, near = warm, background white) and
`seedNNNN_depth.npy` (raw float32 camera z-depth in metres [H, W], NaN where the portrait is
transparent); with `--views K` (K >= 2) also `seedNNNN_views.png`, K camera yaws in a row.
Every file is written through a temporary name and a rename.
"""

from __future__ import annotations

import argparse
import math
import re

import numpy as np

MAX_SEEDS = 100_000
ALPHA_THRESHOLD = 0.5  # depth pixels with less opacity count as background
VIEW_YAW_RANGE = 0.6  # radians either side of frontal for --views


def parse_seeds(text: str) -> list[int]:
    """'0-7', '3', '0,2,5-6' -> sorted unique seeds; UserError for anything else."""
    from aniportraitgan.errors import UserError

    seeds: set[int] = set()
    for part in str(text).split(","):
        part = part.strip()
        m = re.fullmatch(r"(\d+)(?:-(\d+))?", part)
        if not m:
            raise UserError(f"--seeds: {part!r} is not a seed or range (examples: 0-7, 3, 0,2,5-6)")
        lo = int(m.group(1))
        hi = int(m.group(2)) if m.group(2) is not None else lo
        if hi < lo:
            raise UserError(f"--seeds: range {part!r} is empty (end before start)")
        if hi - lo + 1 + len(seeds) > MAX_SEEDS:
            raise UserError(f"--seeds: more than {MAX_SEEDS} seeds requested")
        seeds.update(range(lo, hi + 1))
    return sorted(seeds)


# Colour ramp of the depth maps (near -> far): a warm-to-cool ramp of our own choosing.
_RAMP = np.array([
    [255, 236, 140], [250, 160, 60], [220, 80, 70], [150, 40, 120], [60, 30, 110], [20, 20, 60],
], dtype=np.float64)


def colorize_depth(depth: np.ndarray, alpha: np.ndarray | None = None) -> np.ndarray:
    """Depth [H, W] -> uint8 [H, W, 3]: nearest foreground = yellow, farthest = dark blue.

    The range is the foreground's own min/max (``alpha >= 0.5``); background pixels are white.
    """
    depth = np.asarray(depth, dtype=np.float64)
    fg = np.isfinite(depth) if alpha is None else (np.asarray(alpha) >= ALPHA_THRESHOLD) & np.isfinite(depth)
    out = np.full(depth.shape + (3,), 255, np.uint8)
    if not fg.any():
        return out
    lo, hi = depth[fg].min(), depth[fg].max()
    t = (depth[fg] - lo) / max(hi - lo, 1e-9) * (len(_RAMP) - 1)
    i = np.clip(np.floor(t).astype(int), 0, len(_RAMP) - 2)
    f = (t - i)[:, None]
    out[fg] = np.clip(np.rint(_RAMP[i] * (1 - f) + _RAMP[i + 1] * f), 0, 255).astype(np.uint8)
    return out


def register(subparsers) -> None:
    p = subparsers.add_parser("generate", help="generate portraits, faces, depth maps and multi-view grids")
    p.add_argument("--ckpt", required=True, help="'demo', an exported generator .safetensors, a checkpoint or run folder")
    p.add_argument("--seeds", default="0-7", help="seeds: 0-7, 3, or 0,2,5-6 (default 0-7)")
    p.add_argument("--out", required=True, help="output folder (created if missing)")
    p.add_argument("--views", type=int, default=0, help="also write a grid of K views (yaw -34..+34 deg); K >= 2")
    p.add_argument("--psi", type=float, default=0.7, help="truncation psi (1 = none; default 0.7)")
    p.add_argument("--resolution", type=int, default=None, help="portrait side in pixels (default: the model's)")
    p.add_argument("--face-resolution", type=int, default=None, help="face side in pixels (default: the model's)")
    p.add_argument("--yaw", type=float, default=0.0, help="camera yaw in degrees for the portrait (default 0)")
    p.add_argument("--pitch", type=float, default=0.0, help="camera pitch in degrees (default 0)")
    p.add_argument("--batch", type=int, default=4, help="views rendered per batch")
    p.add_argument("--device", default="auto", help="cpu, cuda or auto (default)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_run)


def _check_args(args) -> None:
    from aniportraitgan.errors import UserError

    if args.views < 0 or args.views == 1 or args.views > 64:
        raise UserError(f"--views must be 0 (none) or between 2 and 64, got {args.views}")
    if not math.isfinite(args.psi):
        raise UserError(f"--psi must be a finite number, got {args.psi}")
    for name in ("resolution", "face_resolution"):
        v = getattr(args, name)
        if v is not None and not 8 <= v <= 4096:
            raise UserError(f"--{name.replace('_', '-')} must be in [8, 4096], got {v}")
    for name, limit in (("yaw", 180.0), ("pitch", 89.0)):
        v = getattr(args, name)
        if not (math.isfinite(v) and abs(v) <= limit):
            raise UserError(f"--{name} must be within +-{limit:g} degrees, got {v}")
    if args.batch < 1:
        raise UserError(f"--batch must be >= 1, got {args.batch}")


def _run(args: argparse.Namespace) -> int:
    import torch
    from tqdm import tqdm

    from aniportraitgan.animation.animate import GeneratorFrames
    from aniportraitgan.images import to_uint8_images
    from aniportraitgan.animation.keyframes import Keyframes
    from aniportraitgan.animation.video import check_writable_dir, save_image_atomic, save_npy_atomic
    from aniportraitgan.inference import load_inference_model

    _check_args(args)
    seeds = parse_seeds(args.seeds)
    out = check_writable_dir(args.out, create=True)  # before the (slow) model load and rendering
    model = load_inference_model(args.ckpt, args.device)
    face_res = args.face_resolution or model.face_resolution
    yaw, pitch = math.radians(args.yaw), math.radians(args.pitch)
    for seed in tqdm(seeds, desc="seeds", unit="seed", disable=args.quiet):
        src = GeneratorFrames(model, seed, psi=args.psi, resolution=args.resolution)
        kf = Keyframes.neutral(1)
        kf.camera[:, 0], kf.camera[:, 1] = yaw, pitch
        res = src.render(kf, face_resolution=face_res)
        stem = f"seed{seed:04d}"
        save_image_atomic(out / f"{stem}_portrait.png", to_uint8_images(res.portrait)[0])
        save_image_atomic(out / f"{stem}_face.png", to_uint8_images(res.face)[0])
        depth = res.portrait_depth[0, 0].float().cpu().numpy()
        alpha = res.portrait_alpha[0, 0].float().cpu().numpy()
        save_image_atomic(out / f"{stem}_depth.png", colorize_depth(depth, alpha))
        save_npy_atomic(out / f"{stem}_depth.npy", np.where(alpha >= ALPHA_THRESHOLD, depth, np.nan).astype(np.float32))
        if args.views:
            yaws = torch.linspace(-VIEW_YAW_RANGE, VIEW_YAW_RANGE, args.views)
            views = Keyframes.neutral(args.views)
            views.camera[:, 0], views.camera[:, 1] = yaws, pitch
            tiles = [src(views[i:i + args.batch]) for i in range(0, args.views, args.batch)]
            save_image_atomic(out / f"{stem}_views.png", np.concatenate(np.concatenate(tiles), axis=1))
    print(f"wrote {len(seeds)} seed(s) to {out} (stage {model.stage}, {src.resolution}px, psi {args.psi})")
    return 0
