"""Video driving on the web page's render side: a short talking clip with a known motion and a
tone is tracked and reenacted by an identity, with its sound; bad uploads get clear errors."""

from __future__ import annotations

import pytest

from aniportraitgan.animation import interpolate, preset
from aniportraitgan.errors import InputError
from aniportraitgan.frontend.video_input import open_video
from aniportraitgan.inference import load_inference_model
from aniportraitgan.webapp import driving
from aniportraitgan.webapp.driving import drive
from aniportraitgan.webapp.render import Controls, WebRenderer

pytest.importorskip("mediapipe", reason="video driving needs the [track] extra (mediapipe)")


def talking_clip(folder):
    """An 11-frame mp4 (320x240, 25 fps) of the body model opening its jaw, with a 440 Hz tone."""
    from aniportraitgan.body import PortraitBodyModel
    from aniportraitgan.frontend.known_clips import NEAR_PLACEMENT, write_known_clip
    from aniportraitgan.render import RenderBackendError

    try:
        return write_known_clip(folder / "talking.mp4", interpolate(preset("jaw_open"), 4), PortraitBodyModel.load(),
                                240, 320, audio_hz=440.0, placement=NEAR_PLACEMENT)
    except RenderBackendError as exc:
        pytest.skip(f"no OpenGL to draw the driving clip: {exc}")


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return talking_clip(tmp_path_factory.mktemp("drive"))


@pytest.fixture()
def renderer(tmp_path):
    r = WebRenderer(load_inference_model("demo", "cpu"), workdir=tmp_path)
    yield r
    r.close()


def test_drive_reenacts_the_video_with_its_sound(renderer, clip):
    calls = []
    video = drive(renderer, Controls(seed=3, resolution=32, view="both"), clip,
                  progress=lambda *a: calls.append(a))
    assert video.frames == 11 and video.fps == pytest.approx(25.0)
    assert video.path.name == "aniportraitgan_seed3_drive_talking_both_32px.mp4"
    assert calls[0] == (0, 0, "tracking the video") and calls[-1] == (11, 11, "frames")
    reader = open_video(video.path)
    info = reader.info
    frames = sum(1 for _ in reader)
    reader.close()
    # [driving video | portrait | face], each 256 px high (the smallest panel), with the tone.
    assert info.has_audio and frames == 11 and info.height == 256 and info.width == 342 + 512
    alone = drive(renderer, Controls(seed=3, resolution=32), clip, show_video=False)
    reader = open_video(alone.path)
    assert reader.info.width == 256 and reader.info.has_audio
    reader.close()


def test_bad_uploads(renderer, clip, tmp_path, monkeypatch):
    with pytest.raises(InputError, match="upload a talking video first"):
        drive(renderer, Controls(), None)
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    with pytest.raises(InputError, match=r"notes.txt: expected a video \(.mp4"):
        drive(renderer, Controls(), text)
    monkeypatch.setattr(driving, "MAX_SECONDS", 0.1)
    with pytest.raises(InputError, match=r"talking.mp4 lasts 0.\d s; the page takes videos up to 0.1 s"):
        drive(renderer, Controls(), clip)
    with pytest.raises(InputError, match="seed must be in"):
        drive(renderer, Controls(seed=-1), clip)
