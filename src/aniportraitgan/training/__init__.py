"""GAN training: configs, discriminators, losses, EMA, checkpoints, the two-stage trainer."""

from aniportraitgan.training.config import AblationConfig, DiscriminatorConfig, LossWeights, StageConfig, TrainConfig

__all__ = ["AblationConfig", "DiscriminatorConfig", "LossWeights", "StageConfig", "TrainConfig", "Trainer", "train"]


def __getattr__(name):  # the trainer pulls the generator and data modules: import on demand
    if name in ("Trainer", "train"):
        from aniportraitgan.training import loop

        return getattr(loop, name)
    raise AttributeError(name)
