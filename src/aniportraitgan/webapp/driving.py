"""Video driving on the page: an uploaded talking video -> the current identity reenacting it,
with the video's audio.

The video is tracked (``animation.reenact.load_drive``: the front end's face and body tracker),
then every tracked frame is rendered with the identity, ψ, camera and size of the page's
controls, beside the driving frame when asked, at the video's frame rate, and the video's audio is
muxed in. This is ``animation.reenact.reenact`` with one difference: the frames come from
``WebRenderer.frames``, batch by batch on the renderer's generator thread, so other people's
single images keep being served while a reenactment renders.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from aniportraitgan.animation import Keyframes
from aniportraitgan.errors import InputError
from aniportraitgan.frontend.reenact import (
    MIN_PANEL,
    VIDEO_SUFFIXES,
    DrivenFrames,
    load_drive,
    write_driven_video,
)
from aniportraitgan.frontend.video_input import open_video
from aniportraitgan.webapp.render import Controls, Video, WebRenderer

MAX_SECONDS = 20.0  # tracking runs at about 2 frames/s on the 2-core development CPU


class _Portraits:
    """The renderer's frames of fixed controls, as the frame source ``DrivenFrames`` expects."""

    def __init__(self, renderer: WebRenderer, controls: Controls, done: Callable[[int], None]) -> None:
        self.renderer, self.controls, self.done = renderer, controls, done
        self.resolution = controls.resolution

    def __call__(self, kf: Keyframes) -> np.ndarray:
        frames = self.renderer.frames(self.controls, kf)
        self.done(len(kf))
        return frames


def check_driving_video(path) -> float:
    """The duration of an uploaded video in seconds; InputError when it is missing, unreadable,
    of an unknown kind or longer than ``MAX_SECONDS``."""
    if not path:
        raise InputError("upload a talking video first")
    p = Path(path)
    if p.suffix.lower() not in VIDEO_SUFFIXES:
        raise InputError(f"{p.name}: expected a video ({', '.join(VIDEO_SUFFIXES)})")
    reader = open_video(p)
    try:
        info = reader.info
    finally:
        reader.close()
    if info.duration > MAX_SECONDS:
        raise InputError(f"{p.name} lasts {info.duration:.1f} s; the page takes videos up to {MAX_SECONDS:g} s "
                         "(`aniportraitgan animate --drive` takes any length)")
    return info.duration


def drive(renderer: WebRenderer, controls: Controls, video, show_video: bool = True,
          progress: Callable[[int, int, str], None] | None = None) -> Video:
    """The reenactment of ``video`` by ``controls``' identity as an mp4 in the renderer's folder.
    ``progress(done, total, what)`` reports the tracking (total 0) and then the frames."""
    c = renderer.check(controls)
    check_driving_video(video)
    report = progress or (lambda done, total, what: None)
    report(0, 0, "tracking the video")
    clip = load_drive(video, progress=False)
    if not show_video:
        clip.video = None
    total, done = len(clip.keyframes), 0

    def count(n: int) -> None:
        nonlocal done
        done += n
        report(done, total, "frames")

    digest = hashlib.sha1(f"{video}{c.key()}{show_video}".encode()).hexdigest()[:8]
    folder = renderer.workdir / f"drive-{digest}"
    folder.mkdir(exist_ok=True)
    out = folder / f"aniportraitgan_seed{c.seed}_drive_{Path(video).stem[:40]}_{c.view}_{c.resolution}px.mp4"
    source = DrivenFrames(_Portraits(renderer, c, count), clip, None, max(c.resolution, MIN_PANEL))
    t0 = time.perf_counter()
    # the sound comes from the upload itself: clip.video is dropped when the video is not shown
    frames, _ = write_driven_video(source, clip, out, video if clip.has_audio else None)
    video_out = Video(c, "drive", out, frames, time.perf_counter() - t0, clip.fps)
    renderer.keep_video(f"drive-{digest}", video_out)  # bounded with the preset videos
    return video_out


__all__ = ["MAX_SECONDS", "check_driving_video", "drive"]
