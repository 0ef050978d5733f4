"""Video writing (atomic mp4/gif), output-path checks, depth colouring, seed parsing, contact sheet."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from aniportraitgan.animation.contact_sheet import EXPRESSIONS, contact_sheet, control_rows
from aniportraitgan.animation.keyframes import Keyframes, expression_index, joint_index
from aniportraitgan.animation.video import (
    VideoWriter,
    check_output_path,
    read_video,
    save_image_atomic,
    write_video,
)
from aniportraitgan.animation.stills import _RAMP, colorize_depth
from aniportraitgan.commands.generate import parse_seeds
from aniportraitgan.errors import InputError, UserError


def _frames(n: int, h: int = 32, w: int = 48) -> list[np.ndarray]:
    # distinct flat grey levels so that every frame survives encoding recognisably
    return [np.full((h, w, 3), 30 + 45 * i, np.uint8) for i in range(n)]


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


@pytest.mark.parametrize("suffix", [".mp4", ".gif"])
def test_round_trip_keeps_frame_count_size_and_values(tmp_path, suffix):
    path = write_video(tmp_path / f"clip{suffix}", _frames(5), fps=10)
    assert path.exists() and _leftovers(tmp_path) == []
    v = read_video(path)
    assert v.shape == (5, 32, 48, 3)
    got = v[:, 16, 24].astype(int).mean(1)
    np.testing.assert_allclose(got, [30 + 45 * i for i in range(5)], atol=4)


def test_mp4_is_h264(tmp_path):
    import subprocess

    import imageio_ffmpeg

    path = write_video(tmp_path / "c.mp4", _frames(3), fps=12)
    info = subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-i", str(path)],
                          capture_output=True, text=True).stderr
    assert "h264" in info and "12 fps" in info


def test_odd_sizes_are_padded_white_for_yuv420(tmp_path):
    v = read_video(write_video(tmp_path / "odd.mp4", _frames(2, 33, 45)))
    assert v.shape == (2, 34, 46, 3)
    assert v[1, 33, :40].min() > 230  # padding row is white


def test_error_mid_write_leaves_nothing_and_keeps_existing_file(tmp_path):
    out = tmp_path / "v.mp4"
    out.write_bytes(b"old")

    def frames():
        yield from _frames(2)
        raise RuntimeError("renderer failed")

    with pytest.raises(RuntimeError, match="renderer failed"):
        write_video(out, frames())
    assert out.read_bytes() == b"old"
    assert _leftovers(tmp_path) == []


@pytest.mark.parametrize("suffix", [".mp4", ".gif"])
def test_keyboard_interrupt_leaves_no_partial_file(tmp_path, suffix):
    out = tmp_path / f"v{suffix}"
    with pytest.raises(KeyboardInterrupt):
        with VideoWriter(out, fps=5) as w:
            w.write(_frames(1)[0])
            raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []


def test_bad_frames_and_empty_video(tmp_path):
    with pytest.raises(InputError, match="differs"):
        write_video(tmp_path / "a.mp4", [np.zeros((8, 8, 3), np.uint8), np.zeros((10, 8, 3), np.uint8)])
    with pytest.raises(InputError, match=r"\[H, W, 3\]"):
        write_video(tmp_path / "b.mp4", [np.zeros((8, 8), np.uint8)])
    with pytest.raises(InputError, match="no frames"):
        write_video(tmp_path / "c.gif", [])
    assert list(tmp_path.iterdir()) == []


def test_unwritable_or_bad_output_paths(tmp_path):
    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    with pytest.raises(UserError, match="does not exist or is not a folder"):
        VideoWriter(blocker / "out.mp4")
    with pytest.raises(UserError, match="does not exist or is not a folder"):
        VideoWriter(tmp_path / "missing" / "out.mp4")
    with pytest.raises(UserError, match=r"\.mp4 or \.gif"):
        VideoWriter(tmp_path / "out.avi")
    (tmp_path / "dir.mp4").mkdir()
    with pytest.raises(UserError, match="is a folder"):
        check_output_path(tmp_path / "dir.mp4")
    with pytest.raises(UserError, match="fps"):
        VideoWriter(tmp_path / "out.mp4", fps=0)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dir.mp4", "file.txt"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores folder permissions")
def test_read_only_folder_is_reported(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        with pytest.raises(UserError, match="not writable"):
            VideoWriter(ro / "out.mp4")
    finally:
        ro.chmod(0o755)


def test_atomic_png_has_normal_permissions(tmp_path):
    p = save_image_atomic(tmp_path / "x.png", np.zeros((4, 4, 3), np.uint8))
    umask = os.umask(0)
    os.umask(umask)
    assert (p.stat().st_mode & 0o777) == (0o666 & ~umask)
    assert _leftovers(tmp_path) == []


def test_colorize_depth_ramp_and_background():
    depth = np.array([[1.0, 2.0], [3.0, 9.0]])
    alpha = np.array([[1.0, 1.0], [1.0, 0.0]])
    img = colorize_depth(depth, alpha)
    assert img.dtype == np.uint8 and img.shape == (2, 2, 3)
    np.testing.assert_array_equal(img[0, 0], _RAMP[0])  # nearest foreground
    np.testing.assert_array_equal(img[1, 0], _RAMP[-1])  # farthest foreground
    np.testing.assert_array_equal(img[1, 1], [255, 255, 255])  # background
    np.testing.assert_array_equal(colorize_depth(depth, np.zeros((2, 2))), np.full((2, 2, 3), 255))


def test_parse_seeds():
    assert parse_seeds("0-3") == [0, 1, 2, 3]
    assert parse_seeds("5, 1,2-3,2") == [1, 2, 3, 5]
    for bad in ("a", "3-1", "-1", "1-", ""):
        with pytest.raises(UserError):
            parse_seeds(bad)


def test_control_rows_vary_one_control_each():
    rows = control_rows(5)
    assert [r.label for r in rows] == ["camera", "expression", "head pose", "shoulders"]
    cam, exp, head, sh = (r.keyframes for r in rows)
    for r in rows:
        assert len(r.keyframes) == 5 and len(r.column_labels) == 5
    # camera row: only yaw moves, symmetric about frontal
    torch.testing.assert_close(cam.camera[:, 0], -cam.camera.flip(0)[:, 0])
    assert cam.expression.abs().sum() == 0 and cam.pose.abs().sum() == 0
    # expression row: only expression; column 1 is a smile
    assert exp.pose.abs().sum() == 0 and exp.camera.abs().sum() == 0
    assert exp.expression[0].sum() == 0 and exp.expression[1, expression_index("mouthSmileLeft")] == 1.0
    assert [r for r in rows[1].column_labels] == [n for n, _ in EXPRESSIONS[:5]]
    # head row rotates neck+head about +Y; shoulders raise the collars symmetrically
    j = joint_index("head")
    assert head.pose[0, j, 1] < 0 < head.pose[-1, j, 1]
    l, r = joint_index("left_collar"), joint_index("right_collar")
    torch.testing.assert_close(sh.pose[:, l, 2], -sh.pose[:, r, 2])
    with pytest.raises(InputError):
        control_rows(0)


def test_contact_sheet_places_each_cell():
    rows = control_rows(3)
    colors = {}

    def render(i: int, kf: Keyframes) -> np.ndarray:
        n = len(kf)
        out = np.zeros((n, 20, 20, 3), np.uint8)
        for c in range(n):
            colors[(i, id(kf), c)] = (10 + 80 * i, 20 * c + 5, 7)
            out[c] = colors[(i, id(kf), c)]
        return out

    img = np.asarray(contact_sheet(render, ["a", "b"], rows, title="t"))
    # every rendered colour appears as a full 20x20 block exactly once
    for color in set(colors.values()):
        mask = np.all(img == np.array(color, np.uint8), axis=-1)
        assert mask.sum() == 400 * sum(1 for v in colors.values() if v == color)
    with pytest.raises(InputError, match="uint8"):
        contact_sheet(lambda i, kf: np.zeros((len(kf), 8, 8, 3), np.float32), ["a"], rows)
