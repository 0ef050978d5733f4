"""GAN training: the generic two-stage loop (`loop`), what it minimises (`objective`, `losses`),
discriminators, EMA, deterministic random streams (`rng`), logged image grids and DDP helpers."""

from aniportraitgan.training.config import (
           AblationConfig,
           DiscriminatorConfig,
           LossWeights,
           StageConfig,
           TrainConfig,
)
from aniportraitgan.training.loop import RunOptions, Trainer, train
from aniportraitgan.training.objective import PortraitObjective

__all__ = ["AblationConfig", "DiscriminatorConfig", "LossWeights", "PortraitObjective", "RunOptions", "StageConfig",
           "TrainConfig", "Trainer", "train"]
