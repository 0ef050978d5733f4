"""The render function behind the web app: every control changes the output, bad values get
clear errors, the caches stay bounded, presets become videos. The bundled demo model (stage 1,
32 px native) renders these 32 px frames in a few hundredths of a second."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from aniportraitgan.animation import ARKIT_NAMES, PRESET_NAMES, expression_index, interpolate, joint_index, preset
from aniportraitgan.errors import InputError
from aniportraitgan.inference import load_inference_model
from aniportraitgan.rotations import axis_angle_to_matrix
from aniportraitgan.webapp import render as web
from aniportraitgan.webapp.render import EXPRESSIONS, RANGES, Controls, WebRenderer, resolution_choices


@pytest.fixture(scope="module")
def model():
    return load_inference_model("demo", "cpu")


@pytest.fixture()
def renderer(model, tmp_path):
    r = WebRenderer(model, workdir=tmp_path)
    yield r
    r.close()


def _image(renderer, **kw) -> np.ndarray:
    kw.setdefault("resolution", 32)
    return renderer.render(Controls(**kw)).image.astype(np.int16)


def _changes(renderer, base: dict, **change) -> int:
    """Largest pixel difference that ``change`` makes to the render of ``base``."""
    return int(np.abs(_image(renderer, **base, **change) - _image(renderer, **base)).max())


def test_every_control_changes_the_image(renderer):
    assert _changes(renderer, {}, seed=5) > 0
    assert _changes(renderer, {}, psi=0.0) > 0
    for k, (lo, hi) in RANGES.items():
        assert _changes(renderer, {}, **{k: hi}) > 0, k
        assert _changes(renderer, {}, **{k: lo}) > 0, k
    face = {"view": "face"}
    for label in EXPRESSIONS:
        assert _changes(renderer, face, expressions={label: 1.0}) > 0, label
    for name in ("jawOpen", "mouthSmileLeft", "eyeBlinkRight", "browInnerUp"):
        assert _changes(renderer, face, arkit={name: 1.0}) > 0, name
    portrait, face_img = _image(renderer), _image(renderer, view="face")
    both = _image(renderer, view="both")
    assert portrait.shape == face_img.shape == (32, 32, 3) and both.shape == (32, 64, 3)
    assert np.array_equal(both[:, :32], portrait) and np.array_equal(both[:, 32:], face_img)
    assert not np.array_equal(portrait, face_img)
    assert _image(renderer, resolution=64).shape == (64, 64, 3)


def test_keyframe_of_the_controls():
    kf = WebRenderer.keyframe(Controls(yaw=30, pitch=-10, head_turn=20, shrug=10))
    assert kf.camera[0].tolist() == pytest.approx([math.radians(30), math.radians(-10)])
    # The head turn is about the up axis, shared between neck and head.
    total = kf.pose[0, joint_index("neck")] + kf.pose[0, joint_index("head")]
    assert torch.allclose(total, torch.tensor([0.0, math.radians(20), 0.0]), atol=1e-6)
    assert kf.pose[0, joint_index("neck"), 1] > 0 and kf.pose[0, joint_index("head"), 1] > 0
    assert kf.pose[0, joint_index("left_collar"), 2].item() == pytest.approx(math.radians(10))
    assert kf.pose[0, joint_index("right_collar"), 2].item() == pytest.approx(-math.radians(10))
    nod = WebRenderer.keyframe(Controls(head_nod=15)).pose[0]
    R = axis_angle_to_matrix(nod[joint_index("neck")] + nod[joint_index("head")])
    assert torch.allclose(R, axis_angle_to_matrix(torch.tensor([math.radians(15), 0.0, 0.0])), atol=1e-6)
    tilt = WebRenderer.keyframe(Controls(head_tilt=-12)).pose[0]
    assert torch.allclose(tilt[joint_index("neck")] + tilt[joint_index("head")],
                          torch.tensor([0.0, 0.0, math.radians(-12)]), atol=1e-6)
    # A main slider scales its group; a single coefficient takes the larger of the two.
    c = Controls(expressions={"smile": 0.5}, arkit={"mouthSmileLeft": 0.8, "tongueOut": 0.3})
    exp = WebRenderer.keyframe(c).expression[0]
    assert exp[expression_index("mouthSmileLeft")].item() == pytest.approx(0.8)
    assert exp[expression_index("mouthSmileRight")].item() == pytest.approx(0.5)
    assert exp[expression_index("cheekSquintLeft")].item() == pytest.approx(0.2)
    assert exp[expression_index("tongueOut")].item() == pytest.approx(0.3)
    assert torch.count_nonzero(exp) == 5
    assert torch.count_nonzero(WebRenderer.keyframe(Controls()).pose) == 0


@pytest.mark.parametrize("change, message", [
    (dict(seed=-1), r"seed must be in \[0, 2147483647\], got -1"),
    (dict(seed=2**31), "seed must be in"),
    (dict(seed=1.5), "seed must be a whole number"),
    (dict(seed=None), "seed is empty"),
    (dict(seed="abc"), "seed must be a number"),
    (dict(psi=1.5), r"psi must be in \[0, 1\]"),
    (dict(view="side"), "view must be one of portrait, face, both"),
    (dict(resolution=48), "resolution must be one of 16, 32, 64, 128, 256(, 512)? for this model, got 48"),
    (dict(resolution=4096), "resolution must be one of"),
    (dict(yaw=float("nan")), r"yaw must be in \[-45, 45\]"),
    (dict(head_nod=31), r"head nod must be in \[-30, 30\], got 31"),
    (dict(shrug=-8), "shoulder|shrug"),
    (dict(expressions={"grin": 1.0}), "unknown expression slider 'grin'"),
    (dict(expressions={"smile": 1.2}), r"expression 'smile' must be in \[0, 1\]"),
    (dict(arkit={"jawOpen": -0.1}), r"jawOpen must be in \[0, 1\]"),
    (dict(arkit={"jawClose": 1.0}), "unknown ARKit coefficient 'jawClose'"),
])
def test_bad_controls_get_clear_errors(renderer, change, message):
    with pytest.raises(InputError, match=message):
        renderer.render(Controls(**change))
    assert renderer.renders == 0


def test_bad_video_requests(renderer):
    for kwargs, message in ((dict(preset_name="dance"), "unknown preset 'dance'"),
                            (dict(preset_name="smile", fps=0), r"fps must be in \[5, 60\]"),
                            (dict(preset_name="smile", frames_between=99), "frames between keyframes must be in"),
                            (dict(preset_name="smile", frames_between=1.5), "whole number")):
        with pytest.raises(InputError, match=message):
            renderer.render_video(Controls(resolution=32), **kwargs)


def test_caches_are_bounded_lru(model, tmp_path):
    r = WebRenderer(model, cache_identities=2, cache_results=3, workdir=tmp_path)
    first = r.render(Controls(seed=1, resolution=32))
    assert first.path.name == f"aniportraitgan_seed1_portrait_32px_{Controls(seed=1, resolution=32).key()}.png"
    again = r.render(Controls(seed=1, resolution=32))
    assert again.cached and again.path == first.path and r.renders == 1
    for s in (2, 3):
        r.render(Controls(seed=s, resolution=32))
    assert [k[0] for k in r._identities] == [2, 3]  # seed 1 was least recently used
    r.render(Controls(seed=3, resolution=32, yaw=10))  # a 4th result pushes out the oldest file
    assert not first.path.exists() and len(list(tmp_path.glob("*.png"))) == 3
    assert r.render(Controls(seed=1, resolution=32)).cached is False
    with pytest.raises(InputError, match="cache_identities"):
        WebRenderer(model, cache_identities=0)
    r.close()


def test_live_updates_follow_the_frame_time(renderer, monkeypatch):
    assert renderer.is_live("portrait", 32)  # unknown: try
    renderer.render(Controls(resolution=32))
    assert renderer.is_live("portrait", 32)
    monkeypatch.setattr(web, "LIVE_MS", 0.0)
    assert not renderer.is_live("portrait", 32)


def test_resolution_choices_follow_the_stage(model):
    class Stage1At32:
        stage, portrait_resolution = 1, 32

    class Stage1At64:
        stage, portrait_resolution = 1, 64

    class Stage2:
        stage, portrait_resolution = 2, 512

    assert resolution_choices(Stage1At32()) == ([16, 32, 64, 128, 256], 64)  # up to 8x the training size
    assert resolution_choices(Stage1At64()) == ([16, 32, 64, 128, 256, 512], 64)
    assert resolution_choices(Stage2()) == ([16, 32, 64, 128, 256, 512], 512)
    assert 64 in resolution_choices(model)[0]


def test_preset_video(renderer, tmp_path):
    import imageio.v3 as iio

    calls = []
    c = Controls(seed=4, resolution=32, view="both")
    video = renderer.render_video(c, "smile", frames_between=2, fps=10, progress=lambda i, n: calls.append((i, n)))
    n = len(interpolate(preset("smile"), 2))
    assert video.frames == n and calls[-1] == (n, n) and len(calls) > 1
    assert video.path.name == "aniportraitgan_seed4_smile_both_32px.mp4" and video.path.stat().st_size > 0
    frames = iio.imread(video.path)
    assert frames.shape[0] == n and frames.shape[1:3] == (32, 64)
    assert renderer.render_video(c, "smile", frames_between=2, fps=10).path == video.path  # cached
    assert set(PRESET_NAMES) >= {"smile", "head_turn", "nod", "shoulder_shrug", "camera_orbit", "all"}
    assert len(ARKIT_NAMES) == 52
