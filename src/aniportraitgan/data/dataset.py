"""The on-disk portrait dataset format (docs/dataset.md) and `PortraitDataset`.

Layout of a dataset folder::

    DIR/dataset.json            the card: format version, counts, resolutions, label statistics,
                                generator and its version, label priors (synthetic data)
    DIR/labels.npz              arrays keyed by name, one row per sample, rows in `index` order
    DIR/portraits/000000.png    portrait from the main camera, RGB, resolution x resolution
    DIR/faces/000000.png        aligned face from the face camera, face_resolution squared

Synthetic data (`aniportraitgan data synth`) and real photos (`aniportraitgan data prepare`) use
the same format.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from aniportraitgan.atomic import atomic_write_bytes
from aniportraitgan.errors import AssetError, InputError
from aniportraitgan.images import from_uint8

FORMAT_NAME = "aniportraitgan-portraits"
FORMAT_VERSION = 1
CARD_FILE = "dataset.json"
LABELS_FILE = "labels.npz"
LABELS_CHECKSUM = "_sha256"  # the npz entry holding labels_digest of the other arrays
PORTRAIT_DIR = "portraits"
FACE_DIR = "faces"

# Label arrays and their per-row shapes (None: any size along that axis). `index` holds the
# sample ids; the image of row k is f"{index[k]:06d}.png".
LABEL_SHAPES: dict[str, tuple[int | None, ...]] = {
    "index": (),
    "z_id": (None,),
    "z_exp": (52,),
    "z_pose": (6, 3),
    "cam_yaw": (),  # radians
    "cam_pitch": (),  # radians
    "cam_radius": (),  # metres
    "cam_fov": (),  # degrees, vertical
    "cam_look_at": (3,),  # scene metres
    "c2w": (4, 4),  # main camera, OpenCV axes, scene space
    "face_yaw": (),  # face camera angles relative to the head frame, radians
    "face_pitch": (),
    "face_c2w": (4, 4),
    "face_fov": (),
    "head_center": (3,),  # scene metres, posed
    "head_rotation": (3, 3),
    "landmarks": (68, 2),  # iBUG 68, pixels of the portrait image (u right, v down)
    "face_landmarks": (68, 2),  # pixels of the face image
    "detected_landmarks": (68, 2),  # real photos: the detected points the fit matched, portrait pixels
    "fit_error_px": (),  # real photos: mean landmark fit error, portrait pixels
}
# What every dataset must have (real photos included); the rest is optional.
REQUIRED_LABELS = ("index", "z_id", "z_exp", "z_pose", "cam_yaw", "cam_pitch", "cam_radius", "cam_fov", "cam_look_at")
# Label arrays in pixel units: rescaled with the image when a dataset is read at another size.
PIXEL_LABELS = {"landmarks": PORTRAIT_DIR, "face_landmarks": FACE_DIR, "detected_landmarks": PORTRAIT_DIR, "fit_error_px": PORTRAIT_DIR}


def image_name(index: int) -> str:
    return f"{int(index):06d}.png"


def portrait_path(root: str | os.PathLike, index: int) -> Path:
    return Path(root) / PORTRAIT_DIR / image_name(index)


def face_path(root: str | os.PathLike, index: int) -> Path:
    return Path(root) / FACE_DIR / image_name(index)


# ----------------------------------------------------------------------------- atomic writes


def labels_digest(labels: Mapping[str, np.ndarray]) -> str:
    """SHA-256 of the label arrays: names, dtypes, shapes and bytes, in name order."""
    h = hashlib.sha256()
    for k in sorted(labels):
        a = np.ascontiguousarray(labels[k])
        h.update(f"{k}:{a.dtype.str}:{a.shape};".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def save_labels(path: str | os.PathLike, labels: Mapping[str, np.ndarray]) -> None:
    """Write the labels file atomically (uncompressed npz, arrays keyed by name) with the
    SHA-256 of its arrays in the `LABELS_CHECKSUM` entry."""
    check_labels(labels, source=str(path))
    import io

    arrays = {k: np.asarray(v) for k, v in labels.items() if k != LABELS_CHECKSUM}
    buf = io.BytesIO()
    np.savez(buf, **arrays, **{LABELS_CHECKSUM: np.array(labels_digest(arrays))})
    atomic_write_bytes(path, buf.getvalue())


def load_labels(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """The label arrays of a labels file, checked (`check_labels`) and, when the file has one
    (files written before checksums have none), against their checksum."""
    path = Path(path)
    if not path.is_file():
        raise AssetError(f"labels file missing: {path}")
    try:
        with np.load(path, allow_pickle=False) as z:
            labels = {k: z[k] for k in z.files}
    except Exception as exc:  # noqa: BLE001 - a damaged npz raises many kinds (zipfile, ast, tokenize)
        raise AssetError(f"labels file {path} is corrupt: {type(exc).__name__}: {exc}") from None
    claimed = labels.pop(LABELS_CHECKSUM, None)
    if claimed is not None and str(claimed) != labels_digest(labels):
        raise AssetError(f"labels file {path} is corrupt (the SHA-256 of its arrays does not match the one it records)")
    check_labels(labels, source=str(path))
    return labels


def check_labels(labels: Mapping[str, np.ndarray], source: str = "labels") -> int:
    """Validate names, per-row shapes and row counts; returns the number of rows."""
    missing = [k for k in REQUIRED_LABELS if k not in labels]
    if missing:
        raise AssetError(f"{source}: missing label arrays {missing}")
    n = len(labels["index"])
    for name, arr in labels.items():
        arr = np.asarray(arr)
        if arr.ndim == 0 or len(arr) != n:
            raise AssetError(f"{source}: label '{name}' has {arr.shape[0] if arr.ndim else 0} rows, expected {n} (one per sample)")
        want = LABEL_SHAPES.get(name)
        if want is not None:
            got = arr.shape[1:]
            if len(got) != len(want) or any(w is not None and g != w for g, w in zip(got, want)):
                raise AssetError(f"{source}: label '{name}' rows have shape {got}, expected {want}")
        if arr.dtype.kind == "f" and not np.all(np.isfinite(arr)):
            raise AssetError(f"{source}: label '{name}' contains NaN or inf")
    idx = np.asarray(labels["index"])
    if idx.dtype.kind not in "iu":
        raise AssetError(f"{source}: 'index' must be integers, got {idx.dtype}")
    if len(np.unique(idx)) != n or (n and idx.min() < 0):
        raise AssetError(f"{source}: 'index' must hold distinct non-negative sample ids")
    return n


def label_statistics(labels: Mapping[str, np.ndarray]) -> dict[str, dict[str, Any]]:
    """Per-array mean/std/min/max (over rows; per component for small arrays) for the card."""
    stats: dict[str, dict[str, Any]] = {}
    for name, arr in labels.items():
        arr = np.asarray(arr)
        if name == "index" or arr.dtype.kind not in "fiub" or len(arr) == 0:
            continue
        a = arr.astype(np.float64).reshape(len(arr), -1)
        entry: dict[str, Any] = {"shape": list(arr.shape[1:])}
        if a.shape[1] <= 16:
            entry.update(
                mean=np.round(a.mean(0), 6).tolist(),
                std=np.round(a.std(0), 6).tolist(),
                min=np.round(a.min(0), 6).tolist(),
                max=np.round(a.max(0), 6).tolist(),
            )
        else:
            entry.update(
                mean=round(float(a.mean()), 6),
                std=round(float(a.std()), 6),
                min=round(float(a.min()), 6),
                max=round(float(a.max()), 6),
            )
        stats[name] = entry
    return stats


def build_card(
    labels: Mapping[str, np.ndarray],
    resolution: int,
    face_resolution: int,
    generator: str,
    generator_version: str,
    **extra: Any,
) -> dict[str, Any]:
    """The dataset card for these labels (counts, resolutions, label statistics, provenance)."""
    n = check_labels(labels)
    card: dict[str, Any] = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "num_samples": int(n),
        "resolution": int(resolution),
        "face_resolution": int(face_resolution),
        "files": {
            "labels": LABELS_FILE,
            "portraits": f"{PORTRAIT_DIR}/{{index:06d}}.png",
            "faces": f"{FACE_DIR}/{{index:06d}}.png",
        },
        "generator": generator,
        "generator_version": generator_version,
    }
    card.update(extra)
    card["label_statistics"] = label_statistics(labels)
    return card


def write_dataset(
    root: str | os.PathLike,
    labels: Mapping[str, np.ndarray],
    resolution: int,
    face_resolution: int,
    generator: str,
    generator_version: str,
    **extra: Any,
) -> dict[str, Any]:
    """Finish a dataset folder whose images are written: the labels file, then the card (both
    atomic; the card last, so a reader never sees a card whose labels are not there yet)."""
    card = build_card(labels, resolution, face_resolution, generator, generator_version, **extra)
    save_labels(Path(root) / LABELS_FILE, labels)
    write_card(root, card)
    return card


def write_card(root: str | os.PathLike, card: Mapping[str, Any]) -> None:
    data = json.dumps(card, indent=2, sort_keys=False).encode() + b"\n"
    atomic_write_bytes(Path(root) / CARD_FILE, data)


def read_card(root: str | os.PathLike) -> dict[str, Any]:
    path = Path(root) / CARD_FILE
    if not path.is_file():
        raise AssetError(f"dataset card missing: {path} (not a dataset folder?)")
    try:
        card = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise AssetError(f"dataset card {path} is not valid JSON: {exc}") from None
    if not isinstance(card, dict) or card.get("format") != FORMAT_NAME:
        raise AssetError(f"dataset card {path}: 'format' must be '{FORMAT_NAME}'")
    if int(card.get("format_version", -1)) > FORMAT_VERSION:
        raise AssetError(
            f"dataset card {path}: format_version {card.get('format_version')} is newer than this "
            f"reader ({FORMAT_VERSION})"
        )
    for key in ("num_samples", "resolution", "face_resolution"):
        if not isinstance(card.get(key), int) or card[key] < 0:
            raise AssetError(f"dataset card {path}: '{key}' must be a non-negative integer")
    return card


# ------------------------------------------------------------------------------- image I/O


def read_png(path: Path, size: int | None = None) -> np.ndarray:
    """An RGB image [H, W, 3] uint8; AssetError naming the file when missing/corrupt/wrong size."""
    from PIL import Image, UnidentifiedImageError

    if not path.is_file():
        raise AssetError(f"image missing: {path}")
    try:
        with Image.open(path) as im:
            im.load()
            arr = np.array(im.convert("RGB"))
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as exc:
        raise AssetError(f"image {path} is corrupt or unreadable: {exc}") from None
    if size is not None and arr.shape[:2] != (size, size):
        raise AssetError(f"image {path} is {arr.shape[1]}x{arr.shape[0]}, the card says {size}x{size}")
    return arr


def write_png(path: str | os.PathLike, rgb: np.ndarray, compress_level: int = 1) -> None:
    """Write an RGB uint8 image [H, W, 3] as PNG, atomically (zlib level 1: fast, a little larger)."""
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(rgb)).save(buf, format="PNG", compress_level=compress_level)
    atomic_write_bytes(path, buf.getvalue())


def image_to_tensor(img: np.ndarray, size: int | None = None) -> torch.Tensor:
    """uint8 [H, W, 3] -> float [3, size, size] in [-1, 1], antialiased bilinear resize."""
    t = from_uint8(torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1))
    if size is not None and (t.shape[1] != size or t.shape[2] != size):
        t = F.interpolate(t[None], size=(size, size), mode="bilinear", antialias=True, align_corners=False)[0]
        t = t.clamp_(-1.0, 1.0)
    return t


# --------------------------------------------------------------------------------- dataset


@dataclass
class DatasetInfo:
    root: Path
    card: dict[str, Any]
    num_samples: int
    resolution: int
    face_resolution: int


class PortraitDataset(torch.utils.data.Dataset):
    """Reads a portrait dataset folder; items are dicts of tensors.

    Each item: "image" [3, R, R] and "face" [3, Rf, Rf] in [-1, 1] (resized with antialiasing
    when `resolution` / `face_resolution` differ from the stored ones), "index" (int64 0-d), and
    every label array of the row as float32 tensors (z_id, z_exp, z_pose, cam_*, ...); pixel
    labels (landmarks, face_landmarks) are rescaled to the returned image size.
    `load_faces=False` skips the face images (returns no "face").
    """

    def __init__(
        self,
        root: str | os.PathLike,
        resolution: int | None = None,
        face_resolution: int | None = None,
        load_faces: bool = True,
        check_files: bool = True,
    ) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise AssetError(f"dataset folder missing: {self.root}")
        for name, val in (("resolution", resolution), ("face_resolution", face_resolution)):
            if val is not None and (not isinstance(val, int) or val <= 0):
                raise InputError(f"{name} must be a positive int or None, got {val!r}")
        self.card = read_card(self.root)
        self.labels = load_labels(self.root / LABELS_FILE)
        n = len(self.labels["index"])
        if n != self.card["num_samples"]:
            raise AssetError(
                f"{self.root / LABELS_FILE} has {n} rows but {self.root / CARD_FILE} says num_samples={self.card['num_samples']}"
            )
        self.stored_resolution = int(self.card["resolution"])
        self.stored_face_resolution = int(self.card["face_resolution"])
        self.resolution = resolution or self.stored_resolution
        self.face_resolution = face_resolution or self.stored_face_resolution
        self.load_faces = load_faces
        self.index = np.asarray(self.labels["index"]).astype(np.int64)
        if check_files:
            self._check_files()
        # Float copies of the label rows, converted once.
        self._float_labels = {
            k: torch.from_numpy(np.ascontiguousarray(v, dtype=np.float32))
            for k, v in self.labels.items()
            if k != "index" and np.asarray(v).dtype.kind in "fiub"
        }

    def _check_files(self) -> None:
        folders = [PORTRAIT_DIR] + ([FACE_DIR] if self.load_faces else [])
        want = {image_name(i) for i in self.index}
        for folder in folders:
            d = self.root / folder
            if not d.is_dir():
                raise AssetError(f"image folder missing: {d}")
            have = {p for p in os.listdir(d) if p.endswith(".png") and not p.startswith(".")}
            missing = sorted(want - have)
            if missing:
                more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
                raise AssetError(f"image missing: {d / missing[0]}{more} (listed in {self.root / LABELS_FILE})")
            extra = sorted(have - want)
            if extra:
                more = f" and {len(extra) - 1} more" if len(extra) > 1 else ""
                raise AssetError(
                    f"image {d / extra[0]}{more} has no row in {self.root / LABELS_FILE}: labels and images do not match"
                )

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, k: int) -> dict[str, torch.Tensor]:
        if not -len(self) <= k < len(self):
            raise IndexError(f"sample {k} out of range for {len(self)} samples")
        k = k % len(self)
        idx = int(self.index[k])
        item: dict[str, torch.Tensor] = {"index": torch.tensor(idx, dtype=torch.int64)}
        img = read_png(portrait_path(self.root, idx), self.stored_resolution)
        item["image"] = image_to_tensor(img, self.resolution)
        if self.load_faces:
            face = read_png(face_path(self.root, idx), self.stored_face_resolution)
            item["face"] = image_to_tensor(face, self.face_resolution)
        scales = {PORTRAIT_DIR: self.resolution / self.stored_resolution,
                  FACE_DIR: self.face_resolution / max(self.stored_face_resolution, 1)}
        for name, t in self._float_labels.items():
            row = t[k]
            if name in PIXEL_LABELS:
                # Pixel centres at (j + 0.5): coordinates scale exactly with the image size.
                row = row * scales[PIXEL_LABELS[name]]
            item[name] = row
        return item

    def label_array(self, name: str) -> np.ndarray:
        if name not in self.labels:
            raise InputError(f"dataset {self.root} has no label '{name}'; it has {sorted(self.labels)}")
        return self.labels[name]
