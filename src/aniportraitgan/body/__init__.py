"""Open parametric portrait body model (replaces SMPL + BFM by default)."""

from aniportraitgan.body.asset import BONE_NAMES, CONTROLLED_JOINTS, DEFAULT_ASSET, load_asset
from aniportraitgan.body.model import BodyOutput, PortraitBodyModel

__all__ = ["BONE_NAMES", "CONTROLLED_JOINTS", "DEFAULT_ASSET", "BodyOutput", "PortraitBodyModel", "load_asset"]
