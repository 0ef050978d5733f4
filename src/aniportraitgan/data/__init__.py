"""Portrait datasets: the on-disk format, the synthetic generator and latent samplers."""

from aniportraitgan.data.dataset import PortraitDataset
from aniportraitgan.data.samplers import LabelSampler, LatentSample, SamplerConfig

__all__ = ["LabelSampler", "LatentSample", "PortraitDataset", "SamplerConfig"]
