"""The image grids a training run logs: EMA samples of fixed latent codes, rows portrait, face
and depth, written as PNG to RUN/samples and to TensorBoard."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Callable, ContextManager

import torch
import torch.nn.functional as F
from PIL import Image

from aniportraitgan.atomic import atomic_path
from aniportraitgan.generator import Generator, RenderOptions
from aniportraitgan.images import to_uint8
from aniportraitgan.latents import LabelSampler
from aniportraitgan.training.config import StageConfig
from aniportraitgan.training.rng import mix, rng_state, seed_everything, set_rng_state

GRID_SALT = 0xC0FFEE  # mixed into the run's seed: the grid's latent codes are fixed for the run


@torch.no_grad()
def sample_grid(G: Generator, sampler: LabelSampler, seed: int, n: int, st: StageConfig, stage: int,
                device: torch.device, autocast: Callable[[], ContextManager]) -> torch.Tensor:
    """`n` samples of `G` for latent codes fixed by `seed`: uint8 [3, rows * H, n * W].

    The random streams are restored afterwards: logging must not change the training."""
    gen = torch.Generator().manual_seed(mix(seed, GRID_SALT))
    state = rng_state()
    lat = sampler.sample(n, generator=gen, device=device)
    seed_everything(mix(seed, GRID_SALT, 2))
    with autocast():
        out = G(lat, lat.cameras(), None, RenderOptions(st.portrait_resolution, st.face_resolution, stage))
    set_rng_state(state)
    rows = [out.portrait.float(), resize(out.face.float(), st.portrait_resolution),
            depth_to_image(out.portrait_depth.float(), st.portrait_resolution)]
    grid = torch.cat([torch.cat(list(r), dim=-1) for r in rows], dim=-2)
    return to_uint8(grid).cpu()


def save_grid(grid: torch.Tensor, path: Path) -> None:
    """A uint8 [3, H, W] grid as PNG (atomically: a full disk leaves no partial file)."""
    with atomic_path(path) as tmp:
        Image.fromarray(grid.permute(1, 2, 0).numpy()).save(tmp)


def resize(x: torch.Tensor, size: int) -> torch.Tensor:
    if x.shape[-1] == size:
        return x
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)


def depth_to_image(depth: torch.Tensor, size: int) -> torch.Tensor:
    """Depth [B, H, W] or [B, 1, H, W] -> grey images in [-1, 1] (near bright), per-sample range."""
    if depth.dim() == 3:
        depth = depth[:, None]
    d = depth[:, :1]
    flat = d.flatten(1)
    finite = torch.isfinite(flat)
    lo = torch.where(finite, flat, torch.full_like(flat, math.inf)).min(1).values.view(-1, 1, 1, 1)
    hi = torch.where(finite, flat, torch.full_like(flat, -math.inf)).max(1).values.view(-1, 1, 1, 1)
    img = 1.0 - (d - lo) / (hi - lo).clamp_min(1e-6)
    img = torch.where(torch.isfinite(img), img, torch.zeros_like(img)) * 2 - 1
    return resize(img.expand(-1, 3, -1, -1), size)
