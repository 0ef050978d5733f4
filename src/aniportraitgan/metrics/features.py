"""Batched feature extraction and the cache of real-set statistics.

`extract_features` turns images into a feature array [N, D] (float32, as the network computes
them; statistics are taken in float64 by `fid.feature_statistics`). Images come either from an
iterable (a dataset / DataLoader yielding [B, 3, H, W] batches or [3, H, W] single images, or
tuples whose first item is the image batch) or from a sampling callable `fn(n) -> [n, 3, H, W]`
(e.g. a generator wrapped to draw n random portraits). Dict items (PortraitDataset and its
DataLoader batches) are read at `image_key` ("image" or "face").

`RealStatsCache` keeps the real-set features beside a dataset so that each evaluation only has
to process generated images:
    <dataset>/.metrics_cache/<extractor-name>_<split>_<num>_<res>.npz
with mu [D] float64, sigma [D, D] float64, features [N, D] float32 (needed for KID) and a JSON
`meta` string. The file name and `meta` both carry the extractor name, split, count and
resolution, so a change of any of them never reuses a stale file; writes are atomic; a file
that fails to load or to validate is recomputed with a warning.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from ..errors import InputError
from .fid import feature_statistics
from .inception import prepare_images
from .report import atomic_write

__all__ = ["CACHE_DIRNAME", "FeatureStats", "RealStatsCache", "extract_features", "fingerprint_files"]

CACHE_DIRNAME = ".metrics_cache"
CACHE_FORMAT = 1


def _to_batch(item, index: int, image_key: str = "image") -> torch.Tensor:
    if isinstance(item, dict):  # PortraitDataset items / their DataLoader batches
        if image_key not in item:
            raise InputError(f"images: item {index} is a dict without key {image_key!r} (keys: {sorted(item)})")
        item = item[image_key]
    elif isinstance(item, (tuple, list)):
        if not item:
            raise InputError(f"images: item {index} is an empty tuple/list")
        item = item[0]
    if isinstance(item, np.ndarray):
        item = torch.from_numpy(item)
    if not isinstance(item, torch.Tensor):
        raise InputError(f"images: item {index} is a {type(item).__name__}, expected a tensor [B, 3, H, W]")
    if item.ndim == 3:
        item = item.unsqueeze(0)
    return item


def _batches(images, num: int | None, batch_size: int, image_key: str = "image"):
    """Yield [b, 3, H, W] batches of at most batch_size images, num images in all (or all of
    the iterable when num is None)."""
    if callable(images) and not isinstance(images, (torch.Tensor, np.ndarray)) and not hasattr(images, "__iter__"):
        if num is None:
            raise InputError("extract_features: num is required when images is a sampling callable")
        done = 0
        while done < num:
            n = min(batch_size, num - done)
            batch = _to_batch(images(n), done, image_key)
            if batch.shape[0] != n:
                raise InputError(f"images: sampling callable asked for {n} images returned {batch.shape[0]}")
            done += n
            yield batch
        return
    if isinstance(images, (torch.Tensor, np.ndarray)):
        images = [images]  # one big array: chunked below
    pending: list[torch.Tensor] = []
    pending_n = 0
    done = 0
    for i, item in enumerate(images):
        batch = _to_batch(item, i, image_key)
        if num is not None:
            batch = batch[: num - done - pending_n]
        pending.append(batch)
        pending_n += batch.shape[0]
        while pending_n >= batch_size:
            try:
                merged = torch.cat(pending, dim=0) if len(pending) > 1 else pending[0]
            except RuntimeError as exc:
                raise InputError(f"images: batches have different shapes ({exc})") from exc
            yield merged[:batch_size]
            done += batch_size
            rest = merged[batch_size:]
            pending, pending_n = ([rest], rest.shape[0]) if rest.shape[0] else ([], 0)
        if num is not None and done + pending_n >= num:
            break
    if pending_n:
        try:
            yield torch.cat(pending, dim=0)
        except RuntimeError as exc:
            raise InputError(f"images: batches have different shapes ({exc})") from exc
        done += pending_n
    if num is not None and done < num:
        raise InputError(f"images: asked for {num} images but the source yielded only {done}")


def extract_features(
    images: Iterable | Callable[[int], torch.Tensor] | torch.Tensor,
    extractor: nn.Module,
    num: int | None = None,
    batch_size: int = 32,
    device: str | torch.device = "cpu",
    progress: bool = True,
    desc: str = "features",
    image_key: str = "image",
) -> np.ndarray:
    """Features [num, D] (float32 numpy) of images in [-1, 1] (or uint8) through `extractor`.

    images: an iterable of batches/single images, one tensor [N, 3, H, W], or a callable
    fn(n) returning n images (then `num` is required). Items may also be tuples (first entry
    is used) or dicts (entry `image_key`, e.g. "image" or "face" of PortraitDataset batches).
    num=None takes everything the iterable yields. Raises InputError for malformed images, a short source, or non-finite features.
    """
    if batch_size < 1:
        raise InputError(f"extract_features: batch_size must be >= 1, got {batch_size}")
    if num is not None and num < 1:
        raise InputError(f"extract_features: num must be >= 1, got {num}")
    extractor = extractor.to(device).eval()
    out: list[np.ndarray] = []
    count = 0
    with torch.inference_mode(), tqdm(total=num, unit="img", desc=desc, disable=not progress, leave=False) as bar:
        for batch in _batches(images, num, batch_size, image_key):
            x = prepare_images(batch, name=f"images[{count}:{count + batch.shape[0]}]").to(device)
            feats = extractor(x)
            if feats.ndim != 2 or feats.shape[0] != x.shape[0]:
                raise InputError(
                    f"extractor returned shape {tuple(feats.shape)} for a batch of {x.shape[0]}, expected [B, D]"
                )
            feats = feats.float().cpu().numpy()
            if not np.isfinite(feats).all():
                raise InputError(f"extractor produced NaN/inf features for images {count}..{count + x.shape[0] - 1}")
            out.append(feats)
            count += x.shape[0]
            bar.update(x.shape[0])
    if not out:
        raise InputError("extract_features: the image source yielded no images")
    return np.concatenate(out, axis=0)


@dataclass
class FeatureStats:
    """Gaussian statistics (float64) plus the raw features (float32) of one image set."""

    mu: np.ndarray
    sigma: np.ndarray
    features: np.ndarray
    meta: dict = field(default_factory=dict)

    @classmethod
    def from_features(cls, features: np.ndarray, meta: dict | None = None) -> "FeatureStats":
        mu, sigma = feature_statistics(features)
        return cls(mu, sigma, np.asarray(features, dtype=np.float32), dict(meta or {}))

    @property
    def num(self) -> int:
        return int(self.features.shape[0])

    @property
    def dim(self) -> int:
        return int(self.features.shape[1])


def _safe(part) -> str:
    return re.sub(r"[^A-Za-z0-9.+-]+", "-", str(part)).strip("-") or "none"


def _res_str(resolution) -> str:
    if isinstance(resolution, (tuple, list)):
        h, w = (int(v) for v in resolution)
        return str(h) if h == w else f"{h}x{w}"
    return str(int(resolution))


def fingerprint_files(*paths: str | os.PathLike) -> str:
    """Short content hash of a few small files (e.g. a dataset's card and labels), for
    `RealStatsCache(fingerprint=...)`: a regenerated dataset then invalidates its cache."""
    h = hashlib.sha1()
    for p in paths:
        p = Path(p)
        h.update(p.name.encode() + b"\0")
        try:
            h.update(p.read_bytes())
        except OSError as exc:
            raise InputError(f"fingerprint_files: cannot read {p} ({exc})") from exc
    return h.hexdigest()[:16]


class RealStatsCache:
    """Real-set statistics cached under `<dataset_dir>/.metrics_cache/`.

    cache = RealStatsCache(dataset_dir, fingerprint=fingerprint_files(dataset_dir / "dataset.json"))
    stats = cache.get(extractor, split="face", num=20000, resolution=256, images=loader)

    `fingerprint` (optional) is stored in each file and must match on load, so that a dataset
    regenerated in place (same count and resolution) does not reuse old statistics.
    """

    def __init__(
        self, dataset_dir: str | os.PathLike, cache_dirname: str = CACHE_DIRNAME, fingerprint: str | None = None
    ):
        self.dataset_dir = Path(dataset_dir)
        self.cache_dir = self.dataset_dir / cache_dirname
        self.fingerprint = fingerprint

    def path_for(self, extractor_name: str, split: str, num: int | None, resolution) -> Path:
        n = "all" if num is None else str(int(num))
        return self.cache_dir / f"{_safe(extractor_name)}_{_safe(split)}_{n}_{_res_str(resolution)}.npz"

    def _meta(self, extractor_name: str, feature_dim: int | None, split: str, num: int | None, resolution) -> dict:
        return {
            "fingerprint": self.fingerprint,
            "format": CACHE_FORMAT,
            "extractor": str(extractor_name),
            "feature_dim": None if feature_dim is None else int(feature_dim),
            "split": str(split),
            "num": None if num is None else int(num),
            "resolution": _res_str(resolution),
        }

    def load(
        self, extractor_name: str, split: str, num: int | None, resolution, feature_dim: int | None = None
    ) -> FeatureStats | None:
        """The cached statistics, or None when absent; a corrupt or stale file gives a warning
        and None (the caller recomputes)."""
        path = self.path_for(extractor_name, split, num, resolution)
        if not path.exists():
            return None
        try:
            stats = self._read(path)
            self._validate(stats, self._meta(extractor_name, feature_dim, split, num, resolution))
        except Exception as exc:  # noqa: BLE001 - any failure means: recompute
            warnings.warn(f"metrics cache {path} is corrupt or stale ({exc}); recomputing", RuntimeWarning, stacklevel=2)
            return None
        return stats

    @staticmethod
    def _read(path: Path) -> FeatureStats:
        with np.load(path, allow_pickle=False) as data:
            missing = {"mu", "sigma", "features", "meta"} - set(data.files)
            if missing:
                raise ValueError(f"missing arrays {sorted(missing)}")
            return FeatureStats(
                mu=np.asarray(data["mu"], dtype=np.float64),
                sigma=np.asarray(data["sigma"], dtype=np.float64),
                features=np.asarray(data["features"]),
                meta=json.loads(str(data["meta"])),
            )

    @staticmethod
    def _validate(stats: FeatureStats, expected: dict) -> None:
        meta = stats.meta
        for key in ("format", "extractor", "split", "num", "resolution", "fingerprint"):
            if meta.get(key) != expected[key]:
                raise ValueError(f"meta {key}={meta.get(key)!r}, expected {expected[key]!r}")
        f = stats.features
        if f.ndim != 2 or f.shape[0] < 2:
            raise ValueError(f"features shape {f.shape}")
        d = f.shape[1]
        if expected["feature_dim"] is not None and d != expected["feature_dim"]:
            raise ValueError(f"feature dim {d}, expected {expected['feature_dim']}")
        if expected["num"] is not None and f.shape[0] != expected["num"]:
            raise ValueError(f"{f.shape[0]} feature rows, expected {expected['num']}")
        if stats.mu.shape != (d,) or stats.sigma.shape != (d, d):
            raise ValueError(f"mu {stats.mu.shape} / sigma {stats.sigma.shape} do not match features {f.shape}")
        if not (np.isfinite(stats.mu).all() and np.isfinite(stats.sigma).all() and np.isfinite(f).all()):
            raise ValueError("non-finite values")

    def save(self, stats: FeatureStats, extractor_name: str, split: str, num: int | None, resolution) -> Path:
        path = self.path_for(extractor_name, split, num, resolution)
        meta = self._meta(extractor_name, stats.dim, split, num, resolution)
        meta["count"] = stats.num
        stats.meta = meta
        path.parent.mkdir(parents=True, exist_ok=True)

        def write(f):
            np.savez(
                f,
                mu=stats.mu.astype(np.float64),
                sigma=stats.sigma.astype(np.float64),
                features=stats.features.astype(np.float32),
                meta=np.array(json.dumps(meta)),
            )

        atomic_write(path, write)
        return path

    def get(
        self,
        extractor: nn.Module,
        split: str,
        num: int | None,
        resolution,
        images,
        batch_size: int = 32,
        device: str | torch.device = "cpu",
        progress: bool = True,
        refresh: bool = False,
        image_key: str = "image",
    ) -> FeatureStats:
        """Cached statistics for (extractor.name, split, num, resolution), computed from
        `images` (anything `extract_features` accepts) and saved on a miss."""
        name = getattr(extractor, "name", None)
        if not name:
            raise InputError("RealStatsCache: the extractor needs a `name` attribute (it keys the cache)")
        dim = getattr(extractor, "feature_dim", None)
        if not refresh:
            stats = self.load(name, split, num, resolution, feature_dim=dim)
            if stats is not None:
                return stats
        feats = extract_features(
            images, extractor, num=num, batch_size=batch_size, device=device, progress=progress, desc=f"real {split}",
            image_key=image_key,
        )
        stats = FeatureStats.from_features(feats)
        self.save(stats, name, split, num, resolution)
        return stats
