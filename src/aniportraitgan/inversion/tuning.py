"""Pivotal tuning: fine-tune the generator around the found identity (the pivot) so that it
reproduces the photo more closely, while other identities stay as they were.

Tuned: the radiance generator phi's FiLM-SIREN and output head (stage 2: also U's layers), not
their mapping networks: the pivot renders from its stored w, so the mappings receive no gradient
from it, and leaving them alone keeps every other identity's w unchanged. Loss: the inversion's
``ReconstructionLoss`` on the pivot plus the locality regulariser: the mean squared difference
between the tuned and the original generator's portraits of ``locality_samples`` random other
identities (drawn from the model's prior, random camera yaw, neutral expression) per step.

Only the differences of the tuned weights (tuned - original) are kept: they go into the identity
file, and ``StoredIdentity.tuned_generator`` adds them to the checkpoint's weights.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field

import torch
from tqdm import tqdm

from aniportraitgan.configs import Config
from aniportraitgan.errors import InputError
from aniportraitgan.generator import DEFAULT_PSI, RenderOptions
from aniportraitgan.inversion.optimize import (
    LatentCodes,
    ReconstructionLoss,
    psnr,
    render_target_view,
)
from aniportraitgan.inversion.target import InversionTarget
from aniportraitgan.latents import LatentSample

LOCALITY_YAW = 0.4  # radians either side of frontal for the random identities' cameras


@dataclass
class TuningConfig(Config):
    """Settings of pivotal tuning."""

    steps: int = 0
    """Fine-tuning steps (0: no pivotal tuning)."""
    lr: float = 1e-4
    """Adam learning rate of the tuned weights."""
    locality_weight: float = 10.0
    """Weight of the locality regulariser (other identities' change)."""
    locality_samples: int = 2
    """Random other identities rendered per step for the locality regulariser."""
    locality_psi: float = DEFAULT_PSI
    """Truncation of the random other identities."""
    seed: int = 0
    """Seed of the random other identities."""
    log_every: int = 10
    """Steps between two entries of the loss history."""

    def validate(self) -> None:
        if isinstance(self.steps, bool) or not isinstance(self.steps, int) or self.steps < 0:
            raise InputError(f"fine-tuning steps must be an int >= 0, got {self.steps!r}")
        for name in ("lr", "locality_weight", "locality_psi"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v >= 0):
                raise InputError(f"{name} must be a finite number >= 0, got {v!r}")
        if self.locality_samples < 1 or self.log_every < 1:
            raise InputError("locality_samples and log_every must be >= 1")


def tunable_parameters(generator, stage: int) -> dict[str, torch.nn.Parameter]:
    """{name: parameter} that pivotal tuning changes: phi outside its mapping (and U outside its
    mapping at stage 2), and not phi's face template: it is 3.5M numbers shared by every
    identity, and tuning it with the rest gained nothing measurable (docs/inversion.md)."""
    prefixes = ("radiance.",) + (("superres.",) if stage == 2 else ())
    frozen = ("radiance.mapping.", "superres.mapping.", "radiance.template")
    return {n: p for n, p in generator.named_parameters() if n.startswith(prefixes) and not n.startswith(frozen)}


@dataclass
class TuningResult:
    delta: dict[str, torch.Tensor]  # parameter name -> tuned - original (CPU)
    history: list[dict] = field(default_factory=list)
    seconds: float = 0.0


def locality_batch(model, cfg: TuningConfig, gen: torch.Generator) -> tuple[LatentSample, object]:
    G, prior, dev = model.generator, model.prior, model.device
    K = cfg.locality_samples
    z = prior.z_id_mean[None] + prior.z_id_std[None] * torch.randn(K, G.config.id_dim, generator=gen)
    eps = torch.randn(K, G.config.noise_dim, generator=gen)
    yaw = (torch.rand(K, generator=gen) * 2 - 1) * LOCALITY_YAW
    lat = LatentSample(z, torch.zeros(K, G.config.exp_dim), torch.zeros(K, 6, 3), eps).to(dev)
    return lat, model.cameras(yaw, torch.zeros(K))


def pivotal_tune(model, target: InversionTarget, codes: LatentCodes, loss_fn: ReconstructionLoss,
                 cfg: TuningConfig, progress: bool = True) -> TuningResult:
    """Fine-tune a copy of ``model.generator`` around ``codes`` (see the module doc); the model
    itself is left unchanged. Returns the weight differences."""
    cfg.validate()
    if cfg.steps == 0:
        return TuningResult({})
    G0, stage = model.generator, model.stage
    tuned = copy.deepcopy(G0, memo={id(G0.body): G0.body})
    params = tunable_parameters(tuned, stage)
    originals = {n: p.detach().clone() for n, p in params.items()}
    for p in tuned.parameters():
        p.requires_grad_(False)
    for p in params.values():
        p.requires_grad_(True)
    opt = torch.optim.Adam(list(params.values()), lr=cfg.lr)
    gen = torch.Generator().manual_seed(cfg.seed)
    target = target.to(model.device)
    res, pivot = target.resolution, codes.detached()
    history: list[dict] = []
    t0 = time.perf_counter()
    with torch.enable_grad(), tqdm(total=cfg.steps, desc="tune", unit="step", disable=not progress, leave=False) as bar:
        for step in range(cfg.steps):
            out = render_target_view(pivot, model, target, generator=tuned)
            data, terms = loss_fn(out)
            lat, cams = locality_batch(model, cfg, gen)
            options = RenderOptions(res, None, stage, cfg.locality_psi)
            with torch.no_grad():
                before = G0(lat, cams, None, options).portrait
            after = tuned(lat, cams, None, options).portrait
            locality = (after - before).square().mean()
            loss = data + cfg.locality_weight * locality
            if not torch.isfinite(loss):
                raise InputError(f"pivotal tuning diverged at step {step}: lower --finetune-lr")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if step % cfg.log_every == 0 or step == cfg.steps - 1:
                history.append({"step": step, "loss": float(loss.detach()), **terms, "locality": float(locality.detach()),
                                "psnr": psnr(out.portrait, target.portrait)})
            bar.set_postfix(loss=f"{float(loss.detach()):.4f}", psnr=f"{psnr(out.portrait, target.portrait):.1f}")
            bar.update(1)
    delta = {n: (p.detach() - originals[n]).cpu() for n, p in params.items()}
    delta = {n: d for n, d in delta.items() if bool(d.abs().max() > 0)}
    return TuningResult(delta, history, time.perf_counter() - t0)


__all__ = ["TuningConfig", "TuningResult", "locality_batch", "pivotal_tune", "tunable_parameters"]
