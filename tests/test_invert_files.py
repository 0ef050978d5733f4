"""Identity files: round trip, where a seed is accepted (GeneratorFrames, generate, animate),
refusal by another checkpoint, NaN and corruption; `invert` on bad input and its pipeline
without the (slow) mediapipe front end: the three outputs, or none of them."""

import copy
import json

import numpy as np
import pytest
import torch
from PIL import Image

from aniportraitgan.animation import GeneratorFrames, Keyframes
from aniportraitgan.artefacts import DEMO_CHECKPOINT, save_generator, write_checksummed
from aniportraitgan.artefacts.identities import IDENTITY_KIND, StoredIdentity, generator_signature, write_identity
from aniportraitgan.cli import main
from aniportraitgan.errors import AssetError, InputError
from aniportraitgan.inference import load_identity, load_inference_model
from aniportraitgan.inversion import pipeline
from aniportraitgan.inversion.measure import known_case
from aniportraitgan.inversion.optimize import InversionConfig
from aniportraitgan.inversion.tuning import TuningConfig
from aniportraitgan.webapp.render import Controls, WebRenderer

PSI = 0.7


@pytest.fixture(scope="module")
def model():
    return load_inference_model("demo", "cpu")


def seed_identity(model, seed: int, delta=None) -> StoredIdentity:
    """The identity file content that renders exactly as ``seed`` at PSI."""
    z_id, eps = model.identity(seed)
    with torch.no_grad():
        w = model.generator.map_identity(z_id, eps, PSI)[0]
    return StoredIdentity(z_id, eps, w, None, generator_signature(model.generator), delta=delta or {},
                          info={"checkpoint": "demo"})


def test_an_identity_file_renders_where_a_seed_does(tmp_path, model):
    path = write_identity(tmp_path / "s3.safetensors", seed_identity(model, 3))
    ident = load_identity(path, model)
    kf = Keyframes.neutral(2)
    kf.camera[1, 0] = 0.4
    mine = GeneratorFrames(model, ident, psi=PSI)(kf)
    theirs = GeneratorFrames(model, 3, psi=PSI)(kf)
    assert np.array_equal(mine, theirs)
    assert ident.name == "s3" and not ident.tuned


def test_tuned_weights_apply_to_a_copy(tmp_path, model):
    before = generator_signature(model.generator)
    bias = model.generator.radiance.head.bias
    delta = {"radiance.head.bias": torch.full_like(bias, 0.5)}
    path = write_identity(tmp_path / "tuned.safetensors", seed_identity(model, 3, delta))
    ident = load_identity(path, model)
    assert ident.tuned and torch.equal(ident.delta["radiance.head.bias"], delta["radiance.head.bias"])
    frames = GeneratorFrames(model, ident, psi=PSI)
    assert torch.allclose(frames.model.generator.radiance.head.bias, bias + 0.5)
    assert generator_signature(model.generator) == before  # the loaded model is untouched
    kf = Keyframes.neutral(1)
    assert not np.array_equal(frames(kf), GeneratorFrames(model, 3, psi=PSI)(kf))


@pytest.fixture(scope="module")
def other_ckpt(tmp_path_factory, model):
    """The demo generator with one weight changed: the same config, other weights."""
    G = copy.deepcopy(model.generator, memo={id(model.generator.body): model.generator.body})
    with torch.no_grad():
        G.radiance.head.bias.add_(1e-3)
    return save_generator(tmp_path_factory.mktemp("other") / "other.safetensors", G, stage=1, prior=model.prior)


def test_an_identity_file_is_refused_by_another_checkpoint(tmp_path, model, other_ckpt, capsys):
    path = write_identity(tmp_path / "me.safetensors", seed_identity(model, 3))
    other = load_inference_model(other_ckpt, "cpu")
    with pytest.raises(AssetError, match="made for another generator"):
        load_identity(path, other)
    out = tmp_path / "me.mp4"
    assert main(["animate", "--ckpt", str(other_ckpt), "--identity", str(path), "--out", str(out), "--no-progress"]) == 2
    assert "made for another generator" in capsys.readouterr().err and not out.exists()


