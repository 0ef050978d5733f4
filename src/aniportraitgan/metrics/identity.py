"""Identity consistency across an animation: K identities x T frames of changing expression and
pose, compared by feature similarity or by R's identity estimates (docs/evaluation.md).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from aniportraitgan.cameras import MainCameraPlacement
from aniportraitgan.errors import InputError
from aniportraitgan.latents import LatentSample

from .features import extract_features

__all__ = ["identity_consistency", "identity_distance", "identity_metrics"]


def identity_consistency(features: torch.Tensor) -> dict[str, float]:
    """Cosine similarity of features [K, T, D] (K identities x T frames).

    same: mean over identities of the mean similarity between distinct frames of one identity;
    other: mean similarity between distinct identities at the same frame."""
    if features.ndim != 3 or features.shape[0] < 2 or features.shape[1] < 2:
        raise InputError(f"identity_consistency needs features [K>=2, T>=2, D], got {tuple(features.shape)}")
    K, T, _ = features.shape
    f = F.normalize(features.double(), dim=-1)
    within = f @ f.transpose(1, 2)  # [K, T, T]
    same = (within.sum((1, 2)) - within.diagonal(dim1=1, dim2=2).sum(-1)) / (T * (T - 1))
    ft = f.transpose(0, 1)  # [T, K, D]
    across = ft @ ft.transpose(1, 2)  # [T, K, K]
    other = (across.sum((1, 2)) - across.diagonal(dim1=1, dim2=2).sum(-1)) / (K * (K - 1))
    return {"same": float(same.mean()), "other": float(other.mean())}


def identity_distance(codes: torch.Tensor, scale: torch.Tensor | None = None) -> dict[str, float]:
    """Mean Euclidean distance of identity codes [K, T, D] (divided by `scale` [D]) between frames
    of one identity ("same") and between identities at the same frame ("other")."""
    if codes.ndim != 3 or codes.shape[0] < 2 or codes.shape[1] < 2:
        raise InputError(f"identity_distance needs codes [K>=2, T>=2, D], got {tuple(codes.shape)}")
    c = codes.double()
    if scale is not None:
        c = c / scale.double().clamp_min(1e-6)
    K, T, _ = c.shape
    within = torch.cdist(c, c)  # diagonal is 0
    across = torch.cdist(c.transpose(0, 1), c.transpose(0, 1))
    return {"same": float(within.sum() / (K * T * (T - 1))), "other": float(across.sum() / (T * K * (K - 1)))}


def identity_metrics(run, values=None) -> dict[str, float]:
    """The registered `identity` control metric of a `ControlRun`: K identities x T frames of
    changing expression and pose (the same T label rows for each), drawn after the run's samples."""
    extractor, facerecon, dev, B = run.extractor, run.facerecon, run.device, run.batch_size
    if extractor is None and facerecon is None:
        return {}
    K, T = run.config.identities, run.config.frames
    ids = run.sampler.sample(K, generator=run.rng, eps_dim=run.generator.config.noise_dim)
    frames = run.sampler.sample(T, generator=run.rng)
    codes = LatentSample(ids.z_id.repeat_interleave(T, 0), frames.z_exp.repeat(K, 1), frames.z_pose.repeat(K, 1, 1),
                         ids.eps.repeat_interleave(T, 0))
    placement = MainCameraPlacement.from_labels(run.sampler.tables)
    faces, estimates = [], []
    for s in range(0, K * T, B):
        sl = slice(s, min(K * T, s + B))
        zeros = torch.zeros(sl.stop - sl.start, device=dev)
        part = LatentSample(*(t[sl].to(dev) for t in (codes.z_id, codes.z_exp, codes.z_pose, codes.eps)))
        # The portrait is not needed: render it tiny, the face at the evaluation resolution.
        out = run.render(part, placement.cameras(zeros, zeros), 8, run.options.face_resolution)
        face = out.face.float().clamp(-1.0, 1.0)
        faces.append(face.cpu())
        if facerecon is not None:
            estimates.append(facerecon(face.to(next(facerecon.parameters()).device))["z_id"].cpu())
    faces = torch.cat(faces)
    metrics: dict[str, float] = {}
    if extractor is not None:
        feats = extract_features(faces, extractor, batch_size=B, device=dev, progress=False)
        sim = identity_consistency(torch.from_numpy(feats).reshape(K, T, -1))
        metrics["identity_cos_same"] = sim["same"]
        metrics["identity_cos_other"] = sim["other"]
    if facerecon is not None:
        dist = identity_distance(torch.cat(estimates).reshape(K, T, -1), facerecon.id_std.cpu())
        metrics["identity_R_dist_same"] = dist["same"]
        metrics["identity_R_dist_other"] = dist["other"]
    return metrics
