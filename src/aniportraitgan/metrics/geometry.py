"""Head and shoulder geometry: generated surface points against the posed body-model surface
(docs/evaluation.md). Bone groups, region masks and points spread over a region's triangles.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from aniportraitgan.errors import InputError

from .reprojection import backproject

__all__ = ["HEAD_BONES", "SHOULDER_BONES", "RegionSurface", "geometry_distance", "geometry_values", "region_vertices"]

HEAD_BONES = ("head", "eye.L", "eye.R")
SHOULDER_BONES = ("clavicle.L", "shoulder01.L", "upperarm01.L", "upperarm02.L",
                  "clavicle.R", "shoulder01.R", "upperarm01.R", "upperarm02.R")


def region_vertices(body, bones: tuple[str, ...], min_weight: float = 0.5) -> torch.Tensor:
    """Bool mask [V] of the vertices whose skinning weight on `bones` sums to at least min_weight."""
    names = list(body.bone_names)
    missing = [b for b in bones if b not in names]
    if missing:
        raise InputError(f"body model has no bones {missing} (it has {names})")
    idx = torch.tensor([names.index(b) for b in bones], device=body.skinning_weights.device)
    return body.skinning_weights[:, idx].sum(1) >= min_weight


def _nearest(points: torch.Tensor, verts: torch.Tensor, chunk: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """Distance and index of the nearest vertex [N] for points [N, 3], verts [V, 3]."""
    dists, idxs = [], []
    for s in range(0, points.shape[0], chunk):
        d = torch.cdist(points[s:s + chunk], verts)
        m = d.min(1)
        dists.append(m.values)
        idxs.append(m.indices)
    return torch.cat(dists), torch.cat(idxs)


@dataclass
class RegionSurface:
    """Points spread over the triangles of a body region: point k is the blend of the vertices
    `ids[k]` with barycentric `weights[k]`, so it follows any posing of the mesh.

    Shoulder triangles have ~2 cm edges, so the nearest *vertex* would be up to ~1 cm from a
    point lying exactly on the surface; sampling each triangle at about `spacing` brings that
    error under a few millimetres."""

    ids: torch.Tensor  # [P, 3] long
    weights: torch.Tensor  # [P, 3] float

    @classmethod
    def build(cls, vertices: torch.Tensor, faces: torch.Tensor, region: torch.Tensor,
              spacing: float = 0.004, max_level: int = 8) -> "RegionSurface":
        """vertices [V, 3] of a reference mesh (edge lengths), faces [F, 3], region [V] bool:
        triangles with any corner in the region are sampled on a barycentric grid of
        ceil(longest edge / spacing) steps (at most max_level)."""
        faces = faces.to(vertices.device).long()
        tri = faces[region[faces].any(1)]  # border triangles too: points near the border lie on them
        if tri.shape[0] == 0:
            raise InputError("RegionSurface: no triangle touches the region")
        corners = vertices[tri]  # [T, 3, 3]
        edges = (corners - corners.roll(1, 1)).norm(dim=-1).max(1).values
        levels = (edges / spacing).ceil().clamp(1, max_level).long()
        ids, weights = [], []
        for n in levels.unique().tolist():
            grid = [(i / n, j / n, (n - i - j) / n) for i in range(n + 1) for j in range(n + 1 - i)]
            w = torch.tensor(grid, dtype=vertices.dtype, device=vertices.device)  # [S, 3]
            t = tri[levels == n]
            ids.append(t[:, None, :].expand(-1, w.shape[0], -1).reshape(-1, 3))
            weights.append(w[None].expand(t.shape[0], -1, -1).reshape(-1, 3))
        return cls(torch.cat(ids), torch.cat(weights))

    def points(self, vertices: torch.Tensor) -> torch.Tensor:
        """[B, P, 3] surface points of posed vertices [B, V, 3]."""
        return (vertices[:, self.ids] * self.weights.to(vertices.dtype)[None, :, :, None]).sum(-2)


def geometry_distance(
    points: torch.Tensor, mask: torch.Tensor, vertices: torch.Tensor, candidates: torch.Tensor,
    region: torch.Tensor, reference_vertices: torch.Tensor | None = None, max_points: int = 2048,
    surface: RegionSurface | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Distance (metres) from generated surface points to a body-model region.

    points [B, N, 3] scene points (e.g. `backproject` of the rendered depth), mask [B, N] bool
    (foreground), vertices [B, V, 3] the body posed as asked, candidates [V] bool (vertices a
    point may be assigned to), region [V] bool. Each foreground point is assigned to its nearest
    candidate vertex; points assigned to the region are kept, and their mean distance to the
    region (its `surface` samples when given, else its vertices) is returned per sample [B]
    (NaN when no point is kept). With `reference_vertices` [B, V, 3] (the body in another pose)
    the second result holds the same points' mean distance to that body's region, else NaN.
    At most `max_points` foreground points per sample (evenly strided) are used.
    """
    B = points.shape[0]
    cand_idx = candidates.nonzero().squeeze(1)
    in_region = region[cand_idx]
    reg_idx = region.nonzero().squeeze(1)
    if reg_idx.numel() == 0 or cand_idx.numel() == 0:
        raise InputError("geometry_distance: empty region or candidate vertex set")

    def targets(verts: torch.Tensor) -> torch.Tensor:
        return surface.points(verts) if surface is not None else verts[:, reg_idx]

    own_t = targets(vertices)
    ref_t = targets(reference_vertices) if reference_vertices is not None else None
    nan = points.new_tensor(float("nan"))
    own, ref = [], []
    for b in range(B):
        p = points[b][mask[b]]
        if p.shape[0] > max_points:
            p = p[torch.linspace(0, p.shape[0] - 1, max_points, device=p.device).long()]
        if p.shape[0] == 0:
            own.append(nan)
            ref.append(nan)
            continue
        _, nearest = _nearest(p, vertices[b, cand_idx])
        p = p[in_region[nearest]]
        if p.shape[0] == 0:
            own.append(nan)
            ref.append(nan)
            continue
        own.append(_nearest(p, own_t[b])[0].mean())
        ref.append(_nearest(p, ref_t[b])[0].mean() if ref_t is not None else nan)
    return torch.stack(own), torch.stack(ref)


def geometry_values(batch) -> dict[str, torch.Tensor]:
    """The registered `geometry` control metric on one `ControlBatch`: per-sample distances (mm)
    of its generated surface to the head and shoulders of the body posed as asked and of the
    body in another sample's pose."""
    run, out = batch.run, batch.out
    pts = backproject(out.portrait_depth.float(), batch.cams)
    mask = out.portrait_alpha.reshape(pts.shape[0], -1) > run.config.alpha_threshold
    # The reference: each sample's body in another sample's pose.
    ref_pose = run.latents.z_pose.roll(1, 0) if run.config.num > 1 else torch.zeros_like(run.latents.z_pose)
    c = batch.codes
    ref_verts = run.body(c.z_id, c.z_exp, ref_pose[batch.index].to(run.device)).vertices
    candidates = run.body.nn_valid.to(run.device)
    values = {}
    for name, (region, surface) in run.regions.items():
        own, ref = geometry_distance(pts, mask, batch.body.vertices, candidates, region, ref_verts,
                                     run.config.geometry_points, surface)
        values[f"{name}_geom_mm"] = own * 1000.0
        values[f"{name}_geom_mm_ref"] = ref * 1000.0
    return values
