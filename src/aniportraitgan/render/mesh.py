"""What the rasterizer draws and returns: meshes, their render topology, the light, the output.

Plain numpy (and torch for batches), no GL: the body model, the synthetic data and the animation build these types
without a GL context. Units and axes follow `aniportraitgan.cameras` (scene metres, pinhole
focal length from the vertical field of view).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from aniportraitgan.errors import InputError


@dataclass
class Light:
    """One directional light plus ambient light, in scene space.

    `direction` points from the surface toward the light (it need not be normalised).
    Shading is Lambertian: colour = albedo * (ambient + diffuse * max(0, n . l)).
    """

    direction: tuple[float, float, float] = (0.3, 0.5, 1.0)
    ambient: float = 0.45
    diffuse: float = 0.65
    color: tuple[float, float, float] = (1.0, 1.0, 1.0)


@dataclass
class TexturedMesh:
    """A triangle mesh in scene space with a per-corner UV layout and an RGB texture.

    vertices [V, 3] float metres; faces [F, 3] int vertex ids; uvs [Vt, 2] in [0, 1] with v = 0
    at the bottom row of the texture image (the OBJ/anny convention); face_uvs [F, 3] uv ids;
    texture [Th, Tw, 3] uint8 (row 0 = top of the image; [Th, Tw, 4] is accepted, alpha unused).
    """

    vertices: np.ndarray
    faces: np.ndarray
    uvs: np.ndarray
    face_uvs: np.ndarray
    texture: np.ndarray
    normals: np.ndarray | None = None  # [V, 3] unit vertex normals; computed when None
    topology: MeshTopology | None = None  # precomputed render topology (reuse across frames)

    def validate(self) -> None:
        v, f, uv, fuv, tex = self.vertices, self.faces, self.uvs, self.face_uvs, self.texture
        if v.ndim != 2 or v.shape[1] != 3:
            raise InputError(f"mesh vertices must be [V, 3], got {tuple(v.shape)}")
        if not np.all(np.isfinite(v)):
            raise InputError("mesh vertices contain NaN or inf")
        if f.ndim != 2 or f.shape[1] != 3:
            raise InputError(f"mesh faces must be [F, 3], got {tuple(f.shape)}")
        if fuv.shape != f.shape:
            raise InputError(f"face_uvs {tuple(fuv.shape)} must match faces {tuple(f.shape)}")
        if uv.ndim != 2 or uv.shape[1] != 2:
            raise InputError(f"mesh uvs must be [Vt, 2], got {tuple(uv.shape)}")
        if f.size and (f.min() < 0 or f.max() >= len(v)):
            raise InputError(f"face vertex ids out of range [0, {len(v)})")
        if fuv.size and (fuv.min() < 0 or fuv.max() >= len(uv)):
            raise InputError(f"face uv ids out of range [0, {len(uv)})")
        if tex.ndim != 3 or tex.shape[2] not in (3, 4) or tex.dtype != np.uint8:
            raise InputError(f"texture must be uint8 [H, W, 3] (or [H, W, 4], alpha unused), got {tex.dtype} {tuple(tex.shape)}")
        if self.normals is not None and self.normals.shape != v.shape:
            raise InputError(f"normals {tuple(self.normals.shape)} must match vertices {tuple(v.shape)}")


@dataclass
class MeshTopology:
    """Indexed render layout of a mesh whose corners have their own UVs: one render vertex per
    distinct (vertex, uv) pair. Depends on faces/face_uvs/uvs only, so build it once and reuse it
    for every frame of the same mesh (pass it as `TexturedMesh.topology`)."""

    vertex_ids: np.ndarray  # [U] mesh vertex of each render vertex
    uvs: np.ndarray  # [U, 2] float32
    indices: np.ndarray  # [F * 3] int32 render-vertex ids

    @classmethod
    def build(cls, faces: np.ndarray, face_uvs: np.ndarray, uvs: np.ndarray) -> MeshTopology:
        f = np.asarray(faces, dtype=np.int64).reshape(-1)
        t = np.asarray(face_uvs, dtype=np.int64).reshape(-1)
        pairs = f * (int(t.max(initial=0)) + 1) + t
        uniq, inverse = np.unique(pairs, return_inverse=True)
        first = np.zeros(len(uniq), dtype=np.int64)
        first[inverse[::-1]] = np.arange(len(f))[::-1]
        return cls(
            vertex_ids=f[first],
            uvs=np.ascontiguousarray(np.asarray(uvs, dtype=np.float32)[t[first]]),
            indices=inverse.astype(np.int32).reshape(-1),
        )


@dataclass
class RenderOutput:
    """rgb [H, W, 3] uint8 on a white (or given) background; alpha [H, W] float32 coverage in
    [0, 1] (fractional at anti-aliased edges); mask [H, W] bool (alpha >= 0.5); depth [H, W]
    float32 camera-space z in metres (0 where nothing was drawn; None when not requested)."""

    rgb: np.ndarray
    alpha: np.ndarray
    mask: np.ndarray
    depth: np.ndarray | None


def vertex_normals(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Area-weighted unit vertex normals [V, 3] (float32)."""
    v = vertices.astype(np.float64, copy=False)
    tri = v[faces]
    fn = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])  # length = 2 * area
    n = np.zeros_like(v)
    idx = faces.reshape(-1)
    rep = np.repeat(fn, 3, axis=0)
    for k in range(3):
        n[:, k] = np.bincount(idx, weights=rep[:, k], minlength=len(v))
    norm = np.linalg.norm(n, axis=1, keepdims=True)
    return (n / np.maximum(norm, 1e-12)).astype(np.float32)


def batch_vertex_normals(verts, faces):
    """Area-weighted unit vertex normals of a batch: verts [B, V, 3] (torch), faces [F, 3] long."""
    tri = verts[:, faces]  # [B, F, 3, 3]
    fn = torch.linalg.cross(tri[:, :, 1] - tri[:, :, 0], tri[:, :, 2] - tri[:, :, 0], dim=-1)
    n = torch.zeros_like(verts)
    for k in range(3):
        n.index_add_(1, faces[:, k], fn)
    return n / n.norm(dim=-1, keepdim=True).clamp_min(1e-12)


def focal_pixels(fov_deg: float, height: int) -> float:
    """Pinhole focal length in pixels from the vertical field of view (cameras module model)."""
    return 0.5 * height / math.tan(math.radians(fov_deg) / 2.0)
