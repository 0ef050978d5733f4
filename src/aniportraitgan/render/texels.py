"""Texel geometry of the body model's UV atlas: which neutral-body point each texel shows.

Every covered texel of the texture atlas stores the point of the neutral, zero-pose mean body
that maps to it (barycentric interpolation of the triangle it lies in) plus interpolated
per-vertex attributes (eyeball weights, mouth-cavity flag, head skinning weight). Fixed parts
(eyes, iris, pupil, lips, brows, mouth interior) are labelled once per process from landmarks
and joints; `render.appearance` paints per-sample parts on these texel positions, so that
boundaries are continuous across UV seams.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from aniportraitgan.errors import InputError

# Region ids of the fixed labelling.
SKIN, LIPS, BROW, SCLERA, IRIS, PUPIL, MOUTH = range(7)
REGION_NAMES = ["skin", "lips", "brow", "sclera", "iris", "pupil", "mouth"]

IRIS_HALF_ANGLE = np.radians(24.0)  # iris radius ~6.5 mm on the ~16 mm anny eyeball
PUPIL_HALF_ANGLE = np.radians(9.0)


@dataclass
class TexelGeometry:
    """Per-texel data of the UV atlas, computed once per (body model, texture size)."""

    size: int
    covered: np.ndarray  # [S*S] flat indices of covered texels
    pos: np.ndarray  # [N, 3] neutral mean-body scene position of each covered texel
    region: np.ndarray  # [N] fixed region id
    head_weight: np.ndarray  # [N]
    fill_src: np.ndarray  # [M] covered-array indices copied into the dilated border texels
    fill_dst: np.ndarray  # [M] flat texel indices of those border texels
    head_center: np.ndarray  # [3]
    eye_level: float  # scene y of the eye centres
    iod: float  # inter-ocular distance (m)
    noise: np.ndarray = field(repr=False, default=None)  # [N, 4] smooth noise fields in [-1, 1]

    def __post_init__(self) -> None:
        # Index sets and per-texel factors that painting reuses for every sample.
        n = self.noise
        self.region_index = {int(r): np.nonzero(self.region == r)[0] for r in np.unique(self.region)}
        self.tone = (1.0 + 0.04 * n[:, 0] + 0.02 * n[:, 2]).astype(np.float32)
        self.detail = (1.0 + 0.05 * n[:, 3]).astype(np.float32)
        self.folds = (1.0 + 0.05 * n[:, 1]).astype(np.float32)
        scalp = np.nonzero((self.head_weight > 0.3) & (self.region == SKIN))[0]
        rel = self.pos[scalp] - self.head_center.astype(np.float32)
        theta = np.arctan2(rel[:, 0], rel[:, 2])  # 0 = toward the face
        self.scalp_index = scalp
        self.scalp_height = rel[:, 1]
        self.scalp_front = (((1.0 + np.cos(theta)) * 0.5) ** 1.5).astype(np.float32)
        self.scalp_strands = (1.0 + 0.12 * np.sin(theta * 90.0 + 6.0 * n[scalp, 1]) + 0.08 * n[scalp, 3]).astype(np.float32)
        self.body_index = np.nonzero((self.head_weight < 0.5) & (self.region == SKIN))[0]
        self.body_pos = self.pos[self.body_index]


# --------------------------------------------------------------------------- UV rasterizer


def rasterize_uv(uvs: np.ndarray, face_uvs: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """For each texel of a size x size atlas: the triangle covering it (-1 if none) and its
    barycentric coordinates. Texel (r, c) has its centre at uv ((c + .5) / S, 1 - (r + .5) / S)."""
    tri_id = np.full(size * size, -1, dtype=np.int64)
    bary = np.zeros((size * size, 3), dtype=np.float32)
    # Texel coordinates: x right, y down (image rows).
    t = np.stack([uvs[:, 0] * size, (1.0 - uvs[:, 1]) * size], -1).astype(np.float64)[face_uvs]  # [F, 3, 2]
    lo = np.clip(np.floor(t.min(1) - 0.5).astype(np.int64), 0, size - 1)
    hi = np.clip(np.ceil(t.max(1) - 0.5).astype(np.int64), 0, size - 1)
    for f in range(len(face_uvs)):
        (x0, y0), (x1, y1) = lo[f], hi[f]
        xs = np.arange(x0, x1 + 1) + 0.5
        ys = np.arange(y0, y1 + 1) + 0.5
        px, py = np.meshgrid(xs, ys)
        a, b, c = t[f]
        det = (b[1] - c[1]) * (a[0] - c[0]) + (c[0] - b[0]) * (a[1] - c[1])
        if abs(det) < 1e-12:
            continue
        w0 = ((b[1] - c[1]) * (px - c[0]) + (c[0] - b[0]) * (py - c[1])) / det
        w1 = ((c[1] - a[1]) * (px - c[0]) + (a[0] - c[0]) * (py - c[1])) / det
        w2 = 1.0 - w0 - w1
        inside = (w0 >= -1e-6) & (w1 >= -1e-6) & (w2 >= -1e-6)
        if not inside.any():
            continue
        rows = (py[inside] - 0.5).astype(np.int64)
        cols = (px[inside] - 0.5).astype(np.int64)
        flat = rows * size + cols
        tri_id[flat] = f
        bary[flat] = np.stack([w0[inside], w1[inside], w2[inside]], -1)
    return tri_id, bary


def _dilation_map(covered_mask: np.ndarray, size: int, steps: int) -> tuple[np.ndarray, np.ndarray]:
    """Border texels around UV islands copy their nearest covered neighbour (no seams with
    bilinear/mipmap filtering). Returns (source flat index, destination flat index)."""
    src = np.where(covered_mask, np.arange(size * size), -1).reshape(size, size)
    for _ in range(steps):
        new = src.copy()
        for dr, dc in ((0, 1), (0, -1), (1, 0), (-1, 0)):
            shifted = np.full_like(src, -1)
            rs = slice(max(dr, 0), size + min(dr, 0))
            rd = slice(max(-dr, 0), size + min(-dr, 0))
            cs = slice(max(dc, 0), size + min(dc, 0))
            cd = slice(max(-dc, 0), size + min(-dc, 0))
            shifted[rd, cd] = src[rs, cs]
            take = (new < 0) & (shifted >= 0)
            new[take] = shifted[take]
        src = new
    src = src.reshape(-1)
    dst = np.nonzero((src >= 0) & ~covered_mask)[0]
    return src[dst], dst


def _value_noise(pos: np.ndarray, freq: float, seed: int) -> np.ndarray:
    """Smooth 3D noise in [-1, 1]: a sum of random plane waves (cheap, continuous everywhere)."""
    rng = np.random.default_rng(seed)
    out = np.zeros(len(pos))
    for _ in range(6):
        d = rng.normal(size=3)
        d /= np.linalg.norm(d)
        f = freq * rng.uniform(0.7, 1.4)
        out += np.sin(2 * np.pi * f * (pos @ d) + rng.uniform(0, 2 * np.pi))
    return (out / np.sqrt(6 * 0.5) / 2.0).clip(-1, 1)


def _point_in_polygon(pts: np.ndarray, poly: np.ndarray) -> np.ndarray:
    """Even-odd test of 2D points [N, 2] against a closed polygon [K, 2]."""
    x, y = pts[:, 0], pts[:, 1]
    inside = np.zeros(len(pts), dtype=bool)
    for i in range(len(poly)):
        (x1, y1), (x2, y2) = poly[i], poly[(i + 1) % len(poly)]
        cond = (y1 > y) != (y2 > y)
        with np.errstate(divide="ignore", invalid="ignore"):
            xint = x1 + (y - y1) * (x2 - x1) / (y2 - y1)
        inside ^= cond & (x < xint)
    return inside


def _distance_to_polyline(pts: np.ndarray, line: np.ndarray) -> np.ndarray:
    d = np.full(len(pts), np.inf)
    for a, b in zip(line[:-1], line[1:]):
        ab = b - a
        t = np.clip(((pts - a) @ ab) / max(ab @ ab, 1e-12), 0, 1)
        d = np.minimum(d, np.linalg.norm(pts - (a + t[:, None] * ab), axis=1))
    return d


# Free corners of anny's atlas (no upper-body triangle there) that receive the eyeballs.
EYE_PATCHES = {"eye.L": (0.14, 0.14), "eye.R": (0.42, 0.14)}
EYE_PATCH_RADIUS = 0.12


def portrait_uv_layout(body) -> tuple[np.ndarray, np.ndarray]:
    """The body model's UV layout with each eyeball re-mapped to its own disk in a free corner.

    anny gives the eyeballs a few texels only, too few for an iris and pupil. Here the front
    hemisphere of each eyeball is projected orthographically (along the gaze, scene +Z at zero
    pose) onto a disk of radius EYE_PATCH_RADIUS; triangles of the back cap read a single texel
    outside the disk (they are inside the head and never seen).
    Returns (uvs [T', 2], face_uvs [F, 3]) for rendering and texture painting.
    """
    uvs = body.uvs.double().numpy()
    face_uvs = body.face_uvs.numpy().copy()
    faces = body.faces.numpy()
    names = list(body.bone_names)
    weights = body.skinning_weights.numpy()
    with torch.no_grad():
        out = body(*body.neutral_codes(1))
    verts = out.vertices[0].double().numpy()
    new_uvs = [uvs]
    offset = len(uvs)
    for bone, centre in EYE_PATCHES.items():
        j = names.index(bone)
        on = weights[:, j] > 0.5
        tri_sel = on[faces].all(1)
        if not tri_sel.any():
            continue
        vids = np.unique(faces[tri_sel])
        d = verts[vids] - out.joints[0, j].double().numpy()
        d /= np.maximum(np.linalg.norm(d, axis=1, keepdims=True), 1e-12)
        patch = np.asarray(centre) + EYE_PATCH_RADIUS * d[:, :2]
        remap = np.full(len(verts), -1, dtype=np.int64)
        remap[vids] = offset + np.arange(len(vids))
        # Triangles of the back cap (never visible) all read one texel outside the disk, so that
        # they neither cover nor cross the iris in the atlas.
        back_z = np.full(len(verts), 1.0)
        back_z[vids] = d[:, 2]
        back = tri_sel & (back_z[faces] < -0.3).any(1)
        front = tri_sel & ~back
        face_uvs[front] = remap[faces[front]]
        outside = np.asarray(centre) + np.array([0.0, -1.06 * EYE_PATCH_RADIUS])
        face_uvs[back] = offset + len(vids)
        new_uvs += [patch, outside[None]]
        offset += len(vids) + 1
    return np.concatenate(new_uvs).astype(np.float32), face_uvs


def texel_geometry(body, size: int = 512) -> TexelGeometry:
    """Rasterize the neutral mean body into the UV atlas and label the fixed regions."""
    if size < 16:
        raise InputError(f"texture_size must be >= 16, got {size}")
    with torch.no_grad():
        out = body(*body.neutral_codes(1))
    verts = out.vertices[0].double().numpy()
    lm = out.landmarks[0].double().numpy()
    names = list(body.bone_names)
    weights = body.skinning_weights.double().numpy()
    faces = body.faces.numpy()
    uvs, face_uvs = portrait_uv_layout(body)
    uvs = uvs.astype(np.float64)

    tri_id, bary = rasterize_uv(uvs, face_uvs, size)
    covered = np.nonzero(tri_id >= 0)[0]
    tri = faces[tri_id[covered]]  # [N, 3]
    w = bary[covered].astype(np.float64)[..., None]

    def interp(attr):
        return (attr[tri] * w).sum(1) if attr.ndim == 2 else (attr[tri] * w[..., 0]).sum(1)

    pos = interp(verts)
    eye_l = interp(weights[:, names.index("eye.L")])
    eye_r = interp(weights[:, names.index("eye.R")])
    head_w = interp(weights[:, names.index("head")] + weights[:, names.index("eye.L")] + weights[:, names.index("eye.R")])
    cavity = interp((~body.nn_valid.numpy()).astype(np.float64))

    region = np.full(len(covered), SKIN, dtype=np.uint8)
    # Eyes: the radius within the eyeball's UV disk is the sine of the angle from the gaze axis.
    tex_u = (covered % size + 0.5) / size
    tex_v = 1.0 - (covered // size + 0.5) / size
    for wgt, jn in ((eye_l, "eye.L"), (eye_r, "eye.R")):
        on = wgt > 0.5
        cu, cv = EYE_PATCHES[jn]
        rho = np.hypot(tex_u[on] - cu, tex_v[on] - cv) / EYE_PATCH_RADIUS
        r = np.full(on.sum(), SCLERA, dtype=np.uint8)
        r[rho < np.sin(IRIS_HALF_ANGLE)] = IRIS
        r[rho < np.sin(PUPIL_HALF_ANGLE)] = PUPIL
        region[on] = r
    eye_any = (eye_l > 0.5) | (eye_r > 0.5)
    iod = float(np.linalg.norm(lm[36:42].mean(0) - lm[42:48].mean(0)))
    eyes_c = np.stack([lm[36:42].mean(0), lm[42:48].mean(0)])
    outer = lm[48:60, :2]
    mouth_c = outer.mean(0)
    in_mouth_xy = _point_in_polygon(pos[:, :2], mouth_c + (outer - mouth_c) * 1.3)
    # The mouth interior (cavity, teeth, tongue): behind the lips, inside the mouth outline.
    region[(cavity > 0.5) & in_mouth_xy & (pos[:, 2] < lm[48:68, 2].max() - 0.002) & ~eye_any] = MOUTH
    front = pos[:, 2] > lm[30, 2] - 0.5 * iod  # the front of the face (nose tip depth minus margin)
    # Lips: inside the outer mouth contour (dilated a little), in front, not the mouth interior.
    poly = mouth_c + (outer - mouth_c) * 1.12
    lips = _point_in_polygon(pos[:, :2], poly) & front & (region == SKIN)
    region[lips] = LIPS
    # Brows: a band around each brow polyline, thinner toward the temple.
    for a, b in ((17, 22), (22, 27)):
        line = lm[a:b, :2]
        d = _distance_to_polyline(pos[:, :2], line)
        along = np.abs(pos[:, 0]) / max(np.abs(line[:, 0]).max(), 1e-6)
        thick = 0.06 * iod * (1.15 - 0.5 * along)
        brow = (d < thick) & front & (region == SKIN) & (pos[:, 1] > eyes_c[:, 1].mean())
        region[brow] = BROW

    fill_src_flat, fill_dst = _dilation_map(tri_id >= 0, size, steps=3)
    lookup = np.full(size * size, -1, dtype=np.int64)
    lookup[covered] = np.arange(len(covered))
    fill_src = lookup[fill_src_flat]
    noise = np.stack([_value_noise(pos, f, s) for f, s in ((4.0, 1), (12.0, 2), (40.0, 3), (90.0, 4))], -1)
    return TexelGeometry(
        size=size,
        covered=covered,
        pos=pos.astype(np.float32),
        region=region,
        head_weight=head_w.astype(np.float32),
        fill_src=fill_src,
        fill_dst=fill_dst,
        head_center=out.head_center[0].double().numpy(),
        eye_level=float(eyes_c[:, 1].mean()),
        iod=iod,
        noise=noise.astype(np.float32),
    )
