"""Face reconstruction network R (the landmark loss's coefficient estimator) and its training."""

from aniportraitgan.facerecon.model import FaceRecon, FaceReconConfig

__all__ = ["FaceRecon", "FaceReconConfig", "train_facerecon", "FaceReconTrainConfig"]


def __getattr__(name):  # training code is imported only when asked for
    if name in ("train_facerecon", "FaceReconTrainConfig"):
        from aniportraitgan.facerecon import train

        return getattr(train, name)
    raise AttributeError(name)
