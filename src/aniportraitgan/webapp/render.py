"""The render function behind the web app: checked controls -> a PNG or a preset video.

Nothing here imports Gradio, so the behaviour of every control is testable on its own:
``Controls`` holds what the page's widgets say (angles in degrees, expression values in
[0, 1]), ``WebRenderer.render`` turns them into an image (and a PNG file with a name that says
what it shows), ``WebRenderer.render_video`` a preset clip into an mp4.

Caches, all bounded:
* identities: one ``GeneratorFrames`` per (seed or identity file, psi), least recently used dropped first. It
  holds the per-identity work (mapping outputs and, at stage 2, the super-resolved maps), which
  does not depend on the view or the resolution, so one entry serves them all;
* results: the last few renders by their controls, each with its PNG file (a repeated request,
  such as a slider's release after its last drag event, costs nothing); a result leaving the
  cache deletes its file. Videos are kept the same way.
The generator and the caches are used from one thread, one call at a time: requests in flight
beyond that wait for it.
"""

from __future__ import annotations

import hashlib
import math
import tempfile
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from aniportraitgan.animation import (
    ARKIT_NAMES,
    EXP_DIM,
    NUM_JOINTS,
    PRESET_NAMES,
    GeneratorFrames,
    Keyframes,
    animate,
    expression_index,
    interpolate,
    joint_index,
    preset,
    set_head_rotation,
)
from aniportraitgan.animation.video import save_image_atomic
from aniportraitgan.artefacts.identities import StoredIdentity
from aniportraitgan.errors import InputError
from aniportraitgan.generator import DEFAULT_PSI
from aniportraitgan.images import to_uint8_images
from aniportraitgan.rotations import euler_zyx_to_matrix, matrix_to_axis_angle

MAX_SEED = 2**31 - 1
VIEWS = ("portrait", "face", "both")
# Control ranges in degrees (the page's slider ranges; a value outside is an InputError).
RANGES: dict[str, tuple[float, float]] = {
    "yaw": (-45.0, 45.0), "pitch": (-30.0, 30.0),
    "head_turn": (-45.0, 45.0), "head_nod": (-30.0, 30.0), "head_tilt": (-30.0, 30.0),
    "shrug": (-7.0, 17.0),
}
# The main expression sliders: label -> ARKit coefficients at the slider's full strength.
EXPRESSIONS: dict[str, dict[str, float]] = {
    "smile": {"mouthSmileLeft": 1.0, "mouthSmileRight": 1.0, "cheekSquintLeft": 0.4, "cheekSquintRight": 0.4},
    "jaw open": {"jawOpen": 1.0},
    "eyes closed": {"eyeBlinkLeft": 1.0, "eyeBlinkRight": 1.0},
    "brows up": {"browInnerUp": 1.0, "browOuterUpLeft": 0.9, "browOuterUpRight": 0.9},
    "frown": {"mouthFrownLeft": 1.0, "mouthFrownRight": 1.0, "browDownLeft": 0.7, "browDownRight": 0.7},
    "pucker": {"mouthPucker": 1.0, "mouthFunnel": 0.4},
}
VIDEO_FPS = (5.0, 60.0)
MAX_FRAMES_BETWEEN = 30
DEFAULT_FRAMES_BETWEEN = 7  # as `aniportraitgan animate` does for presets
LIVE_MS = 400.0  # a frame faster than this updates while a slider is dragged


@dataclass(frozen=True)
class Controls:
    """What the page's widgets say. Angles in degrees; expression values in [0, 1].

    ``expressions`` maps labels of ``EXPRESSIONS`` to slider values, ``arkit`` ARKit names to
    coefficients; a coefficient is the larger of the two.
    """

    seed: int = 0
    identity: str = ""  # an identity file's name (``WebRenderer.identities``) instead of the seed
    psi: float = DEFAULT_PSI
    view: str = "portrait"
    resolution: int | None = None  # None: the renderer's default
    yaw: float = 0.0
    pitch: float = 0.0
    head_turn: float = 0.0
    head_nod: float = 0.0
    head_tilt: float = 0.0
    shrug: float = 0.0
    expressions: Mapping[str, float] = field(default_factory=dict)
    arkit: Mapping[str, float] = field(default_factory=dict)

    @property
    def who(self) -> str:
        return self.identity or f"seed{self.seed}"

    def key(self) -> str:
        """A short digest of every value (results are cached by it, files named with it)."""
        d = asdict(self)
        d["expressions"] = sorted((k, v) for k, v in self.expressions.items() if v)
        d["arkit"] = sorted((k, v) for k, v in self.arkit.items() if v)
        return hashlib.sha1(repr(sorted(d.items())).encode()).hexdigest()[:8]


