"""Training losses (paper section 3.5) and the image crops the discriminators see.

- non-saturating GAN loss and the R1 penalty on real images;
- the 3D landmark loss of eq. 9, through a frozen face reconstruction network R and the body
  model's landmarks (centred; linearised as the paper's 3DMM is linear);
- the torso crop (lower quarter of the portrait, full width) and, for the `face_from_crop`
  ablation, an aligned face crop resampled from the portrait around the projected head.
The deformation losses of eqs. 10-13 are computed inside the generator (it owns the sample
points) and come back in its aux dict; `weighted_aux_losses` combines them.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from aniportraitgan.errors import InputError


# ----------------------------------------------------------------------------- adversarial
def d_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """Non-saturating discriminator loss: softplus(D(fake)) + softplus(-D(real))."""
    return F.softplus(fake_logits.float()).mean() + F.softplus(-real_logits.float()).mean()


def g_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """Non-saturating generator loss: softplus(-D(G(z)))."""
    return F.softplus(-fake_logits.float()).mean()


def r1_penalty(discriminator, real: torch.Tensor, gamma: float) -> torch.Tensor:
    """gamma / 2 * E_x ||grad_x D(x)||^2 on real images (Mescheder et al. 2018).

    The gradient is of the summed logits, so with minibatch stddev (which couples samples) it is
    still the exact gradient of what the discriminator computes. Runs in fp32 (autocast off):
    the squared gradient of a half-precision graph under- and overflows."""
    x = real.detach().to(torch.promote_types(real.dtype, torch.float32)).requires_grad_(True)
    device_type = x.device.type
    with torch.autocast(device_type=device_type, enabled=False):
        logits = discriminator(x)
        (grad,) = torch.autograd.grad(logits.sum(), x, create_graph=True)
    return 0.5 * gamma * grad.square().flatten(1).sum(1).mean()


# ------------------------------------------------------------------------------- crops
def torso_crop(images: torch.Tensor) -> torch.Tensor:
    """The lower quarter of each portrait at full width: [B, C, H, W] -> [B, C, H/4, W].

    A plain slice (no resampling): D_torso sees the generator's pixels unchanged."""
    if images.dim() != 4 or images.shape[-2] % 4:
        raise InputError(f"torso_crop expects [B, C, H, W] with H divisible by 4, got {tuple(images.shape)}")
    h = images.shape[-2]
    return images[..., 3 * h // 4 :, :]


def face_crop(
    images: torch.Tensor,
    cameras,
    head_center: torch.Tensor,
    head_rotation: torch.Tensor,
    out_resolution: int,
    face_radius: float,
    face_fov_deg: float,
) -> torch.Tensor:
    """Crop and align faces from portraits (the `face_from_crop` ablation of Table 2).

    The crop is centred on the projected head centre, rotated so that the head's up axis points
    up, and sized to show what the face camera (distance `face_radius`, field of view
    `face_fov_deg`) sees in the plane of the head centre. Pixels outside the portrait are white
    (the background). Bilinear resampling: exactly the low-pass crop the paper argues against.
    """
    if images.dim() != 4:
        raise InputError(f"face_crop expects images [B, C, H, W], got {tuple(images.shape)}")
    b, _, h, w = images.shape
    if head_center.shape != (b, 3) or head_rotation.shape != (b, 3, 3):
        raise InputError(
            f"face_crop: head_center must be [{b}, 3] and head_rotation [{b}, 3, 3], "
            f"got {tuple(head_center.shape)} and {tuple(head_rotation.shape)}"
        )
    dtype = images.dtype
    head_center = head_center.to(images.device, torch.float32)
    up = head_rotation.to(images.device, torch.float32)[:, :, 1]  # head +Y axis in scene space
    pts = torch.stack([head_center, head_center + 0.05 * up], dim=1)  # [B, 2, 3]
    uv, depth = cameras.project(pts, h, w)
    uv = uv.float()
    centre = uv[:, 0]
    up2d = uv[:, 1] - uv[:, 0]
    down = -up2d / up2d.norm(dim=-1, keepdim=True).clamp_min(1e-8)
    right = torch.stack([down[:, 1], -down[:, 0]], dim=-1)
    focal = cameras.intrinsics(h, w)[:, 0, 0].to(images.device).float()
    half_extent = face_radius * math.tan(math.radians(face_fov_deg) / 2)
    half_px = focal * half_extent / depth[:, 0].float().clamp_min(1e-6)  # [B]
    scale = torch.tensor([2.0 / w, 2.0 / h], device=images.device)
    theta = torch.stack(
        [
            right * half_px[:, None] * scale,
            down * half_px[:, None] * scale,
            centre * scale - 1.0,
        ],
        dim=-1,
    )  # [B, 2, 3]: columns act on output x, output y, 1
    grid = F.affine_grid(theta, [b, images.shape[1], out_resolution, out_resolution], align_corners=False)
    # Sample (img - 1) with zero padding so that outside the portrait reads as white (+1).
    crops = F.grid_sample(images.float() - 1.0, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return (crops + 1.0).to(dtype)


# ------------------------------------------------------------------------- landmark (eq. 9)
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
    of the squared 3D distance in centimetres."""
    target = landmarks(z_id.float(), z_exp.float()).detach()
    estimate = landmarks(z_id_hat.float(), z_exp_hat.float())
    return ((estimate - target) * 100.0).square().sum(-1).mean()


# ---------------------------------------------------------------------- deformation (10-13)
# Names of the generator's aux terms for eqs. 10-13 and the LossWeights field of each. The
# generator may use either the short or the long name; both are recognised.
AUX_LOSS_KEYS: dict[str, tuple[str, ...]] = {
    "imitation": ("exp_imitation", "imitation", "loss_imitation"),
    "pose_smooth": ("pose_smooth", "loss_pose_smooth"),
    "exp_smooth": ("exp_smooth", "loss_exp_smooth"),
    "exp_minimal": ("exp_minimal", "loss_exp_minimal"),
}


def weighted_aux_losses(aux: dict, weights) -> dict[str, torch.Tensor]:
    """Pick the eqs. 10-13 terms out of the generator's aux dict: {name: weight * value}.

    Terms the generator did not return (e.g. pose_smooth without Dp) or whose weight is zero are
    left out."""
    out: dict[str, torch.Tensor] = {}
    for name, keys in AUX_LOSS_KEYS.items():
        weight = float(getattr(weights, name))
        if weight == 0.0:
            continue
        for key in keys:
            if key in aux and aux[key] is not None:
                out[name] = weight * aux[key].float().mean()
                break
    return out
