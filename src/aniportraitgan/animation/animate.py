"""Render a keyframe clip of one identity into frames and videos.

Frame sources turn a batch of keyframes into uint8 images [B, H, W, 3]:
* ``GeneratorFrames``: the generator for one identity (seed -> z_id, eps; or an identity file of
  ``aniportraitgan invert``, ``inference.load_identity``). The identity cache
  (mapping outputs and, at stage 2, the super-resolved radiance maps) is built once and reused
  by every frame; frames are rendered in batches.
* ``BodyFrames``: the driving body model of the same identity drawn with the project's
  rasterizer from the same cameras: the stand-in when no generator is at hand, and the left half
  of ``side_by_side`` videos.

``render_frames`` drives a source over a clip with a progress bar; ``animate`` writes the
frames straight into a video (``VideoWriter``: atomic, nothing left behind on error).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Iterator, Protocol

import numpy as np
import torch
from tqdm import tqdm

from aniportraitgan.animation.keyframes import Keyframes
from aniportraitgan.animation.video import VideoWriter
from aniportraitgan.artefacts.identities import StoredIdentity
from aniportraitgan.cameras import MainCameraPlacement
from aniportraitgan.errors import InputError, UserError
from aniportraitgan.generator import DEFAULT_PSI, RenderOptions, check_psi
from aniportraitgan.images import check_resolution, to_uint8_images
from aniportraitgan.latents import LatentSample
from aniportraitgan.render import MeshRenderer, MeshTopology, RenderBackendError, TexturedMesh

DEFAULT_BATCH = 4
BODY_ALBEDO = (206, 178, 160)  # plain skin-like grey-beige for the body-model view


class FrameSource(Protocol):
    resolution: int

    def __call__(self, kf: Keyframes) -> np.ndarray:  # uint8 [B, H, W, 3]
        ...


class GeneratorFrames:
    """Frames of one identity from an ``InferenceModel`` (see ``aniportraitgan.inference``).

    ``view="portrait"`` renders the main camera; ``view="face"`` the dual face camera that
    follows the head (the view D_face trains on), where expressions are easiest to see.
    """

    def __init__(self, model, seed: int | StoredIdentity, psi: float = DEFAULT_PSI, resolution: int | None = None,
                 use_cache: bool = True, view: str = "portrait") -> None:
        if view not in ("portrait", "face"):
            raise InputError(f"view must be 'portrait' or 'face', got {view!r}")
        self.view = view
        self.model = model
        self.seed = seed
        self.psi = check_psi(psi)
        self.resolution = check_resolution(resolution if resolution is not None else model.portrait_resolution)
        if isinstance(seed, StoredIdentity):
            # An identity file (``inference.load_identity``): its tuned weights, if any, and its
            # stored mapping outputs, always through the cache; psi does not apply to it.
            self.model = model = replace(model, generator=seed.tuned_generator(model.generator))
            self.z_id, self.eps = seed.z_id.to(model.device), seed.eps.to(model.device)
            self.cache = seed.cache(model.generator, model.stage, self.psi)
            return
        self.z_id, self.eps = model.identity(seed)
        self.cache = None
        if use_cache:
            with torch.no_grad():
                self.cache = model.generator.build_cache(self.z_id, self.eps, psi=self.psi, stage=model.stage)

    @torch.no_grad()
    def render(self, kf: Keyframes, face_resolution: int | None = None, portrait_resolution: int | None = None):
        """The generator's output (portrait, depth, alpha, face) for a batch of keyframes; the
        portrait at ``portrait_resolution`` (default: this source's resolution)."""
        m = self.model
        kf = kf.to(m.device)
        B = len(kf)
        cams = m.cameras(kf.camera[:, 0], kf.camera[:, 1])
        latents = LatentSample(self.z_id.expand(B, -1), kf.expression, kf.pose, self.eps.expand(B, -1))
        options = RenderOptions(portrait_resolution or self.resolution, face_resolution, m.stage, self.psi,
                                cache=self.cache)
        return m.generator(latents, cams, options=options)

    def __call__(self, kf: Keyframes) -> np.ndarray:
        if self.view == "face":
            # The portrait is not shown: render it at the smallest size the generator takes.
            return to_uint8_images(self.render(kf, face_resolution=self.resolution, portrait_resolution=1).face)
        return to_uint8_images(self.render(kf).portrait)


def make_mesh_renderer():
    """The project's rasterizer, or a UserError that says how to get one."""
    try:
        return MeshRenderer(samples=4)
    except RenderBackendError as exc:
        raise UserError(f"the body-model view needs OpenGL: {exc}") from None


class BodyFrames:
    """The driving body model of an identity, shaded with a plain albedo (uint8 frames)."""

    def __init__(self, body, z_id: torch.Tensor | None = None, resolution: int = 128,
                 camera: MainCameraPlacement | None = None, renderer=None) -> None:
        self.body = body
        self.resolution = check_resolution(resolution)
        self.camera = camera or MainCameraPlacement()
        self.renderer = renderer if renderer is not None else make_mesh_renderer()
        dev = body.faces.device
        self.z_id = (torch.zeros(1, body.id_dim) if z_id is None else z_id.detach().reshape(1, -1)).float().to(dev)
        faces, uvs, face_uvs = (t.cpu().numpy() for t in (body.faces, body.uvs, body.face_uvs))
        self._mesh = TexturedMesh(
            vertices=np.zeros((body.num_vertices, 3), np.float32), faces=faces, uvs=uvs, face_uvs=face_uvs,
            texture=np.full((4, 4, 3), BODY_ALBEDO, np.uint8),
            topology=MeshTopology.build(faces, face_uvs, uvs),  # shared by every frame
        )

    @torch.no_grad()
    def __call__(self, kf: Keyframes) -> np.ndarray:
        dev = self.z_id.device
        B = len(kf)
        out = self.body(self.z_id.expand(B, -1), kf.expression.to(dev), kf.pose.to(dev))
        verts = out.vertices.float().cpu().numpy()
        cam = kf.camera.detach().float().cpu()
        cams = self.camera.cameras(cam[:, 0], cam[:, 1])
        c2w = cams.c2w.double().numpy()
        frames = []
        for b in range(B):
            self._mesh.vertices = verts[b]
            r = self.renderer.render(self._mesh, c2w[b], self.camera.fov_deg, self.resolution, self.resolution,
                                     with_depth=False)
            frames.append(r.rgb)
        return np.stack(frames)


class SideBySide:
    """Two sources next to each other (left, right); both render at the right one's height."""

    def __init__(self, left: FrameSource, right: FrameSource) -> None:
        self.left, self.right = left, right
        self.resolution = right.resolution

    def __call__(self, kf: Keyframes) -> np.ndarray:
        a, b = self.left(kf), self.right(kf)
        if a.shape[1] != b.shape[1]:
            raise InputError(f"side-by-side halves differ in height: {a.shape[1]} vs {b.shape[1]}")
        return np.concatenate([a, b], axis=2)


def _check_batch(batch_size) -> int:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise InputError(f"batch size must be an int >= 1, got {batch_size!r}")
    return batch_size


def render_frames(source: Callable[[Keyframes], np.ndarray], keyframes: Keyframes,
                  batch_size: int = DEFAULT_BATCH, progress: bool = True,
                  desc: str = "frames") -> Iterator[np.ndarray]:
    """Yield uint8 frames [H, W, 3] of ``keyframes`` rendered ``batch_size`` at a time."""
    if not isinstance(keyframes, Keyframes):
        raise InputError(f"keyframes must be a Keyframes, got {type(keyframes).__name__}")
    batch_size = _check_batch(batch_size)
    N = len(keyframes)
    with tqdm(total=N, desc=desc, unit="frame", disable=not progress, leave=False) as bar:
        for start in range(0, N, batch_size):
            frames = source(keyframes[start:min(N, start + batch_size)])
            for f in frames:
                yield f
            bar.update(len(frames))


@dataclass
class AnimationResult:
    path: Path
    frames: int
    seconds: float  # wall time of rendering and encoding
    size: tuple[int, int]  # (H, W) of a frame


def animate(source: Callable[[Keyframes], np.ndarray], keyframes: Keyframes, out: str | Path,
            fps: float = 25.0, batch_size: int = DEFAULT_BATCH, progress: bool = True,
            quality: float = 8.0) -> AnimationResult:
    """Render ``keyframes`` with ``source`` into ``out`` (.mp4 H.264 or .gif), atomically.

    The output path is checked before the first frame is rendered; on any error (or Ctrl-C) the
    partial file is removed and an existing file at ``out`` is left as it was.
    """
    batch_size = _check_batch(batch_size)
    t0 = time.perf_counter()
    with VideoWriter(out, fps=fps, quality=quality) as writer:
        size = None
        for frame in render_frames(source, keyframes, batch_size, progress, desc=Path(out).name):
            size = size or frame.shape[:2]
            writer.write(frame)
    return AnimationResult(writer.path, writer.frame_count, time.perf_counter() - t0, tuple(size))


def generator_source(model, seed: int, psi: float = DEFAULT_PSI, resolution: int | None = None,
                     side_by_side: bool = False, use_cache: bool = True) -> FrameSource:
    """The frame source ``aniportraitgan animate`` uses: portraits, optionally beside the body."""
    portraits = GeneratorFrames(model, seed, psi=psi, resolution=resolution, use_cache=use_cache)
    if not side_by_side:
        return portraits
    body = BodyFrames(model.body, portraits.z_id, portraits.resolution, model.prior.camera)
    return SideBySide(body, portraits)


__all__ = [
    "AnimationResult", "BodyFrames", "FrameSource", "GeneratorFrames", "SideBySide",
    "animate", "generator_source", "make_mesh_renderer", "render_frames",
]
