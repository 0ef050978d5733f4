"""A contact sheet of a dataset: portraits with their face images below, landmarks drawn.

For real photos (`data prepare`) the portrait shows both the fitted body model's projected
landmarks (green) and the detected ones they were fitted to (red), so a person can judge the fit."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from aniportraitgan.data.dataset import (
    LABELS_FILE,
    face_path,
    load_labels,
    portrait_path,
    read_card,
    read_png,
)
from aniportraitgan.errors import InputError


def _draw_points(img, points: np.ndarray, scale: float, color=(0, 220, 0)) -> None:
    from PIL import ImageDraw

    d = ImageDraw.Draw(img)
    r = max(1.0, img.width / 128.0)
    for u, v in np.asarray(points, dtype=np.float64) * scale:
        d.ellipse([u - r, v - r, u + r, v + r], fill=color)


def make_preview(root: str | os.PathLike, out: str | os.PathLike, num: int = 16, cols: int = 8, tile: int = 192, landmarks: bool = True) -> Path:
    """Write a grid of `num` samples (evenly spread over the dataset): each cell is the portrait
    with its 68 landmarks (green; the detected ones in red where the dataset has them) above
    the face image with its landmarks, both `tile` pixels."""
    from PIL import Image

    if num <= 0 or cols <= 0 or tile < 16:
        raise InputError(f"need num > 0, cols > 0 and tile >= 16; got num={num} cols={cols} tile={tile}")
    root = Path(root)
    card = read_card(root)
    labels = load_labels(root / LABELS_FILE)
    index = labels["index"]
    if len(index) == 0:
        raise InputError(f"dataset {root} is empty")
    picks = np.unique(np.linspace(0, len(index) - 1, min(num, len(index))).round().astype(int))
    cols = min(cols, len(picks))
    rows = (len(picks) + cols - 1) // cols
    sheet = Image.new("RGB", (cols * tile, rows * 2 * tile), "white")
    for n, k in enumerate(picks):
        i = int(index[k])
        r, c = divmod(n, cols)
        por = Image.fromarray(read_png(portrait_path(root, i), card["resolution"])).resize((tile, tile), Image.BILINEAR)
        face = Image.fromarray(read_png(face_path(root, i), card["face_resolution"])).resize((tile, tile), Image.BILINEAR)
        if landmarks and "detected_landmarks" in labels:
            _draw_points(por, labels["detected_landmarks"][k], tile / card["resolution"], color=(230, 30, 30))
        if landmarks and "landmarks" in labels:
            _draw_points(por, labels["landmarks"][k], tile / card["resolution"])
        if landmarks and "face_landmarks" in labels:
            _draw_points(face, labels["face_landmarks"][k], tile / card["face_resolution"])
        sheet.paste(por, (c * tile, 2 * r * tile))
        sheet.paste(face, (c * tile, (2 * r + 1) * tile))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out)
    return out
