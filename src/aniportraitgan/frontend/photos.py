"""Reading real photos and resampling them: the image side of `data prepare`.

`read_photo` decodes any file PIL reads (EXIF orientation applied, alpha composited on white,
JPEGs decoded at a reduced DCT scale when they are much larger than needed) and turns every
failure into a `PhotoRejected` with a reason for the report. `Similarity` is the crop: a scale
and a translation in pixel coordinates (u right, v down, pixel centres at +0.5), no rotation,
since the main camera of the dataset has no roll (a tilted head is a head rotation).
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# Report reasons (docs/dataset.md lists them).
UNREADABLE = "unreadable file"
TOO_SMALL_IMAGE = "image too small"
NO_FACE = "no face"
SEVERAL_FACES = "several faces"
FACE_TOO_SMALL = "face too small"
SHOULDERS_CUT_OFF = "shoulders cut off"
HEAD_CUT_OFF = "head cut off"
POSE_OUT_OF_RANGE = "pose outside the supported range"
FIT_FAILED = "fit failed"
DETECTION_FAILED = "detection failed"
REASONS = (UNREADABLE, TOO_SMALL_IMAGE, NO_FACE, SEVERAL_FACES, FACE_TOO_SMALL, SHOULDERS_CUT_OFF, HEAD_CUT_OFF,
           POSE_OUT_OF_RANGE, FIT_FAILED, DETECTION_FAILED)
MIN_SIDE = 32  # pixels: below this no photo holds a usable face
MAX_PIXELS = 400_000_000  # header size above which a file is refused (decoding it would take GBs)


class PhotoRejected(Exception):
    """A photo that cannot go into the dataset: `reason` (one of REASONS) and a detail."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


@dataclass
class Photo:
    rgb: np.ndarray  # [H, W, 3] uint8, the working copy
    original_size: tuple[int, int]  # (W, H) of the file after EXIF orientation
    scale: float  # working pixels per original pixel (<= 1)


def read_photo(path: str | os.PathLike, max_side: int = 2048) -> Photo:
    """Decode `path` into an RGB working copy whose longer side is at most `max_side`."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    path = Path(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            limit, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, MAX_PIXELS
            try:
                im = Image.open(path)
            finally:
                Image.MAX_IMAGE_PIXELS = limit
            with im:
                W, H = im.size
                if min(W, H) < MIN_SIDE:
                    raise PhotoRejected(TOO_SMALL_IMAGE, f"{W}x{H} pixels")
                if im.format == "JPEG" and max(W, H) > 2 * max_side:
                    # DCT-domain reduction: a 24-megapixel JPEG decodes at 1/2, 1/4 or 1/8 size
                    f = max(W, H) / max_side
                    im.draft("RGB", (int(W / f) + 1, int(H / f) + 1))
                swapped = im.getexif().get(0x0112, 1) in (5, 6, 7, 8)  # EXIF orientation turns it by 90 degrees
                im = ImageOps.exif_transpose(im)
                im.load()
                if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
                    rgba = im.convert("RGBA")
                    white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
                    im = Image.alpha_composite(white, rgba)
                im = im.convert("RGB")
                decoded = im.size
                if max(decoded) > max_side:
                    f = max_side / max(decoded)
                    im = im.resize((max(1, round(decoded[0] * f)), max(1, round(decoded[1] * f))), Image.BILINEAR, reducing_gap=2.0)
                rgb = np.asarray(im, dtype=np.uint8)
    except PhotoRejected:
        raise
    except Image.DecompressionBombError as exc:
        raise PhotoRejected(UNREADABLE, f"image too large ({exc})") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError) as exc:
        raise PhotoRejected(UNREADABLE, f"{type(exc).__name__}: {exc}") from None
    W0, H0 = (H, W) if swapped else (W, H)
    return Photo(np.ascontiguousarray(rgb), (W0, H0), rgb.shape[1] / W0)


@dataclass
class Similarity:
    """p' = scale * p + shift, in pixel coordinates (centres at +0.5)."""

    scale: float
    shift: np.ndarray  # [2]

    def apply(self, points: np.ndarray) -> np.ndarray:
        return np.asarray(points, dtype=np.float64) * self.scale + self.shift

    def then(self, other: Similarity) -> Similarity:
        """This map followed by `other`."""
        return Similarity(self.scale * other.scale, other.scale * self.shift + other.shift)

    @staticmethod
    def fit(src: np.ndarray, dst: np.ndarray, weights: np.ndarray | None = None) -> Similarity:
        """Least-squares scale and shift taking src [N, 2] to dst [N, 2]."""
        src, dst = np.asarray(src, np.float64), np.asarray(dst, np.float64)
        w = np.ones(len(src)) if weights is None else np.asarray(weights, np.float64)
        w = w / w.sum()
        ms, md = w @ src, w @ dst
        a, b = src - ms, dst - md
        scale = float((w[:, None] * a * b).sum() / max((w[:, None] * a * a).sum(), 1e-12))
        return Similarity(scale, md - scale * ms)

    def cv2_matrix(self, scale_xy: tuple[float, float] = (1.0, 1.0)) -> np.ndarray:
        """The 2x3 matrix for cv2.warpAffine (integer pixel centres) of this map applied to an
        image first resized by `scale_xy`."""
        sx, sy = self.scale / scale_xy[0], self.scale / scale_xy[1]
        return np.array([[sx, 0.0, self.shift[0] + 0.5 * sx - 0.5], [0.0, sy, self.shift[1] + 0.5 * sy - 0.5]])


def warp(image: np.ndarray, sim: Similarity, size: int, border: float | None = None) -> np.ndarray:
    """Resample `image` ([H, W] or [H, W, C]) through `sim` into size x size; outside the image
    is `border`, or (None) its edge pixels repeated. A large reduction first goes through an area
    resize, so that the crop is not aliased."""
    import cv2

    H, W = image.shape[:2]
    scale_xy = (1.0, 1.0)
    if sim.scale < 0.8:
        w, h = max(1, round(W * sim.scale)), max(1, round(H * sim.scale))
        image = cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA)
        scale_xy = (w / W, h / H)
    mode = cv2.BORDER_REPLICATE if border is None else cv2.BORDER_CONSTANT
    value = (0.0 if border is None else border,) * (image.shape[2] if image.ndim == 3 else 1)
    return cv2.warpAffine(image, sim.cv2_matrix(scale_xy), (size, size), flags=cv2.INTER_LINEAR, borderMode=mode, borderValue=value)


def white_background(rgb: np.ndarray, mask: np.ndarray, low: float = 0.25, high: float = 0.75) -> np.ndarray:
    """Composite the person (mask [H, W] in [0, 1], soft edges sharpened to [low, high]) on white."""
    m = np.clip((mask.astype(np.float32) - low) / (high - low), 0.0, 1.0)[..., None]
    out = rgb.astype(np.float32) * m + 255.0 * (1.0 - m)
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)
