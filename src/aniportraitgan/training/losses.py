"""Training losses (paper section 3.5): the non-saturating GAN loss and the R1 penalty.

The image crops the discriminators see live in the core (`aniportraitgan.crops`: real photos
are aligned with the same face crop). The landmark loss of eq. 9 lives with the body model (`body.landmarks.landmark_loss`: R's
training uses it too); the deformation losses of eqs. 10-13 are computed inside the generator
(it owns the sample points) and come back weighted from `Rendered.aux.weighted`. The objective
that combines them all is `training.objective`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


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
