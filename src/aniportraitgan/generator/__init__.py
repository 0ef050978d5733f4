"""The generator G of AniPortraitGAN: radiance manifolds (M, phi), super-resolution (U),
pose deformation (Dp), expression deformation (De) and dual-camera rendering."""

from aniportraitgan.generator.cache import IdentityCache, WAverage
from aniportraitgan.generator.config import PRESETS, GeneratorConfig
from aniportraitgan.generator.generator import Generator, GeneratorOutput

__all__ = ["Generator", "GeneratorConfig", "GeneratorOutput", "IdentityCache", "PRESETS", "WAverage"]
