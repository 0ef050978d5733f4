"""ARKit blendshape recordings: the CSV that phone face-capture apps (Live Link Face) export.

Layout: a header row, then one row per captured frame. Columns, matched case-insensitively
and ignoring spaces, `_` and `-`:

* `Timecode` (optional): `HH:MM:SS:FF` or `HH:MM:SS:FF.fff`; the frame rate is the number of
  rows per whole second of timecode (the median over the recording's inner seconds);
* one column per ARKit blendshape (`EyeBlinkLeft`, `JawOpen`, `MouthSmileLeft`, ... in any
  order): values in [0, 1] (up to `VALUE_TOLERANCE` outside is clipped), mapped to the body
  model's order; blendshapes the file lacks stay 0 and are reported;
* `HeadYaw`, `HeadPitch`, `HeadRoll` (optional, radians): right-handed rotations about ARKit's
  face axes, which are the project's scene axes (x the subject's left, y up, z out of the face):
  yaw turns the face toward the subject's left, pitch tilts it down, roll toward the subject's
  right shoulder; R = Ry(yaw) Rx(pitch) Rz(roll) is the head rotation, split over the neck and
  head joints by the project's one rule (`presets.set_head_rotation`);
* `BlendShapeCount` and the eye rotations (`LeftEyeYaw` ...; the gaze is in the eyeLook*
  blendshapes) are known and not used; any other column is reported as unknown.

A missing or empty cell, a value that is not a number, NaN or inf is an error naming the row
and the column. The camera stays frontal.
"""

from __future__ import annotations

import csv
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from aniportraitgan.animation.keyframes import ARKIT_NAMES, NUM_JOINTS, Keyframes
from aniportraitgan.animation.presets import set_head_rotation
from aniportraitgan.errors import AssetError, InputError
from aniportraitgan.rotations import euler_zyx_to_matrix, matrix_to_axis_angle

DEFAULT_FPS = 60.0  # Live Link Face records at 60 frames/s; used when the file has no timecode
VALUE_TOLERANCE = 0.01
HEAD_COLUMNS = ("headyaw", "headpitch", "headroll")
IGNORED_COLUMNS = ("blendshapecount", "lefteyeyaw", "lefteyepitch", "lefteyeroll", "righteyeyaw", "righteyepitch",
                   "righteyeroll")
_TIMECODE = re.compile(r"^\s*(\d+):(\d{1,2}):(\d{1,2})[:;](\d+)(?:\.\d+)?\s*$")


def _key(name: str) -> str:
    return re.sub(r"[\s_\-]", "", name).lower()


@dataclass
class ArkitClip:
    keyframes: Keyframes
    fps: float
    fps_source: str  # "timecode" or "default"
    blendshapes_used: list[str] = field(default_factory=list)
    missing_blendshapes: list[str] = field(default_factory=list)
    unknown_columns: list[str] = field(default_factory=list)
    ignored_columns: list[str] = field(default_factory=list)
    head: bool = False
    clipped_values: int = 0

    def summary(self) -> str:
        n = len(self.keyframes)
        lines = [f"{n} frames at {self.fps:g} frames/s ({ {'timecode': 'from the timecodes', 'given': 'as given'}.get(self.fps_source, 'no usable timecode (under 3 s): the Live Link Face rate') }); "
                 f"{len(self.blendshapes_used)} blendshapes, head rotation {'from HeadYaw/HeadPitch/HeadRoll' if self.head else 'none (held still)'}"]
        if self.missing_blendshapes:
            lines.append(f"not in the file (held at 0): {', '.join(self.missing_blendshapes)}")
        if self.unknown_columns:
            lines.append(f"unknown columns, not used: {', '.join(self.unknown_columns)}")
        if self.clipped_values:
            lines.append(f"{self.clipped_values} values slightly outside [0, 1] were clipped")
        return "\n".join(lines)


def _rows(path: Path) -> tuple[list[str], list[list[str]]]:
    if not path.is_file():
        raise AssetError(f"CSV file not found: {path}")
    try:
        with path.open(newline="", encoding="utf-8-sig") as fh:
            table = [row for row in csv.reader(fh) if any(c.strip() for c in row)]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise AssetError(f"{path}: cannot read the CSV ({exc})") from None
    if len(table) < 2:
        raise InputError(f"{path}: needs a header row and at least one frame, got {len(table)} rows")
    return [c.strip() for c in table[0]], table[1:]


def _fps_from_timecodes(codes: list[str], path: Path) -> float | None:
    seconds = []
    for i, code in enumerate(codes):
        m = _TIMECODE.match(code)
        if m is None:
            raise InputError(f"{path}: row {i + 2}: timecode {code!r} is not HH:MM:SS:FF[.fff]")
        h, mi, s, _ = (int(g) for g in m.groups())
        seconds.append(3600 * h + 60 * mi + s)
    _, counts = np.unique(np.asarray(seconds), return_counts=True)
    inner = counts[1:-1]  # the first and last seconds are partial
    return float(np.median(inner)) if len(inner) else None


