"""`aniportraitgan evaluate`: the whole pipeline on a tiny dataset with a tiny untrained
generator and the stand-in extractor; reports, comparison, cache reuse, errors."""

from __future__ import annotations

import json
import math

import pytest
import torch

from aniportraitgan.artefacts import loading as artefacts_loading
from aniportraitgan.cli import main
from aniportraitgan.errors import UserError
from aniportraitgan.metrics.control import ControlConfig
from aniportraitgan.metrics.evaluate import EvalConfig, evaluate, parse_metrics

CONTROL_KEYS = {
    "exp_coef_mae", "exp_landmark_mm", "landmark_mm", "head_pose_deg",
    *(f"{k}_{axis}" for k in ("head_pose_gain", "camera_gain") for axis in ("yaw", "pitch")),
    "view_bias_yaw_deg", "view_bias_pitch_deg",
    "head_geom_mm", "head_geom_mm_ref", "shoulder_geom_mm", "shoulder_geom_mm_ref",
    "multiview_mae", "multiview_visible", "identity_cos_same", "identity_cos_other",
    "identity_R_dist_same", "identity_R_dist_other",
    "exp_coef_mae_real", "exp_landmark_mm_real", "landmark_mm_real", "head_pose_deg_real",
    "exp_corr", "exp_corr_real", "exp_corr_se", "exp_corr_se_real",
    *(f"exp_corr_{n}{suffix}" for n in ("jawOpen", "eyeBlinkLeft", "eyeBlinkRight", "mouthSmileLeft",
                                       "mouthSmileRight") for suffix in ("", "_real")),
    *(f"response_{p}{suffix}{real}" for p in ("jawOpen", "eyeBlink", "smile", "browInnerUp", "head_turn", "head_nod",
                                        "head_tilt", "shoulder_shrug") for suffix in ("", "_in", "_out")
      for real in ("", "_real")),  # _real: the SynthPortraits renderer's own response (the ceiling)
}
IMAGE_KEYS = {"fid_portrait", "fid_face", "kid_portrait", "kid_portrait_std", "kid_face", "kid_face_std"}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    from aniportraitgan.body import PortraitBodyModel
    from aniportraitgan.data.synth import make_tiny_dataset
    from aniportraitgan.facerecon import FaceRecon, FaceReconConfig
    from aniportraitgan.generator import Generator, GeneratorConfig
    from aniportraitgan.artefacts import save_generator as save_inference_checkpoint

    root = tmp_path_factory.mktemp("eval")
    data = make_tiny_dataset(root / "data", num=8, resolution=32)
    torch.manual_seed(0)
    G = Generator(GeneratorConfig.tiny(samples_per_ray=8, sr_map_resolution=16), PortraitBodyModel.load())
    ckpt = save_inference_checkpoint(root / "tiny.safetensors", G, stage=1)
    R = FaceRecon(FaceReconConfig(resolution=16, width=4, max_width=8, hidden=8)).save(root / "R.safetensors")
    return {"root": root, "data": data, "ckpt": ckpt, "R": R}


QUICK = ["--num", "4", "--batch", "4", "--extractor", "stand-in", "--device", "cpu", "--quiet"]


def test_full_pipeline_writes_json_and_markdown(files, capsys):
    out = files["root"] / "runs" / "full.json"
    rc = main(["evaluate", "--ckpt", str(files["ckpt"]), "--data", str(files["data"]), "--metrics", "fid,kid,control",
               "--out", str(out), "--facerecon", str(files["R"]), "--control-num", "2", "--identities", "2",
               "--frames", "2", *QUICK])
    assert rc == 0
    report = json.loads(out.read_text())
    assert report["format"] == "aniportraitgan-metrics/1" and report["run"] == "full"
    m = report["metrics"]
    assert set(m) == IMAGE_KEYS | CONTROL_KEYS
    for k, v in m.items():
        if k.startswith(("exp_corr", "head_pose_gain", "camera_gain", "view_bias")) and v is None:
            continue  # undefined (null) when a coefficient never varies among these few samples, or
            # with fewer than 3 samples for the view gains' three unknowns
        assert isinstance(v, float) and math.isfinite(v), (k, v)
    assert m["fid_portrait"] >= 0 and m["fid_face"] >= 0
    assert 0.0 <= m["multiview_visible"] <= 1.0
    meta = report["meta"]
    assert meta["num_generated"] == 4 and meta["num_real"] == 4 and meta["extractor"].startswith("randproj")
    assert meta["resolution"] == 16 and meta["stage"] == 1  # the checkpoint's native size
    md = out.with_suffix(".md").read_text()
    assert "| fid_face |" in md and "kid_portrait (x100)" in md and "| multiview_mae |" in md
    assert "fid_portrait" in capsys.readouterr().out
    # Real statistics are cached beside the dataset, one file per split.
    cached = sorted(p.name for p in (files["data"] / ".metrics_cache").iterdir())
    assert any("_portrait_4_16" in n for n in cached) and any("_face_4_16" in n for n in cached)


