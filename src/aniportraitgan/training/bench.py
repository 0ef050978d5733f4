"""Seconds per training step and the speed-ups as ratios measured in one process (issue 13).

``bench_train`` builds one ``Trainer`` per variant from the same seed -- no run folder and no
dataset: the real images are noise and the labels are drawn around the body model's neutral
codes, which does not change what a step costs -- and times ``Trainer._train_step`` (the D
phase, the G phase, both optimiser steps and the EMA update, exactly as `train` runs them) in
alternating rounds, so that load drifting on a shared machine hits every variant alike.

Variants (``VARIANTS``):

* ``unpatched``: the operators before the exact speed-ups (``generator.reference_ops.unpatched``:
  scipy's cKDTree, ``avg_pool3d`` box filter, dense trilinear upsample);
* ``exact``: today's default path (pykdtree, separable filter and upsample; same results);
* ``reuse``: ``exact`` plus ``TrainConfig.reuse_fakes`` (the D step judges the previous G step's
  renders: no no-grad generator forward; changes the GAN's dynamics);
* ``compile``, ``reuse+compile``: with ``TrainConfig.compile_networks`` (torch.compile of M, phi
  and De; not in the default list: the warm-up step compiles for minutes on a CPU);
* ``shared_dp``: ``exact`` with ``GeneratorConfig.dp_shared_blend`` (Dp's two kernels shared by
  the 16 transform entries; a different model, so its ratio is a cost, not a speed-up).
"""

from __future__ import annotations

import contextlib
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from aniportraitgan.body.landmarks import LinearLandmarks
from aniportraitgan.cameras import MainCameraPlacement
from aniportraitgan.errors import InputError
from aniportraitgan.facerecon import FaceRecon, FaceReconConfig
from aniportraitgan.generator.reference_ops import unpatched
from aniportraitgan.latents import LabelSampler, SamplerConfig
from aniportraitgan.training.config import TrainConfig
from aniportraitgan.training.loop import StageRun, Trainer
from aniportraitgan.training.options import RunOptions
from aniportraitgan.training.rng import mix, seed_everything

__all__ = ["DEFAULT_VARIANTS", "VARIANTS", "Variant", "bench_config", "bench_train", "synthetic_labels"]


@dataclass(frozen=True)
class Variant:
    exact: bool = True  # the exact speed-ups (False: reference_ops.unpatched)
    reuse_fakes: bool = False  # TrainConfig.reuse_fakes
    compile: bool = False  # TrainConfig.compile_networks
    shared_dp: bool = False  # GeneratorConfig.dp_shared_blend


VARIANTS: dict[str, Variant] = {
    "unpatched": Variant(exact=False),
    "exact": Variant(),
    "reuse": Variant(reuse_fakes=True),
    "compile": Variant(compile=True),
    "reuse+compile": Variant(reuse_fakes=True, compile=True),
    "shared_dp": Variant(shared_dp=True),
}
DEFAULT_VARIANTS = ("unpatched", "exact", "reuse")


def synthetic_labels(body, num: int = 256, seed: int = 0) -> dict[str, np.ndarray]:
    """Label tables like a SynthPortraits dataset's (what the sampler reads), drawn at random."""
    g = np.random.default_rng(seed)
    cam = MainCameraPlacement()
    f32 = np.float32
    return {
        "z_id": g.normal(0.0, 0.5, (num, body.id_dim)).astype(f32),
        "z_exp": g.uniform(0.0, 0.3, (num, body.exp_dim)).astype(f32),
        "z_pose": g.normal(0.0, 0.1, (num, 6, 3)).astype(f32),
        "cam_yaw": g.normal(0.0, 0.3, num).astype(f32),
        "cam_pitch": g.normal(0.0, 0.1, num).astype(f32),
        "cam_radius": np.full(num, cam.radius, f32),
        "cam_fov": np.full(num, cam.fov_deg, f32),
        "cam_look_at": np.tile(np.asarray(cam.look_at, f32), (num, 1)),
    }


def bench_config(config: str | TrainConfig = "tiny", resolution: int = 64, face_resolution: int = 64,
                 batch: int | None = None) -> TrainConfig:
    """A training preset (by name) or a copy of a config with stage 1 at the given sizes."""
    cfg = TrainConfig.preset(config) if isinstance(config, str) else TrainConfig.from_dict(config.to_dict())
    cfg.stage1.portrait_resolution, cfg.stage1.face_resolution = resolution, face_resolution
    if batch is not None:
        cfg.stage1.batch_size = batch
    cfg.validate()
    return cfg


