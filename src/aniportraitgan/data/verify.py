"""Checking a portrait dataset before a long run: `aniportraitgan data verify DIR`, and the fast
path `train` runs before step 0 (a bad file stops the run at the start, not at step 7).

What is checked, in order: the card (`dataset.json`), the labels (`labels.npz`: readable, every
array's shape and row count, finite values, distinct ids), the counts (labels rows == the card's
`num_samples`; one portrait and one face per row, no image without a row), and every image:

* fast (`full=False`): its size on disk, the PNG signature, the IHDR width and height against
  the card's resolution, and the IEND chunk at the end (a truncated or 0-byte PNG fails); about
  two small reads per file;
* full: the above, then every image decoded.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from aniportraitgan.data.dataset import (
    CARD_FILE,
    FACE_DIR,
    LABELS_FILE,
    PORTRAIT_DIR,
    image_name,
    load_labels,
    read_card,
    read_png,
)
from aniportraitgan.errors import AssetError

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_IEND = b"\x00\x00\x00\x00IEND\xaeB`\x82"  # length 0, type, CRC: the last 12 bytes of every PNG
_MIN_PNG = len(PNG_SIGNATURE) + 25 + len(_IEND)  # signature, IHDR chunk, IEND chunk
SHOWN = 10  # problems listed in the error


def png_problem(path: Path, size: int | None = None) -> str | None:
    """The fast check of one PNG: None when its header and end look whole (and, with `size`,
    IHDR says size x size), else what is wrong."""
    try:
        n = path.stat().st_size
        if n < _MIN_PNG:
            return f"{path}: {n} bytes, too short for a PNG"
        with open(path, "rb") as fh:
            head = fh.read(len(PNG_SIGNATURE) + 16)
            fh.seek(n - len(_IEND))
            tail = fh.read(len(_IEND))
    except FileNotFoundError:
        return f"{path}: missing"
    except OSError as exc:
        return f"{path}: unreadable ({exc.strerror or exc})"
    if head[:8] != PNG_SIGNATURE or head[12:16] != b"IHDR":
        return f"{path}: not a PNG (bad signature or header)"
    if tail != _IEND:
        return f"{path}: truncated (no IEND chunk at the end)"
    width, height = struct.unpack(">II", head[16:24]) if len(head) >= 24 else (0, 0)
    if size is not None and (width, height) != (size, size):
        return f"{path}: {width}x{height}, the card says {size}x{size}"
    return None


def _image_problem(path: Path, size: int, full: bool) -> str | None:
    problem = png_problem(path, size)
    if problem is None and full:
        try:
            read_png(path, size)
        except AssetError as exc:
            return str(exc)
    return problem


@dataclass
class VerifyReport:
    root: Path
    full: bool
    num_samples: int = 0
    images_checked: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        how = "decoded" if self.full else "header-checked"
        if self.ok:
            return f"{self.root}: OK ({self.num_samples} samples, {self.images_checked} images {how})"
        shown = "\n  ".join(self.problems[:SHOWN])
        more = f"\n  ... and {len(self.problems) - SHOWN} more" if len(self.problems) > SHOWN else ""
        return f"{self.root}: {len(self.problems)} problem(s) ({self.images_checked} images {how}):\n  {shown}{more}"

    def raise_if_bad(self) -> None:
        if not self.ok:
            raise AssetError(f"dataset {self.summary()}\nRe-create the bad files (`data synth` re-renders them on "
                             f"resume) or remove their samples; `aniportraitgan data verify DIR` checks again")


def verify_dataset(root: str | os.PathLike, full: bool = True, progress: bool = False) -> VerifyReport:
    """Check a dataset folder (see the module docstring); the report lists every problem."""
    root = Path(root)
    report = VerifyReport(root, full)
    try:
        card = read_card(root)
        labels = load_labels(root / LABELS_FILE)
    except AssetError as exc:
        report.problems.append(str(exc))
        return report
    ids = [int(i) for i in labels["index"]]
    report.num_samples = len(ids)
    if len(ids) != card["num_samples"]:
        report.problems.append(f"{root / LABELS_FILE} has {len(ids)} rows, {root / CARD_FILE} says "
                               f"num_samples={card['num_samples']}")
    if card.get("complete") is False:
        report.problems.append(f"{root / CARD_FILE} says the dataset is incomplete (an interrupted `data synth`: "
                               f"run it again to finish)")
    want = {image_name(i) for i in ids}
    for folder, size in ((PORTRAIT_DIR, int(card["resolution"])), (FACE_DIR, int(card["face_resolution"]))):
        d = root / folder
        have = {p for p in os.listdir(d) if p.endswith(".png") and not p.startswith(".")} if d.is_dir() else set()
        report.problems += [f"{d / name}: missing (listed in {LABELS_FILE})" for name in sorted(want - have)]
        report.problems += [f"{d / name}: has no row in {LABELS_FILE}" for name in sorted(have - want)]
        for name in tqdm(sorted(want & have), desc=f"verify {folder}", unit="image", disable=not progress):
            problem = _image_problem(d / name, size, full)
            report.images_checked += 1
            if problem is not None:
                report.problems.append(problem)
    return report
