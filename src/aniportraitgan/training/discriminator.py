"""StyleGAN2-style residual image discriminator with minibatch standard deviation.

Resolution-generic: an input of H x W (H a power of two, W a multiple of H or equal to it — the
torso crop is a H/4 x W strip) passes through residual blocks that halve both sides until H is 4,
then the epilogue (minibatch stddev, 3x3 conv, fully connected layers) gives one logit per image.
Layers use equalised learning rate (weights scaled at run time by 1/sqrt(fan_in)) so that Adam
sees parameters of unit scale whatever the width.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from aniportraitgan.errors import InputError

_LRELU_GAIN = math.sqrt(2.0)


class EqConv2d(nn.Module):
    def __init__(self, cin: int, cout: int, kernel: int, bias: bool = True, activate: bool = True):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(cout, cin, kernel, kernel))
        self.bias = nn.Parameter(torch.zeros(cout)) if bias else None
        self.scale = 1.0 / math.sqrt(cin * kernel * kernel)
        self.padding = kernel // 2
        self.activate = activate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight * self.scale
        x = F.conv2d(x, w.to(x.dtype), self.bias.to(x.dtype) if self.bias is not None else None,
                     padding=self.padding)
        if self.activate:
            x = F.leaky_relu(x, 0.2) * _LRELU_GAIN
        return x


class EqLinear(nn.Module):
    def __init__(self, cin: int, cout: int, activate: bool = True):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(cout, cin))
        self.bias = nn.Parameter(torch.zeros(cout))
        self.scale = 1.0 / math.sqrt(cin)
        self.activate = activate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.linear(x, (self.weight * self.scale).to(x.dtype), self.bias.to(x.dtype))
        if self.activate:
            x = F.leaky_relu(x, 0.2) * _LRELU_GAIN
        return x


class Blur2x(nn.Module):
    """Low-pass [1, 3, 3, 1] filter followed by 2x decimation: downsampling without aliasing."""

    def __init__(self):
        super().__init__()
        k = torch.tensor([1.0, 3.0, 3.0, 1.0])
        k = torch.outer(k, k)
        self.register_buffer("kernel", (k / k.sum())[None, None], persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = x.shape[1]
        x = F.pad(x, (1, 1, 1, 1), mode="reflect" if min(x.shape[-2:]) > 1 else "replicate")
        return F.conv2d(x, self.kernel.to(x.dtype).expand(c, 1, 4, 4), stride=2, groups=c)


class ResidualBlock(nn.Module):
    """conv3x3 -> blur/downsample -> conv3x3, plus a blurred 1x1 skip; sum scaled by 1/sqrt(2)."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv0 = EqConv2d(cin, cin, 3)
        self.down = Blur2x()
        self.conv1 = EqConv2d(cin, cout, 3)
        self.skip = EqConv2d(cin, cout, 1, bias=False, activate=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.skip(self.down(x))
        x = self.conv1(self.down(self.conv0(x)))
        return (x + y) / math.sqrt(2.0)


class MinibatchStd(nn.Module):
    """Append the average over features of the per-group standard deviation across samples,
    which lets the discriminator see a lack of diversity."""

    def __init__(self, group: int, channels: int = 1):
        super().__init__()
        self.group = group
        self.channels = channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        g = min(self.group, b)
        while b % g:  # use the largest group size that divides the batch
            g -= 1
        f = self.channels
        y = x.reshape(g, b // g, f, c // f, h, w).to(torch.promote_types(x.dtype, torch.float32))
        y = y - y.mean(dim=0)
        y = (y.square().mean(dim=0) + 1e-8).sqrt()  # [b/g, f, c/f, h, w]
        y = y.mean(dim=(2, 3, 4))  # [b/g, f]
        y = y.reshape(-1, f, 1, 1).repeat(g, 1, h, w).to(x.dtype)
        return torch.cat([x, y], dim=1)


class Discriminator(nn.Module):
    """D(image [B, 3, H, W] in [-1, 1]) -> logits [B].

    `resolution` is the image height and `aspect` the width / height ratio (1 for portraits and
    faces, 4 for the torso strip)."""

    def __init__(
        self,
        resolution: int,
        aspect: int = 1,
        channel_base: int = 16384,
        channel_max: int = 512,
        mbstd_group: int = 4,
        mbstd_channels: int = 1,
    ):
        super().__init__()
        if resolution < 4 or resolution & (resolution - 1):
            raise InputError(f"discriminator resolution must be a power of two >= 4, got {resolution}")
        if aspect < 1:
            raise InputError(f"discriminator aspect must be >= 1, got {aspect}")
        self.resolution = resolution
        self.aspect = aspect

        def ch(side: int) -> int:
            return max(1, min(channel_base // side, channel_max))

        self.from_rgb = EqConv2d(3, ch(resolution), 1)
        blocks = []
        side = resolution
        while side > 4:
            blocks.append(ResidualBlock(ch(side), ch(side // 2)))
            side //= 2
        self.blocks = nn.ModuleList(blocks)
        c4 = ch(4)
        self.mbstd = MinibatchStd(mbstd_group, mbstd_channels)
        self.conv = EqConv2d(c4 + mbstd_channels, c4, 3)
        self.fc = EqLinear(c4 * 4 * 4 * aspect, c4)
        self.out = EqLinear(c4, 1, activate=False)

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        expected = (self.resolution, self.resolution * self.aspect)
        if img.dim() != 4 or img.shape[1] != 3 or tuple(img.shape[-2:]) != expected:
            raise InputError(
                f"discriminator expects images [B, 3, {expected[0]}, {expected[1]}], got {tuple(img.shape)}"
            )
        x = self.from_rgb(img)
        for block in self.blocks:
            x = block(x)
        x = self.conv(self.mbstd(x))
        x = self.fc(x.flatten(1))
        return self.out(x).squeeze(1)


def build_discriminators(
    portrait_resolution: int,
    face_resolution: int,
    cfg,  # DiscriminatorConfig
    use_face: bool = True,
    use_torso: bool = True,
) -> nn.ModuleDict:
    """The paper's three discriminators for one stage: whole portrait, face, torso strip
    (the lower quarter of the portrait, kept at full width)."""
    kw = dict(
        channel_base=cfg.channel_base,
        channel_max=cfg.channel_max,
        mbstd_group=cfg.mbstd_group,
        mbstd_channels=cfg.mbstd_channels,
    )
    ds = nn.ModuleDict({"whole": Discriminator(portrait_resolution, **kw)})
    if use_face:
        ds["face"] = Discriminator(face_resolution, **kw)
    if use_torso:
        ds["torso"] = Discriminator(portrait_resolution // 4, aspect=4, **kw)
    return ds
