"""Reading driving videos: frames, frame rate, size and audio (imageio-ffmpeg's ffmpeg).

`open_video(path)` starts the decoder and returns a `VideoReader` whose `info` (frame rate, size
after the file's rotation flag, duration, audio codec) is known before the first frame; iterate
it for RGB uint8 frames [H, W, 3]. Frames larger than `max_side` are scaled down by ffmpeg
(area filter) while decoding. Every failure is an `AssetError` naming the file and ffmpeg's own
reason (a missing file, not a video, no video stream, no decodable frame); a file that decodes
fewer frames than its header announces is reported by `VideoReader.truncated`, not refused, so
that the part that is there can still be used.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from aniportraitgan.errors import AssetError, UserError

MAX_FPS = 240.0
TRUNCATED_SHARE = 0.98  # fewer decoded frames than this share of the announced ones = truncated


@dataclass
class VideoInfo:
    path: str
    fps: float
    width: int  # of the frames as read (after rotation and any downscaling)
    height: int
    source_size: tuple[int, int]  # (W, H) in the file
    duration: float  # seconds, from the container (0 when unknown)
    audio_codec: str | None

    @property
    def has_audio(self) -> bool:
        return bool(self.audio_codec)

    @property
    def expected_frames(self) -> int | None:
        """Frames the header announces (duration x fps), None when it does not say."""
        return int(round(self.duration * self.fps)) if self.duration > 0 and self.fps > 0 else None


def _ffmpeg_reason(exc: BaseException) -> str:
    """The informative line of an imageio-ffmpeg error (ffmpeg's stderr is inside it)."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    keys = ("No such file", "Invalid data", "moov atom", "Nothing was written", "does not contain", "Permission denied")
    for key in keys:
        for ln in lines:
            if key in ln:
                return ln.split("] ", 1)[-1]
    return lines[-1] if lines else type(exc).__name__


def _scaled_size(width: int, height: int, max_side: int | None) -> tuple[int, int]:
    if not max_side or max(width, height) <= max_side:
        return width, height
    f = max_side / max(width, height)
    return max(2, 2 * round(width * f / 2)), max(2, 2 * round(height * f / 2))


class VideoReader:
    """Frames of one video file; use as an iterator once (or as a context manager)."""

    def __init__(self, path: str | os.PathLike, max_side: int | None = None) -> None:
        try:
            import imageio_ffmpeg
        except ImportError:
            raise UserError("reading videos needs imageio-ffmpeg: pip install 'aniportraitgan[video]'") from None

        self.path = Path(path)
        if not self.path.is_file():
            raise AssetError(f"video not found: {self.path}")
        self.frames_read = 0
        self._gen = None
        try:
            probe = imageio_ffmpeg.read_frames(str(self.path))
            meta = next(probe)
        except (OSError, RuntimeError, IndexError, StopIteration, ValueError) as exc:
            raise AssetError(f"cannot read video {self.path}: {_ffmpeg_reason(exc)}") from None
        W, H = (int(v) for v in meta["size"])
        fps = float(meta.get("fps") or 0.0)
        if not (math.isfinite(fps) and 0 < fps <= MAX_FPS):
            raise AssetError(f"video {self.path}: frame rate {fps:g} is not in (0, {MAX_FPS:g}] frames/s")
        w, h = _scaled_size(W, H, max_side)
        out = ["-vf", f"scale={w}:{h}:flags=area"] if (w, h) != (W, H) else None
        self.info = VideoInfo(str(self.path), fps, w, h, tuple(int(v) for v in meta.get("source_size", (W, H))),
                              float(meta.get("duration") or 0.0), meta.get("audio_codec"))
        if out is None:  # the probe is the reader
            self._gen = probe
            return
        probe.close()
        log = logging.getLogger("imageio_ffmpeg")  # it warns that the size read differs: we asked
        level = log.level
        log.setLevel(logging.ERROR)
        try:
            self._gen = imageio_ffmpeg.read_frames(str(self.path), output_params=out)
            next(self._gen)
        except (OSError, RuntimeError, IndexError, StopIteration, ValueError) as exc:
            raise AssetError(f"cannot read video {self.path}: {_ffmpeg_reason(exc)}") from None
        finally:
            log.setLevel(level)

    def __iter__(self) -> Iterator[np.ndarray]:
        if self._gen is None:
            raise UserError(f"video {self.path} was already read")
        W, H = self.info.width, self.info.height
        try:
            for raw in self._gen:
                if len(raw) != W * H * 3:
                    raise AssetError(f"video {self.path}: a decoded frame has {len(raw)} bytes, expected {W}x{H}x3")
                self.frames_read += 1
                yield np.frombuffer(raw, np.uint8).reshape(H, W, 3)
        except (OSError, RuntimeError) as exc:
            raise AssetError(f"cannot decode video {self.path} after {self.frames_read} frames: {_ffmpeg_reason(exc)}") from None
        finally:
            self.close()
        if self.frames_read == 0:
            raise AssetError(f"video {self.path} holds no decodable frame")

    @property
    def truncated(self) -> bool:
        """True when fewer frames were decoded than the header announces (after reading)."""
        exp = self.info.expected_frames
        return exp is not None and self.frames_read < TRUNCATED_SHARE * exp - 1

    def close(self) -> None:
        if self._gen is not None:
            gen, self._gen = self._gen, None
            try:
                gen.close()
            except Exception:  # noqa: BLE001 - the decoder is being discarded
                pass

    def __enter__(self) -> "VideoReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def open_video(path: str | os.PathLike, max_side: int | None = None) -> VideoReader:
    return VideoReader(path, max_side)
