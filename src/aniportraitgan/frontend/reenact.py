"""`aniportraitgan animate --drive SOURCE`: one command from a driving signal to a video.

SOURCE is
* a video (`VIDEO_SUFFIXES`): tracked (`frontend.track`), then every frame is rendered at the
  source frame rate and written beside the driving frame ([driving video | generated portrait],
  with `show_body` also the tracked body model: [video | body | portrait]); the driving video's
  audio, when it has one, is muxed into the mp4 (`video.mux_audio`), padded or cut to the video;
* a tracked clip (`.npz` written by `aniportraitgan track`, or any keyframe .npz): played at the
  frame rate it stores (25 frames/s when it stores none);
* an ARKit blendshape recording (`.csv`, `arkit_csv`): played at its frame rate.

The portrait panels are drawn at least `MIN_PANEL` pixels high (a smaller portrait is scaled up)
and the driving video is scaled to the same height. Everything goes through temporary files
beside the output: an error leaves no partial video behind.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from aniportraitgan.animation.animate import (
    AnimationResult,
    BodyFrames,
    GeneratorFrames,
    render_frames,
)
from aniportraitgan.animation.arkit_csv import load_arkit_csv
from aniportraitgan.animation.driving_formats import TRACK_FORMAT
from aniportraitgan.animation.keyframe_files import load_keyframes
from aniportraitgan.animation.keyframes import Keyframes
from aniportraitgan.animation.video import VideoWriter, mux_audio
from aniportraitgan.atomic import temp_path_beside
from aniportraitgan.errors import AssetError, InputError, UserError
from aniportraitgan.frontend.track import TrackConfig, track_video
from aniportraitgan.frontend.video_input import open_video

VIDEO_SUFFIXES = (".mp4", ".mov", ".m4v", ".mkv", ".avi", ".webm")
DRIVE_SUFFIXES = VIDEO_SUFFIXES + (".npz", ".csv")
MIN_PANEL = 256
DEFAULT_FPS = 25.0


@dataclass
class DrivingClip:
    keyframes: Keyframes
    fps: float
    report: str
    video: str | None = None  # the driving video shown beside the portrait
    has_audio: bool = False
    z_id: torch.Tensor | None = None  # the tracked person (for the body-model panel)


def drive_kind(path: str | os.PathLike) -> str:
    """'video', 'keyframes' or 'csv' from the suffix; UserError for anything else."""
    suffix = Path(path).suffix.lower()
    if suffix in VIDEO_SUFFIXES:
        return "video"
    if suffix == ".npz":
        return "keyframes"
    if suffix == ".csv":
        return "csv"
    raise UserError(f"--drive {path}: expected a video ({', '.join(VIDEO_SUFFIXES)}), a tracked .npz or an ARKit .csv")


def load_track_file(path: str | os.PathLike) -> DrivingClip:
    """A keyframe .npz; a tracked one also gives its frame rate, identity and report."""
    kf = load_keyframes(path)
    fps, z_id, report = DEFAULT_FPS, None, f"{len(kf)} keyframes from {path}"
    try:
        with np.load(path, allow_pickle=False) as z:
            if "fps" in z.files:
                fps = float(z["fps"])
            if "z_id" in z.files:
                z_id = torch.from_numpy(np.asarray(z["z_id"], np.float32)).reshape(1, -1)
            if "format" in z.files and str(z["format"]) == TRACK_FORMAT and "no_face" in z.files:
                report += f" (tracked from {z['source']}; {int(z['no_face'].sum())} frames without a face were interpolated)"
    except (OSError, ValueError) as exc:
        raise AssetError(f"{path}: cannot read ({exc})") from None
    if not (np.isfinite(fps) and 0 < fps <= 240):
        raise InputError(f"{path}: stored fps {fps} is not in (0, 240]")
    return DrivingClip(kf, fps, report + f" at {fps:g} frames/s", z_id=z_id)


def load_drive(path: str | os.PathLike, track_config: TrackConfig | None = None, progress: bool = True) -> DrivingClip:
    """The driving clip of `--drive` (see the module docstring)."""
    kind = drive_kind(path)
    if kind == "keyframes":
        return load_track_file(path)
    if kind == "csv":
        clip = load_arkit_csv(path)
        return DrivingClip(clip.keyframes, clip.fps, clip.summary())
    result = track_video(path, track_config, progress=progress)
    return DrivingClip(result.keyframes, result.fps, result.summary(), video=str(path), has_audio=result.has_audio,
                       z_id=torch.from_numpy(result.z_id).reshape(1, -1))


def _resize(frames: np.ndarray, height: int) -> np.ndarray:
    """uint8 [B, h, w, 3] -> [B, height, W', 3] keeping the aspect (W' even)."""
    h, w = frames.shape[1:3]
    if h == height:
        return frames
    width = max(2, 2 * round(w * height / h / 2))
    return np.stack([np.asarray(Image.fromarray(f).resize((width, height), Image.BICUBIC)) for f in frames])


class DrivenFrames:
    """[driving video |] [body model |] portrait, one row per frame, in lockstep with the video."""

    def __init__(self, portraits: GeneratorFrames, clip: DrivingClip, body: BodyFrames | None, panel: int) -> None:
        self.portraits, self.clip, self.body, self.panel = portraits, clip, body, panel
        self.resolution = panel
        self._reader = open_video(clip.video) if clip.video else None
        self._video = iter(self._reader) if self._reader is not None else None
        self._last = None

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()

    def _driving(self, n: int) -> np.ndarray:
        out = []
        for _ in range(n):
            frame = next(self._video, None)
            self._last = frame if frame is not None else self._last  # a shorter second decode holds its last frame
            out.append(self._last)
        return _resize(np.stack(out), self.panel)

    def __call__(self, kf: Keyframes) -> np.ndarray:
        parts = []
        if self._video is not None:
            parts.append(self._driving(len(kf)))
        if self.body is not None:
            parts.append(_resize(self.body(kf), self.panel))
        parts.append(_resize(self.portraits(kf), self.panel))
        return np.concatenate(parts, axis=2)


def reenact(model, clip: DrivingClip, out: str | os.PathLike, seed: int = 0, psi: float | None = None,
            resolution: int | None = None, show_body: bool = False, batch_size: int = 4, progress: bool = True,
            use_cache: bool = True, quality: float = 8.0) -> AnimationResult:
    """Render `clip` with the generator `model` into `out` (mp4 or gif) at the clip's frame rate."""
    out = Path(out)
    kwargs = {} if psi is None else {"psi": psi}
    portraits = GeneratorFrames(model, seed, resolution=resolution, use_cache=use_cache, **kwargs)
    panel = max(portraits.resolution, MIN_PANEL)
    body = BodyFrames(model.body, clip.z_id if clip.z_id is not None else portraits.z_id, panel, model.prior.camera) if show_body else None
    source = DrivenFrames(portraits, clip, body, panel)
    audio = clip.video if clip.has_audio and out.suffix.lower() == ".mp4" else None
    t0 = time.perf_counter()
    frames, size = write_driven_video(source, clip, out, audio, batch_size, progress, out.name, quality)
    return AnimationResult(out, frames, time.perf_counter() - t0, size)


def write_driven_video(source: DrivenFrames, clip: DrivingClip, out: Path, audio_from=None, batch_size: int = 4,
                       progress: bool = False, desc: str = "frames", quality: float = 8.0) -> tuple[int, tuple[int, int]]:
    """Render ``source`` over the clip's keyframes into ``out`` at the clip's frame rate, with the
    sound of the video ``audio_from`` muxed in when given (a silent file beside ``out`` first,
    removed in any case); closes ``source``. Returns (frames written, frame size)."""
    silent = temp_path_beside(out) if audio_from is not None else out
    size = None
    try:
        with VideoWriter(silent, fps=clip.fps, quality=quality) as writer:
            for frame in render_frames(source, clip.keyframes, batch_size, progress, desc=desc):
                size = size or frame.shape[:2]
                writer.write(frame)
        if audio_from is not None:
            mux_audio(silent, audio_from, out)
    finally:
        source.close()
        if audio_from is not None:
            Path(silent).unlink(missing_ok=True)
    return writer.frame_count, tuple(size)
