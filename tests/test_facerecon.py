"""Face reconstruction network R: shapes, save/load, errors, and a short training run that
beats the constant (mean) predictor on held-out faces."""

from __future__ import annotations

import json

import pytest
import torch

from aniportraitgan.errors import AssetError, InputError
from aniportraitgan.facerecon import FaceRecon, FaceReconConfig


def test_forward_shapes_and_ranges():
    r = FaceRecon(FaceReconConfig(resolution=16, width=8, hidden=16))
    out = r(torch.randn(3, 3, 40, 40))  # other sizes are resized
    assert out["z_id"].shape == (3, 40) and out["z_exp"].shape == (3, 52) and out["view"].shape == (3, 2)
    assert (out["z_exp"] >= 0).all() and (out["z_exp"] <= 1).all()
    # Zero-initialised head: the untrained R predicts the label means.
    assert torch.allclose(out["z_id"], r.id_mean.expand(3, -1))
    with pytest.raises(InputError, match="face images"):
        r(torch.randn(3, 40, 40))


def test_save_load_round_trip_and_errors(tmp_path):
    r = FaceRecon(FaceReconConfig(resolution=16, width=8, hidden=16, predict_pose=False))
    with torch.no_grad():
        for p in r.parameters():
            p.normal_()
    path = r.save(tmp_path / "R.safetensors")
    again = FaceRecon.load(path)
    x = torch.randn(2, 3, 16, 16)
    assert torch.equal(r(x)["z_exp"], again(x)["z_exp"])
    assert not any(p.requires_grad for p in again.parameters())
    with pytest.raises(AssetError, match="do not exist"):
        FaceRecon.load(tmp_path / "missing.safetensors")
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(path.read_bytes()[:50])
    with pytest.raises(AssetError, match="corrupted"):
        FaceRecon.load(bad)


def test_short_training_beats_mean_predictor(tmp_path):
    from aniportraitgan.data.synth import make_tiny_dataset
    from aniportraitgan.facerecon.train import FaceReconTrainConfig, train_facerecon

    data = make_tiny_dataset(tmp_path / "data", num=64, resolution=32)
    out = tmp_path / "R.safetensors"
    report = train_facerecon(
        data, out,
        config=FaceReconConfig(resolution=16, width=16, hidden=64),
        train_config=FaceReconTrainConfig(steps=80, batch_size=16, lr=2e-3, holdout=0.25),
        log=None,
    )
    assert report["num_eval"] == 16
    assert report["model/landmark_mm"] < report["mean/landmark_mm"], report
    assert report["model/view_rmse_deg"] < report["mean/view_rmse_deg"], report
    saved = json.loads(out.with_suffix(".json").read_text())
    assert saved["model/landmark_mm"] == pytest.approx(report["model/landmark_mm"])
    FaceRecon.load(out)  # loadable by GAN training
