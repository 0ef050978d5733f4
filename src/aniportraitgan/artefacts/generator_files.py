"""The exported generator file: EMA weights in a safetensors file whose metadata holds the
generator config (JSON), and optionally the training config, stage, step and latent prior.

It is what training writes as ``RUN/generator.safetensors`` and what ``generate``, ``animate``
and ``demo`` read (the bundled ``assets/demo_generator.safetensors`` is one). It is checksummed
(``artefacts.checksummed``): a flipped byte is an ``AssetError`` naming the file; a file written
before checksums existed loads with an ``UnverifiedFileWarning``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from aniportraitgan.artefacts.checkpoints import FORMAT_VERSION
from aniportraitgan.artefacts.checksummed import read_checksummed, warn_unverified, write_checksummed
from aniportraitgan.errors import AssetError
from aniportraitgan.latents import LatentPrior

GENERATOR_KIND = "aniportraitgan-generator"
# Metadata key (and meta.json key of checkpoint folders) of the latent prior's JSON.
PRIOR_KEY = "latent_prior"


def export_generator(path: str | Path, generator_state: dict[str, torch.Tensor], generator_config: dict[str, Any],
                     train_config: dict[str, Any] | None = None, step: int | None = None, stage: int | None = None,
                     extra_metadata: dict[str, str] | None = None, prior: LatentPrior | None = None) -> Path:
    """Write a generator's weights with its configuration in the safetensors metadata
    (atomically: temporary file + rename), with its checksum. ``prior`` is stored as ``latent_prior`` JSON;
    ``extra_metadata`` adds string entries (e.g. that JSON already serialised)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    metadata = {
        "format": str(FORMAT_VERSION),
        "kind": GENERATOR_KIND,
        "generator_config": json.dumps(generator_config, sort_keys=True),
    }
    if train_config is not None:
        metadata["train_config"] = json.dumps(train_config, sort_keys=True)
    if step is not None:
        metadata["step"] = str(step)
    if stage is not None:
        metadata["stage"] = str(stage)
    if prior is not None:
        metadata[PRIOR_KEY] = prior.to_json()
    for key, value in (extra_metadata or {}).items():
        metadata.setdefault(key, str(value))
    return write_checksummed(path, generator_state, metadata)


def save_generator(path: str | Path, generator, stage: int | None = None, step: int | None = None,
                   prior: LatentPrior | None = None, train_config: dict | None = None) -> Path:
    """Export a ``Generator`` module (its state and config) in the format ``open_generator`` reads."""
    return export_generator(path, generator.state_dict(), generator.config.to_dict(), train_config, step, stage,
                            prior=prior)


def read_generator_file(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(weights, metadata) of an exported generator; AssetError if missing, corrupted (checksum
    included) or not a generator."""
    path = Path(path)
    if not path.is_file():
        raise AssetError(f"generator file {path} does not exist")
    stored = read_checksummed(path, "generator file")
    metadata = stored.metadata
    if metadata.get("kind") != GENERATOR_KIND or "generator_config" not in metadata:
        raise AssetError(f"{path} is not an exported aniportraitgan generator (metadata lacks generator_config)")
    if not stored.checksummed:
        warn_unverified(path, "generator file")
    return stored.tensors, metadata
