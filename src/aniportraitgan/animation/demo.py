"""The demo (``aniportraitgan demo``, what ``make demo`` runs).

Writes ``demo.mp4`` (the ``all`` keyframe preset: every control in turn, >= ``MIN_FRAMES``
frames, with the driving body model beside the portrait), ``demo_controls.png`` (a
Figure-3-style contact sheet: camera, expression, head pose, shoulder pose for a few
identities) and ``demo_face_controls.png`` (the same sheet through the dual face camera, where
expressions are large enough to see).

Without a trained checkpoint (the bundled ``demo`` one not produced yet) it renders the body
model instead: the video with the project's rasterizer and the contact sheet through
``aniportraitgan.body.preview.render_contact_sheet``.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Callable

from aniportraitgan import inference
from aniportraitgan.animation.animate import BodyFrames, animate, generator_source
from aniportraitgan.animation.contact_sheet import generator_contact_sheet
from aniportraitgan.animation.keyframes import Keyframes
from aniportraitgan.animation.presets import preset
from aniportraitgan.animation.video import save_image_atomic
from aniportraitgan.artefacts import DEMO_NAME
from aniportraitgan.body import PortraitBodyModel, preview
from aniportraitgan.errors import AssetError, UserError
from aniportraitgan.generator import DEFAULT_PSI

__all__ = ["DEMO_SEEDS", "MIN_FRAMES", "demo_keyframes", "render_demo"]

MIN_FRAMES = 30
DEMO_SEEDS = (0, 1, 2)
BODY_RESOLUTION = 256  # the body-model fallback's side when none is given


def demo_keyframes(frames_between: int) -> Keyframes:
    """The `all` preset interpolated to at least MIN_FRAMES frames."""
    base = preset("all")
    fb = max(int(frames_between), math.ceil((MIN_FRAMES - 1) / max(1, len(base) - 1)) - 1)
    return base.interpolate(fb)


def render_demo(out: Path, ckpt: str = DEMO_NAME, seed: int = 0, frames_between: int = 5, fps: float = 25.0,
                resolution: int | None = None, psi: float = DEFAULT_PSI, device: str = "auto", progress: bool = True,
                say: Callable[[str], None] = print) -> list[Path]:
    """Write the demo files into the folder ``out``; ``say`` receives one line per step (notes
    and written files). Returns the written paths."""
    video, sheet = out / "demo.mp4", out / "demo_controls.png"
    kf = demo_keyframes(frames_between)
    try:
        model = inference.load_inference_model(ckpt, device)
    except AssetError as exc:
        if ckpt != DEMO_NAME:
            raise
        say(f"note: {exc}")
        say("note: rendering the driving body model instead of generated portraits.")
        return _body_demo(kf, video, sheet, fps, resolution, progress, say)
    try:
        source = generator_source(model, seed, psi=psi, resolution=resolution, side_by_side=True)
        what = "body model | generated portrait"
    except UserError as exc:  # no OpenGL here: the portrait alone
        say(f"note: {exc}; the video shows the generated portrait only")
        source = generator_source(model, seed, psi=psi, resolution=resolution)
        what = "generated portrait"
    res = animate(source, kf, video, fps=fps, progress=progress)
    say(f"wrote {res.path}: {res.frames} frames in {res.seconds:.1f} s ({what})")
    # The same controls seen by the portrait and by the face camera, where expressions are large enough to see.
    face_sheet = sheet.with_name("demo_face_controls.png")
    for path, view, title in ((sheet, "portrait", "AniPortraitGAN controls"), (face_sheet, "face", "face camera")):
        img = generator_contact_sheet(model, DEMO_SEEDS, columns=5, psi=psi, resolution=resolution,
                                      title=f"{title} ({model.source.name}, psi {psi:g})", view=view)
        save_image_atomic(path, img)
        say(f"wrote {path}")
    return [video, sheet, face_sheet]


def _body_demo(kf: Keyframes, video: Path, sheet: Path, fps: float, resolution: int | None, progress: bool,
               say: Callable[[str], None]) -> list[Path]:
    body = PortraitBodyModel.load(device="cpu")
    res = animate(BodyFrames(body, resolution=resolution or BODY_RESOLUTION), kf, video, fps=fps, progress=progress)
    say(f"wrote {res.path}: {res.frames} frames of the body model in {res.seconds:.1f} s")
    preview.render_contact_sheet(sheet)
    say(f"wrote {sheet} (body-model contact sheet)")
    return [video, sheet]
