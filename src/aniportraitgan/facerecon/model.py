"""Face reconstruction network R: face image -> body-model coefficients (z_id, z_exp), and
optionally the face camera's view angles relative to the head.

R plays the role of Deep3DFaceRecon in the paper's landmark loss (eq. 9): during GAN training
it reads the generated face render, and the body model turns its estimate into 3D landmarks.
It is trained on SynthPortraits face images with their exact labels (`facerecon.train`).

A plain CNN is enough: the face images are aligned by construction (the face camera looks at
the head centre with the head's up axis up), so the network needs no spatial transformer.
GroupNorm rather than BatchNorm keeps it independent of the batch, so the frozen R behaves the
same in GAN training as in evaluation.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from aniportraitgan.artefacts.checksummed import read_checksummed, warn_unverified, write_checksummed
from aniportraitgan.configs import Config
from aniportraitgan.errors import AssetError, InputError
from aniportraitgan.images import MIN_RESOLUTION

KIND = "aniportraitgan-facerecon"
WHAT = "face reconstruction weights"  # how errors name the file


@dataclass
class FaceReconConfig(Config):
    """The shape of R."""

    resolution: int = 64
    """Input side of R; other sizes are resized (antialiased) to it."""
    width: int = 32
    """Channels of R's first stage; they double at each 2x downsampling."""
    max_width: int = 256
    """Cap on the channels of any stage."""
    hidden: int = 256
    """Width of the fully connected layer before the coefficient head."""
    id_dim: int = 40
    """Identity coefficients estimated (the body model's)."""
    exp_dim: int = 52
    """Expression coefficients estimated (the body model's)."""
    predict_pose: bool = True
    """Also estimate the face view (yaw, pitch) relative to the head."""

    def validate(self) -> None:
        if self.resolution < MIN_RESOLUTION or self.resolution & (self.resolution - 1):
            raise InputError(f"FaceReconConfig.resolution must be a power of two >= {MIN_RESOLUTION}, got {self.resolution}")
        for name in ("width", "max_width", "hidden", "id_dim", "exp_dim"):
            if getattr(self, name) < 1:
                raise InputError(f"FaceReconConfig.{name} must be >= 1")

    @property
    def out_dim(self) -> int:
        return self.id_dim + self.exp_dim + (2 if self.predict_pose else 0)


def _block(cin: int, cout: int, stride: int) -> nn.Sequential:
    groups = 8 if cout % 8 == 0 else 1
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride=stride, padding=1),
        nn.GroupNorm(groups, cout),
        nn.LeakyReLU(0.2),
    )


class FaceRecon(nn.Module):
    """R(face [B, 3, H, W] in [-1, 1]) -> {"z_id" [B, id_dim], "z_exp" [B, exp_dim] in [0, 1],
    "view" [B, 2] (yaw, pitch radians; only with predict_pose)}.

    Identity is predicted as id_mean + id_std * output, with the training labels' statistics
    stored as buffers, so the untrained head already sits at the label mean."""

    def __init__(self, config: FaceReconConfig | None = None):
        super().__init__()
        self.config = config or FaceReconConfig()
        self.config.validate()
        c = self.config
        layers = [_block(3, c.width, 1)]
        side, ch = c.resolution, c.width
        while side > 4:
            nxt = min(ch * 2, c.max_width)
            layers.append(_block(ch, nxt, 2))
            layers.append(_block(nxt, nxt, 1))
            ch, side = nxt, side // 2
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(
            nn.Flatten(),
            nn.Linear(ch * 16, c.hidden),
            nn.LeakyReLU(0.2),
            nn.Linear(c.hidden, c.out_dim),
        )
        nn.init.zeros_(self.head[-1].weight)
        nn.init.zeros_(self.head[-1].bias)
        # Label statistics (set from the training set before training).
        self.register_buffer("id_mean", torch.zeros(c.id_dim))
        self.register_buffer("id_std", torch.ones(c.id_dim))
        self.register_buffer("exp_mean", torch.full((c.exp_dim,), 0.1))
        self.register_buffer("view_mean", torch.zeros(2))
        self.register_buffer("view_std", torch.ones(2))

    @torch.no_grad()
    def set_label_statistics(self, z_id: torch.Tensor, z_exp: torch.Tensor, view: torch.Tensor | None = None) -> None:
        self.id_mean.copy_(z_id.float().mean(0))
        self.id_std.copy_(z_id.float().std(0, unbiased=False).clamp_min(1e-3))
        self.exp_mean.copy_(z_exp.float().mean(0).clamp(1e-3, 1 - 1e-3))
        if view is not None and self.config.predict_pose:
            self.view_mean.copy_(view.float().mean(0))
            self.view_std.copy_(view.float().std(0, unbiased=False).clamp_min(1e-3))

    def forward(self, face: torch.Tensor) -> dict[str, torch.Tensor]:
        if face.dim() != 4 or face.shape[1] != 3:
            raise InputError(f"FaceRecon expects face images [B, 3, H, W], got {tuple(face.shape)}")
        r = self.config.resolution
        x = face.float()
        if x.shape[-2:] != (r, r):
            x = F.interpolate(x, size=(r, r), mode="bilinear", antialias=True, align_corners=False)
        out = self.head(self.features(x))
        c = self.config
        z_id = self.id_mean + self.id_std * out[:, : c.id_dim]
        logit_mean = torch.logit(self.exp_mean)
        z_exp = torch.sigmoid(logit_mean + out[:, c.id_dim : c.id_dim + c.exp_dim])
        result = {"z_id": z_id, "z_exp": z_exp}
        if c.predict_pose:
            result["view"] = self.view_mean + self.view_std * out[:, c.id_dim + c.exp_dim :]
        return result

    # ------------------------------------------------------------------ files
    def save(self, path: str | Path, extra: dict | None = None) -> Path:
        """Write the weights with the config in the metadata, checksummed (``artefacts.checksummed``)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        meta = {"kind": KIND, "config": json.dumps(self.config.to_dict(), sort_keys=True)}
        if extra:
            meta["extra"] = json.dumps(extra, sort_keys=True)
        return write_checksummed(path, self.state_dict(), meta)

    @classmethod
    def load(cls, path: str | Path, device: str | torch.device = "cpu") -> "FaceRecon":
        """Read a saved R (frozen, eval mode). AssetError if missing, corrupted (its checksum
        included) or not an R; a file written before checksums loads with a warning."""
        path = Path(path)
        if not path.is_file():
            raise AssetError(f"face reconstruction weights {path} do not exist (train them with `aniportraitgan facerecon train`)")
        stored = read_checksummed(path, WHAT)
        meta, state = stored.metadata, stored.tensors
        if meta.get("kind") != KIND:
            raise AssetError(f"{path} is not a face reconstruction network (metadata kind {meta.get('kind')!r})")
        try:
            cfg = FaceReconConfig.from_dict(json.loads(meta["config"]))
        except (KeyError, TypeError, ValueError, InputError) as exc:
            raise AssetError(f"{path}: unreadable FaceReconConfig in metadata ({exc})") from None
        if not stored.checksummed:
            warn_unverified(path, WHAT)
        model = cls(cfg)
        try:
            model.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            raise AssetError(f"{path}: weights do not fit the stored config ({str(exc).splitlines()[0]})") from None
        return model.to(device).eval().requires_grad_(False)
