"""How good an inversion is: reconstruction metrics and the comparison image.

Metrics (``reconstruction_metrics``), each of the portrait (main camera) and of the face image
(dual face camera) against the aligned photo:

* ``psnr`` / ``face_psnr``: PSNR in dB over the whole image (white background included) and
  ``psnr_person`` over the person's mask only;
* ``feature_distance`` / ``face_feature_distance``: the LPIPS-like distance of
  ``inversion.perceptual`` on the early Inception layers (0 = identical features);
* ``identity_cosine``: cosine similarity of R's identity estimates (z_id in R's label-std units,
  centred on R's label mean) of the reconstructed and the photo's face; needs R.

The comparison image: a row of portraits and a row of faces, each ``photo | reconstruction |
novel view | expression change``, upscaled (nearest neighbour: the pixels are the model's) to at
least 128 px a tile.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from aniportraitgan.animation.keyframes import expression_index
from aniportraitgan.animation.presets import preset
from aniportraitgan.animation.video import save_image_atomic
from aniportraitgan.images import to_uint8_images
from aniportraitgan.inversion.optimize import psnr
from aniportraitgan.inversion.perceptual import FeatureDistance
from aniportraitgan.inversion.target import InversionTarget

COMPARISON_LAYOUT = "rows: portrait, face; columns: photo | reconstruction | novel view | expression change"
NOVEL_YAW = 0.5  # radians: the comparison's novel view
MIN_TILE = 128


def masked_psnr(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor) -> float:
    """PSNR (dB, images in [-1, 1]) over the pixels weighted by ``mask`` [B, 1, H, W]."""
    w = mask.detach().float().clamp(0, 1)
    total = float(w.sum()) * a.shape[1]
    if total <= 0:
        return float("nan")
    mse = float((((a.detach() - b.detach()) / 2).square() * w).sum()) / total
    return float("inf") if mse == 0 else -10.0 * math.log10(mse)


@torch.no_grad()
def identity_cosine(facerecon, a: torch.Tensor, b: torch.Tensor) -> float:
    """Cosine of R's standardised identity estimates of two face batches (mean over the batch)."""
    dev = next(facerecon.parameters()).device
    za = (facerecon(a.to(dev).float())["z_id"] - facerecon.id_mean) / facerecon.id_std
    zb = (facerecon(b.to(dev).float())["z_id"] - facerecon.id_mean) / facerecon.id_std
    return float(F.cosine_similarity(za, zb, dim=-1).mean())


@torch.no_grad()
def reconstruction_metrics(rendered, target: InversionTarget, features: FeatureDistance | None = None,
                           facerecon=None) -> dict[str, float | None]:
    """The metrics of the module doc (None where the network is not available)."""
    out = {
        "psnr": psnr(rendered.portrait, target.portrait),
        "face_psnr": psnr(rendered.face, target.face),
        "psnr_person": masked_psnr(rendered.portrait, target.portrait, target.portrait_mask),
        "feature_distance": None, "face_feature_distance": None, "identity_cosine": None,
    }
    if features is not None:
        out["feature_distance"] = float(features(rendered.portrait.float(), target.portrait.float()).mean())
        out["face_feature_distance"] = float(features(rendered.face.float(), target.face.float()).mean())
    if facerecon is not None:
        out["identity_cosine"] = identity_cosine(facerecon, rendered.face, target.face)
    return out


def _tile(images: torch.Tensor, side: int) -> np.ndarray:
    """[1, 3, h, w] in [-1, 1] -> uint8 [side, side, 3], nearest-neighbour upscaled."""
    img = Image.fromarray(to_uint8_images(images[:1])[0])
    return np.asarray(img.resize((side, side), Image.NEAREST))


def expression_change() -> torch.Tensor:
    """[1, 52]: the smile preset's peak with the jaw a little open (the comparison's last column)."""
    exp = preset("smile").expression.max(0, keepdim=True).values.clone()
    exp[0, expression_index("jawOpen")] = 0.4
    return exp


@torch.no_grad()
def comparison_views(model, codes, target: InversionTarget, generator=None) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(portrait, face) of: the photo, the reconstruction, a novel view, an expression change."""
    G = generator if generator is not None else model.generator
    stage, H, Hf = model.stage, target.resolution, target.face_resolution
    recon = codes.render(G, stage, target.z_exp, target.z_pose, target.cameras, target.face_cameras, H, Hf)
    novel_cams = model.cameras(torch.tensor([NOVEL_YAW]), torch.tensor([0.0]))
    novel = codes.render(G, stage, target.z_exp, target.z_pose, novel_cams, None, H, Hf)
    smile = codes.render(G, stage, expression_change().to(target.z_exp), target.z_pose, target.cameras, None, H, Hf)
    return [(target.portrait, target.face), (recon.portrait, recon.face), (novel.portrait, novel.face),
            (smile.portrait, smile.face)]


def comparison_image(views: list[tuple[torch.Tensor, torch.Tensor]]) -> np.ndarray:
    """uint8 [2 * side, len(views) * side, 3]: portraits above, faces below."""
    side = max(MIN_TILE, int(views[0][0].shape[-1]))
    rows = [np.concatenate([_tile(v[k], side) for v in views], axis=1) for k in (0, 1)]
    return np.concatenate(rows, axis=0)


def write_comparison(path, views) -> None:
    save_image_atomic(path, comparison_image(views))


__all__ = ["COMPARISON_LAYOUT", "comparison_image", "comparison_views", "expression_change", "identity_cosine",
           "masked_psnr", "reconstruction_metrics", "write_comparison"]
