"""The latent search: identity codes whose portrait and face-camera renders match a target.

The expression, pose and cameras stay the front end's (``InversionTarget``); what is searched is
the identity, in one of three spaces (``InversionConfig.space``):

* ``z``: z_id (from the body fit) and eps (from 0), through the mapping networks at ``psi``,
  so the start is the truncation average's neighbourhood and the result stays in the
  generator's own distribution;
* ``w``: z_id and the mapping outputs w of phi (and U at stage 2), starting at the truncation
  averages: more freedom (everything the renderer can show), less prior;
* ``zw`` (default): ``z`` for the first ``z_share`` of the steps, then ``w`` from where z ended.

The loss (``ReconstructionLoss``): mean squared error of the portrait and of the face image,
L1 of the opacity against the person's mask in both views, a perceptual feature distance of
both views (``perceptual``), and Gaussian pulls of z_id toward the body fit and of eps toward 0.
Adam with a cosine learning-rate decay per phase.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import torch
from tqdm import tqdm

from aniportraitgan.configs import Config
from aniportraitgan.errors import InputError
from aniportraitgan.generator import DEFAULT_PSI, IdentityCache, RenderOptions
from aniportraitgan.inversion.perceptual import PERCEPTUAL_KINDS, FeatureDistance
from aniportraitgan.inversion.target import InversionTarget
from aniportraitgan.latents import LatentSample

SPACES = ("z", "w", "zw")
MIN_LR_SHARE = 0.05  # the cosine decay ends at this share of the learning rate


@dataclass
class InversionConfig(Config):
    """Settings of the latent search."""

    steps: int = 300
    """Optimisation steps of the latent search (>= 1)."""
    space: str = "zw"
    """Search space: z (z_id, eps through the mapping), w (z_id and the mapping outputs), zw (z, then w)."""
    z_share: float = 0.5
    """With space zw: the share of the steps spent in z before switching to w."""
    psi: float = DEFAULT_PSI
    """Truncation of the mapping outputs in z space."""
    lr_z: float = 0.05
    """Adam learning rate of eps and the mapping networks' z in z space."""
    lr_w: float = 0.01
    """Adam learning rate of the mapping outputs w."""
    lr_z_id: float = 0.005
    """Adam learning rate of z_id (the body's shape moves the whole deformation: small steps)."""
    pixel_weight: float = 1.0
    """Weight of the portrait's mean squared error."""
    face_weight: float = 1.0
    """Weight of the face image's mean squared error."""
    mask_weight: float = 0.1
    """Weight of the L1 error of the opacity against the person's mask (both views)."""
    perceptual: str = "inception"
    """Perceptual features: inception (early FID Inception layers), facerecon (R's trunk) or none."""
    perceptual_weight: float = 0.05
    """Weight of the perceptual feature distance (both views)."""
    z_id_weight: float = 1e-3
    """Pull of z_id toward the body fit's (squared distance in prior standard deviations)."""
    eps_weight: float = 1e-3
    """Pull of eps toward 0 (its N(0, 1) prior)."""
    optimize_z_id: bool = True
    """Search z_id too (else the body fit's is kept)."""
    mapping_z: bool = True
    """In z space the mapping networks read their own copy of z_id (the body keeps the fitted shape)."""
    z_map_weight: float = 1e-3
    """Pull of the mapping's z toward the prior mean (squared distance in prior standard deviations)."""
    log_every: int = 10
    """Steps between two entries of the loss history."""

    def validate(self) -> None:
        if isinstance(self.steps, bool) or not isinstance(self.steps, int) or self.steps < 1:
            raise InputError(f"steps must be an int >= 1, got {self.steps!r}")
        if self.space not in SPACES:
            raise InputError(f"space must be one of {SPACES}, got {self.space!r}")
        if self.perceptual not in PERCEPTUAL_KINDS:
            raise InputError(f"perceptual must be one of {PERCEPTUAL_KINDS}, got {self.perceptual!r}")
        if not 0.0 < self.z_share < 1.0:
            raise InputError(f"z_share must be in (0, 1), got {self.z_share}")
        for name in ("psi", "lr_z", "lr_w", "lr_z_id", "pixel_weight", "face_weight", "mask_weight", "perceptual_weight",
                     "z_id_weight", "eps_weight", "z_map_weight"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v >= 0):
                raise InputError(f"{name} must be a finite number >= 0, got {v!r}")
        if self.log_every < 1:
            raise InputError(f"log_every must be >= 1, got {self.log_every}")


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR in dB of images in [-1, 1] (peak-to-peak 2)."""
    mse = ((a.detach().float() - b.detach().float()) / 2.0).square().mean().item()
    return float("inf") if mse == 0 else -10.0 * math.log10(mse)


class ReconstructionLoss:
    """The data terms of a render against a target (see the module doc); target features are
    computed once."""

    def __init__(self, target: InversionTarget, cfg: InversionConfig, perceptual: FeatureDistance | None) -> None:
        self.target, self.cfg = target, cfg
        self.perceptual = perceptual if cfg.perceptual_weight > 0 else None
        if self.perceptual is not None:
            with torch.no_grad():
                self.features = (self.perceptual.features(target.portrait), self.perceptual.features(target.face))

    def __call__(self, out) -> tuple[torch.Tensor, dict[str, float]]:
        t, c = self.target, self.cfg
        terms = {
            "pixel": (out.portrait - t.portrait).square().mean(),
            "face": (out.face - t.face).square().mean(),
            "mask": (out.portrait_alpha - t.portrait_mask).abs().mean() + (out.face_alpha - t.face_mask).abs().mean(),
        }
        weights = {"pixel": c.pixel_weight, "face": c.face_weight, "mask": c.mask_weight}
        if self.perceptual is not None:
            p = self.perceptual
            terms["perceptual"] = (p.between(p.features(out.portrait), self.features[0]).mean()
                                   + p.between(p.features(out.face), self.features[1]).mean())
            weights["perceptual"] = c.perceptual_weight
        total = sum(weights[k] * v for k, v in terms.items())
        return total, {k: float(v.detach()) for k, v in terms.items()}


@dataclass
class LatentCodes:
    """An identity during and after the search (batch 1). ``w_radiance`` None: z space (the
    mapping networks give w); else the free mapping outputs."""

    z_id: torch.Tensor
    eps: torch.Tensor
    psi: float
    w_radiance: torch.Tensor | None = None
    w_superres: torch.Tensor | None = None
    z_map: torch.Tensor | None = None  # the mapping networks' z_id in z space (None: z_id)

    def mapped(self, generator, stage: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The mapping outputs this identity renders with (w space: its own)."""
        if self.w_radiance is not None:
            return self.w_radiance, self.w_superres
        z = self.z_id if self.z_map is None else self.z_map
        return generator.map_identity(z, self.eps, self.psi, stage)

    def cache(self, generator, stage: int, psi: float) -> IdentityCache | None:
        """The identity cache (differentiable) of w space, or of z space with its own mapping z;
        None when the generator's own mapping of (z_id, eps) applies."""
        if self.w_radiance is None and self.z_map is None:
            return None
        w_rad, w_sr = self.mapped(generator, stage)
        maps = generator.radiance_maps(w_rad, w_sr, self.z_id) if stage == 2 else None
        return IdentityCache(self.z_id, self.eps, psi, stage, w_rad, w_sr, maps)

    def render(self, generator, stage: int, z_exp, z_pose, cameras, face_cameras, resolution: int,
               face_resolution: int | None):
        options = RenderOptions(resolution, face_resolution, stage, self.psi, cache=self.cache(generator, stage, self.psi))
        B = len(cameras)
        lat = LatentSample(self.z_id.expand(B, -1), z_exp.expand(B, -1), z_pose.expand(B, -1, -1), self.eps.expand(B, -1))
        return generator(lat, cameras, face_cameras, options)

    def detached(self) -> LatentCodes:
        d = lambda t: None if t is None else t.detach().clone()
        return LatentCodes(d(self.z_id), d(self.eps), self.psi, d(self.w_radiance), d(self.w_superres), d(self.z_map))


