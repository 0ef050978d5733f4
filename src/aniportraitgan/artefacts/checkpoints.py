"""Atomic training checkpoint folders, their model signature, and loading weights into modules.

A checkpoint is a folder `RUN/checkpoints/s<stage>-<step:08d>/` holding
- `weights.safetensors`: every network (prefixes `G.`, `G_ema.`, `D1.whole.`, `D2.face.`, ...);
- `state.pt`: optimiser states, step, stage, RNG states (loaded with `weights_only=True`);
- `meta.json`: format version, stage, step, the training config, its model signature and the
  SHA-256 of the two files above; sealed with its own SHA-256 (`checksummed.seal_json`), so a
  flipped byte in it is an error too (folders written before that load unverified).
The folder is written under a temporary name (`.tmp-<name>-<host>@<pid>`) and renamed into
place, so a kill at any moment leaves either the complete checkpoint or none; a failed write
(a full disk: `atomic.DiskFullError`) removes its temporary folder at once, and a later save
removes only those whose writer is dead (never another live run's). The newest checkpoint is "last"; older ones are
deleted unless they are periodic (step a multiple of `keep_every`) or marked `keep` (the end of
stage 1, which stage 2 starts from).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load_bytes
from safetensors.torch import save as st_save_bytes

from aniportraitgan.artefacts.checksummed import cpu_tensors, seal_json, verify_json
from aniportraitgan.artefacts.run_lock import owner_is_dead, owner_tag
from aniportraitgan.atomic import disk_full_error, fsync_dir, is_disk_full, write_synced
from aniportraitgan.errors import AssetError

FORMAT_VERSION = 1
_DIR_RE = re.compile(r"^s([12])-(\d{8})$")


@dataclass
class Checkpoint:
    path: Path
    stage: int
    step: int
    meta: dict[str, Any]
    weights: dict[str, torch.Tensor]
    state: dict[str, Any]


def model_signature(train_config: dict[str, Any]) -> str:
    """Hash of the parts of a training config (``TrainConfig.to_dict()``) that fix parameter
    shapes and what the networks mean.

    A checkpoint can resume a run only under the same signature; schedules, logging and step
    counts may change between runs."""
    d = train_config
    keep = {
        "generator_preset": d["generator_preset"],
        "generator_overrides": d["generator_overrides"],
        "disc": d["disc"],
        "ablation": d["ablation"],
        "resolutions": [(d[s]["portrait_resolution"], d[s]["face_resolution"]) for s in ("stage1", "stage2")],
        "facerecon_resolution": d["facerecon_resolution"],
    }
    return _sha256(json.dumps(keep, sort_keys=True).encode())[:16]


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class CheckpointManager:
    """The checkpoint folders of one run: list, save (atomically) and prune them."""

    def __init__(self, run_dir: str | Path, keep_every: int = 0):
        self.run_dir = Path(run_dir)
        self.dir = self.run_dir / "checkpoints"
        self.keep_every = int(keep_every)

    # ------------------------------------------------------------------ listing
    def list(self) -> list[tuple[int, int, Path]]:
        """Complete checkpoints as (stage, step, path), oldest first."""
        if not self.dir.is_dir():
            return []
        found = []
        for p in self.dir.iterdir():
            m = _DIR_RE.match(p.name)
            if m and p.is_dir():
                found.append((int(m.group(1)), int(m.group(2)), p))
        return sorted(found)

    def latest(self, stage: int | None = None) -> Path | None:
        items = [c for c in self.list() if stage is None or c[0] == stage]
        return items[-1][2] if items else None

    # ------------------------------------------------------------------- saving
    def save(
        self,
        stage: int,
        step: int,
        weights: dict[str, torch.Tensor],
        state: dict[str, Any],
        config: dict[str, Any],
        signature: str,
        keep: bool = False,
        extra_meta: dict[str, Any] | None = None,
    ) -> Path:
        self.dir.mkdir(parents=True, exist_ok=True)
        name = f"s{stage}-{step:08d}"
        final = self.dir / name
        w_bytes = st_save_bytes(cpu_tensors(weights), metadata={"format": str(FORMAT_VERSION)})
        buf = io.BytesIO()
        torch.save(state, buf)
        s_bytes = buf.getvalue()
        meta = {
            "format": FORMAT_VERSION,
            "stage": stage,
            "step": step,
            "signature": signature,
            "keep": bool(keep or (self.keep_every > 0 and step % self.keep_every == 0)),
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "files": {"weights.safetensors": _sha256(w_bytes), "state.pt": _sha256(s_bytes)},
            "config": config,
        }
        for key, value in (extra_meta or {}).items():
            meta.setdefault(key, value)
        meta = seal_json(meta)
        tmp = self.dir / f".tmp-{name}-{owner_tag()}"
        try:
            if tmp.exists():
                shutil.rmtree(tmp)
            tmp.mkdir()
            write_synced(tmp / "weights.safetensors", w_bytes)
            write_synced(tmp / "state.pt", s_bytes)
            write_synced(tmp / "meta.json", json.dumps(meta, indent=2, sort_keys=True).encode())
            fsync_dir(tmp)
            if final.exists():  # re-saving the same step (e.g. after a resume): replace
                old = self.dir / f".old-{name}-{owner_tag()}"
                os.replace(final, old)
                os.replace(tmp, final)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(tmp, final)
        except BaseException as exc:
            shutil.rmtree(tmp, ignore_errors=True)  # a partial folder would fill a full disk further
            if is_disk_full(exc):
                raise disk_full_error(exc, final) from None
            raise
        fsync_dir(self.dir)
        self._prune(final)
        return final

    def _prune(self, newest: Path) -> None:
        """Keep the newest checkpoint, periodic ones and those marked keep."""
        for _, _, path in self.list():
            if path == newest:
                continue
            try:
                meta = json.loads((path / "meta.json").read_text())
                if meta.get("keep"):
                    continue
            except (OSError, json.JSONDecodeError):
                pass  # unreadable: not worth keeping
            shutil.rmtree(path, ignore_errors=True)
        self.remove_leftovers()

    def remove_leftovers(self) -> None:
        """Remove the temporary folders of killed writes whose writer is dead. An `.old-`
        copy whose checkpoint is missing (killed between the two renames of a re-save) is
        put back instead."""
        if not self.dir.is_dir():
            return
        for p in sorted(self.dir.glob(".tmp-*")) + sorted(self.dir.glob(".old-*")):
            if not owner_is_dead(p.name):
                continue
            m = re.match(r"^\.old-(s[12]-\d{8})-", p.name)
            if m and not (self.dir / m.group(1)).exists():
                try:
                    os.replace(p, self.dir / m.group(1))
                    continue
                except OSError:
                    pass
            shutil.rmtree(p, ignore_errors=True)


# ----------------------------------------------------------------------- loading
def load_checkpoint(path: str | Path, signature: str | None = None, map_location: str = "cpu") -> Checkpoint:
    """Read and verify a checkpoint folder. Raises AssetError naming the problem for a missing or
    corrupted file, a checksum mismatch, or (when `signature` is given) a checkpoint written by
    a run of another configuration."""
    path = Path(path)
    if not path.is_dir():
        raise AssetError(f"checkpoint {path} does not exist or is not a folder")
    meta_path = path / "meta.json"
    try:
        meta = json.loads(meta_path.read_text())
        stage, step = int(meta["stage"]), int(meta["step"])
        files = meta["files"]
    except FileNotFoundError:
        raise AssetError(f"checkpoint {path} is incomplete: meta.json is missing") from None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise AssetError(f"checkpoint {path} is corrupted: meta.json unreadable ({exc})") from None
    if not isinstance(meta, dict) or not isinstance(files, dict):
        raise AssetError(f"checkpoint {path} is corrupted: meta.json is not a JSON object with 'files'")
    verify_json(meta, f"checkpoint file {meta_path}")
    if meta.get("format") != FORMAT_VERSION:
        raise AssetError(f"checkpoint {path} has format {meta.get('format')!r}, expected {FORMAT_VERSION}")
    if signature is not None and meta.get("signature") != signature:
        their = meta.get("config", {})
        raise AssetError(
            f"checkpoint {path} belongs to another configuration (config {their.get('name')!r}, "
            f"generator {their.get('generator_preset')!r}, ablation {their.get('ablation')}; "
            f"signature {meta.get('signature')} != {signature}): use a new --out folder or the "
            f"same --config and ablation flags as the run that wrote it"
        )
    blobs = {}
    for fname in ("weights.safetensors", "state.pt"):
        fpath = path / fname
        try:
            data = fpath.read_bytes()
        except OSError as exc:
            raise AssetError(f"checkpoint file {fpath} is missing or unreadable ({exc})") from None
        if _sha256(data) != files.get(fname):
            raise AssetError(f"checkpoint file {fpath} is corrupted (SHA-256 does not match meta.json)")
        blobs[fname] = data
    try:
        weights = st_load_bytes(blobs["weights.safetensors"])
    except (SafetensorError, Exception) as exc:  # noqa: BLE001 - any parse failure is corruption
        raise AssetError(f"checkpoint file {path / 'weights.safetensors'} is corrupted ({exc})") from None
    try:
        state = torch.load(io.BytesIO(blobs["state.pt"]), map_location=map_location, weights_only=True)
    except Exception as exc:  # noqa: BLE001
        raise AssetError(f"checkpoint file {path / 'state.pt'} is corrupted ({exc})") from None
    return Checkpoint(path=path, stage=stage, step=step, meta=meta, weights=weights, state=state)


def subdict(weights: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """The entries under `prefix.` with the prefix removed."""
    p = prefix + "."
    return {k[len(p):]: v for k, v in weights.items() if k.startswith(p)}


def load_module_state(module: torch.nn.Module, state: dict[str, torch.Tensor], what: str, source: Path) -> None:
    """load_state_dict (strict) that reports a shape or key mismatch as an AssetError."""
    if not state:
        raise AssetError(f"checkpoint {source} holds no weights for {what}")
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0:3]
        raise AssetError(f"checkpoint {source} does not fit {what}: {' '.join(first)}") from None
