"""Known-answer clips for the video tracker: body-model animations with known keyframes, drawn
with a SynthPortraits appearance (skin, eyes, lips, brows, clothing) into a video, and the errors
of tracked keyframes against their truth.

    write_known_clip("known.mp4", known_answer_clip(), body, height=480, width=640)
    result = track_video("known.mp4")
    tracking_errors(known_answer_clip(), result.keyframes, body)

or `python -m aniportraitgan.frontend.known_clips --out DIR [--height 480 --width 640]`, which
prints the errors as JSON. docs/animation.md records them; tests/test_track_known.py asserts them.
"""

from __future__ import annotations

import argparse
import json
import math
import wave
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from aniportraitgan.animation.animate import make_mesh_renderer, render_frames
from aniportraitgan.animation.keyframes import ARKIT_NAMES, Keyframes, joint_index
from aniportraitgan.animation.presets import preset
from aniportraitgan.animation.video import mux_audio, write_video
from aniportraitgan.atomic import temp_path_beside
from aniportraitgan.body import PortraitBodyModel
from aniportraitgan.cameras import MainCameraPlacement
from aniportraitgan.errors import InputError
from aniportraitgan.frontend.track import track_video
from aniportraitgan.render import (
    Light,
    MeshTopology,
    TexturedMesh,
    batch_vertex_normals,
)
from aniportraitgan.render.appearance import (
    AppearanceConfig,
    paint_texture,
    sample_appearance,
)
from aniportraitgan.render.extra_meshes import build_skirt
from aniportraitgan.render.texels import portrait_uv_layout, texel_geometry
from aniportraitgan.rotations import matrix_to_axis_angle

# The motions the clip plays, one preset each (presets start and end neutral).
KNOWN_MOTIONS = ("head_turn", "nod", "jaw_open", "blink", "smile", "shoulder_shrug")
# Expression coefficients those presets move strongly enough to correlate.
KNOWN_EXPRESSIONS = ("jawOpen", "eyeBlinkLeft", "eyeBlinkRight", "mouthSmileLeft", "mouthSmileRight")
# A framing like a webcam's: the subject a little farther than SynthPortraits' crop.
WEBCAM_PLACEMENT = MainCameraPlacement(radius=2.0, fov_deg=20.0, look_at=(0.0, 0.05, 0.0))
# Nearer, for small test clips (320 x 240): the face about 90 pixels high.
NEAR_PLACEMENT = MainCameraPlacement(radius=1.6, fov_deg=20.0, look_at=(0.0, 0.05, 0.0))


def known_answer_clip(frames_between: int = 5, motions: tuple[str, ...] = KNOWN_MOTIONS) -> Keyframes:
    """The presets of `motions` in turn, each interpolated with `frames_between` frames."""
    return Keyframes.concat([preset(name).interpolate(frames_between) for name in motions])


class AppearanceBodyFrames:
    """The body model of one identity with a procedural SynthPortraits appearance (no hair
    shell), drawn by the project's rasterizer from the keyframes' cameras: uint8 [B, H, W, 3]."""

    def __init__(self, body, z_id: torch.Tensor | None = None, height: int = 256, width: int = 256,
                 placement: MainCameraPlacement = WEBCAM_PLACEMENT, seed: int = 0, texture_size: int = 512,
                 light: Light | None = None, renderer=None) -> None:
        self.body, self.height, self.width, self.placement = body, int(height), int(width), placement
        self.resolution = self.height
        self.z_id = torch.zeros(1, body.id_dim) if z_id is None else torch.as_tensor(z_id, dtype=torch.float32).reshape(1, -1)
        self.light = light or Light()
        self.renderer = renderer if renderer is not None else make_mesh_renderer()
        uvs, face_uvs = portrait_uv_layout(body)
        faces = body.faces.numpy().astype(np.int64)
        with torch.no_grad():
            neutral = body(*body.neutral_codes(1)).vertices[0].numpy()
        self.skirt = build_skirt(faces, face_uvs, neutral)
        self.faces = np.concatenate([faces, self.skirt.faces])
        self.uvs, self.face_uvs = uvs, np.concatenate([face_uvs, self.skirt.face_uvs])
        self.topology = MeshTopology.build(self.faces, self.face_uvs, uvs)
        rng = np.random.default_rng(seed)
        look = replace(sample_appearance(rng, AppearanceConfig(texture_size=texture_size)), long_hair=False)
        self.texture = paint_texture(texel_geometry(body, texture_size), look, rng)

    @torch.no_grad()
    def __call__(self, kf: Keyframes) -> np.ndarray:
        B = len(kf)
        out = self.body(self.z_id.expand(B, -1), kf.expression, kf.pose)
        verts_t = torch.cat([out.vertices, self.skirt.extend_batch(out.vertices)], 1)
        normals = batch_vertex_normals(verts_t, torch.from_numpy(self.faces)).numpy()
        verts = verts_t.numpy()
        cams = self.placement.cameras(kf.camera[:, 0], kf.camera[:, 1])
        frames = []
        for b in range(B):
            mesh = TexturedMesh(verts[b], self.faces, self.uvs, self.face_uvs, self.texture, normals[b], self.topology)
            r = self.renderer.render(mesh, cams.c2w[b].double().numpy(), self.placement.fov_deg, self.height, self.width,
                                     self.light, with_depth=False)
            frames.append(r.rgb)
        return np.stack(frames)


