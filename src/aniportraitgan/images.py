"""Image conventions shared by every layer: generator images are float [-1, 1], files are 8-bit.

One home for the conversion (``(x + 1) * 127.5``, rounded) and for the range of image sides the
commands accept.
"""

from __future__ import annotations

import numpy as np
import torch

from aniportraitgan.errors import InputError

MIN_RESOLUTION = 8  # pixels; below this a portrait holds no face
MAX_RESOLUTION = 4096  # pixels; above this a render exceeds any sensible memory budget


def check_resolution(value, name: str = "resolution", error: type[Exception] = InputError) -> int:
    """``value`` as an int in [MIN_RESOLUTION, MAX_RESOLUTION], else ``error`` naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int) or not MIN_RESOLUTION <= value <= MAX_RESOLUTION:
        raise error(f"{name} must be an int in [{MIN_RESOLUTION}, {MAX_RESOLUTION}], got {value!r}")
    return value


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """Images in [-1, 1] (any layout) -> uint8 levels round((x + 1) * 127.5), same layout."""
    return ((x.detach().float().clamp(-1.0, 1.0) + 1.0) * 127.5).round().to(torch.uint8)


def from_uint8(x: torch.Tensor) -> torch.Tensor:
    """uint8 levels -> float images in [-1, 1] (the inverse of ``to_uint8`` up to rounding)."""
    return x.float() / 127.5 - 1.0


def to_uint8_images(x: torch.Tensor) -> np.ndarray:
    """Generator images [B, 3, H, W] in [-1, 1] -> uint8 numpy [B, H, W, 3]."""
    return to_uint8(x).permute(0, 2, 3, 1).cpu().numpy()
