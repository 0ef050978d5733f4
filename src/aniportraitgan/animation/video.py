"""Atomic video writing: mp4 (H.264 through imageio-ffmpeg) and gif (pillow).

Frames stream into a temporary file beside the destination (same folder, so the final
``os.replace`` is an atomic rename on one file system); only a complete video ever appears under
the requested name. On any exception, KeyboardInterrupt and SIGTERM included (the command line
turns SIGTERM into one), the temporary file is removed and an existing file at the destination is
left untouched. Before the rename the temporary file must decode: ffmpeg's exit status is checked
(``ffmpeg_pipe``) and the mp4 decoded to the number of frames written; a full disk is an
``atomic.DiskFullError``.

``check_output_path`` runs the checks a render would otherwise fail late on (supported suffix,
existing writable folder, not a directory) so that commands call it before any rendering.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Iterable

import numpy as np
from PIL import Image, ImageSequence

from aniportraitgan.animation.ffmpeg_pipe import FFmpegPipe
from aniportraitgan.atomic import atomic_path, disk_full_error, is_disk_full, reporting_disk_full, temp_path_beside
from aniportraitgan.errors import AssetError, InputError, UserError

VIDEO_FORMATS: dict[str, str] = {".mp4": "mp4", ".gif": "gif"}


def video_format(path: str | os.PathLike) -> str:
    """'mp4' or 'gif' from the file suffix; UserError for anything else."""
    suffix = Path(path).suffix.lower()
    if suffix not in VIDEO_FORMATS:
        raise UserError(f"output {path} must end in .mp4 or .gif (got {suffix or 'no suffix'!r})")
    return VIDEO_FORMATS[suffix]


def check_writable_dir(folder: str | os.PathLike, create: bool = False) -> Path:
    """An existing (or, with ``create``, newly made) folder we can write into; UserError otherwise."""
    folder = Path(folder)
    if create and not folder.exists():
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UserError(f"cannot create output folder {folder}: {exc.strerror or exc}") from None
    if not folder.is_dir():
        raise UserError(f"output folder {folder} does not exist or is not a folder")
    # os.access misses read-only mounts and some ACLs: actually try to create a file.
    try:
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".aniportraitgan-probe-")
    except OSError as exc:
        raise UserError(f"output folder {folder} is not writable: {exc.strerror or exc}") from None
    os.close(fd)
    os.unlink(probe)
    return folder


def check_output_path(path: str | os.PathLike, formats: Iterable[str] | None = None) -> Path:
    """Validate an output file path before rendering: suffix, folder exists and is writable."""
    path = Path(path)
    if formats is not None:
        suffix = path.suffix.lower()
        allowed = tuple(formats)
        if suffix not in allowed:
            raise UserError(f"output {path} must end in one of {', '.join(allowed)}")
    if path.is_dir():
        raise UserError(f"output {path} is a folder; give a file name")
    check_writable_dir(path.parent if str(path.parent) else Path("."))
    if path.exists() and not os.access(path, os.W_OK):
        raise UserError(f"output {path} exists and is not writable")
    return path


def as_uint8_frame(frame) -> np.ndarray:
    """A frame as uint8 [H, W, 3] (accepts uint8, or float in [0, 1])."""
    a = np.asarray(frame)
    if a.ndim != 3 or a.shape[2] != 3:
        raise InputError(f"video frames must be [H, W, 3], got shape {a.shape}")
    if a.dtype != np.uint8:
        if not np.issubdtype(a.dtype, np.floating):
            raise InputError(f"video frames must be uint8 or float in [0, 1], got {a.dtype}")
        if not np.all(np.isfinite(a)):
            raise InputError("video frame contains NaN or inf")
        a = np.clip(np.rint(a * 255.0), 0, 255).astype(np.uint8)
    return np.ascontiguousarray(a)


class VideoWriter:
    """Write frames to ``path`` (.mp4 or .gif) atomically; use as a context manager.

    mp4: H.264 (libx264, yuv420p, constant quality ``quality`` 0-10 as imageio-ffmpeg defines
    it); odd frame sizes are padded with white to even ones, as yuv420p needs.
    gif: frames are kept in memory and written by pillow at ``close`` (gifs are short); pillow
    merges consecutive identical frames into one longer frame, so timing is exact but a
    reader may count fewer frames than were written.
    All frames must share one size.
    """

    def __init__(self, path: str | os.PathLike, fps: float = 25.0, quality: float = 8.0) -> None:
        self.path = Path(path)
        self.format = video_format(self.path)
        if not (isinstance(fps, (int, float)) and np.isfinite(fps) and 0 < fps <= 240):
            raise UserError(f"fps must be in (0, 240], got {fps!r}")
        check_output_path(self.path)
        self.fps = float(fps)
        self.quality = float(quality)
        self.frame_count = 0
        self._size: tuple[int, int] | None = None
        self._tmp: Path | None = temp_path_beside(self.path)
        self._ffmpeg = None
        self._gif_frames: list = []
        self._closed = False

    # -- writing -----------------------------------------------------------------------------
    def write(self, frame) -> None:
        if self._closed:
            raise RuntimeError("video writer is closed")
        a = as_uint8_frame(frame)
        if self._size is None:
            self._size = (a.shape[0], a.shape[1])
        elif (a.shape[0], a.shape[1]) != self._size:
            raise InputError(f"frame size {a.shape[:2]} differs from the first frame's {self._size}")
        if self.format == "gif":
            self._gif_frames.append(Image.fromarray(a))
        else:
            if self._ffmpeg is None:
                self._ffmpeg = self._start_ffmpeg(a.shape[0], a.shape[1])
            H, W = self._size
            if H % 2 or W % 2:
                padded = np.full((H + H % 2, W + W % 2, 3), 255, np.uint8)
                padded[:H, :W] = a
                a = padded
            with reporting_disk_full(self.path):
                self._ffmpeg.send(a)
        self.frame_count += 1

    def write_many(self, frames: Iterable) -> None:
        for f in frames:
            self.write(f)

    def _start_ffmpeg(self, H: int, W: int) -> FFmpegPipe:
        return FFmpegPipe(self._tmp, W + W % 2, H + H % 2, self.fps, self.quality)

    def _check_decodes(self) -> None:
        """The temporary file must decode to the frames written (a gif may merge equal ones)."""
        try:
            if self.format == "gif":
                with Image.open(self._tmp) as im:
                    n = sum(1 for _ in ImageSequence.Iterator(im))
                ok = 1 <= n <= self.frame_count
            else:
                import imageio_ffmpeg

                n = imageio_ffmpeg.count_frames_and_secs(str(self._tmp))[0]
                ok = n == self.frame_count
        except Exception as exc:  # noqa: BLE001 - any decoding failure means a broken file
            raise AssetError(f"the video written for {self.path} does not decode ({str(exc).splitlines()[0]}); "
                             f"{self.path} was left as it was") from None
        if not ok:
            raise AssetError(f"the video written for {self.path} decodes to {n} frames, not {self.frame_count}; "
                             f"{self.path} was left as it was")

    # -- finishing ---------------------------------------------------------------------------
    def close(self) -> Path:
        """Finish the file and move it into place; returns the final path."""
        if self._closed:
            return self.path
        try:
            if self.frame_count == 0:
                raise InputError(f"no frames were written to {self.path}")
            if self.format == "gif":
                first, rest = self._gif_frames[0], self._gif_frames[1:]
                first.save(self._tmp, format="GIF", save_all=True, append_images=rest,
                           duration=max(20, int(round(1000.0 / self.fps))), loop=0, optimize=False)
                self._gif_frames = []
            else:
                pipe, self._ffmpeg = self._ffmpeg, None
                pipe.finish()  # waits for ffmpeg; raises if it failed
            self._check_decodes()
            os.replace(self._tmp, self.path)
            self._tmp = None
        except BaseException as exc:
            self.abort()
            if is_disk_full(exc):
                raise disk_full_error(exc, self.path) from None
            raise
        self._closed = True
        return self.path

    def abort(self) -> None:
        """Stop writing and remove the temporary file (the destination is left as it was)."""
        self._closed = True
        self._gif_frames = []
        if self._ffmpeg is not None:
            pipe, self._ffmpeg = self._ffmpeg, None
            pipe.kill()
        if self._tmp is not None:
            try:
                os.unlink(self._tmp)
            except FileNotFoundError:
                pass
            self._tmp = None

    def __enter__(self) -> "VideoWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def __del__(self) -> None:  # a writer dropped without close() leaves no temporary file
        if getattr(self, "_tmp", None) is not None:
            self.abort()


def write_video(path: str | os.PathLike, frames: Iterable, fps: float = 25.0, quality: float = 8.0) -> Path:
    """Write all ``frames`` (uint8 [H, W, 3] or float [0, 1]) to ``path`` atomically."""
    with VideoWriter(path, fps=fps, quality=quality) as writer:
        writer.write_many(frames)
    return writer.path


def read_video(path: str | os.PathLike) -> np.ndarray:
    """All frames of a video file as uint8 [N, H, W, 3] (for tests and checks)."""
    import imageio.v3 as iio

    path = Path(path)
    if path.suffix.lower() == ".gif":
        with Image.open(path) as im:
            return np.stack([np.asarray(f.convert("RGB")) for f in ImageSequence.Iterator(im)])
    return np.asarray(iio.imread(path, plugin="FFMPEG", index=None))


def save_image_atomic(path: str | os.PathLike, image) -> Path:
    """Save a PIL image or uint8 array as PNG through a temporary file and a rename."""
    path = Path(path)
    img = image if isinstance(image, Image.Image) else Image.fromarray(as_uint8_frame(image))
    with atomic_path(path) as tmp:
        img.save(tmp, format="PNG")
    return path


def save_npy_atomic(path: str | os.PathLike, array: np.ndarray) -> Path:
    """np.save through a temporary file and a rename."""
    path = Path(path)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.save(fh, np.asarray(array))
    return path


def mux_audio(video: str | os.PathLike, audio_source: str | os.PathLike, out: str | os.PathLike) -> Path:
    """`out` (.mp4): the video stream of `video` unchanged and the first audio stream of
    `audio_source` (AAC), padded with silence or cut so that it lasts exactly as long as the
    video. Written atomically; ffmpeg's failure is an AssetError with its reason."""
    import subprocess

    import imageio_ffmpeg

    out = Path(out)
    if out.suffix.lower() != ".mp4":
        raise UserError(f"audio can only be muxed into an .mp4, not {out}")
    cmd = [imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-nostdin", "-y",
           "-i", str(video), "-i", str(audio_source), "-map", "0:v:0", "-map", "1:a:0",
           "-c:v", "copy", "-c:a", "aac", "-b:a", "160k", "-af", "apad", "-shortest",
           "-movflags", "+faststart", "-f", "mp4"]
    with atomic_path(out) as tmp:
        proc = subprocess.run(cmd + [str(tmp)], capture_output=True, text=True)
        if proc.returncode != 0:
            reason = (proc.stderr.strip().splitlines() or [f"exit status {proc.returncode}"])[-1]
            raise AssetError(f"cannot add the audio of {audio_source} to {out}: {reason}")
    return out