def load_arkit_csv(path: str | Path, fps: float | None = None) -> ArkitClip:
    """Read a Live Link Face style CSV (see the module docstring). `fps` overrides the rate."""
    path = Path(path)
    header, rows = _rows(path)
    keys = [_key(h) for h in header]
    dup = {k for k in keys if keys.count(k) > 1 and k}
    if dup:
        raise InputError(f"{path}: columns appear twice: {', '.join(sorted(dup))}")
    by_key = {_key(n): i for i, n in enumerate(ARKIT_NAMES)}
    exp_cols, head_cols, unknown, ignored, time_col = {}, {}, [], [], None
    for c, (name, k) in enumerate(zip(header, keys)):
        if k == "timecode":
            time_col = c
        elif k in by_key:
            exp_cols[by_key[k]] = c
        elif k in HEAD_COLUMNS:
            head_cols[k] = c
        elif k in IGNORED_COLUMNS:
            ignored.append(name)
        else:
            unknown.append(name or f"(unnamed column {c + 1})")
    if not exp_cols and not head_cols:
        raise InputError(f"{path}: no ARKit blendshape (e.g. JawOpen, EyeBlinkLeft) or HeadYaw/HeadPitch/HeadRoll column "
                         f"in the header {header[:8]}{' ...' if len(header) > 8 else ''}")
    if head_cols and len(head_cols) != 3:
        raise InputError(f"{path}: head rotation needs all of HeadYaw, HeadPitch, HeadRoll; got {sorted(head_cols)}")
    for i, row in enumerate(rows):
        if len(row) < len(header):
            raise InputError(f"{path}: row {i + 2} has {len(row)} cells, the header {len(header)}")
    N = len(rows)

    def column(c: int) -> np.ndarray:
        out = np.empty(N)
        for i, row in enumerate(rows):
            cell = row[c].strip()
            try:
                out[i] = float(cell)
            except ValueError:
                raise InputError(f"{path}: row {i + 2}, column {header[c]}: {cell!r} is not a number") from None
            if not math.isfinite(out[i]):
                raise InputError(f"{path}: row {i + 2}, column {header[c]}: {cell} (NaN or inf)")
        return out

    exp = np.zeros((N, len(ARKIT_NAMES)))
    for j, c in exp_cols.items():
        exp[:, j] = column(c)
    lo, hi = exp.min(), exp.max()
    if lo < -VALUE_TOLERANCE or hi > 1 + VALUE_TOLERANCE:
        j, c = next((j, c) for j, c in exp_cols.items() if exp[:, j].min() < -VALUE_TOLERANCE or exp[:, j].max() > 1 + VALUE_TOLERANCE)
        raise InputError(f"{path}: column {header[c]} has values in [{exp[:, j].min():.3g}, {exp[:, j].max():.3g}]; "
                         "ARKit blendshapes are in [0, 1]")
    clipped = int(((exp < 0) | (exp > 1)).sum())
    pose = torch.zeros(N, NUM_JOINTS, 3)
    if head_cols:
        yaw, pitch, roll = (column(head_cols[k]) for k in HEAD_COLUMNS)
        if max(np.abs(yaw).max(), np.abs(pitch).max(), np.abs(roll).max()) > math.pi:
            raise InputError(f"{path}: head angles reach {max(np.abs(yaw).max(), np.abs(pitch).max(), np.abs(roll).max()):.3g}; "
                             "they are read as radians (|angle| <= pi): is the file in degrees?")
        Ry = euler_zyx_to_matrix(torch.tensor(np.stack([0 * yaw, yaw, 0 * yaw], 1)))
        Rx = euler_zyx_to_matrix(torch.tensor(np.stack([0 * pitch, 0 * pitch, pitch], 1)))
        Rz = euler_zyx_to_matrix(torch.tensor(np.stack([roll, 0 * roll, 0 * roll], 1)))
        set_head_rotation(pose, matrix_to_axis_angle(Ry @ Rx @ Rz).float())
    if fps is not None:
        rate, source = float(fps), "given"
    else:
        rate = _fps_from_timecodes([r[time_col] for r in rows], path) if time_col is not None else None
        rate, source = (rate, "timecode") if rate else (DEFAULT_FPS, "default")
    if not (math.isfinite(rate) and 0 < rate <= 240):
        raise InputError(f"{path}: frame rate {rate:g} is not in (0, 240]")
    kf = Keyframes(torch.from_numpy(np.clip(exp, 0, 1)).float(), pose, torch.zeros(N, 2))
    return ArkitClip(kf, rate, source, [ARKIT_NAMES[j] for j in sorted(exp_cols)],
                     [n for j, n in enumerate(ARKIT_NAMES) if j not in exp_cols], unknown, ignored, bool(head_cols), clipped)
