"""Face reconstruction network R (the landmark loss's coefficient estimator) and its training."""

from aniportraitgan.facerecon.model import FaceRecon, FaceReconConfig
from aniportraitgan.facerecon.train import FaceReconTrainConfig, train_facerecon

__all__ = ["FaceRecon", "FaceReconConfig", "train_facerecon", "FaceReconTrainConfig"]
