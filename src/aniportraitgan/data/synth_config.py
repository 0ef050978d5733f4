"""SynthPortraits settings: what a dataset's card records, so that its samples can be drawn again."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from aniportraitgan.data.synth_labels import LabelPriors
from aniportraitgan.errors import InputError, UserError
from aniportraitgan.images import MAX_RESOLUTION

GENERATOR = "aniportraitgan.data.synth"
GENERATOR_VERSION = "1"
CHUNK = 16  # samples per body-model batch; fixed so that results do not depend on scheduling


@dataclass
class SynthConfig:
    num: int = 1000
    resolution: int = 512
    seed: int = 0
    workers: int = 2
    msaa: int = 0  # MSAA samples; 4 gives smoother silhouettes at ~1.7x the CPU cost (docs/dataset.md)
    texture_size: int | None = None  # default: 2 x resolution, clipped to [256, 1024]
    png_compress: int = 1  # zlib level for PNGs (1: fast, a little larger)
    priors: LabelPriors = field(default_factory=LabelPriors)
    long_hair_fraction: float = 0.3
    progress: bool = True

    @property
    def face_resolution(self) -> int:
        return max(self.resolution // 2, 8)

    def resolved_texture_size(self) -> int:
        if self.texture_size:
            return int(self.texture_size)
        return int(min(max(2 ** math.ceil(math.log2(2 * self.resolution)), 256), 1024))

    def card_settings(self) -> dict[str, Any]:
        """What the card records (`synth_settings`): everything a sample's pixels depend on."""
        return {
            "seed": self.seed,
            "resolution": self.resolution,
            "face_resolution": self.face_resolution,
            "texture_size": self.resolved_texture_size(),
            "msaa": self.msaa,
            "long_hair_fraction": self.long_hair_fraction,
            "priors": asdict(self.priors),
            "generator_version": GENERATOR_VERSION,
        }

    @classmethod
    def from_card(cls, card: dict, num: int | None = None) -> "SynthConfig":
        """The settings a dataset card records (`synthesize`), so that its samples can be drawn
        again; `UserError` when `data synth` of this version did not make the dataset."""
        settings = card.get("synth_settings") if isinstance(card, dict) else None
        if not isinstance(settings, dict):
            raise UserError("the dataset was not made by `data synth`: there is no renderer to draw its samples again")
        if str(settings.get("generator_version")) != GENERATOR_VERSION:
            raise UserError(f"the dataset was made by SynthPortraits version {settings.get('generator_version')!r}, "
                            f"this is version {GENERATOR_VERSION}: its samples cannot be drawn again")
        priors = {k: tuple(v) if isinstance(v, list) else v for k, v in settings["priors"].items()}
        return cls(num=int(num or card.get("num_samples", 1)), resolution=int(settings["resolution"]),
                   seed=int(settings["seed"]), workers=1, msaa=int(settings["msaa"]),
                   texture_size=int(settings["texture_size"]), priors=LabelPriors(**priors),
                   long_hair_fraction=float(settings["long_hair_fraction"]), progress=False)

    def validate(self) -> None:
        if not isinstance(self.num, int) or self.num < 1:
            raise InputError(f"num must be an int >= 1 (a dataset needs samples), got {self.num!r}")
        if not isinstance(self.resolution, int) or not 16 <= self.resolution <= MAX_RESOLUTION:
            raise InputError(f"resolution must be an int in [16, {MAX_RESOLUTION}], got {self.resolution!r}")
        if self.workers < 1:
            raise InputError(f"workers must be >= 1, got {self.workers}")
        if not 0.0 <= self.long_hair_fraction <= 1.0:
            raise InputError(f"long_hair_fraction must be in [0, 1], got {self.long_hair_fraction}")
