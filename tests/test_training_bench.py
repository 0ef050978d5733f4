"""`bench train` and the reuse_fakes speed-up: steps timed per variant, ratios, and the D step
judging the previous G step's renders without rendering."""

from __future__ import annotations

import math
import tempfile
from pathlib import Path

import pytest
import torch

from aniportraitgan.cli import main
from aniportraitgan.errors import InputError
from aniportraitgan.training.bench import DEFAULT_VARIANTS, VARIANTS, Variant, _build, bench_config, bench_train
from aniportraitgan.training.config import TrainConfig


def _cfg():
    cfg = bench_config("tiny", 16, 16, batch=2)
    cfg.generator_overrides = {"samples_per_ray": 8, "sr_map_resolution": 16}
    return cfg


def test_bench_train_times_every_variant():
    res = bench_train(_cfg(), None, rounds=1, steps=1, warmup=0, facerecon=False)
    assert list(res) == list(DEFAULT_VARIANTS) and set(DEFAULT_VARIANTS) <= set(VARIANTS)
    assert res["unpatched"]["ratio"] == 1.0 and res["unpatched"]["cpu_ratio"] == 1.0
    for r in res.values():
        assert r["seconds"] > 0 and r["cpu_seconds"] > 0 and math.isfinite(r["ratio"]) and len(r["rounds"]) == 1
    with pytest.raises(InputError, match="unknown bench variant"):
        bench_train(_cfg(), ["fast"], rounds=1, steps=1)


def test_reuse_fakes_skips_the_d_steps_render_and_judges_the_last_g_renders():
    with tempfile.TemporaryDirectory() as tmp:
        trainer, run, batch = _build(_cfg(), Variant(reuse_fakes=True), "cpu", False, Path(tmp))
        calls = []
        hook = trainer.G.register_forward_hook(lambda *a: calls.append(torch.is_grad_enabled()))
        gen = torch.Generator().manual_seed(0)
        trainer._train_step(run, 0, batch, gen)  # nothing to reuse yet: D renders, then G
        assert calls == [False, True]
        kept = {k: v.clone() for k, v in run.objective.last_fakes.items()}
        assert all(not v.requires_grad for v in kept.values())
        seen = []
        D = run.Ds["whole"]
        h2 = D.register_forward_hook(lambda m, inp, out: seen.append(inp[0].detach().clone()))
        trainer._train_step(run, 1, batch, gen)
        hook.remove()
        h2.remove()
        assert calls == [False, True, True]  # the second D step rendered nothing
        assert torch.equal(seen[1], kept["whole"])  # D's fake input: the previous G step's portrait
    with tempfile.TemporaryDirectory() as tmp:
        trainer, run, _ = _build(_cfg(), Variant(), "cpu", False, Path(tmp))
        assert run.objective.reuse_fakes is False


def test_shared_dp_variant_trains_the_shared_blend_dp_and_steps():
    with tempfile.TemporaryDirectory() as tmp:
        trainer, run, batch = _build(_cfg(), VARIANTS["shared_dp"], "cpu", False, Path(tmp))
        dp = trainer.G.pose
        assert dp.shared_blend and {n for n, _ in dp.named_parameters()} == {"blend1", "blend2"}
        before = dp.blend1.detach().clone()
        trainer._train_step(run, 0, batch, torch.Generator().manual_seed(0))
        assert not torch.equal(dp.blend1, before)  # Dp gets a gradient through the renders


def test_cli_bench_train(capsys):
    assert main(["bench", "train", "--config", "tiny", "--resolution", "16", "--face-resolution", "16", "--batch", "2",
                 "--rounds", "1", "--steps", "1", "--warmup", "0", "--no-facerecon", "--variants", "exact,reuse",
                 "--threads", "1"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert out[-1].startswith("bench train tiny 16/16 px batch 2 (")
    assert "exact " in out[-1] and "reuse " in out[-1] and "(x1.00;" in out[-1]


def test_compile_networks_compiles_the_per_point_networks_of_the_trained_generator_only():
    with tempfile.TemporaryDirectory() as tmp:
        plain, _, _ = _build(_cfg(), Variant(), "cpu", False, Path(tmp))
        trainer, _, _ = _build(_cfg(), Variant(compile=True), "cpu", False, Path(tmp))
    nets = ("manifold", "radiance", "expression")
    assert all(getattr(getattr(trainer.G, n), "_compiled_call_impl", None) is not None for n in nets)
    assert all(getattr(getattr(plain.G, n), "_compiled_call_impl", None) is None for n in nets)
    assert getattr(trainer.G_ema.module.manifold, "_compiled_call_impl", None) is None  # exported eager
    assert list(trainer.G.state_dict()) == list(plain.G.state_dict())  # checkpoints unchanged


def test_bench_config_from_a_run_config_copies_it_at_the_bench_sizes(tmp_path, capsys):
    """`bench train --config RUN/config.json` times that run's networks (here: phi widened)."""
    run_cfg = TrainConfig.preset("tiny")
    run_cfg.generator_overrides = {"radiance_hidden": 48, "samples_per_ray": 8, "sr_map_resolution": 16}
    cfg = bench_config(run_cfg, 16, 16, batch=2)
    assert cfg.generator_overrides == run_cfg.generator_overrides and cfg.stage1.batch_size == 2
    assert run_cfg.stage1.portrait_resolution != 16  # the run's own config is left as it was
    path = tmp_path / "config.json"
    path.write_text(run_cfg.to_json())
    assert main(["bench", "train", "--config", str(path), "--resolution", "16", "--face-resolution", "16",
                 "--batch", "2", "--rounds", "1", "--steps", "1", "--warmup", "0", "--no-facerecon",
                 "--variants", "exact", "--threads", "1"]) == 0
    assert f"bench train {path} 16/16 px batch 2" in capsys.readouterr().out
    assert main(["bench", "train", "--config", str(tmp_path / "missing.json")]) != 0
    assert "missing.json does not exist" in capsys.readouterr().err
