"""Perceptual distances for inversion from networks the project already has (no torchvision, no
VGG): the early layers of the FID Inception TorchScript (``metrics.inception``) or the
convolutional trunk of the face reconstruction network R (``facerecon``).

``FeatureDistance(taps)(a, b)`` is an LPIPS-like distance without learned weights: at each tap,
the feature vector of every location is normalised to unit length over its channels, and the
squared difference is averaged over locations and summed over taps (LPIPS with all channel
weights equal). It is differentiable in both images, so inversion uses it as a loss, and the
metrics report it as the "feature distance".

Inception taps: after ``conv_2`` (64 channels), ``conv_4`` (192) and ``mixed_2`` (Mixed_5d, 288)
of a copy resized to ``size`` (default 128: the network's full 299 costs 5x more and adds nothing
on 32-64 px renders). R taps: the output of each resolution stage of its trunk.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from aniportraitgan.errors import InputError
from aniportraitgan.facerecon import FaceRecon
from aniportraitgan.metrics.inception import find_inception_weights

INCEPTION_TAPS = ("conv_2", "conv_4", "mixed_2")
PERCEPTUAL_KINDS = ("inception", "facerecon", "none")


class InceptionTaps(nn.Module):
    """Early Inception-v3 feature maps of images in [-1, 1] (the FID network's own weights)."""

    name = "inception"

    def __init__(self, size: int = 128, taps: tuple[str, ...] = INCEPTION_TAPS, weights_path=None) -> None:
        super().__init__()
        if size < 75:
            raise InputError(f"the Inception taps need an input of at least 75 pixels, got {size}")
        net = torch.jit.load(str(weights_path or find_inception_weights()), map_location="cpu").eval()
        layers = net.net.layers
        names = [n for n, _ in layers.named_children()]
        unknown = [t for t in taps if t not in names]
        if unknown:
            raise InputError(f"unknown Inception layers {unknown}; the network has {names}")
        last = max(names.index(t) for t in taps)
        self.stages = nn.ModuleList([getattr(layers, n) for n in names[:last + 1]])
        self.names = names[:last + 1]
        self.taps = set(taps)
        self.size = size
        for p in self.parameters():
            p.requires_grad_(False)

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        x = F.interpolate(images.float(), size=(self.size, self.size), mode="bilinear", align_corners=False)
        # The TF graph's input range: 8-bit level p -> (p - 128) / 128, i.e. (x + 1) * 127.5 / 128 - 1.
        x = (x + 1.0) * (127.5 / 128.0) - 1.0
        out = []
        for name, stage in zip(self.names, self.stages):
            x = stage(x)
            if name in self.taps:
                out.append(x)
        return out


class FaceReconTaps(nn.Module):
    """Feature maps of R's trunk at each resolution stage (faces in [-1, 1])."""

    name = "facerecon"

    def __init__(self, facerecon: FaceRecon) -> None:
        super().__init__()
        self.resolution = facerecon.config.resolution
        self.features = facerecon.features
        # Taps: the first block, then the end of every (stride-2 block, block) pair.
        self.tap_index = {0} | {i for i in range(2, len(self.features), 2)}
        for p in self.parameters():
            p.requires_grad_(False)

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        r = self.resolution
        x = images.float()
        if x.shape[-2:] != (r, r):
            x = F.interpolate(x, size=(r, r), mode="bilinear", align_corners=False, antialias=True)
        out = []
        for i, block in enumerate(self.features):
            x = block(x)
            if i in self.tap_index:
                out.append(x)
        return out


class FeatureDistance(nn.Module):
    """LPIPS-like distance [B] between two image batches [B, 3, H, W] in [-1, 1] (see the module doc)."""

    def __init__(self, taps: nn.Module) -> None:
        super().__init__()
        self.taps = taps
        self.name = getattr(taps, "name", type(taps).__name__)

    def features(self, images: torch.Tensor) -> list[torch.Tensor]:
        return [F.normalize(f, dim=1, eps=1e-8) for f in self.taps(images)]

    def between(self, fa: list[torch.Tensor], fb: list[torch.Tensor]) -> torch.Tensor:
        """Distance [B] of precomputed ``features``."""
        return sum((a - b).square().sum(1).mean((1, 2)) for a, b in zip(fa, fb))

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        if a.shape != b.shape:
            raise InputError(f"feature distance of images of different shapes {tuple(a.shape)} and {tuple(b.shape)}")
        return self.between(self.features(a), self.features(b))


def make_feature_distance(kind: str, facerecon: FaceRecon | None = None, device="cpu") -> FeatureDistance | None:
    """The perceptual distance ``kind`` (PERCEPTUAL_KINDS) on ``device``; None for "none"."""
    if kind == "none":
        return None
    if kind == "inception":
        return FeatureDistance(InceptionTaps()).to(device)
    if kind == "facerecon":
        if facerecon is None:
            raise InputError("the facerecon perceptual loss needs R: pass --facerecon R.safetensors")
        return FeatureDistance(FaceReconTaps(facerecon)).to(device)
    raise InputError(f"perceptual must be one of {PERCEPTUAL_KINDS}, got {kind!r}")


__all__ = [
    "INCEPTION_TAPS",
    "PERCEPTUAL_KINDS",
    "FaceReconTaps",
    "FeatureDistance",
    "InceptionTaps",
    "make_feature_distance",
]
