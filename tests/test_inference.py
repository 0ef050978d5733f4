"""Loading checkpoints for inference: formats, validation errors, latent prior, identities."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from aniportraitgan.body import PortraitBodyModel
from aniportraitgan.errors import AssetError, InputError
from aniportraitgan.generator import Generator, GeneratorConfig
from aniportraitgan.cameras import MainCameraPlacement
from aniportraitgan.latents import LatentPrior
from aniportraitgan.artefacts import CheckpointManager, export_generator, load_generator, read_generator_file, save_generator
from aniportraitgan.artefacts import loading
from aniportraitgan.inference import load_inference_model


@pytest.fixture(scope="module")
def body():
    return PortraitBodyModel.load(device="cpu")


@pytest.fixture(scope="module")
def tiny(body):
    torch.manual_seed(0)
    return Generator(GeneratorConfig.tiny(), body)


@pytest.fixture(scope="module")
def tiny_file(tiny, tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "tiny.safetensors"
    export_generator(path, tiny.state_dict(), tiny.config.to_dict(), stage=2, step=7)
    return path


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa if "w_avg" not in k and "count" not in k)


def test_exported_file_loads_with_stage_and_resolution(tiny, tiny_file, body):
    m = load_inference_model(tiny_file, "cpu", body_model=body)
    assert _same_weights(m.generator, tiny)
    assert not m.generator.training and m.stage == 2 and m.step == 7
    cfg = GeneratorConfig.tiny()
    assert m.portrait_resolution == cfg.sr_output_resolution
    # an untrained generator gets truncation centres estimated from the prior
    assert m.generator.w_avg_radiance.initialized and m.generator.w_avg_superres.initialized
    assert m.prior.source == "standard normal"
    assert isinstance(load_generator(tiny_file, "cpu"), Generator)


def test_expected_config_mismatch_is_reported(tiny_file, body):
    load_inference_model(tiny_file, "cpu", expected_config="tiny", body_model=body)
    with pytest.raises(AssetError, match="another generator config.*manifold_hidden: 16 != 128"):
        load_inference_model(tiny_file, "cpu", expected_config="paper", body_model=body)


def test_weights_that_do_not_fit_the_stored_config(tiny, tmp_path, body):
    cfg = GeneratorConfig.tiny(radiance_hidden=48).to_dict()
    path = export_generator(tmp_path / "wrong.safetensors", tiny.state_dict(), cfg)
    with pytest.raises(AssetError, match="does not fit"):
        load_inference_model(path, "cpu", body_model=body)


def test_missing_corrupt_and_foreign_files(tmp_path, tiny, body):
    with pytest.raises(AssetError, match="does not exist"):
        load_inference_model(tmp_path / "nope.safetensors", body_model=body)
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\x00" * 64)
    with pytest.raises(AssetError, match="corrupted"):
        load_inference_model(junk, body_model=body)
    good = export_generator(tmp_path / "g.safetensors", tiny.state_dict(), tiny.config.to_dict())
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(AssetError, match="corrupted"):
        load_inference_model(cut, body_model=body)
    from safetensors.torch import save_file

    foreign = tmp_path / "foreign.safetensors"
    save_file({"w": torch.zeros(2)}, str(foreign))
    with pytest.raises(AssetError, match="not an exported aniportraitgan generator"):
        load_inference_model(foreign, body_model=body)
    empty_dir = tmp_path / "empty"
    empty_dir.mkdir()
    with pytest.raises(AssetError, match="neither a checkpoint folder"):
        load_inference_model(empty_dir, body_model=body)


def test_nan_weights_are_rejected(tiny, tmp_path, body):
    state = {k: v.clone() for k, v in tiny.state_dict().items()}
    key = next(k for k, v in state.items() if v.is_floating_point() and v.numel() > 1 and "weight" in k)
    state[key].view(-1)[0] = float("nan")
    path = export_generator(tmp_path / "nan.safetensors", state, tiny.config.to_dict())
    with pytest.raises(AssetError, match=f"{key}.*NaN"):
        load_inference_model(path, body_model=body)


def test_demo_name(monkeypatch, tmp_path, tiny_file, body):
    monkeypatch.setattr(loading, "DEMO_CHECKPOINT", tmp_path / "demo_generator.safetensors")
    with pytest.raises(AssetError, match="does not exist yet"):
        load_inference_model("demo", body_model=body)
    monkeypatch.setattr(loading, "DEMO_CHECKPOINT", tiny_file)
    assert load_inference_model("demo", body_model=body).source == tiny_file


def test_training_checkpoint_folder_and_run_folder(tiny, tmp_path, body):
    weights = {f"G_ema.{k}": v for k, v in tiny.state_dict().items()}
    weights.update({f"G.{k}": torch.zeros_like(v) for k, v in tiny.state_dict().items()})
    mgr = CheckpointManager(tmp_path / "run")
    ck = mgr.save(1, 12, weights, {"step": 12}, {"generator_preset": "tiny", "ablation": {"no_dp": False},
                                                 "stage1": {"portrait_resolution": 32, "face_resolution": 32}}, "sig")
    for where in (ck, tmp_path / "run", ck / "weights.safetensors"):
        m = load_inference_model(where, body_model=body)
        assert _same_weights(m.generator, tiny)  # the EMA weights, not G's
        assert m.stage == 1 and m.step == 12 and m.portrait_resolution == 32 and m.face_resolution == 32
    # a damaged weights file fails the checksum
    data = bytearray((ck / "weights.safetensors").read_bytes())
    data[-1] ^= 0xFF
    (ck / "weights.safetensors").write_bytes(bytes(data))
    with pytest.raises(AssetError, match="SHA-256"):
        load_inference_model(ck, body_model=body)


def test_latent_prior_round_trip_and_identities(tiny, tmp_path, body):
    prior = LatentPrior(torch.linspace(-1, 1, 40), torch.full((40,), 0.5), MainCameraPlacement(1.3, 18.0, (0.0, 0.05, 0.01)))
    path = save_generator(tmp_path / "p.safetensors", tiny, stage=1, prior=prior)
    m = load_inference_model(path, body_model=body)
    assert m.prior.source == "training labels" and m.prior.camera.radius == 1.3 and m.prior.camera.fov_deg == 18.0
    torch.testing.assert_close(m.prior.z_id_mean, prior.z_id_mean)
    z1, e1 = m.identity(5)
    z2, e2 = m.identity(5)
    z3, _ = m.identity(6)
    assert torch.equal(z1, z2) and torch.equal(e1, e2) and not torch.equal(z1, z3)
    g = torch.Generator().manual_seed(5)
    torch.testing.assert_close(z1[0], prior.z_id_mean + 0.5 * torch.randn(40, generator=g))
    assert e1.shape == (1, tiny.config.noise_dim)
    cams = m.cameras(torch.tensor([0.0]), torch.tensor([0.0]))
    eye = cams.c2w[0, :3, 3]
    torch.testing.assert_close((eye - torch.tensor(prior.camera.look_at)).norm(), torch.tensor(1.3))
    with pytest.raises(InputError, match="seed"):
        m.identity(-1)


def test_corrupted_prior_is_an_asset_error(tiny, tmp_path, body):
    from safetensors.torch import save_file

    path = export_generator(tmp_path / "g.safetensors", tiny.state_dict(), tiny.config.to_dict())
    w, meta = read_generator_file(path)
    meta["latent_prior"] = json.dumps({"z_id_mean": [0.0] * 3})
    save_file(w, str(path), metadata=meta)
    with pytest.raises(AssetError, match="latent prior"):
        load_inference_model(Path(path), body_model=body)


def test_recorded_truncation_average_is_kept(tiny, tmp_path, body):
    # a stage-1 export: phi's average was recorded in training, U's never was
    state = {k: v.clone() for k, v in tiny.state_dict().items()}
    state["w_avg_radiance.w_avg"] = torch.full_like(state["w_avg_radiance.w_avg"], 0.25)
    state["w_avg_radiance.count"] = torch.tensor(10)
    path = export_generator(tmp_path / "s1.safetensors", state, tiny.config.to_dict())
    m = load_inference_model(path, body_model=body)
    assert m.stage == 1  # no stage in the metadata and U never trained
    assert torch.all(m.generator.w_avg_radiance.w_avg == 0.25)
    assert m.generator.w_avg_superres.initialized
