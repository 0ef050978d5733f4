"""Still images of identities (what ``aniportraitgan generate`` writes): for each seed the
portrait, the dual face camera's view, the portrait depth (colour-mapped PNG and raw ``.npy``)
and optionally a row of views across camera yaws. Every file is written atomically."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from tqdm import tqdm

from aniportraitgan.animation.animate import GeneratorFrames
from aniportraitgan.animation.keyframes import Keyframes
from aniportraitgan.animation.video import save_image_atomic, save_npy_atomic
from aniportraitgan.artefacts.identities import StoredIdentity
from aniportraitgan.generator import DEFAULT_PSI
from aniportraitgan.images import to_uint8_images

__all__ = ["ALPHA_THRESHOLD", "VIEW_YAW_RANGE", "colorize_depth", "write_stills"]

ALPHA_THRESHOLD = 0.5  # depth pixels with less opacity count as background
VIEW_YAW_RANGE = 0.6  # radians either side of frontal for the row of views

# Colour ramp of the depth maps (near -> far): a warm-to-cool ramp of our own choosing.
_RAMP = np.array([
    [255, 236, 140], [250, 160, 60], [220, 80, 70], [150, 40, 120], [60, 30, 110], [20, 20, 60],
], dtype=np.float64)


def colorize_depth(depth: np.ndarray, alpha: np.ndarray | None = None) -> np.ndarray:
    """Depth [H, W] -> uint8 [H, W, 3]: nearest foreground = yellow, farthest = dark blue.

    The range is the foreground's own min/max (``alpha >= ALPHA_THRESHOLD``); background pixels
    are white.
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


def write_stills(model, seeds: Sequence[int | StoredIdentity], out: Path, psi: float = DEFAULT_PSI, resolution: int | None = None,
                 face_resolution: int | None = None, yaw: float = 0.0, pitch: float = 0.0, views: int = 0,
                 batch_size: int = 4, progress: bool = True) -> int:
    """For each seed write ``seedNNNN_portrait.png``, ``_face.png``, ``_depth.png`` and
    ``_depth.npy`` (float32 camera z-depth in metres [H, W], NaN where the portrait is
    transparent) into the folder ``out``; with ``views`` >= 2 also ``_views.png``, that many yaws
    in a row (an identity file in ``seeds`` writes ``<its name>_portrait.png``, ...). ``model``: an
    ``InferenceModel``; yaw and pitch in radians. Returns the portrait
    side in pixels."""
    face_res = face_resolution or model.face_resolution
    side = None
    for seed in tqdm(seeds, desc="seeds", unit="seed", disable=not progress):
        src = GeneratorFrames(model, seed, psi=psi, resolution=resolution)
        side = src.resolution
        kf = Keyframes.neutral(1)
        kf.camera[:, 0], kf.camera[:, 1] = yaw, pitch
        res = src.render(kf, face_resolution=face_res)
        stem = seed.name if isinstance(seed, StoredIdentity) else f"seed{seed:04d}"
        save_image_atomic(out / f"{stem}_portrait.png", to_uint8_images(res.portrait)[0])
        save_image_atomic(out / f"{stem}_face.png", to_uint8_images(res.face)[0])
        depth = res.portrait_depth[0, 0].float().cpu().numpy()
        alpha = res.portrait_alpha[0, 0].float().cpu().numpy()
        save_image_atomic(out / f"{stem}_depth.png", colorize_depth(depth, alpha))
        save_npy_atomic(out / f"{stem}_depth.npy", np.where(alpha >= ALPHA_THRESHOLD, depth, np.nan).astype(np.float32))
        if views:
            yaws = torch.linspace(-VIEW_YAW_RANGE, VIEW_YAW_RANGE, views)
            row = Keyframes.neutral(views)
            row.camera[:, 0], row.camera[:, 1] = yaws, pitch
            tiles = [src(row[i:i + batch_size]) for i in range(0, views, batch_size)]
            save_image_atomic(out / f"{stem}_views.png", np.concatenate(np.concatenate(tiles), axis=1))
    return side
