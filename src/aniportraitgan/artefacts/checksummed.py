"""Checksummed safetensors files: the SHA-256 of a file's content kept in its own metadata.

Every safetensors file the project writes and later trusts (exported generators and the bundled
demo, R weights, identity files) is written by ``write_checksummed`` and read by
``read_checksummed``. Its metadata holds two extra entries:

* ``sha256``: the hex SHA-256 of the header without this entry (as canonical JSON: sorted keys,
  no spaces) followed by the raw tensor data. A flipped byte anywhere, in a tensor, a shape, an
  offset or a metadata value, changes it;
* ``checksum`` = ``CHECKSUM_SCHEME``: a second marker, so that a flipped byte in either key's
  name still reads as a checksummed file that fails its check, not as an older file without one.

Files written before checksums existed have neither entry: they load, with a
``UnverifiedFileWarning`` that names them (see ``warn_unverified``).
"""

from __future__ import annotations

import hashlib
import json
import struct
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import torch
from safetensors.torch import load as st_load_bytes
from safetensors.torch import save as st_save_bytes

from aniportraitgan.atomic import atomic_write_bytes
from aniportraitgan.errors import AssetError

CHECKSUM_KEY = "sha256"
MARKER_KEY = "checksum"
CHECKSUM_SCHEME = "sha256(header without sha256, data)"
_METADATA = "__metadata__"
_HEADER_LEN = 8  # little-endian u64 length of the JSON header


class UnverifiedFileWarning(UserWarning):
    """A file written before checksums existed: it loads, but its integrity cannot be checked."""


@dataclass
class SafetensorsFile:
    tensors: dict[str, torch.Tensor]
    metadata: dict[str, str]  # without the checksum entries
    checksummed: bool  # False: an older file without a checksum (nothing was verified)


def cpu_tensors(weights: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    # safetensors refuses shared storage: clone every tensor into its own contiguous CPU buffer.
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in weights.items()}


def _split(data: bytes, where: str) -> tuple[dict, int]:
    """(header, offset of the tensor data) of a safetensors byte string."""
    if len(data) < _HEADER_LEN:
        raise AssetError(f"{where} is corrupted (only {len(data)} bytes: not a safetensors file)")
    size = struct.unpack("<Q", data[:_HEADER_LEN])[0]
    if size > len(data) - _HEADER_LEN:
        raise AssetError(f"{where} is corrupted or truncated (header of {size} bytes in a file of {len(data)})")
    try:
        header = json.loads(data[_HEADER_LEN:_HEADER_LEN + size])
    except (UnicodeDecodeError, ValueError) as exc:
        raise AssetError(f"{where} is corrupted (unreadable safetensors header: {exc})") from None
    if not isinstance(header, dict) or not isinstance(header.get(_METADATA, {}), dict):
        raise AssetError(f"{where} is corrupted (the safetensors header is not a JSON object)")
    return header, _HEADER_LEN + size


def _digest(header: dict, data: bytes, start: int) -> str:
    h = hashlib.sha256(json.dumps(header, sort_keys=True, separators=(",", ":")).encode())
    h.update(memoryview(data)[start:])
    return h.hexdigest()


def first_non_finite(tensors: Mapping[str, torch.Tensor]) -> str | None:
    """The name of the first floating-point tensor holding NaN or inf (None: all finite); the
    one check behind every loader and writer that refuses such weights or codes."""
    return next((k for k, v in tensors.items() if v.is_floating_point() and not torch.isfinite(v).all()), None)


def checksummed_bytes(tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str] | None = None) -> bytes:
    """A safetensors file's bytes with ``sha256`` and ``checksum`` in its metadata."""
    meta = {k: str(v) for k, v in (metadata or {}).items() if k != CHECKSUM_KEY}
    meta[MARKER_KEY] = CHECKSUM_SCHEME
    cpu = cpu_tensors(tensors)
    # The metadata does not move the tensor data, so the second file's data is the first's.
    first = st_save_bytes(cpu, metadata=meta)
    header, start = _split(first, "the file being written")
    meta[CHECKSUM_KEY] = _digest(header, first, start)
    return st_save_bytes(cpu, metadata=meta)


def write_checksummed(path: str | Path, tensors: Mapping[str, torch.Tensor],
                      metadata: Mapping[str, str] | None = None) -> Path:
    """Write a checksummed safetensors file atomically (``atomic.atomic_write_bytes``: a full
    disk is an ``atomic.DiskFullError`` and leaves ``path`` as it was)."""
    path = Path(path)
    atomic_write_bytes(path, checksummed_bytes(tensors, metadata))
    return path


def read_checksummed(path: str | Path, what: str = "file") -> SafetensorsFile:
    """Read and verify a safetensors file. ``AssetError`` naming ``what`` and the file when it is
    missing, unreadable, not a safetensors file, or does not match its checksum."""
    path = Path(path)
    where = f"{what} {path}"
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise AssetError(f"{where} does not exist") from None
    except OSError as exc:
        raise AssetError(f"{where} is unreadable ({exc})") from None
    header, start = _split(data, where)
    meta = header.setdefault(_METADATA, {})
    claimed = meta.pop(CHECKSUM_KEY, None)
    checksummed = claimed is not None or MARKER_KEY in meta
    if checksummed:
        if claimed is None:
            raise AssetError(f"{where} is corrupted (its metadata lost the {CHECKSUM_KEY!r} entry)")
        if _digest(header, data, start) != claimed:
            raise AssetError(f"{where} is corrupted (the SHA-256 of its content does not match the one "
                             f"in its metadata)")
    try:
        tensors = st_load_bytes(data)
    except Exception as exc:  # noqa: BLE001 - any parse failure is corruption
        raise AssetError(f"{where} is corrupted or not a safetensors file ({exc})") from None
    meta.pop(MARKER_KEY, None)
    return SafetensorsFile(tensors, {str(k): str(v) for k, v in meta.items()}, checksummed)


def warn_unverified(path: str | Path, what: str = "file") -> None:
    """Say that a file without a checksum was loaded unverified (it predates checksums)."""
    warnings.warn(f"{what} {path} has no checksum (written by an older version): its integrity cannot be "
                  f"verified; write it again (export or save it) to add one", UnverifiedFileWarning, stacklevel=3)


# -------------------------------------------------------------- JSON records (meta.json)
def _json_digest(record: Mapping) -> str:
    body = {k: v for k, v in record.items() if k != CHECKSUM_KEY}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def seal_json(record: Mapping) -> dict:
    """``record`` with the same two entries as a checksummed safetensors file's metadata
    (``sha256`` of its canonical JSON without that entry, and ``checksum``)."""
    out = {k: v for k, v in record.items() if k != CHECKSUM_KEY}
    out[MARKER_KEY] = CHECKSUM_SCHEME
    out[CHECKSUM_KEY] = _json_digest(out)
    return out


def verify_json(record: Mapping, where: str) -> bool:
    """Check a record written by ``seal_json`` (True), or accept one written before (False:
    neither entry). ``AssetError`` naming ``where`` when it does not match."""
    claimed = record.get(CHECKSUM_KEY)
    if claimed is None and MARKER_KEY not in record:
        return False
    if claimed is None:
        raise AssetError(f"{where} is corrupted (it lost its {CHECKSUM_KEY!r} entry)")
    if _json_digest(record) != claimed:
        raise AssetError(f"{where} is corrupted (the SHA-256 of its content does not match the one it records)")
    return True
