"""Deformation from the target (posed) space to the canonical space.

Pose (Dp, paper 3.3.1): each target-space sample takes the skinning weights of its nearest posed
body vertex (restricted to ``body.nn_valid``) and blends the inverse (posed -> zero pose) bone
transforms with them (inverse LBS, eq. 4). The 4x4 transforms of all samples of a view form a
volume [B, 16, D, H, W] (D samples per ray, H x W rays) that two Conv3d layers process (eq. 5).
The volume is built at half resolution (rays and depth samples) and the processed volume is
upsampled x2 (trilinear) to the full-resolution samples.

Expression (De, 3.3.2): a 3-layer FiLM-SIREN conditioned on (z_id, z_exp) through a mapping
network predicts a displacement; its last layer is zero so it starts as the identity.

Mesh-guided expressions (our addition, on by default): the inverse transform of a sample also
carries the body model's inverse expression displacement at its nearest vertex, so x_p already
lies in the neutral canonical space and De learns a residual. We measured that De alone, trained
only by the imitation loss (eq. 10) of a tiny or CPU-sized run, stays at the mean displacement
(relative error 1.0 on expression vertices after 500 steps): expressions never took effect.
With the guidance they do from the first step, and the imitation loss keeps De's residual small.

All positions here are scene metres; De normalises its input to canonical units internally.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from pykdtree.kdtree import KDTree
from torch import nn

from aniportraitgan.frames import SCENE_SCALE
from aniportraitgan.generator.layers import FiLMSiren, MappingNetwork


# ----------------------------------------------------------------------- nearest vertices
@torch.no_grad()
def nearest_vertex(points: torch.Tensor, vertices: torch.Tensor, chunk: int = 65536,
                   method: str = "auto") -> torch.Tensor:
    """Index of the nearest vertex for each point (exact).

    points [B, N, 3], vertices [B, V, 3] -> [B, N] long. ``method``: "bruteforce" computes
    squared distances as |v|^2 - 2 p.v (one matmul per chunk of points, memory chunk x V) and
    takes the argmin, the fast path on GPUs; "kdtree" queries a k-d tree per batch item
    (pykdtree, float64: the indices of scipy's cKDTree, about 3x faster), about two orders of
    magnitude faster than "bruteforce" on a CPU; "auto" picks by device.
    """
    if method == "auto":
        method = "kdtree" if points.device.type == "cpu" else "bruteforce"
    if method == "kdtree":
        p_np = np.ascontiguousarray(points.detach().to(torch.float64).numpy())
        v_np = np.ascontiguousarray(vertices.detach().to(torch.float64).numpy())
        idx = [KDTree(v_np[b]).query(p_np[b], k=1)[1] for b in range(points.shape[0])]
        return torch.from_numpy(np.stack(idx).astype(np.int64))
    if method != "bruteforce":
        raise ValueError(f"unknown nearest-vertex method {method!r}")
    B, N, _ = points.shape
    # Bound the [B, chunk, V] distance block to ~2^28 numbers (1 GiB in fp32): a batch of 32 at
    # the paper's 128 px would otherwise ask for 41 GB per chunk.
    chunk = max(256, min(chunk, (1 << 28) // max(1, B * vertices.shape[1])))
    # Centring reduces the cancellation error of the expanded squared distance.
    center = vertices.mean(1, keepdim=True)
    v = (vertices - center).to(points.dtype)
    points = points - center.to(points.dtype)
    v_sq = (v * v).sum(-1)  # [B, V]
    out = torch.empty(B, N, dtype=torch.long, device=points.device)
    for start in range(0, N, chunk):
        p = points[:, start:start + chunk]
        # |p|^2 is constant per row, so it does not change the argmin.
        d = torch.baddbmm(v_sq[:, None, :], p, v.transpose(1, 2), alpha=-2.0)
        out[:, start:start + chunk] = d.argmin(-1)
    return out


def invert_affine(T: torch.Tensor) -> torch.Tensor:
    """Inverse of affine [..., 4, 4] transforms (last row 0 0 0 1)."""
    A = T[..., :3, :3]
    b = T[..., :3, 3:]
    A_inv = torch.linalg.inv(A)
    top = torch.cat([A_inv, -(A_inv @ b)], -1)
    return torch.cat([top, T[..., 3:, :]], -2)


def _add_translation(T: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    """Affine [..., 4, 4] followed by a translation by offsets [..., 3] (out of place, autograd-safe)."""
    top = torch.cat([T[..., :3, :3], T[..., :3, 3:] + offsets[..., None]], -1)
    return torch.cat([top, T[..., 3:, :]], -2)


def apply_transforms(T: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Transforms [..., 4, 4] (or flat [..., 16]) applied to points [..., 3]."""
    if T.shape[-1] == 16:
        T = T.unflatten(-1, (4, 4))
    return (T[..., :3, :3] @ x[..., None]).squeeze(-1) + T[..., :3, 3]


class PoseDeformation(nn.Module):
    """Dp with the nearest-vertex inverse LBS that feeds it."""

    def __init__(self, kernel: tuple[int, int, int] = (5, 9, 9), chunk: int = 65536,
                 shared_blend: bool = False) -> None:
        super().__init__()
        self.kernel = tuple(kernel)
        self.chunk = chunk
        self.shared_blend = shared_blend
        if shared_blend:
            # Per layer one softmax kernel over the taps, the same for all 16 entries: each output
            # is a convex blend of neighbouring transforms (as LBS blends bones), so a rigid head
            # stays rigid. Zero logits: the averaging filter of L_pose_smooth.
            self.blend1 = nn.Parameter(torch.zeros(self.kernel))
            self.blend2 = nn.Parameter(torch.zeros(self.kernel))
            return
        # The paper's literal form: two 16 -> 16 Conv3d. Mixing the entries lets Dp rescale and
        # damp rotations: the bundled model's turns heads by 0.39 of the asked yaw (docs/evaluation.md).
        self.conv1 = nn.Conv3d(16, 16, self.kernel, padding=0)
        self.conv2 = nn.Conv3d(16, 16, self.kernel, padding=0)
        # Averaging filters per channel: a constant (e.g. identity) volume stays unchanged.
        with torch.no_grad():
            for conv in (self.conv1, self.conv2):
                conv.weight.zero_()
                conv.weight[torch.arange(16), torch.arange(16)] = 1.0 / math.prod(self.kernel)
                conv.bias.zero_()

    def _pad(self, T: torch.Tensor) -> torch.Tensor:
        kd, kh, kw = self.kernel
        # Replicate padding keeps the average of a constant volume constant at the borders.
        return F.pad(T, (kw // 2, kw // 2, kh // 2, kh // 2, kd // 2, kd // 2), mode="replicate")

    def inverse_lbs(self, points: torch.Tensor, posed_vertices: torch.Tensor,
                    skinning_weights: torch.Tensor, bone_transforms: torch.Tensor,
                    vertex_offsets: torch.Tensor | None = None,
                    split_offsets: bool = False) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Target-space points [B, N, 3] -> blended inverse transforms [B, N, 4, 4] (eq. 4).

        posed_vertices [B, V', 3] and skinning_weights [V', J] are already restricted to the
        vertices allowed in the nearest-vertex search; bone_transforms [B, J, 4, 4] map zero-pose
        points to posed points. ``vertex_offsets`` [B, V', 3] (optional, metres) is added to the
        translation of each sample's transform by the same nearest vertex: the generator passes
        the body model's inverse expression displacement there (mesh-guided expressions), so
        that one transform maps a target sample to the neutral canonical space and Dp smooths
        pose and expression together. ``split_offsets``: return them apart instead, as
        (transforms [B, N, 4, 4], offsets [B, N, 3]), for a caller that keeps them out of Dp.
        """
        if split_offsets and vertex_offsets is None:
            raise ValueError("split_offsets needs vertex_offsets")
        idx = nearest_vertex(points.detach(), posed_vertices.detach(), self.chunk)
        sw = skinning_weights.to(points.dtype)
        # Eq. 4 blends the target-to-canonical (inverse) bone transforms: J inversions per frame
        # instead of one per sample, and exact for samples skinned to a single bone.
        bones = invert_affine(bone_transforms.to(points.dtype)).flatten(-2)  # [B, J, 16]
        out, out_offsets = [], []
        # Chunked so that the [B, n, J] weights stay small at 512 x 512 x 64 samples.
        for start in range(0, idx.shape[1], self.chunk):
            near = idx[:, start:start + self.chunk]
            T = torch.bmm(sw[near], bones).unflatten(-1, (4, 4))  # [B, n, 4, 4]
            if vertex_offsets is not None:
                offsets = torch.gather(vertex_offsets.to(T.dtype), 1, near[..., None].expand(-1, -1, 3))
                if split_offsets:
                    out_offsets.append(offsets)
                else:
                    T = _add_translation(T, offsets)
            out.append(T)
        if split_offsets:
            return torch.cat(out, 1), torch.cat(out_offsets, 1)
        return torch.cat(out, 1)

    def process(self, volume: torch.Tensor) -> torch.Tensor:
        """Dp: [B, 16, D, H, W] -> [B, 16, D, H, W] (eq. 5)."""
        if not self.shared_blend:
            return self.conv2(self._pad(self.conv1(self._pad(volume))))
        # As a 16 -> 16 convolution with a diagonal weight: on a CPU that runs as fast as the
        # dense form, a one-channel conv3d over 16x the batch 6x slower (measured, 1 thread).
        eye = torch.eye(16, dtype=volume.dtype, device=volume.device).view(16, 16, 1, 1, 1)
        x = volume
        for logits in (self.blend1, self.blend2):
            kernel = torch.softmax(logits.flatten(), 0).view(1, 1, *self.kernel).to(x.dtype)
            x = F.conv3d(self._pad(x), eye * kernel)
        return x

    def reference(self, volume: torch.Tensor) -> torch.Tensor:
        """The fixed averaging operator of L_pose_smooth (eq. 11): Dp's initial state.

        Two replicate-padded k_d x k_h x k_w box filters (``avg_pool3d``'s), each as three 1-D
        running sums: k_d + k_h + k_w additions per voxel instead of k_d k_h k_w.
        """
        return box_filter(self._pad(box_filter(self._pad(volume), self.kernel)), self.kernel)

    def smooth_loss(self, volume: torch.Tensor, processed: torch.Tensor) -> torch.Tensor:
        """L_pose_smooth = mean ||Dp(T) - AvgPool(T)||^2 (eq. 11)."""
        return (processed - self.reference(volume.detach())).pow(2).mean()


def box_filter(volume: torch.Tensor, kernel: tuple[int, int, int]) -> torch.Tensor:
    """``F.avg_pool3d(volume, kernel, stride=1)`` (no padding) of [B, C, D, H, W], separably."""
    for dim, k in zip((2, 3, 4), kernel):
        n = volume.shape[dim] - k + 1
        acc = volume.narrow(dim, 0, n)
        for i in range(1, k):
            acc = acc + volume.narrow(dim, i, n)
        volume = acc
    return volume / math.prod(kernel)


def _linear_resize(x: torch.Tensor, dim: int, size: int) -> torch.Tensor:
    """Linear resampling of one axis to ``size`` samples, align_corners=False (PyTorch's rule)."""
    n = x.shape[dim]
    if size == n:
        return x
    if size == 2 * n and n > 1:
        # x2: between samples m and m+1 the outputs 2m+1 and 2m+2 lie 1/4 and 3/4 of the way;
        # the first and last outputs clamp to the border samples. Slices, two fused adds and one
        # interleave: the backward stays elementwise.
        lo, hi = x.narrow(dim, 0, n - 1), x.narrow(dim, 1, n - 1)
        step = hi - lo
        pairs = torch.stack([torch.add(lo, step, alpha=0.25), torch.add(hi, step, alpha=-0.25)], dim + 1)
        return torch.cat([x.narrow(dim, 0, 1), pairs.flatten(dim, dim + 1), x.narrow(dim, n - 1, 1)], dim)
    opmath = torch.float64 if x.dtype == torch.float64 else torch.float32
    src = ((torch.arange(size, dtype=opmath, device=x.device) + 0.5) * (n / size) - 0.5).clamp_min(0.0)
    i0 = src.floor().long().clamp_max(n - 1)
    i1 = (i0 + 1).clamp_max(n - 1)
    shape = [1] * x.ndim
    shape[dim] = size
    w1 = (src - i0).to(x.dtype).reshape(shape)
    return x.index_select(dim, i0) * (1.0 - w1) + x.index_select(dim, i1) * w1


def upsample_volume(volume: torch.Tensor, size: tuple[int, int, int]) -> torch.Tensor:
    """``F.interpolate(volume, size, mode="trilinear", align_corners=False)`` of
    [B, C, D, H, W], separably: trilinear is the product of three linear interpolations, and per
    axis the x2 case is two fixed 2-tap stencils."""
    # Innermost axis first: interleaving along it is the slowest copy, so do it on the smallest volume.
    for dim in (4, 3, 2):
        volume = _linear_resize(volume, dim, size[dim - 2])
    return volume


def upsample_volume_at(volume: torch.Tensor, pixel_uv: torch.Tensor, depth_samples: int) -> torch.Tensor:
    """Trilinear read of a ray-space volume [B, C, Dv, h, w] at full-resolution samples.

    pixel_uv [B, n, 2] in [-1, 1] (pixel-centre convention, align_corners=False) and sample
    k of ``depth_samples`` along depth -> [B, n, depth_samples, C]. For Dv = D/2, h = H/2 this
    is exactly x2 trilinear upsampling of the volume.
    """
    B, C, Dv, h, w = volume.shape
    n = pixel_uv.shape[1]
    D = depth_samples
    dz = (torch.arange(D, dtype=volume.dtype, device=volume.device) + 0.5) / D * 2.0 - 1.0
    grid = torch.cat(
        [pixel_uv[:, :, None, :].expand(B, n, D, 2), dz[None, None, :, None].expand(B, n, D, 1)], -1
    )  # [B, n, D, 3] as (x -> w, y -> h, z -> D)
    out = F.grid_sample(volume, grid[:, :, :, None, :], mode="bilinear", padding_mode="border",
                        align_corners=False)  # [B, C, n, D, 1]
    return out[..., 0].permute(0, 2, 3, 1)


# ----------------------------------------------------------------------- expression
class ExpressionDeformation(nn.Module):
    """De: (x_p, z_id, z_exp) -> x_c, scene metres in and out."""

    def __init__(self, id_dim: int, exp_dim: int, hidden: int, layers: int,
                 mapping_hidden: int, mapping_layers: int, input_scale: float = 1.0) -> None:
        super().__init__()
        # Canonical coordinates are multiplied by this before the sine layers: below 1 it lowers
        # every spatial frequency of the displacement field by the same factor.
        self.input_scale = float(input_scale)
        self.siren = FiLMSiren(3, hidden, layers)
        self.mapping = MappingNetwork(id_dim + exp_dim, mapping_hidden, mapping_layers, self.siren.w_dim)
        self.out = nn.Linear(hidden, 3)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def map(self, z_id: torch.Tensor, z_exp: torch.Tensor) -> torch.Tensor:
        return self.mapping(torch.cat([z_id, z_exp], -1))

    def displacement(self, x_p: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """x_c - x_p in scene metres for points x_p [B, N, 3]."""
        h = self.siren(x_p * (self.input_scale / SCENE_SCALE), w)
        return self.out(h) * SCENE_SCALE

    def forward(self, x_p: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return x_p + self.displacement(x_p, w)

    # Loss terms (eqs. 10, 12, 13); squared distances in canonical units (metres / SCENE_SCALE).
    def imitation_loss(self, points: torch.Tensor, target: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """Eq. 10 at mesh vertices (their nearest mesh point is the vertex itself).

        points [B, N, 3]: where De reads the vertices; target [B, N, 3]: the displacement De
        should add there. Without mesh guidance De reads the expression mesh (zero pose) and its
        target is ``neutral - expression``, the body model's analogue of ``-B_exp z_exp``; with
        mesh guidance the pose transform has already moved the vertices onto the neutral mesh,
        so De reads the neutral vertices and its target residual is zero.
        """
        pred = self.displacement(points, w)
        return ((pred - target) / SCENE_SCALE).pow(2).sum(-1).mean()

    def smooth_loss(self, x_p: torch.Tensor, w: torch.Tensor, sigma: float = 0.01) -> torch.Tensor:
        """Eq. 12 on displacements: mean ||d(x) - d(x + delta)||^2, delta ~ N(0, sigma^2) metres.

        (Comparing displacements rather than the deformed points keeps the loss zero for a
        constant displacement field instead of penalising |delta|.)
        """
        delta = torch.randn_like(x_p) * sigma
        d0 = self.displacement(x_p, w)
        d1 = self.displacement(x_p + delta, w)
        return ((d0 - d1) / SCENE_SCALE).pow(2).sum(-1).mean()

    @staticmethod
    def minimal_loss(x_p: torch.Tensor, x_c: torch.Tensor) -> torch.Tensor:
        """Eq. 13: mean ||x_p - De(x_p)||^2."""
        return ((x_c - x_p) / SCENE_SCALE).pow(2).sum(-1).mean()
