"""Load a trained generator for inference (``generate``, ``animate``, ``demo``, ``evaluate``).

The checkpoint formats, their validation and the latent prior are ``artefacts``' (see
``artefacts.loading``); this module adds the device choice and what rendering needs to know:
the stage's native resolutions, identities drawn from a seed and the main cameras.

An identity is drawn from a seed with the training labels' statistics when the checkpoint
stores them, else from N(0, 1); ``eps ~ N(0, 1)``; the main camera's placement comes from the
same labels.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from aniportraitgan.artefacts import open_generator
from aniportraitgan.artefacts.identities import StoredIdentity, read_identity
from aniportraitgan.cameras import Cameras
from aniportraitgan.errors import InputError
from aniportraitgan.generator import Generator
from aniportraitgan.images import MIN_RESOLUTION
from aniportraitgan.latents import LatentPrior


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``None`` or ``"auto"``: CUDA when available, else CPU."""
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise InputError(f"invalid device {device!r}: {exc}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"device {device!r} requested but CUDA is not available")
    return dev


@dataclass
class InferenceModel:
    """A generator ready for rendering, with what inference needs to know about it."""

    generator: Generator  # eval mode
    stage: int  # 1: phi at the intersections; 2: U's super-resolved maps
    prior: LatentPrior
    source: Path
    portrait_resolution: int  # native resolution of this stage
    face_resolution: int
    step: int | None = None
    metadata: dict = field(default_factory=dict)

    @property
    def config(self):
        return self.generator.config

    @property
    def body(self):
        return self.generator.body

    @property
    def device(self) -> torch.device:
        return next(self.generator.parameters()).device

    def identity(self, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(z_id [1, id_dim], eps [1, noise_dim]) of a seed, identical on every device."""
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise InputError(f"seed must be an int >= 0, got {seed!r}")
        g = torch.Generator(device="cpu").manual_seed(seed)
        c = self.config
        z = torch.randn(1, c.id_dim, generator=g)
        eps = torch.randn(1, c.noise_dim, generator=g)
        z_id = self.prior.z_id_mean[None] + self.prior.z_id_std[None] * z
        return z_id.to(self.device), eps.to(self.device)

    def cameras(self, yaw: torch.Tensor, pitch: torch.Tensor) -> Cameras:
        """Main cameras [B] at (yaw, pitch) radians with this model's placement."""
        yaw = torch.as_tensor(yaw, dtype=torch.float32, device=self.device).reshape(-1)
        pitch = torch.as_tensor(pitch, dtype=torch.float32, device=self.device).reshape(-1)
        return self.prior.camera.cameras(yaw, pitch)


def load_inference_model(
    ckpt: str | Path,
    device: str | torch.device | None = "cpu",
    expected_config=None,
    body_model=None,
) -> InferenceModel:
    """Load a checkpoint (``artefacts.open_generator``) as an ``InferenceModel`` in eval mode.

    ``expected_config`` (a ``GeneratorConfig`` or a preset name) makes a checkpoint of any
    other configuration an ``AssetError`` listing the differing fields.
    """
    stored = open_generator(ckpt, resolve_device(device), expected_config, body_model)
    cfg = stored.generator.config
    # The stage's training resolutions when the checkpoint records them, else the networks' own.
    st = (stored.train_config or {}).get(f"stage{stored.stage}") or {}
    if stored.stage == 2:
        res = int(st.get("portrait_resolution", cfg.sr_output_resolution))
        face = int(st.get("face_resolution", max(MIN_RESOLUTION, res // 2)))
    else:
        res = int(st.get("portrait_resolution", cfg.sr_map_resolution))
        face = int(st.get("face_resolution", res))
    return InferenceModel(stored.generator, stored.stage, stored.prior, stored.source, res, face, stored.step,
                          dict(stored.metadata))


def load_identity(path: str | Path, model: InferenceModel) -> StoredIdentity:
    """An identity file of ``aniportraitgan invert``, checked against ``model``: AssetError when it
    is missing, corrupted, holds NaN, or was made for another generator. Render it by passing it
    where a seed goes (``animation.GeneratorFrames``)."""
    return read_identity(path, model.generator, model.stage)


__all__ = ["InferenceModel", "load_identity", "load_inference_model", "resolve_device"]
