"""Issue 12, animation and the command line: a failed video write is an error (defect 1),
keyframe files read as the option they were passed to (defect 4), one progress option and one
psi range across commands (defect 9)."""

from __future__ import annotations

import argparse

import numpy as np
import pytest

from aniportraitgan import inference
from aniportraitgan.animation import ffmpeg_pipe
from aniportraitgan.animation.video import VideoWriter, read_video, write_video
from aniportraitgan.atomic import DiskFullError
from aniportraitgan.cli import build_parser, main
from aniportraitgan.errors import AssetError, InputError
from aniportraitgan.generator import PSI_RANGE, check_psi
from test_reliability_files import file_size_limit


def _frames(n: int = 12, size: int = 48) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [(rng.random((size, size, 3)) * 255).astype(np.uint8) for _ in range(n)]  # noise: big files


# ------------------------------------------------------------------ video writes (1)
def test_video_write_on_a_full_disk_fails_and_keeps_the_old_file(tmp_path):
    """Before: ffmpeg logged "Error writing trailer", the writer returned normally and an
    undecodable mp4 replaced the good one."""
    out = tmp_path / "clip.mp4"
    write_video(out, _frames(3), fps=10)
    good = out.read_bytes()
    with file_size_limit(8 * 1024), pytest.raises(DiskFullError, match=f"cannot write {out}: the file size limit"):
        write_video(out, _frames(), fps=10)
    assert out.read_bytes() == good and sorted(p.name for p in tmp_path.iterdir()) == ["clip.mp4"]


def test_video_that_does_not_decode_is_not_renamed_into_place(tmp_path, monkeypatch):
    finish = ffmpeg_pipe.FFmpegPipe.finish

    def finish_then_truncate(self):  # ffmpeg says "fine" but the file is cut (a lying disk)
        finish(self)
        self.path.write_bytes(self.path.read_bytes()[:600])

    monkeypatch.setattr(ffmpeg_pipe.FFmpegPipe, "finish", finish_then_truncate)
    out = tmp_path / "clip.mp4"
    with pytest.raises(AssetError, match=f"the video written for {out} does not decode"):
        write_video(out, _frames(4), fps=10)
    assert list(tmp_path.iterdir()) == []


def test_ffmpeg_failure_names_the_file(tmp_path, monkeypatch):
    monkeypatch.setattr(ffmpeg_pipe, "h264_command", lambda path, *a: [ffmpeg_pipe.ffmpeg_exe(), "-v", "error",
                                                                      "-f", "rawvideo", "-i", "-", "-f", "nosuchformat",
                                                                      str(path)])
    with pytest.raises(AssetError, match="ffmpeg failed to write .*exit status"):
        write_video(tmp_path / "clip.mp4", _frames(2), fps=10)
    assert list(tmp_path.iterdir()) == []


def test_video_still_round_trips(tmp_path):
    frames = _frames(5, 34)
    with VideoWriter(tmp_path / "v.mp4", fps=10) as w:
        w.write_many(frames)
    assert read_video(tmp_path / "v.mp4").shape == (5, 34, 34, 3)


# ---------------------------------------------------------- keyframes by option (4)
@pytest.mark.parametrize("option, shape, expected, other", [
    ("--expression", (5, 2), "[N, 52]", "--camera"),
    ("--pose", (5, 52), "[N, 6, 3]", "--expression"),
    ("--camera", (5, 6, 3), "[N, 2]", "--pose"),
])
def test_keyframe_file_is_read_as_its_option(tmp_path, capsys, monkeypatch, option, shape, expected, other):
    """Before: `--expression cam.npy` was classified by its shape and drove the camera."""
    monkeypatch.setattr(inference, "load_inference_model", lambda *a, **k: pytest.fail("model loaded"))
    path = tmp_path / "k.npy"
    np.save(path, np.zeros(shape, np.float32))
    code = main(["animate", "--ckpt", "demo", "--out", str(tmp_path / "a.mp4"), option, str(path), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and f"{option} {path}" in err and expected in err and f"pass it with {other}" in err
    assert not (tmp_path / "a.mp4").exists()


# ------------------------------------------------------------ consistency (9)
def _parsers(parser: argparse.ArgumentParser):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                yield child
                yield from _parsers(child)


def test_every_command_spells_no_progress_one_way_with_quiet_as_alias():
    found = {}
    for p in _parsers(build_parser()):
        actions = [a for a in p._actions if {"--quiet", "--no-progress"} & set(a.option_strings)]
        if actions:
            found[p.prog] = sorted(o for a in actions for o in a.option_strings)
            assert [a.dest for a in actions] == ["no_progress"], (p.prog, found[p.prog])
    assert len(found) >= 7, found
    assert all(v == ["--no-progress", "--quiet"] for v in found.values()), found


@pytest.mark.parametrize("command", ["animate", "generate", "demo"])
def test_psi_outside_its_range_is_refused_before_loading(tmp_path, capsys, monkeypatch, command):
    """Before: `animate --psi 5` rendered (serve limits psi to [0, 1])."""
    monkeypatch.setattr(inference, "load_inference_model", lambda *a, **k: pytest.fail("model loaded"))
    args = {"animate": ["--out", str(tmp_path / "a.mp4")], "generate": ["--seeds", "0", "--out", str(tmp_path)],
            "demo": ["--out", str(tmp_path)]}[command]
    assert main([command, "--ckpt", "demo", *args, "--psi", "5"]) == 2
    assert "--psi must be a number in [0, 1]" in capsys.readouterr().err


def test_check_psi():
    assert check_psi(0) == 0.0 and check_psi(1) == 1.0 and PSI_RANGE == (0.0, 1.0)
    for bad in (-0.1, 1.01, float("nan"), True, "0.5"):
        with pytest.raises(InputError, match="psi must be a number in"):
            check_psi(bad)