def render_target_view(codes: LatentCodes, model, target: InversionTarget, generator=None):
    """Render ``codes`` as the target sees it (its expression, pose, cameras and resolutions)."""
    G = generator if generator is not None else model.generator
    return codes.render(G, model.stage, target.z_exp, target.z_pose, target.cameras, target.face_cameras,
                        target.resolution, target.face_resolution)


@dataclass
class InversionResult:
    codes: LatentCodes
    history: list[dict] = field(default_factory=list)
    seconds: float = 0.0
    final_loss: float = float("nan")


def _cosine_lr(opt: torch.optim.Optimizer, base: list[float], t: float) -> None:
    f = MIN_LR_SHARE + (1.0 - MIN_LR_SHARE) * 0.5 * (1.0 + math.cos(math.pi * min(max(t, 0.0), 1.0)))
    for g, lr in zip(opt.param_groups, base):
        g["lr"] = lr * f


def _phase_plan(cfg: InversionConfig) -> list[tuple[str, int]]:
    if cfg.space == "zw":
        nz = min(cfg.steps - 1, max(1, round(cfg.steps * cfg.z_share))) if cfg.steps > 1 else 1
        return [("z", nz)] + ([("w", cfg.steps - nz)] if cfg.steps - nz > 0 else [])
    return [(cfg.space, cfg.steps)]


