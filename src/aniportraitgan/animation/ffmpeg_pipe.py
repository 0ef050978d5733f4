"""An ffmpeg process that encodes raw RGB frames from a pipe into an H.264 mp4, and says when it
failed.

imageio-ffmpeg's ``write_frames`` hides its process: closing it returns normally when ffmpeg
failed (a full disk: "Error writing trailer: No space left on device"), so a broken file would
be renamed into place as a success. Here the exit status is checked and ffmpeg's error output
kept (in a temporary file: a pipe that nobody reads could fill up and block ffmpeg). The
command line is the one imageio-ffmpeg builds for the same settings, so videos are unchanged.

ffmpeg runs in its own session: Ctrl-C in the terminal reaches Python, which then stops it.
"""

from __future__ import annotations

import errno
import signal
import subprocess
import tempfile
from fractions import Fraction
from pathlib import Path

import numpy as np

from aniportraitgan.atomic import disk_full_error
from aniportraitgan.errors import AssetError

# What ffmpeg prints when the disk, the quota or the file size limit stops it.
_FULL_DISK_WORDS = {"No space left on device": errno.ENOSPC, "File too large": errno.EFBIG,
                    "Disk quota exceeded": errno.EDQUOT}


def ffmpeg_exe() -> str:
    import imageio_ffmpeg  # optional heavy dependency: only for mp4

    return imageio_ffmpeg.get_ffmpeg_exe()


def h264_command(path: Path, width: int, height: int, fps: float, quality: float) -> list[str]:
    """rgb24 frames on stdin -> H.264 yuv420p mp4 at constant quality (0-10, imageio's scale)."""
    crf = int((1 - quality / 10.0) * 51)
    return [ffmpeg_exe(), "-y", "-f", "rawvideo", "-vcodec", "rawvideo", "-s", f"{width}x{height}",
            "-pix_fmt", "rgb24", "-r", str(Fraction(fps).limit_denominator()), "-i", "-", "-an",
            "-vcodec", "libx264", "-pix_fmt", "yuv420p", "-crf", str(crf), "-v", "error",
            "-f", "mp4", "-movflags", "+faststart", str(path)]


class FFmpegPipe:
    """``send(frame)`` for each uint8 [H, W, 3] frame, then ``finish()`` (raises if ffmpeg failed)
    or ``kill()``."""

    def __init__(self, path: Path, width: int, height: int, fps: float, quality: float):
        self.path = Path(path)
        self._log = tempfile.TemporaryFile()
        self._proc = subprocess.Popen(h264_command(self.path, width, height, fps, quality), stdin=subprocess.PIPE,
                                      stdout=subprocess.DEVNULL, stderr=self._log, start_new_session=True)

    def send(self, frame: np.ndarray) -> None:
        try:
            self._proc.stdin.write(memoryview(np.ascontiguousarray(frame)).cast("B"))
        except (BrokenPipeError, OSError):  # ffmpeg ended early: its own message says why
            self._proc.wait()
            raise self._failure() from None

    def finish(self) -> None:
        try:
            self._proc.stdin.close()
        except (BrokenPipeError, OSError):
            pass
        if self._proc.wait() != 0:
            raise self._failure()
        self._log.close()

    def kill(self) -> None:
        if self._proc.poll() is None:
            self._proc.kill()
        self._proc.wait()
        try:
            self._proc.stdin.close()
        except (BrokenPipeError, OSError):
            pass
        self._log.close()

    def _failure(self) -> Exception:
        self._log.seek(0)
        text = self._log.read().decode(errors="replace").strip()
        self._log.close()
        code = self._proc.returncode
        full = [n for w, n in _FULL_DISK_WORDS.items() if w in text]
        if code == -signal.SIGXFSZ or full:  # SIGXFSZ: killed at the file size limit (ulimit -f)
            return disk_full_error(OSError(full[0] if full else errno.EFBIG, text), self.path)
        last = text.splitlines()[-1] if text else "no message"
        return AssetError(f"ffmpeg failed to write {self.path} (exit status {code}): {last}")
