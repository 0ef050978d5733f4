"""The trainer on a tiny dataset: finite losses, exact resume, stage 2, ablations, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from aniportraitgan.errors import AssetError, UserError
from aniportraitgan.artefacts import load_checkpoint, read_generator_file
from aniportraitgan.training.config import TrainConfig
from aniportraitgan.training import RunOptions, Trainer, train
from aniportraitgan.training.rng import StepBatches


def tiny_dataset(root: Path, num: int = 8) -> Path:
    from aniportraitgan.data.synth import make_tiny_dataset

    return make_tiny_dataset(root, num=num, resolution=32)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    return tiny_dataset(tmp_path_factory.mktemp("synth"), num=8)


def test_config(**ablation) -> TrainConfig:
    """The tiny preset made smaller still: 16 x 16 images, batch 2, few samples per ray."""
    cfg = TrainConfig.preset("tiny")
    cfg.stage1.portrait_resolution = cfg.stage1.face_resolution = 16
    cfg.stage2.portrait_resolution, cfg.stage2.face_resolution = 32, 16
    cfg.stage1.batch_size = cfg.stage2.batch_size = 2
    cfg.generator_overrides = {"samples_per_ray": 8, "sr_map_resolution": 16, "sr_map_depth_samples": 12, "aux_points": 256}
    cfg.checkpoint_every = 2
    cfg.image_every = 0
    cfg.log_every = 1
    for k, v in ablation.items():
        setattr(cfg.ablation, k, v)
    return cfg


test_config.__test__ = False  # a helper, not a test


def opts(data: Path, out: Path, **kw) -> RunOptions:
    return RunOptions(data=data, out=out, progress=False, **kw)


def final_weights(run: Path) -> dict[str, torch.Tensor]:
    from aniportraitgan.artefacts import CheckpointManager

    return load_checkpoint(CheckpointManager(run).latest()).weights


def test_step_batches_deterministic_and_rank_split():
    full = StepBatches(5, 4, 0, 1, seed=3, stage=1, start_step=0, stop_step=4)
    r0 = StepBatches(5, 4, 0, 2, seed=3, stage=1, start_step=0, stop_step=4)
    r1 = StepBatches(5, 4, 1, 2, seed=3, stage=1, start_step=0, stop_step=4)
    for s in range(4):
        assert full.indices(s) == r0.indices(s) + r1.indices(s)
    # Resuming at step 2 yields exactly the remaining batches.
    tail = StepBatches(5, 4, 0, 1, seed=3, stage=1, start_step=2, stop_step=4)
    assert list(tail) == [full.indices(2), full.indices(3)]
    # Each epoch is a permutation of the samples.
    stream = [i for s in range(5) for i in full.indices(s)]
    assert sorted(stream[:5]) == list(range(5))
    with pytest.raises(UserError, match="not divisible"):
        StepBatches(5, 3, 0, 2, 0, 1, 0, 1)


def test_tiny_steps_keep_losses_finite(data_dir, tmp_path):
    run = tmp_path / "run"
    cfg = test_config()
    cfg.image_every = 2
    cfg.loss.r1_every = 1
    from aniportraitgan.facerecon import FaceRecon, FaceReconConfig

    r_path = FaceRecon(FaceReconConfig(resolution=16, width=8, hidden=16)).save(tmp_path / "R.safetensors")
    summary = train(cfg, opts(data_dir, run, steps=2, facerecon=r_path))
    logs = summary["stage1"]["last_logs"]
    for key in ("D_whole", "D_face", "D_torso", "G_whole", "G_face", "G_torso", "R1_whole", "landmark",
                "imitation", "exp_smooth", "exp_minimal", "pose_smooth", "G_total"):
        assert key in logs, key
        assert np.isfinite(logs[key]), (key, logs[key])
    assert (run / "config.json").is_file() and (run / "train.log").is_file()
    assert TrainConfig.from_json((run / "config.json").read_text()) == cfg
    assert list((run / "samples").glob("s1-*.png"))
    assert list((run / "tensorboard").glob("events.*"))
    weights, meta = read_generator_file(run / "generator.safetensors")
    assert json.loads(meta["generator_config"])["samples_per_ray"] == 8
    assert len(json.loads(meta["latent_prior"])["z_id_mean"]) == 40  # for inference.LatentPrior
    from aniportraitgan.artefacts import load_generator

    G = load_generator(run / "generator.safetensors")
    assert G.config.samples_per_ray == 8
    ema = final_weights(run)
    for k, v in G.state_dict().items():
        assert torch.equal(v, ema["G_ema." + k]), k
    # The run folder refuses a second run without --resume.
    with pytest.raises(UserError, match="--resume"):
        train(cfg, opts(data_dir, run, steps=2))


def test_bf16_autocast_steps_stay_finite(data_dir, tmp_path):
    """The mixed-precision path (CUDA only in real runs) exercised on the CPU's bf16 autocast:
    both stages with R stay finite (the body model keeps full precision under autocast)."""
    from aniportraitgan.facerecon import FaceRecon, FaceReconConfig

    r_path = FaceRecon(FaceReconConfig(resolution=16, width=8, hidden=16)).save(tmp_path / "R.safetensors")
    trainer = Trainer(test_config(), opts(data_dir, tmp_path / "run", stage="both", steps=2, stage2_steps=1,
                                          facerecon=r_path))
    trainer.amp_dtype = torch.bfloat16
    summary = trainer.run()
    for stage in ("stage1", "stage2"):
        logs = summary[stage]["last_logs"]
        assert logs and all(np.isfinite(v) for v in logs.values()), (stage, logs)
    assert "landmark" in summary["stage1"]["last_logs"]


def test_body_model_keeps_full_precision_under_autocast():
    from aniportraitgan.body import PortraitBodyModel

    body = PortraitBodyModel.load()
    z_pose = torch.zeros(2, 6, 3)
    z_pose[:, 3] = torch.tensor([0.1, 0.5, -0.2])
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        out = body(torch.randn(2, 40), torch.rand(2, 52), z_pose)
        canonical = out.canonical_vertices
    assert out.vertices.dtype == canonical.dtype == torch.float32
    R = out.head_rotation
    assert (R.transpose(1, 2) @ R - torch.eye(3)).abs().max() < 1e-5


class Killed(Exception):
    pass


def test_resume_is_exact(data_dir, tmp_path):
    cfg = test_config()
    straight = tmp_path / "straight"
    train(cfg, opts(data_dir, straight, steps=4))

    broken = tmp_path / "broken"

    def kill_at_3(stage, step):
        if step == 3:
            raise Killed()

    with pytest.raises(Killed):
        train(cfg, opts(data_dir, broken, steps=4, on_step=kill_at_3))
    # Step 3 was lost; the newest checkpoint is step 2.
    assert [p.name for p in (broken / "checkpoints").iterdir()] == ["s1-00000002"]
    train(cfg, opts(data_dir, broken, steps=4, resume=True))

    a, b = final_weights(straight), final_weights(broken)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_time_budget_stops_with_a_checkpoint_and_resume_finishes(data_dir, tmp_path):
    run = tmp_path / "run"
    cfg = test_config()
    cfg.checkpoint_every = 100  # the budget, not the schedule, writes the checkpoint
    summary = train(cfg, opts(data_dir, run, stage="both", steps=3, max_minutes=1e-9))
    assert summary["stage1"]["out_of_time"] and summary["stage1"]["steps"] == 1
    assert "stage2" not in summary  # a spent budget does not start the next stage
    assert [p.name for p in (run / "checkpoints").iterdir()] == ["s1-00000001"]
    assert (run / "generator.safetensors").is_file()
    summary = train(cfg, opts(data_dir, run, steps=3, resume=True))
    assert summary["stage1"] == {**summary["stage1"], "steps": 3, "resumed_at": 1}


def test_resume_with_other_config_is_refused(data_dir, tmp_path):
    run = tmp_path / "run"
    train(test_config(), opts(data_dir, run, steps=1))
    with pytest.raises(AssetError, match="another configuration"):
        train(test_config(no_torso_disc=True), opts(data_dir, run, steps=2, resume=True))


def test_corrupted_checkpoint_is_reported_on_resume(data_dir, tmp_path):
    run = tmp_path / "run"
    train(test_config(), opts(data_dir, run, steps=1))
    w = next((run / "checkpoints").iterdir()) / "weights.safetensors"
    w.write_bytes(w.read_bytes()[:100])
    with pytest.raises(AssetError, match="corrupted"):
        train(test_config(), opts(data_dir, run, steps=2, resume=True))


def test_stage_two_trains_only_superres(data_dir, tmp_path):
    run = tmp_path / "run"
    cfg = test_config()
    train(cfg, opts(data_dir, run, stage="both", steps=1, stage2_steps=1))
    ck = load_checkpoint(sorted((run / "checkpoints").iterdir())[-1])
    assert ck.stage == 2
    s1 = load_checkpoint(run / "checkpoints" / "s1-00000001")  # kept: stage 2 starts from it
    w1, w2 = s1.weights, ck.weights
    sr = [k for k in w2 if k.startswith("G.superres.")]
    others = [k for k in w2 if k.startswith("G.") and not k.startswith("G.superres.") and "w_avg" not in k]
    assert sr and others
    assert any(not torch.equal(w1[k], w2[k]) for k in sr)
    # Everything but U equals stage 1's EMA generator (frozen).
    for k in others:
        assert torch.equal(w1["G_ema." + k[2:]], w2[k]), k
    # High-resolution discriminators of stage 2.
    assert any(k.startswith("D2.whole.") for k in w2)


def test_stage_one_fine_tunes_a_trained_generator(data_dir, tmp_path):
    """--init in stage 1 starts G and G_ema from another run's generator (fresh discriminators);
    a generator of another configuration is refused with the differing fields."""
    cfg = test_config()
    first = tmp_path / "first"
    train(cfg, opts(data_dir, first, steps=2))
    source = load_checkpoint(first / "checkpoints" / "s1-00000002").weights
    tuned = tmp_path / "tuned"
    frozen = test_config()
    frozen.stage1.g_lr = 0.0  # one step that leaves G as loaded, so the start can be compared
    train(frozen, opts(data_dir, tuned, steps=1, init=first))
    start = final_weights(tuned)
    gen = [k for k in start if k.startswith("G_ema.") and "w_avg" not in k]  # w_avg keeps tracking
    assert gen and all(torch.allclose(start[k], source[k], atol=1e-6) for k in gen)
    assert all(torch.equal(start["G." + k[6:]], source[k]) for k in gen)
    # --init-fresh: the named sub-networks keep the new run's initialisation (De's zero output
    # layer), everything else is loaded.
    fresh = tmp_path / "fresh"
    train(frozen, opts(data_dir, fresh, steps=1, init=first, init_fresh=("De",)))
    restarted = final_weights(fresh)
    assert source["G_ema.expression.out.weight"].abs().max() > 0
    assert not restarted["G_ema.expression.out.weight"].any() and not restarted["G.expression.out.bias"].any()
    assert all(torch.allclose(restarted[k], source[k], atol=1e-6) for k in gen if ".expression." not in k)
    with pytest.raises(UserError, match=r"unknown generator sub-networks \['Dx'\]"):
        train(frozen, opts(data_dir, tmp_path / "bad", steps=1, init=first, init_fresh=("Dx",)))
    with pytest.raises(UserError, match="give --init too"):
        opts(data_dir, tmp_path / "bad2", steps=1, init_fresh=("De",)).validate()
    rescaled = test_config()  # De's input scale has no parameters: a smoother De may fine-tune
    rescaled.generator_overrides = dict(rescaled.generator_overrides, exp_input_scale=0.5)
    train(rescaled, opts(data_dir, tmp_path / "rescaled", steps=1, init=first))
    other = test_config()
    other.generator_overrides = dict(other.generator_overrides, samples_per_ray=6)
    with pytest.raises(AssetError, match="another generator config"):
        train(other, opts(data_dir, tmp_path / "other", steps=1, init=first))
    # A wider phi on the trained surface: phi's sizes may differ only when phi starts afresh, and
    # its truncation centre (outside the phi module) restarts with it.
    wider = test_config()
    wider.stage1.g_lr = 0.0
    wide_phi = wider.generator_config().radiance_hidden * 2
    wider.generator_overrides = dict(wider.generator_overrides, radiance_hidden=wide_phi)
    with pytest.raises(AssetError, match="radiance_hidden"):
        train(wider, opts(data_dir, tmp_path / "wider_refused", steps=1, init=first))
    train(wider, opts(data_dir, tmp_path / "wider", steps=1, init=first, init_fresh=("phi",)))
    widened = final_weights(tmp_path / "wider")
    assert widened["G_ema.radiance.head.weight"].shape[1] == wide_phi
    assert widened["G_ema.w_avg_radiance.w_avg"].shape != source["G_ema.w_avg_radiance.w_avg"].shape
    assert all(torch.allclose(widened[k], source[k], atol=1e-6) for k in gen
               if ".radiance." not in k and ".expression." not in k)
    # Dp as the shared blend on a generator trained with the 16 -> 16 form: only with Dp fresh.
    shared = test_config()
    shared.stage1.g_lr = 0.0
    shared.generator_overrides = dict(shared.generator_overrides, dp_shared_blend=True)
    with pytest.raises(AssetError, match="dp_shared_blend"):
        train(shared, opts(data_dir, tmp_path / "shared_refused", steps=1, init=first))
    train(shared, opts(data_dir, tmp_path / "shared", steps=1, init=first, init_fresh=("Dp",)))
    blended = final_weights(tmp_path / "shared")
    assert not any(".pose.conv" in k for k in blended) and torch.count_nonzero(blended["G_ema.pose.blend1"]) == 0
    assert all(torch.allclose(blended[k], source[k], atol=1e-6) for k in gen if ".pose." not in k)


def test_template_prior_smooths_phis_template_while_it_trains(data_dir, tmp_path):
    """loss.template_smooth: the total-variation prior on phi's template joins the generator's
    loss (logged as template_rough) and makes the speckled grid smoother within two steps; the
    same run without it does not."""
    from aniportraitgan.artefacts import save_generator
    from aniportraitgan.body import PortraitBodyModel
    from aniportraitgan.generator import Generator
    from aniportraitgan.generator.radiance import grid_roughness

    cfg = test_config()
    cfg.generator_overrides = dict(cfg.generator_overrides, radiance_template=8)
    G = Generator(cfg.generator_config(), PortraitBodyModel.load(device="cpu"))
    with torch.no_grad():
        G.radiance.template.copy_(torch.randn(G.radiance.template.shape, generator=torch.Generator().manual_seed(0)))
        start = float(G.radiance.template_roughness())
    save_generator(tmp_path / "speckled.safetensors", G, stage=1, step=0)
    rough = {}
    for weight in (0.0, 100.0):
        cfg.loss.template_smooth = weight
        run = tmp_path / f"w{weight:g}"
        train(cfg, opts(data_dir, run, steps=2, init=tmp_path / "speckled.safetensors"))
        t = final_weights(run)["G.radiance.template"]
        rough[weight] = float(grid_roughness(t))
        logged = (run / "train.log").read_text()
        assert ("template_rough=" in logged) == (weight > 0)
    # Adam moves each voxel by about the learning rate a step: two steps smooth by ~0.3 %, and
    # without the prior the roughness moves less than a tenth of that (measured: 0.35 %, 0.007 %).
    assert start - rough[100.0] > 0.001 * start and start - rough[100.0] > 10 * abs(start - rough[0.0]), (start, rough)


def test_colour_prior_smooths_phis_colour_while_it_trains(data_dir, tmp_path):
    """loss.colour_smooth: the colour prior at the rendered intersections joins the generator's
    loss (logged as colour_smooth) and lowers phi's colour roughness within two steps; the same
    run without it does not."""
    from aniportraitgan.artefacts import save_generator
    from aniportraitgan.body import PortraitBodyModel
    from aniportraitgan.cameras import look_at_cameras
    from aniportraitgan.generator import Generator, RenderOptions
    from aniportraitgan.latents import LatentSample

    cfg = test_config()
    cfg.generator_overrides = dict(cfg.generator_overrides, radiance_input_scale=4.0)  # a striped phi
    torch.manual_seed(0)
    G = Generator(cfg.generator_config(), PortraitBodyModel.load(device="cpu"))
    save_generator(tmp_path / "striped.safetensors", G, stage=1, step=0)
    gen = torch.Generator().manual_seed(1)
    lat = LatentSample(torch.randn(4, 40, generator=gen) * 0.5, torch.zeros(4, 52), torch.zeros(4, 6, 3),
                       torch.randn(4, 16, generator=gen))

    def roughness(weights) -> float:
        G.load_state_dict({k[2:]: v for k, v in weights.items() if k.startswith("G.")})
        torch.manual_seed(0)
        with torch.no_grad():
            out = G(lat, look_at_cameras(torch.zeros(4), torch.zeros(4)),
                    options=RenderOptions(portrait_resolution=16, face_resolution=16, return_aux=True,
                                          colour_roughness=True))
        return float(out.aux.colour_rough)

    start = roughness({"G." + k: v for k, v in G.state_dict().items()})
    rough = {}
    for weight in (0.0, 1e4):
        cfg.loss.colour_smooth = weight
        run = tmp_path / f"w{weight:g}"
        train(cfg, opts(data_dir, run, steps=2, init=tmp_path / "striped.safetensors"))
        rough[weight] = roughness(final_weights(run))
        assert ("colour_smooth=" in (run / "train.log").read_text()) == (weight > 0)
    # measured: 3.6e-5 at the start, 3.6e-5 after two steps without the prior, 1.7e-5 with it
    assert rough[1e4] < 0.75 * start and rough[1e4] < 0.75 * rough[0.0], (start, rough)


def test_fine_tune_continues_the_discriminators_of_a_checkpoint(data_dir, tmp_path):
    """--init-discriminators: D1 and its Adam moments continue from a stage-1 checkpoint even when
    the generator changed shape (a wider phi); a stage-2 checkpoint and a missing --init are refused."""
    cfg = test_config()
    first = tmp_path / "first"
    train(cfg, opts(data_dir, first, stage="both", steps=2))
    ck1 = load_checkpoint(first / "checkpoints" / "s1-00000002")
    wider = test_config()
    wider.stage1.d_lr = 0.0  # D as loaded after one step, so it can be compared
    wider.generator_overrides = dict(wider.generator_overrides, radiance_hidden=wider.generator_config().radiance_hidden * 2)
    tuned = tmp_path / "tuned"
    train(wider, opts(data_dir, tuned, steps=1, init=first, init_fresh=("phi",), init_discriminators=ck1.path))
    after = load_checkpoint(tuned / "checkpoints" / "s1-00000001")
    d1 = [k for k in ck1.weights if k.startswith("D1.")]
    assert d1 and all(torch.equal(after.weights[k], ck1.weights[k]) for k in d1)
    moments = ck1.state["opt_D"]["state"], after.state["opt_D"]["state"]
    assert all(int(moments[1][i]["step"]) == int(moments[0][i]["step"]) + 1 for i in moments[0])
    # Without the option the critics start fresh: the same run's D1 differs from the checkpoint's.
    train(wider, opts(data_dir, tmp_path / "fresh", steps=1, init=first, init_fresh=("phi",)))
    fresh = final_weights(tmp_path / "fresh")
    assert not all(torch.equal(fresh[k], ck1.weights[k]) for k in d1)
    stage2 = sorted((first / "checkpoints").glob("s2-*"))[-1]
    with pytest.raises(AssetError, match="stage-2 checkpoint"):
        train(wider, opts(data_dir, tmp_path / "bad", steps=1, init=first, init_fresh=("phi",), init_discriminators=stage2))
    with pytest.raises(UserError, match="give --init too"):
        opts(data_dir, tmp_path / "bad2", init_discriminators=ck1.path).validate()
    with pytest.raises(UserError, match="use --stage 1"):
        opts(data_dir, tmp_path / "bad3", stage="2", init=first, init_discriminators=ck1.path).validate()


@pytest.mark.parametrize("ablation", ["no_face_disc", "face_from_crop", "no_dp"])
def test_ablations_run(data_dir, tmp_path, ablation):
    run = tmp_path / ablation
    summary = train(test_config(**{ablation: True}), opts(data_dir, run, steps=1))
    logs = summary["stage1"]["last_logs"]
    assert all(np.isfinite(v) for v in logs.values())
    if ablation == "no_face_disc":
        assert "D_face" not in logs and "D_torso" in logs
    if ablation == "face_from_crop":
        assert "D_face" in logs
    if ablation == "no_dp":
        assert logs.get("pose_smooth", 0.0) == 0.0


def test_empty_and_mismatched_datasets(data_dir, tmp_path):
    from aniportraitgan.data.dataset import load_labels, save_labels

    with pytest.raises(AssetError):
        train(test_config(), opts(tmp_path / "nope", tmp_path / "r0", steps=1))
    (tmp_path / "not_a_dataset").mkdir()
    with pytest.raises(AssetError, match="dataset card missing"):
        train(test_config(), opts(tmp_path / "not_a_dataset", tmp_path / "r1", steps=1))
    # A well-formed dataset with no samples.
    from aniportraitgan.data.dataset import build_card, write_card

    empty = tmp_path / "empty"
    for sub in ("portraits", "faces"):
        (empty / sub).mkdir(parents=True)
    labels = {k: v[:0] for k, v in load_labels(data_dir / "labels.npz").items()}
    save_labels(empty / "labels.npz", labels)
    write_card(empty, build_card(labels, 32, 16, "test", "0"))
    with pytest.raises(AssetError, match="empty"):
        train(test_config(), opts(empty, tmp_path / "r3", steps=1))
    # Labels of another body model (z_id of another size).
    import shutil

    other = tmp_path / "other"
    shutil.copytree(data_dir, other)
    labels = load_labels(other / "labels.npz")
    labels["z_id"] = np.zeros((len(labels["index"]), 12), np.float32)
    save_labels(other / "labels.npz", labels)
    with pytest.raises(AssetError, match="another body model"):
        train(test_config(), opts(other, tmp_path / "r2", steps=1))


def test_cli_train_and_errors(data_dir, tmp_path, capsys):
    from aniportraitgan.cli import main

    run = tmp_path / "cli"
    assert main(["train", "--config", "tiny", "--data", str(data_dir), "--out", str(run), "--steps", "1",
                 "--batch", "2", "--no-progress", "--no-torso-disc", "--image-every", "0"]) == 0
    cfg = TrainConfig.from_json((run / "config.json").read_text())
    assert cfg.ablation.no_torso_disc and cfg.stage1.batch_size == 2
    # Bad requests: exit code 2 with a message, no traceback.
    assert main(["train", "--data", str(tmp_path / "missing"), "--out", str(run)]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["train", "--config", "huge", "--data", str(data_dir), "--out", str(tmp_path / "x")]) == 2
    assert "unknown training config" in capsys.readouterr().err
    assert main(["train", "--data", str(data_dir), "--out", str(tmp_path / "y"), "--stage", "2", "--no-progress"]) == 2
    assert "stage-1 checkpoint" in capsys.readouterr().err
    # A config file (here the run's own config.json, edited) instead of a preset name.
    edited = json.loads((run / "config.json").read_text())
    edited["stage1"]["face_resolution"] = 16
    (tmp_path / "edited.json").write_text(json.dumps(edited))
    assert main(["train", "--config", str(tmp_path / "edited.json"), "--data", str(data_dir), "--out",
                 str(tmp_path / "from_file"), "--steps", "1", "--no-progress", "--image-every", "0"]) == 0
    assert TrainConfig.from_json((tmp_path / "from_file" / "config.json").read_text()).stage1.face_resolution == 16
    (tmp_path / "bad.json").write_text("{not json")
    assert main(["train", "--config", str(tmp_path / "bad.json"), "--data", str(data_dir), "--out", str(tmp_path / "v")]) == 2
    assert "not valid JSON" in capsys.readouterr().err
    assert main(["train", "--data", str(data_dir), "--out", str(tmp_path / "z"), "--max-minutes", "0"]) == 2
    assert "--max-minutes must be > 0" in capsys.readouterr().err
    assert main(["train", "--data", str(data_dir), "--out", str(tmp_path / "w"), "--init", str(tmp_path / "nope"),
                 "--no-progress"]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_cli_facerecon(data_dir, tmp_path):
    from aniportraitgan.cli import main
    from aniportraitgan.facerecon import FaceRecon

    out = tmp_path / "R.safetensors"
    assert main(["facerecon", "train", "--data", str(data_dir), "--out", str(out), "--steps", "2",
                 "--batch", "4", "--resolution", "16", "--width", "8", "--holdout", "0.25"]) == 0
    assert FaceRecon.load(out).config.resolution == 16
    assert json.loads(out.with_suffix(".json").read_text())["steps"] == 2
