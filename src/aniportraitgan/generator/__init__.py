"""The generator G of AniPortraitGAN: radiance manifolds (M, phi), super-resolution (U),
pose deformation (Dp), expression deformation (De) and dual-camera rendering."""

from aniportraitgan.generator.cache import IdentityCache, WAverage
from aniportraitgan.generator.config import (
    DEFAULT_PSI, PRESETS, PSI_RANGE, SUBNETWORK_FIELDS, GeneratorConfig, check_psi,
)
from aniportraitgan.generator.generator import Generator
from aniportraitgan.generator.outputs import Aux, Rendered, RenderOptions

__all__ = ["DEFAULT_PSI", "PSI_RANGE", "SUBNETWORK_FIELDS", "Aux", "Generator", "GeneratorConfig", "IdentityCache", "PRESETS", "Rendered",
           "RenderOptions", "WAverage", "check_psi"]
