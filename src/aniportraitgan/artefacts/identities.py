"""Identity files: a person found by ``aniportraitgan invert``, usable wherever a seed is.

An identity file is a checksummed safetensors file (``artefacts.checksummed``) holding

* ``z_id`` [1, id_dim] and ``eps`` [1, noise_dim]: the codes the body model and the expression
  deformation De read (and, for inversions in z space, the mapping networks);
* ``w_radiance`` [1, w_dim] (and ``w_superres`` [1, style_dim] for stage-2 generators): the
  mapping outputs of phi (and U) the identity is rendered with; they replace the mapping, so
  truncation (psi) does not apply to an identity;
* ``photo.z_exp`` [1, 52], ``photo.z_pose`` [1, 6, 3], ``photo.c2w`` [1, 4, 4], ``photo.fov``
  [1]: the expression, pose and main camera of the photo it was inverted from;
* ``delta.<parameter name>``: the weight differences of pivotal tuning (tuned - original), only
  for the parameters tuning changed (none when it was not run);

and in its metadata ``kind``, ``format``, the generator's ``signature`` and ``info`` (JSON: the
photo, the settings and the measured reconstruction quality).

The signature (``generator_signature``) hashes the generator config and every parameter's bytes:
latents mean something only to the weights they were found with, so another checkpoint, even one
of the same config, refuses the file with a clear error. Buffers are left out (the truncation
averages are estimated on the device, and differ in the last bits between CPU and GPU).
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import torch

from aniportraitgan.artefacts.checksummed import first_non_finite, read_checksummed, write_checksummed
from aniportraitgan.errors import AssetError, InputError
from aniportraitgan.generator import Generator, IdentityCache

IDENTITY_KIND = "aniportraitgan-identity"
IDENTITY_FORMAT = 1
DELTA_PREFIX = "delta."
PHOTO_KEYS = ("z_exp", "z_pose", "c2w", "fov")


def generator_signature(generator: Generator) -> str:
    """16 hex digits of SHA-256 over the generator config and its parameters (names, shapes, bytes)."""
    h = hashlib.sha256(json.dumps(generator.config.to_dict(), sort_keys=True).encode())
    for name, p in sorted(generator.named_parameters()):
        t = p.detach().to("cpu").contiguous()
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype};".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


@dataclass
class StoredIdentity:
    """The content of an identity file (tensors [1, ...] on the CPU unless moved)."""

    z_id: torch.Tensor
    eps: torch.Tensor
    w_radiance: torch.Tensor
    w_superres: torch.Tensor | None
    signature: str
    photo: dict[str, torch.Tensor] = field(default_factory=dict)  # PHOTO_KEYS
    delta: dict[str, torch.Tensor] = field(default_factory=dict)  # parameter name -> tuned - original
    info: dict = field(default_factory=dict)
    path: Path | None = None

    @property
    def tuned(self) -> bool:
        return bool(self.delta)

    @property
    def name(self) -> str:
        return self.path.stem if self.path is not None else "identity"

    def tuned_generator(self, generator: Generator) -> Generator:
        """``generator`` itself without tuned weights, else a copy with the deltas added (the
        body model is shared, not copied)."""
        if not self.delta:
            return generator
        tuned = copy.deepcopy(generator, memo={id(generator.body): generator.body})
        params = dict(tuned.named_parameters())
        with torch.no_grad():
            for name, d in self.delta.items():
                params[name].add_(d.to(params[name]))
        return tuned

    @torch.no_grad()
    def cache(self, generator: Generator, stage: int, psi: float) -> IdentityCache:
        """The identity cache that renders this identity with ``generator`` (already tuned, see
        ``tuned_generator``); ``psi`` only labels the cache (an identity is never truncated)."""
        dev = generator.nn_weights.device
        z_id, eps, w_rad = self.z_id.to(dev), self.eps.to(dev), self.w_radiance.to(dev)
        w_sr = maps = None
        if stage == 2:
            if self.w_superres is None:
                raise AssetError(f"identity {self.name} was made for a stage-1 generator (no w_superres)")
            w_sr = self.w_superres.to(dev)
            maps = generator.radiance_maps(w_rad, w_sr, z_id)
        return IdentityCache(z_id, eps, float(psi), stage, w_rad, w_sr, maps)


def write_identity(path: str | Path, identity: StoredIdentity) -> Path:
    """Write an identity file atomically (nothing is left at ``path`` on failure). InputError for
    NaN or infinite values (they are never written)."""
    tensors = {"z_id": identity.z_id, "eps": identity.eps, "w_radiance": identity.w_radiance}
    if identity.w_superres is not None:
        tensors["w_superres"] = identity.w_superres
    tensors.update({f"photo.{k}": v for k, v in identity.photo.items()})
    tensors.update({DELTA_PREFIX + k: v for k, v in identity.delta.items()})
    tensors = {k: v.float() for k, v in tensors.items()}  # as stored, and checked as stored
    bad = first_non_finite(tensors)
    if bad is not None:
        raise InputError(f"identity {bad!r} contains NaN or inf: not written")
    metadata = {"kind": IDENTITY_KIND, "format": str(IDENTITY_FORMAT), "signature": identity.signature,
                "info": json.dumps(identity.info, sort_keys=True, allow_nan=False)}
    return write_checksummed(path, tensors, metadata)


def _shape_errors(ident: StoredIdentity, generator: Generator, stage: int) -> list[str]:
    c = generator.config
    want = {"z_id": (1, c.id_dim), "eps": (1, c.noise_dim), "w_radiance": (1, generator.radiance.siren.w_dim)}
    if stage == 2:
        want["w_superres"] = (1, c.sr_style_dim)
    errors = []
    for name, shape in want.items():
        t = getattr(ident, name)
        if t is None or tuple(t.shape) != shape:
            errors.append(f"{name} {None if t is None else tuple(t.shape)} (expected {shape})")
    params = dict(generator.named_parameters())
    for name, d in ident.delta.items():
        if name not in params or params[name].shape != d.shape:
            errors.append(f"tuned weight {name!r} {tuple(d.shape)} is no parameter of this generator")
    return errors


def read_identity(path: str | Path, generator: Generator | None = None, stage: int | None = None) -> StoredIdentity:
    """Read and check an identity file. AssetError, naming the file, when it is missing, corrupted
    (checksum), not an identity file, holds NaN or inf, or (with ``generator``) was made for
    another generator or does not fit it."""
    path = Path(path)
    where = f"identity file {path}"
    stored = read_checksummed(path, "identity file")
    meta, t = stored.metadata, stored.tensors
    if meta.get("kind") != IDENTITY_KIND:
        raise AssetError(f"{path} is not an aniportraitgan identity file (metadata kind {meta.get('kind')!r}); "
                         f"make one with `aniportraitgan invert PHOTO --ckpt CKPT --out {path.name}`")
    if not stored.checksummed:
        raise AssetError(f"{where} has no checksum: identity files are always written with one")
    if meta.get("format") != str(IDENTITY_FORMAT):
        raise AssetError(f"{where} has format {meta.get('format')!r}; this version reads format {IDENTITY_FORMAT}")
    missing = [k for k in ("z_id", "eps", "w_radiance") if k not in t]
    if missing:
        raise AssetError(f"{where} is incomplete: it lacks {missing}")
    bad = next((k for k, v in t.items() if not v.is_floating_point()), None) or first_non_finite(t)
    if bad is not None:
        raise AssetError(f"{where} is corrupted: {bad!r} contains NaN or inf (or is not floating point)")
    try:
        info = json.loads(meta.get("info", "{}"))
    except ValueError as exc:
        raise AssetError(f"{where} has unreadable info metadata ({exc})") from None
    ident = StoredIdentity(
        z_id=t["z_id"], eps=t["eps"], w_radiance=t["w_radiance"], w_superres=t.get("w_superres"),
        signature=meta.get("signature", ""),
        photo={k: t[f"photo.{k}"] for k in PHOTO_KEYS if f"photo.{k}" in t},
        delta={k[len(DELTA_PREFIX):]: v for k, v in t.items() if k.startswith(DELTA_PREFIX)},
        info=info if isinstance(info, dict) else {}, path=path,
    )
    if generator is not None:
        check_identity(ident, generator, stage if stage is not None else (2 if ident.w_superres is not None else 1))
    return ident


def check_identity(ident: StoredIdentity, generator: Generator, stage: int) -> None:
    """AssetError unless ``ident`` was made for exactly this generator and fits its shapes."""
    where = f"identity file {ident.path}" if ident.path is not None else "identity"
    mine = generator_signature(generator)
    if ident.signature != mine:
        made = ident.info.get("checkpoint", "another generator")
        raise AssetError(f"{where} was made for another generator ({made}, signature {ident.signature or 'none'}); "
                         f"this checkpoint's signature is {mine}: invert the photo again with this --ckpt")
    errors = _shape_errors(ident, generator, stage)
    if errors:
        raise AssetError(f"{where} does not fit this stage-{stage} generator: " + "; ".join(errors))


def finite_info(value):
    """A copy of nested dicts and lists with non-finite floats as None (JSON has no NaN)."""
    if isinstance(value, dict):
        return {k: finite_info(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_info(v) for v in value]
    return None if isinstance(value, float) and not math.isfinite(value) else value


__all__ = ["IDENTITY_KIND", "StoredIdentity", "check_identity", "finite_info", "generator_signature",
           "read_identity", "write_identity"]
