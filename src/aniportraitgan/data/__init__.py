"""Portrait datasets: the on-disk format and the synthetic generator (SynthPortraits).

Latent samplers over a dataset's labels live in ``aniportraitgan.latents``."""

from aniportraitgan.data.dataset import PortraitDataset

__all__ = ["PortraitDataset"]
