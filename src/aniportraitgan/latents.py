"""Latent codes: a batch of them (``LatentSample``), the label sampler that draws them from a
dataset's label distribution (``LabelSampler``), and the prior an exported model keeps of that
distribution for inference (``LatentPrior``).

The paper samples latent codes and cameras "from the estimated distributions" of the training
set. We resample real label rows: jointly (one row gives all components, keeping their
correlations, e.g. camera yaw with head yaw) or per component independently (identity,
expression, pose and camera from different rows), optionally with small Gaussian jitter scaled
by each label dimension's spread in the dataset. `eps` is always drawn from N(0, 1).

The prior: at inference an identity is drawn from a seed as ``z_id = mean + std * N(0, 1)``
with the per-dimension statistics of the training labels (stored in the checkpoint), or from
N(0, 1), the body model's own prior; the main camera's placement comes from the same labels
or ``cameras.MainCameraPlacement()``.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field, fields
from typing import Mapping

import numpy as np
import torch

from aniportraitgan.cameras import Cameras, MainCameraPlacement, look_at_cameras
from aniportraitgan.data.dataset import LABELS_FILE, PortraitDataset, load_labels, read_card
from aniportraitgan.errors import AssetError, InputError

# Sampled components and the label arrays each one is made of.
COMPONENTS: dict[str, tuple[str, ...]] = {
    "id": ("z_id",),
    "exp": ("z_exp",),
    "pose": ("z_pose",),
    "camera": ("cam_yaw", "cam_pitch", "cam_radius", "cam_fov", "cam_look_at"),
}
MODES = ("joint", "independent")


@dataclass
class SamplerConfig:
    mode: str = "joint"  # "joint": one row for everything; "independent": one row per component
    jitter: float = 0.0  # Gaussian noise, in units of each label dimension's dataset std
    eps_dim: int = 0  # size of the N(0, 1) noise code; 0 = no eps

    def validate(self) -> None:
        if self.mode not in MODES:
            raise InputError(f"sampler mode must be one of {MODES}, got {self.mode!r}")
        if not (self.jitter >= 0.0 and np.isfinite(self.jitter)):
            raise InputError(f"jitter must be a finite number >= 0, got {self.jitter}")
        if self.eps_dim < 0:
            raise InputError(f"eps_dim must be >= 0, got {self.eps_dim}")


@dataclass
class LatentSample:
    """A batch of latent codes and main-camera parameters (float32 tensors, batch first)."""

    z_id: torch.Tensor  # [B, D_id]
    z_exp: torch.Tensor  # [B, 52] in [0, 1]
    z_pose: torch.Tensor  # [B, 6, 3] axis-angle radians
    eps: torch.Tensor | None = None  # [B, eps_dim] ~ N(0, 1)
    # The main camera of each sample (None when the caller brings its own cameras).
    cam_yaw: torch.Tensor | None = None  # [B] radians
    cam_pitch: torch.Tensor | None = None  # [B] radians
    cam_radius: torch.Tensor | None = None  # [B] metres
    cam_fov: torch.Tensor | None = None  # [B] degrees
    cam_look_at: torch.Tensor | None = None  # [B, 3] scene metres

    def __len__(self) -> int:
        return self.z_id.shape[0]

    def to(self, device) -> "LatentSample":
        return LatentSample(**{f.name: (None if getattr(self, f.name) is None else getattr(self, f.name).to(device)) for f in fields(self)})

    def expand(self, batch: int) -> "LatentSample":
        """A batch-1 sample repeated ``batch`` times (views, not copies)."""
        return LatentSample(**{f.name: (None if getattr(self, f.name) is None
                                        else getattr(self, f.name).expand(batch, *getattr(self, f.name).shape[1:]))
                               for f in fields(self)})

    def cameras(self) -> Cameras:
        """Main cameras for these samples."""
        if self.cam_yaw is None:
            raise InputError("this LatentSample holds no camera labels: pass cameras explicitly")
        return look_at_cameras(self.cam_yaw, self.cam_pitch, self.cam_radius, self.cam_fov, self.cam_look_at)

    @property
    def camera_angles(self) -> torch.Tensor:
        """[B, 2] (yaw, pitch) radians: the keyframe camera layout."""
        if self.cam_yaw is None:
            raise InputError("this LatentSample holds no camera labels")
        return torch.stack([self.cam_yaw, self.cam_pitch], -1)


class LabelSampler:
    """Resamples label rows of a dataset. Build with `from_dataset` or from a label dict."""

    def __init__(self, labels: Mapping[str, np.ndarray], config: SamplerConfig | None = None) -> None:
        self.config = config or SamplerConfig()
        self.config.validate()
        names = [n for comp in COMPONENTS.values() for n in comp]
        missing = [n for n in names if n not in labels]
        if missing:
            raise InputError(f"labels lack {missing} needed by the sampler")
        rows = {len(np.asarray(labels[n])) for n in names}
        if len(rows) != 1 or 0 in rows:
            raise InputError(f"label arrays must share a non-zero row count, got {sorted(rows)}")
        self.num_rows = rows.pop()
        self.tables: dict[str, torch.Tensor] = {}
        self.std: dict[str, torch.Tensor] = {}
        for n in names:
            a = torch.from_numpy(np.ascontiguousarray(np.asarray(labels[n], dtype=np.float32)))
            if not torch.isfinite(a).all():
                raise InputError(f"label '{n}' contains NaN or inf")
            self.tables[n] = a
            self.std[n] = a.std(0, unbiased=False) if len(a) > 1 else torch.zeros_like(a[0])

    @classmethod
    def from_dataset(cls, root_or_dataset, config: SamplerConfig | None = None, **kwargs) -> "LabelSampler":
        """From a dataset folder (path) or a `PortraitDataset`; kwargs fill a `SamplerConfig`."""
        if config is None:
            config = SamplerConfig(**kwargs)
        elif kwargs:
            raise InputError("give either config or keyword options, not both")
        if isinstance(root_or_dataset, PortraitDataset):
            labels = root_or_dataset.labels
        elif isinstance(root_or_dataset, (str, os.PathLike)):
            read_card(root_or_dataset)  # a clear error for a folder that is not a dataset
            labels = load_labels(os.path.join(root_or_dataset, LABELS_FILE))
        else:
            raise InputError(f"expected a dataset path or PortraitDataset, got {type(root_or_dataset).__name__}")
        return cls(labels, config)

    @property
    def id_dim(self) -> int:
        return int(self.tables["z_id"].shape[1])

    def rows(self, rows, eps: torch.Tensor | None = None) -> LatentSample:
        """The exact labels of the table rows ``rows`` (no jitter), with ``eps`` [len(rows), de]."""
        return LatentSample(**{n: self.tables[n][rows] for names in COMPONENTS.values() for n in names}, eps=eps)

    def sample(
        self,
        batch: int,
        generator: torch.Generator | None = None,
        device: torch.device | str = "cpu",
        eps_dim: int | None = None,
    ) -> LatentSample:
        if not isinstance(batch, int) or batch <= 0:
            raise InputError(f"batch must be a positive int, got {batch!r}")
        eps_dim = self.config.eps_dim if eps_dim is None else int(eps_dim)
        g = generator
        out: dict[str, torch.Tensor] = {}
        joint_rows = torch.randint(self.num_rows, (batch,), generator=g)
        for comp, names in COMPONENTS.items():
            rows = joint_rows if self.config.mode == "joint" else torch.randint(self.num_rows, (batch,), generator=g)
            for n in names:
                v = self.tables[n][rows]
                if self.config.jitter > 0:
                    v = v + self.config.jitter * self.std[n] * torch.randn(v.shape, generator=g)
                out[n] = v
        # Keep jittered values inside their valid ranges.
        out["z_exp"] = out["z_exp"].clamp(0.0, 1.0)
        out["cam_radius"] = out["cam_radius"].clamp_min(1e-3)
        out["cam_fov"] = out["cam_fov"].clamp(1.0, 179.0)
        eps = torch.randn(batch, eps_dim, generator=g) if eps_dim > 0 else None
        return LatentSample(**out, eps=eps).to(device)


@dataclass
class LatentPrior:
    """Per-dimension identity statistics and the main-camera placement of a training set."""

    z_id_mean: torch.Tensor  # [id_dim]
    z_id_std: torch.Tensor  # [id_dim]
    camera: MainCameraPlacement = field(default_factory=MainCameraPlacement)
    source: str = "standard normal"

    @staticmethod
    def standard(id_dim: int) -> "LatentPrior":
        return LatentPrior(torch.zeros(id_dim), torch.ones(id_dim), MainCameraPlacement(), "standard normal")

    @staticmethod
    def from_sampler(sampler: LabelSampler) -> "LatentPrior":
        """Statistics of a sampler's label tables."""
        t = sampler.tables
        return LatentPrior(t["z_id"].mean(0), t["z_id"].std(0, unbiased=False),
                           MainCameraPlacement.from_labels(t), "training labels")

    def to_json(self) -> str:
        c = self.camera
        return json.dumps({
            "z_id_mean": self.z_id_mean.tolist(), "z_id_std": self.z_id_std.tolist(),
            "cam_radius": c.radius, "cam_fov": c.fov_deg, "cam_look_at": list(c.look_at),
        })

    @staticmethod
    def from_json(text: str, id_dim: int, where: str = "checkpoint") -> "LatentPrior":
        try:
            d = json.loads(text)
            mean = torch.tensor(d["z_id_mean"], dtype=torch.float32)
            std = torch.tensor(d["z_id_std"], dtype=torch.float32)
            radius, fov = float(d["cam_radius"]), float(d["cam_fov"])
            look_at = tuple(float(v) for v in d["cam_look_at"])
        except (ValueError, KeyError, TypeError) as exc:
            raise AssetError(f"{where}: stored latent prior is corrupted ({exc})") from None
        ok = (mean.shape == (id_dim,) and std.shape == (id_dim,) and len(look_at) == 3
              and bool(torch.isfinite(mean).all() and torch.isfinite(std).all() and (std >= 0).all())
              and math.isfinite(radius) and radius > 0 and 0 < fov < 180
              and all(math.isfinite(v) for v in look_at))
        if not ok:
            raise AssetError(f"{where}: stored latent prior has wrong shapes or values (id_dim {id_dim})")
        return LatentPrior(mean, std, MainCameraPlacement(radius, fov, look_at), "training labels")
