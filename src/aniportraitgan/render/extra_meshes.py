"""The meshes a synthetic portrait adds to the body: a long-hair shell and a torso skirt."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from aniportraitgan.render.appearance import AppearanceParams


@dataclass
class HairShell:
    """A long-hair shell in the zero-pose scene frame, rigidly attached to the head bone."""

    vertices: np.ndarray  # [V, 3] zero pose
    faces: np.ndarray  # [F, 3]
    uvs: np.ndarray  # [V, 2]
    texture: np.ndarray  # [H, W, 3] uint8


def build_hair_shell(
    neutral_vertices: np.ndarray,
    head_weight: np.ndarray,
    head_center: np.ndarray,
    p: AppearanceParams,
    rng: np.random.Generator,
    n_theta: int = 24,
    n_cap: int = 6,
    n_hang: int = 8,
) -> HairShell:
    """An offset surface around the back and sides of the skull that falls to the shoulders.

    neutral_vertices [V, 3]: this identity's zero-pose neutral body (scene space);
    head_weight [V]: head skinning weight (selects the skull). The cap is an ellipsoid fitted
    to the head vertices (above the ears), grown by a few millimetres; below ear level the
    hair hangs straight down, flaring slightly, for `p.long_hair_length` metres.
    """
    head = neutral_vertices[head_weight > 0.9]
    rel = head - head_center
    upper = rel[rel[:, 1] > -0.02]
    radii = np.maximum(np.abs(upper).max(0), 1e-3) * np.array([1.08, 1.05, 1.06]) + 0.006
    theta_min = np.radians(rng.uniform(62.0, 80.0))  # leaves the face open
    thetas = np.linspace(theta_min, 2 * np.pi - theta_min, n_theta)  # measured from +Z (face)
    rows = []
    # Cap: from the crown (elevation 85 deg) down to ear level (0 deg).
    for phi in np.linspace(np.radians(85.0), 0.0, n_cap):
        rows.append(np.stack([radii[0] * np.cos(phi) * np.sin(thetas), np.full_like(thetas, radii[1] * np.sin(phi)), radii[2] * np.cos(phi) * np.cos(thetas)], -1))
    # Hanging part: straight down with a slight outward flare.
    base = rows[-1]
    for k in range(1, n_hang + 1):
        s = k / n_hang
        drop = s * p.long_hair_length
        flare = 1.0 + 0.35 * s
        ring = base * np.array([flare, 1.0, flare])
        ring[:, 1] = -drop
        rows.append(ring)
    grid = np.stack(rows)  # [R, T, 3]
    R, T = grid.shape[:2]
    verts = (grid + head_center).reshape(-1, 3)
    ii, jj = np.meshgrid(np.arange(R - 1), np.arange(T - 1), indexing="ij")
    a = (ii * T + jj).ravel()
    faces = np.concatenate([np.stack([a, a + T, a + 1], -1), np.stack([a + 1, a + T, a + T + 1], -1)])
    uv_u = np.tile(np.linspace(0, 1, T), R)
    uv_v = np.repeat(np.linspace(1, 0, R), T)
    tex = _hair_texture(p, rng)
    return HairShell(verts.astype(np.float32), faces.astype(np.int64), np.stack([uv_u, uv_v], -1).astype(np.float32), tex)


def _hair_texture(p: AppearanceParams, rng: np.random.Generator, w: int = 128, h: int = 64) -> np.ndarray:
    u = np.arange(w) / w
    phase = rng.uniform(0, 2 * np.pi, 3)
    strands = 1.0 + 0.10 * np.sin(2 * np.pi * 37 * u + phase[0]) + 0.06 * np.sin(2 * np.pi * 91 * u + phase[1])
    shade = np.linspace(1.0, 0.9, h)[:, None]
    img = p.hair[None, None, :] * (strands[None, :, None] * shade[..., None])
    return (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)


# ------------------------------------------------------------------------------ torso skirt


@dataclass
class Skirt:
    """Closes the cut at the bottom of the upper-body mesh: every open boundary edge low on
    the torso and arms is extruded straight down, reusing the texture coordinates of the edge
    (the clothing colour there is stretched downward), so that no mesh edge and no white gap
    appear at the bottom of a portrait."""

    boundary_vertices: np.ndarray  # [K] body vertex ids that get a lower copy
    faces: np.ndarray  # [2E, 3] ids into concat(body vertices, lower copies)
    face_uvs: np.ndarray  # [2E, 3] uv ids of the body's layout
    drop: float = 0.35  # metres below the lowest boundary vertex

    def extend(self, vertices: np.ndarray) -> np.ndarray:
        """Posed body vertices [V, 3] -> [V + K, 3] with the lower copies appended."""
        low = vertices[self.boundary_vertices].copy()
        low[:, 1] = vertices[self.boundary_vertices, 1].min() - self.drop
        return np.concatenate([vertices, low])

    def extend_batch(self, vertices):
        """The lower copies only, for a torch batch [B, V, 3] -> [B, K, 3]."""
        low = vertices[:, self.boundary_vertices].clone()
        low[..., 1] = low[..., 1].amin(1, keepdim=True) - self.drop
        return low


def build_skirt(faces: np.ndarray, face_uvs: np.ndarray, neutral_vertices: np.ndarray, max_y: float = -0.1) -> Skirt:
    """Find the open boundary edges below `max_y` (scene metres, neutral body) and extrude them."""
    e = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    e_uv = np.concatenate([face_uvs[:, [0, 1]], face_uvs[:, [1, 2]], face_uvs[:, [2, 0]]])
    key = np.sort(e, axis=1)
    _, inv, counts = np.unique(key, axis=0, return_inverse=True, return_counts=True)
    open_edge = counts[inv.reshape(-1)] == 1
    low = (neutral_vertices[e[:, 0], 1] < max_y) & (neutral_vertices[e[:, 1], 1] < max_y)
    sel = open_edge & low
    edges, edges_uv = e[sel], e_uv[sel]
    bv = np.unique(edges)
    lower = np.full(int(faces.max()) + 1, -1, dtype=np.int64)
    V = len(neutral_vertices)
    lower[bv] = V + np.arange(len(bv))
    a, b = edges[:, 0], edges[:, 1]
    ua, ub = edges_uv[:, 0], edges_uv[:, 1]
    sk_faces = np.concatenate([np.stack([a, b, lower[b]], -1), np.stack([a, lower[b], lower[a]], -1)])
    sk_uvs = np.concatenate([np.stack([ua, ub, ub], -1), np.stack([ua, ub, ua], -1)])
    return Skirt(bv, sk_faces.astype(np.int64), sk_uvs.astype(np.int64))