def _raw_identity(path, model, **overrides):
    ident = seed_identity(model, 3)
    tensors = {"z_id": ident.z_id, "eps": ident.eps, "w_radiance": ident.w_radiance, **overrides}
    meta = {"kind": IDENTITY_KIND, "format": "1", "signature": ident.signature, "info": "{}"}
    return write_checksummed(path, tensors, meta)


def test_nan_in_an_identity_file_is_a_clear_error(tmp_path, model):
    w = seed_identity(model, 3).w_radiance.clone()
    w[0, 5] = float("nan")
    path = _raw_identity(tmp_path / "nan.safetensors", model, w_radiance=w)  # a valid checksum over a NaN
    with pytest.raises(AssetError, match="'w_radiance' contains NaN"):
        load_identity(path, model)
    bad = seed_identity(model, 3)
    bad.w_radiance = w
    with pytest.raises(InputError, match="NaN"):
        write_identity(tmp_path / "never.safetensors", bad)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["nan.safetensors"]  # nothing half-written


def test_damaged_wrong_and_incomplete_files(tmp_path, model):
    path = write_identity(tmp_path / "ok.safetensors", seed_identity(model, 3))
    data = bytearray(path.read_bytes())
    data[-3] ^= 0x40
    (tmp_path / "flipped.safetensors").write_bytes(bytes(data))
    with pytest.raises(AssetError, match="corrupted"):
        load_identity(tmp_path / "flipped.safetensors", model)
    with pytest.raises(AssetError, match="not an aniportraitgan identity file"):
        load_identity(DEMO_CHECKPOINT, model)
    with pytest.raises(AssetError, match="does not exist"):
        load_identity(tmp_path / "missing.safetensors", model)
    short = _raw_identity(tmp_path / "short.safetensors", model, w_radiance=torch.zeros(1, 7))
    with pytest.raises(AssetError, match="does not fit"):
        load_identity(short, model)


def test_generate_and_animate_take_an_identity(tmp_path, model, capsys):
    path = write_identity(tmp_path / "anna.safetensors", seed_identity(model, 4))
    stills = tmp_path / "stills"
    assert main(["generate", "--ckpt", "demo", "--identity", str(path), "--out", str(stills), "--views", "2",
                 "--no-progress"]) == 0
    assert {p.name for p in stills.iterdir()} == {f"anna_{k}" for k in ("portrait.png", "face.png", "depth.png",
                                                                        "depth.npy", "views.png")}
    video = tmp_path / "anna.gif"
    assert main(["animate", "--ckpt", "demo", "--identity", str(path), "--preset", "smile", "--frames-between", "0",
                 "--out", str(video), "--no-progress"]) == 0
    assert video.stat().st_size > 0
    drive = tmp_path / "drive.npz"  # driving signals from a file (`animate --drive`)
    np.savez(drive, expression=np.zeros((3, 52)), pose=np.zeros((3, 6, 3)), camera=np.zeros((3, 2)), fps=np.array(12.0))
    driven = tmp_path / "driven.gif"
    assert main(["animate", "--ckpt", "demo", "--identity", str(path), "--drive", str(drive), "--out", str(driven),
                 "--no-progress"]) == 0
    assert driven.stat().st_size > 0


def test_the_web_renderer_picks_an_identity(tmp_path, model):
    path = write_identity(tmp_path / "anna.safetensors", seed_identity(model, 4))
    web = WebRenderer(model, identities={"anna": load_identity(path, model)}, workdir=tmp_path / "web")
    try:
        anna = web.render(Controls(identity="anna", yaw=10.0))
        assert np.array_equal(anna.image, web.render(Controls(seed=4, psi=PSI, yaw=10.0)).image)
        assert "anna" in anna.path.name
        assert np.array_equal(web.render(Controls(identity="anna", psi=0.2, yaw=10.0)).image, anna.image)  # no psi
        with pytest.raises(InputError, match="unknown identity 'bob'"):
            web.render(Controls(identity="bob"))
    finally:
        web.close()


def _photo(tmp_path):
    path = tmp_path / "photo.png"
    Image.fromarray(np.full((96, 96, 3), 200, np.uint8)).save(path)
    return path


