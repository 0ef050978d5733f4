"""The body model restricted to what a fit needs (`FitBody`), shared by the fitting and the crops."""

from __future__ import annotations

import torch

from aniportraitgan.body import PortraitBodyModel, load_asset
from aniportraitgan.body.asset import BodyAsset
from aniportraitgan.frontend.correspondence import SHOULDER_JOINTS, load_correspondence


class FitBody(torch.nn.Module):
    """The portrait body model restricted to the vertices a fit needs (exact for them, ~4x
    faster than the full model): the 68 landmark vertices plus one virtual vertex, the mean of
    the rigid head vertices, whose posed position is the model's head centre.

    forward -> landmarks [B, 68, 3], shoulder points [B, 2, 3], neck base [B, 3], head centre
    [B, 3] and size [B] (neck-to-head-centre distance over the mean body's, the SynthPortraits
    framing scale)."""

    def __init__(self, asset: BodyAsset | None = None) -> None:
        super().__init__()
        asset = asset or load_asset()
        t = dict(asset.tensors)
        ids = t["landmark_ids"].long()
        head = t["head_center_ids"].long()
        for name in ("vertices_mean", "skinning_weights"):
            t[name] = torch.cat([t[name][ids], t[name][head].mean(0, keepdim=True)])
        t["vertices_id"] = torch.cat([t["vertices_id"][:, ids], t["vertices_id"][:, head].mean(1, keepdim=True)], 1)
        t["vertices_exp"] = torch.cat([t["vertices_exp"][:, ids], torch.zeros_like(t["vertices_exp"][:, :1])], 1)
        t["nn_valid"] = torch.cat([t["nn_valid"][ids], torch.ones(1, dtype=torch.bool)])
        t["source_vertex_ids"] = torch.cat([t["source_vertex_ids"][ids], torch.zeros(1, dtype=t["source_vertex_ids"].dtype)])
        t["landmark_ids"] = torch.arange(len(ids))
        t["head_center_ids"] = torch.tensor([len(ids)])
        self.model = PortraitBodyModel(BodyAsset(t, asset.meta))
        names = self.model.bone_names
        self.shoulder_ids = [names.index(j) for j in SHOULDER_JOINTS]
        self.neck_id = names.index("neck01")
        self.correspondence = load_correspondence()
        with torch.no_grad():
            out = self.model(*self.model.neutral_codes(1))
        self.ref_size = float((out.head_center[0] - out.joints[0, self.neck_id]).norm())
        self.id_dim, self.exp_dim = self.model.id_dim, self.model.exp_dim
        self.expression_names = self.model.expression_names

    def forward(self, z_id, z_exp, z_pose):
        out = self.model(z_id, z_exp, z_pose, check=False)
        neck = out.joints[:, self.neck_id]
        size = (out.head_center - neck).norm(dim=-1) / self.ref_size
        shoulders = self.correspondence.shoulder_points(out.joints[:, self.shoulder_ids])
        return out.landmarks, shoulders, neck, out.head_center, size


_FIT_BODY: FitBody | None = None


def fit_body() -> FitBody:
    global _FIT_BODY
    if _FIT_BODY is None:
        _FIT_BODY = FitBody()
    return _FIT_BODY
