"""The 68 facial landmarks (iBUG 300-W order) as fixed vertices of the portrait body model.

anny ships no 68-point annotation, so we place one: a frontal 2D layout of the 68 points, written
in units of the inter-ocular distance (origin between the eye centres, x toward the image right
= the subject's left = scene +X, y downward), is scaled onto the neutral mean face and each point
is snapped to the front-most mesh vertex under it. Like the 3DMM landmarks of Deep3DFaceRecon,
the contour points are fixed vertices on the cheeks rather than moving silhouette points.
"""

from __future__ import annotations

import math

import torch

# Jaw contour 0-16 (from the subject's right ear, around the chin, to the left ear).
_JAW = [(1.2 * math.cos(math.pi - i * math.pi / 16), 0.1 + 1.75 * math.sin(math.pi - i * math.pi / 16)) for i in range(17)]
_BROW_R = [(-0.85, -0.30), (-0.68, -0.40), (-0.50, -0.44), (-0.32, -0.42), (-0.16, -0.36)]
_BROW_L = [(-x, y) for x, y in reversed(_BROW_R)]
_NOSE_BRIDGE = [(0.0, 0.05), (0.0, 0.27), (0.0, 0.49), (0.0, 0.70)]
_NOSE_BASE = [(-0.20, 0.82), (-0.10, 0.85), (0.0, 0.87), (0.10, 0.85), (0.20, 0.82)]
_EYE_R = [(-0.74, 0.0), (-0.60, -0.07), (-0.40, -0.07), (-0.26, 0.0), (-0.40, 0.05), (-0.60, 0.05)]
_EYE_L = [(0.26, 0.0), (0.40, -0.07), (0.60, -0.07), (0.74, 0.0), (0.60, 0.05), (0.40, 0.05)]
_MOUTH_OUTER = [
    (-0.42, 1.15), (-0.26, 1.07), (-0.10, 1.03), (0.0, 1.05), (0.10, 1.03), (0.26, 1.07),
    (0.42, 1.15), (0.26, 1.25), (0.10, 1.30), (0.0, 1.31), (-0.10, 1.30), (-0.26, 1.25),
]
_MOUTH_INNER = [(-0.34, 1.15), (-0.10, 1.12), (0.0, 1.12), (0.10, 1.12), (0.34, 1.15), (0.10, 1.19), (0.0, 1.19), (-0.10, 1.19)]
LAYOUT_68 = _JAW + _BROW_R + _BROW_L + _NOSE_BRIDGE + _NOSE_BASE + _EYE_R + _EYE_L + _MOUTH_OUTER + _MOUTH_INNER
assert len(LAYOUT_68) == 68

SNAP_RADIUS_IOD = 0.07  # candidate radius, in inter-ocular distances


def select_landmarks(vertices: torch.Tensor, faces: torch.Tensor, allowed: torch.Tensor, eye_centres: torch.Tensor) -> torch.Tensor:
    """Vertex ids [68] on a neutral, zero-pose face in scene space (Y up, face toward +Z).

    eye_centres: [2, 3], the subject's right eye first (it is on the image left).
    """
    iod = float((eye_centres[1] - eye_centres[0]).norm())
    mid = eye_centres.mean(0)
    layout = torch.tensor(LAYOUT_68, dtype=vertices.dtype)
    targets = torch.stack([mid[0] + layout[:, 0] * iod, mid[1] - layout[:, 1] * iod], -1)  # scene (x, y)
    front = allowed & (vertices[:, 2] > mid[2] - 0.5 * iod)
    cand = front.nonzero().flatten()
    xy = vertices[cand, :2]
    z = vertices[cand, 2]
    ids = []
    for target in targets:
        d = (xy - target).norm(dim=-1)
        near = d < SNAP_RADIUS_IOD * iod
        if near.any():
            # front-most vertex among those under the point
            score = torch.where(near, z, torch.full_like(z, -1e9))
            ids.append(int(cand[score.argmax()]))
        else:
            ids.append(int(cand[d.argmin()]))
    return torch.tensor(ids, dtype=torch.long)