def write_known_clip(path, keyframes: Keyframes, body, height: int = 240, width: int = 320, fps: float = 25.0,
                     seed: int = 0, texture_size: int = 256, audio_hz: float | None = None,
                     placement: MainCameraPlacement = WEBCAM_PLACEMENT):
    """Render `keyframes` of the mean body with an appearance into an mp4 at `path`; with
    `audio_hz` a sine tone of that pitch is muxed in (a driving video with sound)."""
    frames = AppearanceBodyFrames(body, height=height, width=width, placement=placement, seed=seed, texture_size=texture_size)
    try:
        silent = write_video(temp_path_beside(path) if audio_hz else path, render_frames(frames, keyframes, progress=False), fps=fps)
        if audio_hz:
            try:
                tone = temp_path_beside(Path(path).with_suffix(".wav"))
                t = np.arange(int(16000 * (len(keyframes) / fps + 0.5))) / 16000.0
                with wave.open(str(tone), "wb") as w:
                    w.setnchannels(1)
                    w.setsampwidth(2)
                    w.setframerate(16000)
                    w.writeframes((0.3 * 32767 * np.sin(2 * math.pi * audio_hz * t)).astype("<i2").tobytes())
                mux_audio(silent, tone, path)
            finally:
                Path(silent).unlink(missing_ok=True)
                tone.unlink(missing_ok=True)
    finally:
        frames.renderer.release()
    return Path(path)


def _angles_deg(Ra: torch.Tensor, Rb: torch.Tensor) -> np.ndarray:
    return np.degrees(matrix_to_axis_angle(Ra.transpose(-1, -2) @ Rb).norm(dim=-1).double().numpy())


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    if len(a) < 3 or a.std() < 1e-9 or b.std() < 1e-9:
        return float("nan")
    return float(np.corrcoef(a, b)[0, 1])


@torch.no_grad()
def tracking_errors(truth: Keyframes, tracked: Keyframes, body, z_id: torch.Tensor | None = None) -> dict:
    """Errors of tracked keyframes against the truth (same frame count):

    head_deg: the head's rotation relative to the body (neck and head joints together, the body
    model's `head_rotation`), per frame; head_in_camera_deg: the same seen from the camera (what
    a viewer sees; camera yaw/pitch included); camera_deg: |yaw, pitch| error of the camera;
    expression_corr: Pearson correlation over frames of each of KNOWN_EXPRESSIONS;
    shrug_corr: correlation of the collars' shrug rotation (about the forward axis, left minus
    right); medians unless named."""
    if len(truth) != len(tracked):
        raise InputError(f"truth has {len(truth)} frames, tracked {len(tracked)}")
    N = len(truth)
    z = torch.zeros(N, body.id_dim) if z_id is None else torch.as_tensor(z_id, dtype=torch.float32).reshape(1, -1).expand(N, -1)
    R_true = body(z, truth.expression, truth.pose).head_rotation
    R_fit = body(z, tracked.expression, tracked.pose).head_rotation
    head = _angles_deg(R_true, R_fit)
    cams_true = MainCameraPlacement().cameras(truth.camera[:, 0], truth.camera[:, 1]).c2w[:, :3, :3]
    cams_fit = MainCameraPlacement().cameras(tracked.camera[:, 0], tracked.camera[:, 1]).c2w[:, :3, :3]
    in_cam = _angles_deg(cams_true.transpose(1, 2) @ R_true, cams_fit.transpose(1, 2) @ R_fit)
    cam_err = np.degrees((truth.camera - tracked.camera).norm(dim=-1).double().numpy())
    exp_corr = {n: _corr(truth.expression[:, ARKIT_NAMES.index(n)].numpy(), tracked.expression[:, ARKIT_NAMES.index(n)].numpy())
                for n in KNOWN_EXPRESSIONS}
    lc, rc = joint_index("left_collar"), joint_index("right_collar")
    shrug_true = (truth.pose[:, lc, 2] - truth.pose[:, rc, 2]).numpy()
    shrug_fit = (tracked.pose[:, lc, 2] - tracked.pose[:, rc, 2]).numpy()
    # head-turn amplitude the clip holds, to read the errors against
    amplitude = float(torch.rad2deg(matrix_to_axis_angle(R_true).norm(dim=-1).max()))
    return {
        "frames": N,
        "head_deg": float(np.median(head)),
        "head_p90_deg": float(np.percentile(head, 90)),
        "head_in_camera_deg": float(np.median(in_cam)),
        "camera_deg": float(np.median(cam_err)),
        "head_amplitude_deg": round(amplitude, 2),
        "expression_corr": exp_corr,
        "expression_corr_mean": float(np.nanmean(list(exp_corr.values()))) if not all(math.isnan(v) for v in exp_corr.values()) else float("nan"),
        "shrug_corr": _corr(shrug_true, shrug_fit),
    }


def known_clip_file(folder, frames_between: int = 3, height: int = 240, width: int = 320, body=None):
    """(path, keyframes) of the known-answer clip in `folder`, rendered once (the file is reused)."""
    clip = known_answer_clip(frames_between)
    path = Path(folder) / f"known_{frames_between}_{width}x{height}.mp4"
    if not path.exists():
        placement = NEAR_PLACEMENT if height < 400 else WEBCAM_PLACEMENT
        write_known_clip(path, clip, body or PortraitBodyModel.load(), height, width, placement=placement)
    return path, clip


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="render the known-answer clip, track it, print the errors")
    ap.add_argument("--out", required=True, help="folder for the clip")
    ap.add_argument("--height", type=int, default=480)
    ap.add_argument("--width", type=int, default=640)
    ap.add_argument("--frames-between", type=int, default=5)
    args = ap.parse_args(argv)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    body = PortraitBodyModel.load()
    path, clip = known_clip_file(args.out, args.frames_between, args.height, args.width, body)
    result = track_video(path, progress=False)
    print(result.summary())
    print(json.dumps(tracking_errors(clip, result.keyframes, body), indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
