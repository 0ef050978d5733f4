"""A control contact sheet in the manner of the paper's Figure 3.

For each identity a block of four rows (camera, expression, head pose, shoulder pose); each
row varies one control over several columns while the others stay neutral and frontal. Row
labels sit on the left, the value of each column above its cell, the identity above its block.

The rendering is a callable ``render(identity_index, keyframes) -> uint8 [N, H, W, 3]`` so the
same layout serves the generator and the body-model stand-in.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from aniportraitgan.animation.animate import GeneratorFrames
from aniportraitgan.animation.keyframes import EXP_DIM, NUM_JOINTS, Keyframes, expression_index, joint_index
from aniportraitgan.animation.presets import set_head_rotation
from aniportraitgan.errors import InputError
from aniportraitgan.generator import DEFAULT_PSI

# Named expressions of the expression row, in column order.
EXPRESSIONS: tuple[tuple[str, dict[str, float]], ...] = (
    ("neutral", {}),
    ("smile", {"mouthSmileLeft": 1.0, "mouthSmileRight": 1.0, "cheekSquintLeft": 0.4, "cheekSquintRight": 0.4}),
    ("jaw open", {"jawOpen": 0.8}),
    ("brows up", {"browInnerUp": 1.0, "browOuterUpLeft": 0.9, "browOuterUpRight": 0.9, "eyeWideLeft": 0.3,
                  "eyeWideRight": 0.3}),
    ("eyes closed", {"eyeBlinkLeft": 1.0, "eyeBlinkRight": 1.0}),
    ("pucker", {"mouthPucker": 1.0, "mouthFunnel": 0.4}),
    ("frown", {"mouthFrownLeft": 1.0, "mouthFrownRight": 1.0, "browDownLeft": 0.7, "browDownRight": 0.7}),
)


@dataclass
class SheetRow:
    label: str
    keyframes: Keyframes  # one frame per column
    column_labels: list[str]


def _sweep(columns: int, lo: float, hi: float) -> torch.Tensor:
    return torch.linspace(lo, hi, columns) if columns > 1 else torch.zeros(1)


def control_rows(columns: int = 5, yaw_range: float = 0.6, head_range: float = 0.6,
                 shrug_range: tuple[float, float] = (-0.12, 0.3)) -> list[SheetRow]:
    """The four rows of Figure 3 with ``columns`` values each (angles in radians)."""
    if isinstance(columns, bool) or not isinstance(columns, int) or not 1 <= columns <= 16:
        raise InputError(f"columns must be an int in [1, 16], got {columns!r}")
    n = columns
    zeros_e, zeros_p, zeros_c = torch.zeros(n, EXP_DIM), torch.zeros(n, NUM_JOINTS, 3), torch.zeros(n, 2)

    def deg(x: float) -> str:
        return f"{math.degrees(x):+.0f}°"

    yaw = _sweep(n, -yaw_range, yaw_range)
    cam = zeros_c.clone()
    cam[:, 0] = yaw
    rows = [SheetRow("camera", Keyframes(zeros_e, zeros_p, cam), [f"yaw {deg(v)}" for v in yaw.tolist()])]

    exp = zeros_e.clone()
    names = []
    for i in range(n):
        name, coeffs = EXPRESSIONS[i % len(EXPRESSIONS)]
        for k, v in coeffs.items():
            exp[i, expression_index(k)] = v
        names.append(name)
    rows.append(SheetRow("expression", Keyframes(exp, zeros_p, zeros_c), names))

    head = _sweep(n, -head_range, head_range)
    pose = set_head_rotation(zeros_p.clone(), torch.stack([torch.zeros(n), head, torch.zeros(n)], -1))
    rows.append(SheetRow("head pose", Keyframes(zeros_e, pose, zeros_c), [f"turn {deg(v)}" for v in head.tolist()]))

    shrug = _sweep(n, *shrug_range)
    pose = zeros_p.clone()
    # The left collar points to +X, so it rises with +Z rotation; the right one with -Z.
    pose[:, joint_index("left_collar"), 2] = shrug
    pose[:, joint_index("right_collar"), 2] = -shrug
    rows.append(SheetRow("shoulders", Keyframes(zeros_e, pose, zeros_c), [f"shrug {deg(v)}" for v in shrug.tolist()]))
    return rows


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: fixed-size bitmap font
        return ImageFont.load_default()


def _text_width(draw, text: str, font) -> int:
    box = draw.textbbox((0, 0), text, font=font)
    return box[2] - box[0]


def _fit(draw, text: str, font, width: int) -> str:
    """Shorten ``text`` with an ellipsis until it fits ``width`` pixels."""
    if _text_width(draw, text, font) <= width:
        return text
    while len(text) > 1 and _text_width(draw, text + "…", font) > width:
        text = text[:-1]
    return text + "…"


def contact_sheet(render: Callable[[int, Keyframes], np.ndarray], identity_labels: Sequence[str],
                  rows: Sequence[SheetRow] | None = None, title: str | None = None,
                  label_width: int | None = None):
    """Lay out ``render(i, row.keyframes)`` for each identity i and row; returns a PIL image."""
    rows = list(rows) if rows is not None else control_rows()
    if not rows:
        raise InputError("contact sheet needs at least one row")
    if not identity_labels:
        raise InputError("contact sheet needs at least one identity")
    columns = max(len(r.keyframes) for r in rows)
    cells: list[list[np.ndarray]] = []
    cell_h = cell_w = None
    for i in range(len(identity_labels)):
        for r in rows:
            imgs = np.asarray(render(i, r.keyframes))
            if imgs.ndim != 4 or imgs.shape[0] != len(r.keyframes) or imgs.shape[3] != 3 or imgs.dtype != np.uint8:
                raise InputError(f"render must return uint8 [{len(r.keyframes)}, H, W, 3], got {imgs.dtype} {imgs.shape}")
            if cell_h is None:
                cell_h, cell_w = imgs.shape[1:3]
            elif imgs.shape[1:3] != (cell_h, cell_w):
                raise InputError(f"all cells must share one size, got {imgs.shape[1:3]} and {(cell_h, cell_w)}")
            cells.append(list(imgs))

    small = max(9, min(16, cell_w // 9))
    big = small + 4
    f_small, f_big = _font(small), _font(big)
    pad = max(2, cell_w // 32)
    label_w = label_width or max(60, int(small * 7.5))
    cap_h = small + 2 * pad  # column captions above each row
    head_h = big + 2 * pad  # identity caption above each block
    title_h = (big + 3 * pad) if title else 0
    block_h = head_h + len(rows) * (cap_h + cell_h + pad)
    W = label_w + columns * (cell_w + pad) + pad
    H = title_h + len(identity_labels) * block_h + pad
    sheet = Image.new("RGB", (W, H), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    ink, grey = (20, 20, 20), (90, 90, 90)
    if title:
        draw.text((pad, pad), _fit(draw, title, f_big, W - 2 * pad), fill=ink, font=f_big)
    k = 0
    for i, name in enumerate(identity_labels):
        y = title_h + i * block_h
        draw.text((pad, y + pad), _fit(draw, name, f_big, W - 2 * pad), fill=ink, font=f_big)
        draw.line([(pad, y + head_h - 1), (W - pad, y + head_h - 1)], fill=(200, 200, 200))
        y += head_h
        for r in rows:
            imgs = cells[k]
            k += 1
            for c, img in enumerate(imgs):
                x = label_w + c * (cell_w + pad)
                cap = _fit(draw, r.column_labels[c] if c < len(r.column_labels) else "", f_small, cell_w)
                draw.text((x + (cell_w - _text_width(draw, cap, f_small)) // 2, y + pad), cap, fill=grey, font=f_small)
                sheet.paste(Image.fromarray(img), (x, y + cap_h))
            draw.text((pad, y + cap_h + cell_h // 2 - small // 2), _fit(draw, r.label, f_small, label_w - 2 * pad),
                      fill=ink, font=f_small)
            y += cap_h + cell_h + pad
    return sheet


def generator_contact_sheet(model, seeds: Sequence[int], columns: int = 5, psi: float = DEFAULT_PSI,
                            resolution: int | None = None, batch_size: int = 8, title: str | None = None,
                            view: str = "portrait"):
    """Figure-3 sheet of a generator (``InferenceModel``) for a few seeds; ``view="face"`` shows
    the dual face camera instead of the portrait."""
    if resolution is None and view == "face":
        resolution = model.face_resolution
    sources = [GeneratorFrames(model, int(s), psi=psi, resolution=resolution, view=view) for s in seeds]

    def render(i: int, kf: Keyframes) -> np.ndarray:
        parts = [sources[i](kf[j:j + batch_size]) for j in range(0, len(kf), batch_size)]
        return np.concatenate(parts)

    return contact_sheet(render, [f"seed {s}" for s in seeds], control_rows(columns), title=title)


__all__ = ["EXPRESSIONS", "SheetRow", "contact_sheet", "control_rows", "generator_contact_sheet"]
