"""GAN training: the generic two-stage loop (`loop`), what it minimises (`objective`, `losses`),
discriminators, EMA, deterministic random streams (`rng`), the run folder's logs and grids."""

from aniportraitgan.training.config import AblationConfig, DiscriminatorConfig, LossWeights, StageConfig, TrainConfig
from aniportraitgan.training.loop import Trainer, train
from aniportraitgan.training.objective import PortraitObjective
from aniportraitgan.training.options import RunOptions

__all__ = ["AblationConfig", "DiscriminatorConfig", "LossWeights", "PortraitObjective", "RunOptions", "StageConfig",
           "TrainConfig", "Trainer", "train"]