@pytest.mark.parametrize("extra, message", [
    (["--steps", "0"], "--steps must be >= 1"),
    (["--finetune", "-1"], "--finetune must be >= 0"),
    (["--perceptual", "facerecon"], "needs --facerecon"),
])
def test_invert_refuses_bad_options(tmp_path, capsys, extra, message):
    out = tmp_path / "me.safetensors"
    assert main(["invert", str(_photo(tmp_path)), "--ckpt", "demo", "--out", str(out), *extra]) == 2
    assert message in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["photo.png"]


def test_invert_refuses_bad_photos_and_outputs(tmp_path, capsys):
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg" * 10)
    out = tmp_path / "me.safetensors"
    cases = [([str(corrupt), "--out", str(out)], "cannot be used: unreadable file"),
             ([str(tmp_path / "missing.jpg"), "--out", str(out)], "does not exist"),
             ([str(corrupt), "--out", str(tmp_path / "me.npz")], "must end in .safetensors"),
             ([str(corrupt), "--out", str(tmp_path / "no" / "me.safetensors")], "does not exist")]
    for args, message in cases:
        assert main(["invert", *args, "--ckpt", "demo"]) == 2
        assert message in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["corrupt.jpg"]


def test_the_pipeline_writes_all_three_files_or_none(tmp_path, model, monkeypatch):
    case = known_case(model, 5, "mean")
    monkeypatch.setattr(pipeline, "target_from_photo", lambda *a, **k: case.target)
    photo = _photo(tmp_path)
    out = tmp_path / "me.safetensors"
    cfg, tuning = InversionConfig(steps=3, perceptual="none"), TuningConfig(steps=2)

    def boom(*a, **k):
        raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(pipeline, "write_identity", boom)  # interrupted at the last write
        with pytest.raises(KeyboardInterrupt):
            pipeline.invert_photo(photo, model, out, cfg, tuning, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["photo.png"]  # none of the three, no temporary file
    report = pipeline.invert_photo(photo, model, out, cfg, tuning, progress=False)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["me.safetensors", "me_comparison.png", "me_metrics.json", "photo.png"]
    on_disk = json.loads((tmp_path / "me_metrics.json").read_text())
    assert on_disk["signature"] == generator_signature(model.generator) == report["signature"]
    assert set(on_disk["metrics"]) == {"start", "latent_search", "pivotal_tuning", "final"}
    assert Image.open(tmp_path / "me_comparison.png").size == (4 * 128, 2 * 128)
    ident = load_identity(out, model)
    assert ident.tuned and ident.info["metrics"]["final"]["psnr"] == pytest.approx(report["metrics"]["final"]["psnr"])
    assert set(ident.photo) == {"z_exp", "z_pose", "c2w", "fov"}


@pytest.fixture(scope="module")
def stage2(tmp_path_factory, model):
    """The bundled generator exported as stage 2, its U untrained (U's code path; no quality claim)."""
    G = copy.deepcopy(model.generator, memo={id(model.generator.body): model.generator.body})
    path = save_generator(tmp_path_factory.mktemp("stage2") / "s2.safetensors", G, stage=2, prior=model.prior)
    return load_inference_model(path, "cpu")


def test_stage_2_searches_and_tunes_u_too(tmp_path, stage2):
    assert stage2.stage == 2
    case = known_case(stage2, 5, "mean")
    inv = pipeline.invert_target(stage2, case.target, InversionConfig(steps=4, space="w", perceptual="none"),
                                 TuningConfig(steps=1), progress=False)
    assert inv.codes.w_superres is not None
    assert any(n.startswith("superres.") for n in inv.delta) and any(n.startswith("radiance.") for n in inv.delta)
    path = write_identity(tmp_path / "s2.safetensors", pipeline.identity_of(stage2, inv, case.target))
    ident = load_identity(path, stage2)
    assert ident.w_superres is not None and ident.w_superres.shape == (1, stage2.config.sr_style_dim)
    frames = GeneratorFrames(stage2, ident)(Keyframes.neutral(1))
    assert frames.shape == (1, stage2.portrait_resolution, stage2.portrait_resolution, 3)