def test_deterministic_cache_reuse_and_compare(files, capsys):
    a = files["root"] / "a.json"
    b = files["root"] / "b.json"
    args = ["--data", str(files["data"]), "--metrics", "fid", "--resolution", "16", *QUICK]
    assert main(["evaluate", "--ckpt", str(files["ckpt"]), "--out", str(a), *args]) == 0
    cache = files["data"] / ".metrics_cache"
    stamps = {p.name: p.stat().st_mtime_ns for p in cache.iterdir()}
    assert main(["evaluate", "--ckpt", str(files["ckpt"]), "--out", str(b), "--run", "again", *args]) == 0
    assert {p.name: p.stat().st_mtime_ns for p in cache.iterdir()} == stamps  # no recomputation
    ra, rb = json.loads(a.read_text()), json.loads(b.read_text())
    assert ra["metrics"] == rb["metrics"] and set(ra["metrics"]) == {"fid_portrait", "fid_face"}
    capsys.readouterr()
    assert main(["evaluate", "--compare", str(a), str(b)]) == 0
    table = capsys.readouterr().out
    assert "| metric | a | again |" in table and "fid_face" in table


def test_demo_checkpoint_and_python_api(files, monkeypatch):
    monkeypatch.setattr(artefacts_loading, "DEMO_CHECKPOINT", files["ckpt"])
    rep = evaluate("demo", files["data"], EvalConfig(metrics=("kid",), num=3, num_real=5, batch=3,
                                                      extractor="stand-in", device="cpu", progress=False))
    assert set(rep.metrics) == {"kid_portrait", "kid_portrait_std", "kid_face", "kid_face_std"}
    assert rep.meta["num_real"] == 5 and rep.meta["kid_subset_size"] == 3


def _error(capsys, argv) -> str:
    assert main(argv) == 2
    return capsys.readouterr().err


def test_bad_input_gives_clear_errors(files, capsys, tmp_path):
    base = ["evaluate", "--ckpt", str(files["ckpt"]), "--out", str(tmp_path / "m.json"), *QUICK]
    err = _error(capsys, [*base, "--data", str(tmp_path / "nowhere")])
    assert "dataset folder" in err and "does not exist" in err
    (tmp_path / "empty").mkdir()
    assert "dataset card missing" in _error(capsys, [*base, "--data", str(tmp_path / "empty")])
    err = _error(capsys, [*base, "--data", str(files["data"]), "--metrics", "fid,lpips"])
    assert "unknown metric" in err and "'lpips'" in err
    err = _error(capsys, [*base, "--data", str(files["data"]), "--preset", "paper"])
    assert "another generator config" in err
    err = _error(capsys, ["evaluate", "--ckpt", str(files["R"]), "--data", str(files["data"]),
                          "--out", str(tmp_path / "m.json"), *QUICK])
    assert str(files["R"]) in err
    err = _error(capsys, [*base, "--data", str(files["data"]), "--facerecon", str(tmp_path / "R.safetensors")])
    assert "face reconstruction weights" in err
    err = _error(capsys, [*base, "--data", str(files["data"]), "--facerecon", str(files["ckpt"]), "--metrics", "control"])
    assert "not a face reconstruction network" in err
    assert "--compare" in _error(capsys, ["evaluate"])
    assert "does not exist" in _error(capsys, ["evaluate", "--compare", str(tmp_path / "missing.json")])
    assert not (tmp_path / "m.json").exists()


def test_registered_control_metrics_alone_give_the_numbers_of_the_full_run(files):
    cfg = dict(num=2, batch=2, extractor="stand-in", device="cpu", progress=False, facerecon=str(files["R"]),
               control=ControlConfig(num=2, identities=2, frames=2))
    full = evaluate(files["ckpt"], files["data"], EvalConfig(metrics=("control",), **cfg)).metrics
    part = evaluate(files["ckpt"], files["data"], EvalConfig(metrics=("multiview", "head_pose"), **cfg)).metrics
    assert set(part) == {"multiview_mae", "multiview_visible", "head_pose_deg", "head_pose_deg_real",
                         "head_pose_gain_yaw", "head_pose_gain_pitch", "camera_gain_yaw", "camera_gain_pitch",
                         "view_bias_yaw_deg", "view_bias_pitch_deg"}
    assert part == {k: full[k] for k in part}


def test_parse_metrics_and_config_validation():
    assert parse_metrics("control, FID") == ("fid", "control")
    assert parse_metrics("identity,geometry,kid") == ("kid", "geometry", "identity")
    with pytest.raises(UserError, match="choose from fid, kid, control, expression, head_pose, geometry"):
        parse_metrics("fid,lpips")
    with pytest.raises(UserError, match="no metric"):
        parse_metrics(" , ")
    with pytest.raises(UserError, match="extractor"):
        EvalConfig(extractor="clip").validate()
    with pytest.raises(UserError, match="at least 2"):
        EvalConfig(num=1).validate()
    EvalConfig(num=1, metrics=("control",)).validate()


@pytest.mark.slow  # Inception-v3 on CPU: four forward passes at 299x299 (20-60 s on 2 busy cores)
def test_inception_extractor_path(files, tmp_path):
    """The standard extractor end to end (skipped where its weights are not installed)."""
    from aniportraitgan.errors import AssetError
    from aniportraitgan.metrics.inception import find_inception_weights

    try:
        find_inception_weights()
    except AssetError as exc:
        pytest.skip(str(exc))
    data = tmp_path / "data"  # a copy, so that this cache does not touch the other tests' files
    import shutil

    shutil.copytree(files["data"], data, ignore=shutil.ignore_patterns(".metrics_cache"))
    rep = evaluate(files["ckpt"], data, EvalConfig(metrics=("fid",), num=2, num_real=2, batch=2, device="cpu",
                                                   progress=False))
    assert rep.meta["extractor"] == "inception-2015-12-05"
    assert all(math.isfinite(v) and v >= 0 for v in rep.metrics.values())
    assert any(p.name.startswith("inception-2015-12-05_face_2_16") for p in (data / ".metrics_cache").iterdir())