def _fmt(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


def _number(name: str, value, lo: float, hi: float) -> float:
    if value is None or (isinstance(value, str) and not value.strip()):
        raise InputError(f"{name} is empty: give a number in [{_fmt(lo)}, {_fmt(hi)}]")
    if isinstance(value, bool):
        raise InputError(f"{name} must be a number, got {value!r}")
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise InputError(f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(v) or not lo <= v <= hi:
        raise InputError(f"{name} must be in [{_fmt(lo)}, {_fmt(hi)}], got {value!r}")
    return v


def _integer(name: str, value, lo: int, hi: int) -> int:
    v = _number(name, value, lo, hi)
    if v != int(v):
        raise InputError(f"{name} must be a whole number, got {value!r}")
    return int(v)


def resolution_choices(model) -> tuple[list[int], int]:
    """(sizes the page offers, its default) for a model.

    Stage 2's super-resolved maps set the detail limit, so its native size is the largest; a
    stage-1 model renders at any size (its detail is that of its training size), up to 8x it.
    """
    native = int(model.portrait_resolution)
    top = native if model.stage == 2 else min(512, 8 * native)
    top = max(top, native)
    sizes = sorted({s for s in (16, 32, 64, 128, 256, 512, native) if s <= top and s >= min(16, native)})
    default = min(top, max(native, 64))
    return sizes, default


class WebRenderer:
    """Renders ``Controls`` with an ``InferenceModel`` (``aniportraitgan.inference``)."""

    def __init__(self, model, cache_identities: int = 8, cache_results: int = 32, cache_videos: int = 4,
                 workdir: str | Path | None = None, identities: Mapping[str, StoredIdentity] | None = None) -> None:
        for name, n in (("cache_identities", cache_identities), ("cache_results", cache_results),
                        ("cache_videos", cache_videos)):
            if isinstance(n, bool) or not isinstance(n, int) or n < 1:
                raise InputError(f"{name} must be an int >= 1, got {n!r}")
        self.model = model
        self.identities = dict(identities or {})  # name -> identity file (``inference.load_identity``)
        self.sizes, self.default_resolution = resolution_choices(model)
        self.max_resolution = self.sizes[-1]
        self.cache_identities, self.cache_results, self.cache_videos = cache_identities, cache_results, cache_videos
        if workdir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="aniportraitgan-web-")
            workdir = self._tmp.name
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._identities: OrderedDict[tuple[int | str, float], GeneratorFrames] = OrderedDict()
        self._results: OrderedDict[str, Render] = OrderedDict()
        self._videos: OrderedDict[str, Video] = OrderedDict()
        self._frame_ms: dict[tuple[str, int], float] = {}
        # The generator and the caches live on one thread: calls run one at a time, and the large
        # temporary tensors of every render come from one allocator arena (renders spread over the
        # server's worker threads grew its resident size with each thread's arena).
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="aniportraitgan-generator")
        self._closed = False
        self.renders = 0  # generator calls for single images (not cache hits)

    # ------------------------------------------------------------------ checking
    def check(self, c: Controls) -> Controls:
        """``c`` with every value checked and normalised; InputError names the first bad one."""
        if not isinstance(c, Controls):
            raise InputError(f"controls must be a Controls, got {type(c).__name__}")
        if c.view not in VIEWS:
            raise InputError(f"view must be one of {', '.join(VIEWS)}, got {c.view!r}")
        res = self.default_resolution if c.resolution is None else c.resolution
        res = _integer("resolution", res, 1, 1 << 16)
        if res not in self.sizes:
            raise InputError(f"resolution must be one of {', '.join(map(str, self.sizes))} for this model, got {res}")
        angles = {k: _number(k.replace("_", " "), getattr(c, k), *RANGES[k]) for k in RANGES}
        for label in c.expressions:
            if label not in EXPRESSIONS:
                raise InputError(f"unknown expression slider {label!r}; choose from {', '.join(EXPRESSIONS)}")
        exps = {k: _number(f"expression {k!r}", v, 0.0, 1.0) for k, v in c.expressions.items()}
        arkit = {}
        for name, v in c.arkit.items():
            if name not in ARKIT_NAMES:
                raise InputError(f"unknown ARKit coefficient {name!r}")
            arkit[name] = _number(name, v, 0.0, 1.0)
        if c.identity and c.identity not in self.identities:
            raise InputError(f"unknown identity {c.identity!r}; this server has {', '.join(self.identities) or 'none'}")
        return replace(
            c, seed=_integer("seed", c.seed, 0, MAX_SEED), psi=_number("psi", c.psi, 0.0, 1.0), resolution=res,
            expressions=exps, arkit=arkit, **angles,
        )

    # ------------------------------------------------------------------ keyframes
    @staticmethod
    def keyframe(c: Controls) -> Keyframes:
        """The one keyframe of checked controls: camera, head (shared with the neck as the presets
        do), shrug (both collars up) and the 52 expression coefficients."""
        rad = math.radians
        exp = torch.zeros(EXP_DIM)
        for label, value in c.expressions.items():
            for name, weight in EXPRESSIONS[label].items():
                i = expression_index(name)
                exp[i] = max(exp[i].item(), value * weight)
        for name, value in c.arkit.items():
            i = expression_index(name)
            exp[i] = max(exp[i].item(), value)
        pose = torch.zeros(NUM_JOINTS, 3)
        # Turn about the scene's up axis (Y), nod about X, tilt about Z (intrinsic z-y-x order).
        R = euler_zyx_to_matrix(torch.tensor([rad(c.head_tilt), rad(c.head_turn), rad(c.head_nod)]))
        set_head_rotation(pose, matrix_to_axis_angle(R))  # shared with the neck, as the presets do
        # The left collar points to +X, so it rises with a +Z rotation; the right one with -Z.
        pose[joint_index("left_collar"), 2] = rad(c.shrug)
        pose[joint_index("right_collar"), 2] = -rad(c.shrug)
        return Keyframes(exp[None], pose[None], torch.tensor([[rad(c.yaw), rad(c.pitch)]]))

    # ------------------------------------------------------------------ rendering
    def _identity(self, seed: int, psi: float, identity: str = "") -> GeneratorFrames:
        key = (identity or seed, psi)
        src = self._identities.get(key)
        if src is None:
            who = self.identities[identity] if identity else seed
            src = GeneratorFrames(self.model, who, psi=psi, resolution=self.default_resolution)
            self._identities[key] = src
            while len(self._identities) > self.cache_identities:
                self._identities.popitem(last=False)
        self._identities.move_to_end(key)
        return src

    def _frames(self, c: Controls, kf: Keyframes) -> np.ndarray:
        """uint8 [B, H, W, 3] of checked controls' identity and view for ``kf`` (lock held)."""
        src = self._identity(c.seed, c.psi, c.identity)
        r = c.resolution
        if c.view == "portrait":
            return to_uint8_images(src.render(kf, portrait_resolution=r).portrait)
        # The face view skips the portrait by asking for the smallest one the generator takes.
        out = src.render(kf, face_resolution=r, portrait_resolution=r if c.view == "both" else 1)
        face = to_uint8_images(out.face)
        return face if c.view == "face" else np.concatenate([to_uint8_images(out.portrait), face], axis=2)

    def frames(self, controls: Controls, kf: Keyframes) -> np.ndarray:
        """uint8 [B, H, W, 3] of the identity, ψ, camera and size of ``controls`` for the keyframes
        ``kf`` (their pose, expression and camera), on the generator thread."""
        return self._on_thread(self._frames, self.check(controls), kf)

    def is_live(self, view: str, resolution: int | None) -> bool:
        """Whether frames of this view and size are fast enough to follow a dragged slider."""
        key = (view, self.default_resolution if resolution is None else resolution)
        return self._frame_ms.get(key, 0.0) < LIVE_MS

    def render(self, controls: Controls) -> Render:
        """Checks ``controls`` and renders them (or returns the cached result of the same ones)."""
        c = self.check(controls)
        return self._on_thread(self._render, c)

    def _on_thread(self, fn, *args):
        return self._thread.submit(fn, *args).result()

    def _render(self, c: Controls) -> Render:
        key = c.key()
        hit = self._results.get(key)
        if hit is not None and hit.path.exists():
            self._results.move_to_end(key)
            return replace(hit, cached=True)
        kf = self.keyframe(c)
        t0 = time.perf_counter()
        image = self._frames(c, kf)[0]
        ms = (time.perf_counter() - t0) * 1000.0
        self.renders += 1
        k = (c.view, c.resolution)
        self._frame_ms[k] = ms if k not in self._frame_ms else 0.5 * (self._frame_ms[k] + ms)
        path = self.workdir / f"aniportraitgan_{c.who}_{c.view}_{c.resolution}px_{key}.png"
        save_image_atomic(path, image)
        result = Render(c, image, path, ms)
        self._results[key] = result
        while len(self._results) > self.cache_results:
            _, old = self._results.popitem(last=False)
            old.path.unlink(missing_ok=True)
        return result

    def render_video(self, controls: Controls, preset_name: str, frames_between: int = DEFAULT_FRAMES_BETWEEN,
                     fps: float = 25.0, progress: Callable[[int, int], None] | None = None) -> Video:
        """A preset (``PRESET_NAMES``) for the identity, psi, view and resolution of ``controls``
        as an mp4; the preset sets camera, pose and expression. ``progress(done, total)``."""
        c = self.check(controls)
        if preset_name not in PRESET_NAMES:
            raise InputError(f"unknown preset {preset_name!r}; choose from {', '.join(PRESET_NAMES)}")
        frames_between = _integer("frames between keyframes", frames_between, 0, MAX_FRAMES_BETWEEN)
        fps = _number("fps", fps, *VIDEO_FPS)
        clip = interpolate(preset(preset_name), frames_between) if frames_between else preset(preset_name)
        total = len(clip)
        name = f"aniportraitgan_{c.who}_{preset_name}_{c.view}_{c.resolution}px"
        key = f"{name}_{c.psi:g}_{frames_between}_{fps:g}"
        hit = self._on_thread(self._cached_video, key)
        if hit is not None:
            return hit
        done = 0

        def source(kf: Keyframes) -> np.ndarray:
            nonlocal done
            frames = self.frames(c, kf)  # batch by batch: single renders interleave
            done += len(kf)
            if progress is not None:
                progress(done, total)
            return frames

        folder = self.workdir / f"video-{key.replace('.', '_')}"
        folder.mkdir(exist_ok=True)
        res = animate(source, clip, folder / f"{name}.mp4", fps=fps, progress=False)
        video = Video(c, preset_name, res.path, res.frames, res.seconds, fps)
        self.keep_video(key, video)
        return video

    def _cached_video(self, key: str) -> Video | None:
        hit = self._videos.get(key)
        if hit is None or not hit.path.exists():
            return None
        self._videos.move_to_end(key)
        return hit

    def keep_video(self, key: str, video: Video) -> None:
        """Keeps ``video`` among the last ``cache_videos`` ones; older ones lose their files."""
        self._on_thread(self._keep_video, key, video)

    def _keep_video(self, key: str, video: Video) -> None:
        self._videos[key] = video
        while len(self._videos) > self.cache_videos:
            _, old = self._videos.popitem(last=False)
            old.path.unlink(missing_ok=True)
            if old.path.parent != self.workdir and not any(old.path.parent.iterdir()):
                old.path.parent.rmdir()

    def describe(self) -> str:
        m = self.model
        step = f", step {m.step}" if m.step is not None else ""
        return (f"{m.source.name} (stage {m.stage}{step}, native {m.portrait_resolution} px, {m.device}); "
                f"sizes up to {self.max_resolution} px")

    def close(self) -> None:
        """Drops the caches and their files, and stops the generator thread (idempotent)."""
        if self._closed:
            return
        self._closed = True

        def clear() -> None:
            self._identities.clear()
            self._results.clear()
            self._videos.clear()

        self._on_thread(clear)
        self._thread.shutdown()
        if getattr(self, "_tmp", None) is not None:
            self._tmp.cleanup()


@dataclass(frozen=True)
class Render:
    controls: Controls
    image: np.ndarray  # uint8 [H, W, 3]
    path: Path  # the PNG
    ms: float  # generator time of the frame
    cached: bool = False


@dataclass(frozen=True)
class Video:
    controls: Controls
    preset: str
    path: Path  # the mp4
    frames: int
    seconds: float  # rendering and encoding
    fps: float


__all__ = [
    "EXPRESSIONS",
    "LIVE_MS",
    "MAX_SEED",
    "RANGES",
    "VIEWS",
    "Controls",
    "Render",
    "Video",
    "WebRenderer",
    "resolution_choices",
]
