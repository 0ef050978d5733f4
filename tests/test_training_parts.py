"""Training building blocks: discriminator shapes, R1 against finite differences, crops,
config round trip, EMA, atomic checkpoints and their error messages."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from aniportraitgan.artefacts import CheckpointManager, load_checkpoint
from aniportraitgan.crops import face_crop, torso_crop
from aniportraitgan.errors import AssetError, InputError, UserError
from aniportraitgan.generator import Aux
from aniportraitgan.training.config import TrainConfig
from aniportraitgan.training.discriminator import (
    Discriminator,
    MinibatchStd,
    build_discriminators,
)
from aniportraitgan.training.ema import EMA, ema_beta
from aniportraitgan.training.losses import d_loss, g_loss, r1_penalty


@pytest.mark.parametrize("res", [32, 64, 128])
def test_discriminator_shapes(res):
    cfg = TrainConfig.preset("tiny").disc
    ds = build_discriminators(res, res // 2, cfg)
    x = torch.randn(4, 3, res, res)
    assert ds["whole"](x).shape == (4,)
    assert ds["face"](torch.randn(4, 3, res // 2, res // 2)).shape == (4,)
    torso = torso_crop(x)
    assert torso.shape == (4, 3, res // 4, res)
    assert ds["torso"](torso).shape == (4,)
    # Blocks halve the side down to 4: log2(res) - 2 of them.
    assert len(ds["whole"].blocks) == res.bit_length() - 3
    with pytest.raises(InputError, match="expects images"):
        ds["whole"](torch.randn(4, 3, res // 2, res // 2))


def test_discriminator_bad_resolution():
    with pytest.raises(InputError, match="power of two"):
        Discriminator(48)


def test_minibatch_std_reacts_to_diversity():
    layer = MinibatchStd(group=2)
    same = torch.ones(4, 8, 4, 4)
    out = layer(same)
    assert out.shape == (4, 9, 4, 4)
    assert out[:, -1].abs().max() < 1e-3  # identical samples: no spread
    diverse = layer(torch.randn(4, 8, 4, 4))
    assert diverse[:, -1].mean() > 0.3


def test_r1_matches_finite_differences():
    torch.manual_seed(0)
    d = Discriminator(8, channel_base=32, channel_max=4, mbstd_group=2).double()
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    gamma = 0.7
    got = r1_penalty(d, x, gamma)
    # Central differences of sum(D(x)) for every input element, all perturbed copies in one
    # batch: minibatch-stddev groups sample j with sample j + B/2, so laying the copies out as
    # [first samples of every copy, second samples of every copy] keeps each copy's pair together.
    h = 1e-6
    n = x.numel()
    eye = torch.eye(n, dtype=x.dtype).view(n, 2, 3, 8, 8) * h
    copies = torch.cat([x[None] + eye, x[None] - eye])  # [2n, 2, 3, 8, 8]
    batch = torch.cat([copies[:, 0], copies[:, 1]])  # [4n, 3, 8, 8]
    with torch.no_grad():
        d.mbstd.group = 2
        out = d(batch)
    per_copy = out[: 2 * n] + out[2 * n :]
    grad = (per_copy[:n] - per_copy[n:]) / (2 * h)
    ref = 0.5 * gamma * grad.view(2, -1).square().sum(1).mean()
    assert torch.allclose(got.double(), ref, rtol=1e-5), (got.item(), ref.item())
    # It is differentiable w.r.t. the discriminator's parameters (double backward).
    got.backward()
    assert d.from_rgb.weight.grad is not None and d.from_rgb.weight.grad.abs().sum() > 0


def test_gan_losses_values():
    real, fake = torch.tensor([2.0, -1.0]), torch.tensor([0.5, -3.0])
    sp = torch.nn.functional.softplus
    assert torch.isclose(d_loss(real, fake), sp(fake).mean() + sp(-real).mean())
    assert torch.isclose(g_loss(fake), sp(-fake).mean())


def test_torso_crop_is_lower_quarter():
    x = torch.arange(16.0).view(1, 1, 16, 1).expand(1, 3, 16, 8)
    t = torso_crop(x)
    assert t.shape == (1, 3, 4, 8)
    assert t[0, 0, :, 0].tolist() == [12.0, 13.0, 14.0, 15.0]
    with pytest.raises(InputError):
        torso_crop(torch.zeros(1, 3, 10, 8))


def test_aux_weighted_losses_use_the_loss_weights():
    cfg = dataclasses.replace(TrainConfig.preset("tiny").loss, pose_smooth=0.0)
    t = torch.tensor
    aux = Aux(pose_smooth=t(7.0), exp_imitation=t(2.0), exp_smooth=t([1.0, 3.0]), exp_minimal=t(4.0),
              colour_rough=t(5.0), body=None, w_radiance=t(0.0), w_expression=t(0.0))
    out = aux.weighted(cfg)
    assert set(out) == {"imitation", "exp_smooth", "exp_minimal"}  # a zero weight is left out
    assert aux.weighted(dataclasses.replace(cfg, colour_smooth=3.0))["colour_smooth"].item() == 15.0
    assert out["imitation"].item() == pytest.approx(2.0 * cfg.imitation)
    assert out["exp_smooth"].item() == pytest.approx(2.0 * cfg.exp_smooth)
    assert out["exp_minimal"].item() == pytest.approx(4.0 * cfg.exp_minimal)


def test_config_round_trip_and_signature():
    cfg = TrainConfig.preset("tiny")
    again = TrainConfig.from_json(cfg.to_json())
    assert again == cfg
    assert again.model_signature() == cfg.model_signature()
    other = TrainConfig.preset("tiny")
    other.ablation.no_torso_disc = True
    assert other.model_signature() != cfg.model_signature()
    sched = TrainConfig.preset("tiny")
    sched.checkpoint_every = 7  # schedules do not change the signature
    assert sched.model_signature() == cfg.model_signature()
    paper = TrainConfig.preset("paper")
    assert (paper.loss.whole, paper.loss.face, paper.loss.torso) == (0.1, 1.0, 0.5)
    assert (paper.stage1.portrait_resolution, paper.stage1.face_resolution) == (128, 128)
    assert (paper.stage2.portrait_resolution, paper.stage2.face_resolution) == (512, 256)
    small = TrainConfig.preset("small")  # the CPU demo model: the tiny generator at 64 / 64
    assert small.generator_config() == TrainConfig.preset("tiny").generator_config()
    assert (small.stage1.portrait_resolution, small.stage1.face_resolution, small.facerecon_resolution) == (64, 64, 64)
    assert small.reuse_fakes and small.name == "small"
    with pytest.raises(UserError, match="unknown training config 'huge': choose one of paper, small, tiny"):
        TrainConfig.preset("huge")
    with pytest.raises(InputError, match="unknown field"):
        TrainConfig.from_dict({**cfg.to_dict(), "bogus": 1})


def test_ema_tracks_and_ramps():
    live = torch.nn.Linear(3, 2)
    ema = EMA(live)
    with torch.no_grad():
        live.weight.add_(1.0)
    before = ema.module.weight.clone()
    ema.update(live, beta=0.75)
    assert torch.allclose(ema.module.weight, before + 0.25)
    assert ema_beta(4, 0, 10.0, 0.05) == 0.0  # ramp-up: nothing seen yet -> copy
    assert 0.0 < ema_beta(4, 10_000, 10.0, None) < 1.0


def _save_one(tmp_path, step=3, keep_every=0):
    mgr = CheckpointManager(tmp_path, keep_every=keep_every)
    cfg = TrainConfig.preset("tiny")
    weights = {"G.w": torch.randn(3, 4), "D1.whole.b": torch.zeros(2)}
    state = {"step": step, "rng": torch.get_rng_state(), "py": (3, (1, 2, 3), None)}
    path = mgr.save(1, step, weights, state, cfg.to_dict(), cfg.model_signature())
    return mgr, cfg, weights, path


def test_checkpoint_round_trip_and_pruning(tmp_path):
    mgr, cfg, weights, path = _save_one(tmp_path, step=3, keep_every=4)
    ck = load_checkpoint(path, cfg.model_signature())
    assert ck.step == 3 and ck.stage == 1
    assert torch.equal(ck.weights["G.w"], weights["G.w"])
    assert ck.state["py"] == (3, (1, 2, 3), None)
    for step in (4, 5, 6):
        mgr.save(1, step, weights, {"step": step}, cfg.to_dict(), cfg.model_signature())
    # Last (6) and the periodic one (4) remain; 3 and 5 are pruned.
    assert [s for _, s, _ in mgr.list()] == [4, 6]
    assert mgr.latest().name == "s1-00000006"
    assert not list((tmp_path / "checkpoints").glob(".tmp-*"))


def test_checkpoint_corruption_is_reported(tmp_path):
    _, cfg, _, path = _save_one(tmp_path)
    w = path / "weights.safetensors"
    data = bytearray(w.read_bytes())
    data[len(data) // 2] ^= 0xFF
    w.write_bytes(bytes(data))
    with pytest.raises(AssetError, match="weights.safetensors is corrupted"):
        load_checkpoint(path, cfg.model_signature())
    (path / "meta.json").write_text("{not json")
    with pytest.raises(AssetError, match="meta.json unreadable"):
        load_checkpoint(path)
    (path / "meta.json").unlink()
    with pytest.raises(AssetError, match="incomplete"):
        load_checkpoint(path)


def test_checkpoint_truncated_state(tmp_path):
    _, cfg, _, path = _save_one(tmp_path)
    s = path / "state.pt"
    s.write_bytes(s.read_bytes()[:20])
    with pytest.raises(AssetError, match="state.pt is corrupted"):
        load_checkpoint(path, cfg.model_signature())


def test_checkpoint_of_another_config(tmp_path):
    _, cfg, _, path = _save_one(tmp_path)
    other = TrainConfig.preset("tiny")
    other.ablation.no_face_disc = True
    with pytest.raises(AssetError, match="another configuration"):
        load_checkpoint(path, other.model_signature())
    meta = json.loads((path / "meta.json").read_text())
    assert meta["config"]["name"] == "tiny"


def test_linear_landmarks_match_body_model():
    from aniportraitgan.body import PortraitBodyModel
    from aniportraitgan.body.landmarks import (
        LinearLandmarks,
        body_landmarks,
        landmark_loss,
    )

    body = PortraitBodyModel.load()
    lin = LinearLandmarks.fit(body, samples=128)
    g = torch.Generator().manual_seed(5)
    z_id, z_exp = torch.randn(16, 40, generator=g), torch.rand(16, 52, generator=g) * 0.5
    exact = body_landmarks(body, z_id, z_exp)
    assert exact.shape == (16, 68, 3)
    assert torch.allclose(exact.mean(1), torch.zeros(16, 3), atol=1e-6)  # centred
    err_mm = (lin(z_id, z_exp) - exact).norm(dim=-1).mean() * 1000
    spread_mm = (exact - exact.mean(0)).norm(dim=-1).mean() * 1000
    assert err_mm < 1.0 and spread_mm > 5.0, (err_mm, spread_mm)
    # The loss is zero for a perfect estimate and grows with the coefficient error.
    assert landmark_loss(lin, z_id, z_exp, z_id, z_exp) == 0
    assert landmark_loss(lin, z_id, z_exp + 0.3, z_id, z_exp) > landmark_loss(lin, z_id, z_exp + 0.1, z_id, z_exp) > 0


def test_face_crop_follows_projected_head():
    from aniportraitgan.cameras import look_at_cameras

    cams = look_at_cameras(torch.zeros(1), torch.zeros(1), 1.6, 20.0, torch.tensor([[0.0, 0.0, 0.0]]))
    head = torch.tensor([[0.0, 0.0, 0.0]])
    uv, _ = cams.project(head[:, None], 64, 64)
    img = -torch.ones(1, 3, 64, 64)
    u, v = int(uv[0, 0, 0]), int(uv[0, 0, 1])
    img[..., v - 1 : v + 1, u - 1 : u + 1] = 1.0  # a white dot at the projected head centre
    crop = face_crop(img, cams, head, torch.eye(3)[None], 32, face_radius=0.8, face_fov_deg=20.0)
    assert crop.shape == (1, 3, 32, 32)
    ys, xs = torch.nonzero(crop[0, 0] > 0, as_tuple=True)
    assert abs(ys.float().mean() - 15.5) < 2 and abs(xs.float().mean() - 15.5) < 2
    # A head rolled by 90 degrees gives a crop rotated by 90 degrees.
    from aniportraitgan.rotations import axis_angle_to_matrix

    img2 = img.clone()
    img2[..., v - 1 : v + 1, u + 6 : u + 8] = 1.0  # a second dot to the image right of the head
    roll = axis_angle_to_matrix(torch.tensor([[0.0, 0.0, 1.5707963]]))
    upright = face_crop(img2, cams, head, torch.eye(3)[None], 32, 0.8, 20.0)
    rolled = face_crop(img2, cams, head, roll, 32, 0.8, 20.0)
    assert torch.allclose(torch.rot90(upright, 1, dims=(-2, -1)), rolled, atol=0.15) or torch.allclose(
        torch.rot90(upright, -1, dims=(-2, -1)), rolled, atol=0.15)


def test_train_switches_left_out_keep_the_config_files_values(tmp_path):
    """A bool option absent from the command line keeps a `true` of the --config file; given, it
    turns the field on."""
    import argparse

    from aniportraitgan.commands import train as train_command

    cfg = TrainConfig.preset("tiny")
    cfg.reuse_fakes = True
    cfg.ablation.no_torso_disc = True
    path = tmp_path / "config.json"
    path.write_text(cfg.to_json())
    parser = argparse.ArgumentParser()
    train_command.register(parser.add_subparsers())
    base = ["train", "--config", str(path), "--data", "d", "--out", "o"]
    kept = train_command.build_config(parser.parse_args(base))
    assert kept.reuse_fakes and kept.ablation.no_torso_disc and not kept.ablation.no_face_disc
    turned = train_command.build_config(parser.parse_args(base + ["--no-face-disc"]))
    assert turned.ablation.no_face_disc and turned.ablation.no_torso_disc