def invert_latents(model, target: InversionTarget, cfg: InversionConfig | None = None,
                   perceptual: FeatureDistance | None = None, progress: bool = True) -> InversionResult:
    """Search the identity codes of ``target`` (see the module doc). ``perceptual`` must match
    ``cfg.perceptual`` (None for "none")."""
    cfg = cfg or InversionConfig()
    cfg.validate()
    if (perceptual is None) != (cfg.perceptual == "none" or cfg.perceptual_weight == 0):
        raise InputError(f"perceptual features {getattr(perceptual, 'name', None)!r} do not match the config's "
                         f"{cfg.perceptual!r}")
    G, stage, prior = model.generator, model.stage, model.prior
    dev = model.device
    target = target.to(dev)
    loss_fn = ReconstructionLoss(target, cfg, perceptual)
    z_start = target.z_id.detach().clone()
    std = prior.z_id_std.to(dev).clamp_min(1e-3)
    mean = prior.z_id_mean.to(dev)[None]
    codes = LatentCodes(z_start.clone(), torch.zeros(1, G.config.noise_dim, device=dev), float(cfg.psi),
                        z_map=z_start.clone() if cfg.mapping_z else None)
    history: list[dict] = []
    t0 = time.perf_counter()
    step = 0
    total = float("nan")
    with torch.enable_grad(), tqdm(total=cfg.steps, desc="invert", unit="step", disable=not progress, leave=False) as bar:
        for space, n in _phase_plan(cfg):
            if space == "w":  # the free mapping outputs start where the mapping is now (or at the averages)
                with torch.no_grad():
                    if cfg.space == "w":
                        w_rad = G.w_avg_radiance.w_avg[None].clone()
                        w_sr = G.w_avg_superres.w_avg[None].clone() if stage == 2 else None
                    else:
                        w_rad, w_sr = codes.mapped(G, stage)
                codes = LatentCodes(codes.z_id.detach(), codes.eps.detach(), codes.psi, w_rad.detach().clone(),
                                    None if w_sr is None else w_sr.detach().clone())
            free = [codes.z_id.requires_grad_(cfg.optimize_z_id)] if cfg.optimize_z_id else []
            groups = [{"params": free, "lr": cfg.lr_z_id}] if free else []
            if space == "z":
                zs = [codes.eps] + ([codes.z_map] if codes.z_map is not None else [])
                groups.append({"params": [z.requires_grad_(True) for z in zs], "lr": cfg.lr_z})
            else:
                ws = [codes.w_radiance.requires_grad_(True)] + ([codes.w_superres.requires_grad_(True)]
                                                                 if codes.w_superres is not None else [])
                groups.append({"params": ws, "lr": cfg.lr_w})
            opt = torch.optim.Adam(groups, betas=(0.9, 0.999))
            base = [g["lr"] for g in groups]
            for i in range(n):
                _cosine_lr(opt, base, i / max(1, n - 1))
                out = render_target_view(codes, model, target)
                data, terms = loss_fn(out)
                reg = cfg.z_id_weight * ((codes.z_id - z_start) / std).square().mean()
                if space == "z":
                    reg = reg + cfg.eps_weight * codes.eps.square().mean()
                    if codes.z_map is not None:
                        reg = reg + cfg.z_map_weight * ((codes.z_map - mean) / std).square().mean()
                loss = data + reg
                if not torch.isfinite(loss):
                    raise InputError(f"the inversion diverged at step {step} (loss {loss.item()}): "
                                     f"lower the learning rates (--lr-z, --lr-w)")
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                total = float(loss.detach())
                if step % cfg.log_every == 0 or step == cfg.steps - 1:
                    history.append({"step": step, "space": space, "loss": total, **terms,
                                    "psnr": psnr(out.portrait, target.portrait), "face_psnr": psnr(out.face, target.face)})
                bar.set_postfix(loss=f"{total:.4f}", psnr=f"{psnr(out.portrait, target.portrait):.1f}", space=space)
                bar.update(1)
                step += 1
    return InversionResult(codes.detached(), history, time.perf_counter() - t0, total)


__all__ = [
    "SPACES",
    "InversionConfig",
    "InversionResult",
    "LatentCodes",
    "ReconstructionLoss",
    "invert_latents",
    "psnr",
    "render_target_view",
]