def _build(cfg: TrainConfig, variant: Variant, device: str, facerecon: bool, tmp: Path) -> tuple[Trainer, StageRun, dict]:
    cfg = TrainConfig.from_dict(cfg.to_dict())
    cfg.reuse_fakes, cfg.compile_networks = variant.reuse_fakes, variant.compile
    if variant.shared_dp:
        cfg.generator_overrides["dp_shared_blend"] = True
    trainer = Trainer(cfg, RunOptions(data=tmp, out=tmp / "run", device=device, progress=False))
    if facerecon:  # an untrained R of the run's size costs what a trained one does
        trainer.R = FaceRecon(FaceReconConfig(resolution=cfg.facerecon_resolution)).to(trainer.device)
        trainer.R.requires_grad_(False).eval()
        trainer.landmarks = LinearLandmarks.fit(trainer.body, seed=cfg.seed)
    sampler = LabelSampler(synthetic_labels(trainer.body, seed=cfg.seed), SamplerConfig(eps_dim=trainer.gen_cfg.noise_dim))
    run = trainer._begin_stage(1, (None, sampler))
    st, g = cfg.stage1, torch.Generator().manual_seed(cfg.seed)
    B, P, F = st.batch_size, st.portrait_resolution, st.face_resolution
    batch = {"image": torch.rand(B, 3, P, P, generator=g) * 2 - 1, "face": torch.rand(B, 3, F, F, generator=g) * 2 - 1}
    return trainer, run, batch


def bench_train(cfg: TrainConfig, variants: list[str] | None = None, rounds: int = 3, steps: int = 2,
                warmup: int = 1, device: str = "cpu", facerecon: bool = True,
                say: Callable[[str], None] | None = None) -> dict[str, dict]:
    """{variant: {"seconds": median wall s per step, "rounds": [wall s per step of each round],
    "ratio": to the first variant, "cpu_seconds", "cpu_ratio": the same in CPU time of this
    process}} for stage-1 steps of `cfg`, the variants in alternating rounds of `steps` steps
    each after `warmup` untimed steps. On a loaded machine CPU time is the steadier measure (at
    one thread it is about the wall time the step takes on an idle core)."""
    names = list(variants or DEFAULT_VARIANTS)
    unknown = [n for n in names if n not in VARIANTS]
    if unknown or not names:
        raise InputError(f"unknown bench variant(s) {unknown}; known: {', '.join(VARIANTS)}")
    if rounds < 1 or steps < 1 or warmup < 0:
        raise InputError("rounds and steps must be >= 1, warmup >= 0")
    with tempfile.TemporaryDirectory(prefix="aniportraitgan-bench-") as tmp:
        built = {n: _build(cfg, VARIANTS[n], device, facerecon, Path(tmp)) for n in names}
        counters = dict.fromkeys(names, 0)

        def run_steps(name: str, count: int) -> tuple[float, float]:
            trainer, run, batch = built[name]
            ctx = contextlib.nullcontext() if VARIANTS[name].exact else unpatched()
            t0, c0 = time.perf_counter(), time.process_time()
            with ctx:
                for _ in range(count):
                    step = counters[name]
                    seed_everything(mix(cfg.seed, 1, step))
                    trainer._train_step(run, step, batch, torch.Generator().manual_seed(mix(cfg.seed, step, 1)))
                    trainer.cur_nimg += cfg.stage1.batch_size
                    counters[name] += 1
            if trainer.device.type == "cuda":
                torch.cuda.synchronize(trainer.device)
            return (time.perf_counter() - t0) / count, (time.process_time() - c0) / count

        for n in names:
            if warmup:
                run_steps(n, warmup)
        times: dict[str, list[float]] = {n: [] for n in names}
        cpu: dict[str, list[float]] = {n: [] for n in names}
        for r in range(rounds):
            for n in names:
                wall, used = run_steps(n, steps)
                times[n].append(wall)
                cpu[n].append(used)
            if say is not None:
                say(f"round {r + 1}/{rounds}: " + ", ".join(f"{n} {times[n][-1]:.3f} s" for n in names))
    base, base_cpu = statistics.median(times[names[0]]), statistics.median(cpu[names[0]])
    return {n: {"seconds": statistics.median(times[n]), "rounds": times[n], "ratio": statistics.median(times[n]) / base,
                "cpu_seconds": statistics.median(cpu[n]), "cpu_ratio": statistics.median(cpu[n]) / base_cpu}
            for n in names}
