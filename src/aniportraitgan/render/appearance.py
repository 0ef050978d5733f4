"""Procedural appearance painted in the body model's UV space, and a long-hair shell mesh.

Regions are decided on 3D geometry, not on the UV layout: every covered texel of the texture
atlas stores the point of the neutral, zero-pose mean body that maps to it (barycentric
interpolation of the triangle it lies in) plus interpolated per-vertex attributes (eyeball
weights, mouth-cavity flag, head skinning weight). Fixed parts (eyes, iris, pupil, lips,
brows, mouth interior, lashes) are labelled once per process from landmarks and joints;
per-sample parts (scalp hair line, clothing neckline and pattern) are evaluated on the texel
positions with that sample's random parameters, so boundaries are continuous across UV seams.

Everything here is numpy and deterministic for a given `numpy.random.Generator` state.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from aniportraitgan.errors import InputError

# Region ids of the fixed labelling.
SKIN, LIPS, BROW, SCLERA, IRIS, PUPIL, MOUTH = range(7)
REGION_NAMES = ["skin", "lips", "brow", "sclera", "iris", "pupil", "mouth"]

IRIS_HALF_ANGLE = np.radians(24.0)  # iris radius ~6.5 mm on the ~16 mm anny eyeball
PUPIL_HALF_ANGLE = np.radians(9.0)

# Palettes (sRGB 0..1). Skin tones span light to dark; a sample interpolates between anchors.
SKIN_ANCHORS = np.array(
    [[0.96, 0.82, 0.72], [0.90, 0.72, 0.60], [0.78, 0.58, 0.44], [0.62, 0.43, 0.31], [0.42, 0.28, 0.20], [0.28, 0.18, 0.13]]
)
HAIR_COLORS = np.array(
    [[0.06, 0.05, 0.05], [0.16, 0.10, 0.07], [0.30, 0.19, 0.11], [0.52, 0.36, 0.20], [0.80, 0.66, 0.42], [0.55, 0.24, 0.12], [0.62, 0.60, 0.58]]
)
HAIR_WEIGHTS = np.array([0.28, 0.26, 0.18, 0.10, 0.08, 0.05, 0.05])
IRIS_COLORS = np.array([[0.25, 0.14, 0.07], [0.40, 0.26, 0.12], [0.30, 0.45, 0.62], [0.35, 0.48, 0.32], [0.45, 0.45, 0.42]])
IRIS_WEIGHTS = np.array([0.45, 0.2, 0.15, 0.1, 0.1])


@dataclass
class AppearanceConfig:
    texture_size: int = 512
    long_hair_fraction: float = 0.3  # share of samples with the long-hair shell
    bald_fraction: float = 0.05
    tank_top_fraction: float = 0.15  # bare shoulders
    pattern_weights: tuple[float, float, float, float] = (0.4, 0.3, 0.15, 0.15)  # solid, stripes, checks, dots


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
    import torch

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
    import torch

    if size < 16:
        raise InputError(f"texture_size must be >= 16, got {size}")
    with torch.no_grad():
        out = body(*body.neutral_codes(1))
    verts = out.vertices[0].double().numpy()
    lm = out.landmarks[0].double().numpy()
    joints = out.joints[0].double().numpy()
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


# ------------------------------------------------------------------------ per-sample painting


@dataclass
class AppearanceParams:
    skin: np.ndarray
    hair: np.ndarray
    iris: np.ndarray
    lips: np.ndarray
    cloth_a: np.ndarray
    cloth_b: np.ndarray
    pattern: int  # 0 solid, 1 stripes, 2 checks, 3 dots
    pattern_freq: float
    pattern_dir: np.ndarray
    hair_front: float  # hairline height above the head centre at the forehead (m)
    hair_back: float  # hairline height at the nape (m, negative = below the head centre)
    bald: bool
    long_hair: bool
    long_hair_length: float  # metres below the head centre
    neckline: int  # 0 crew, 1 v-neck, 2 scoop
    neck_depth: float
    tank_top: bool


def sample_appearance(rng: np.random.Generator, config: AppearanceConfig | None = None) -> AppearanceParams:
    cfg = config or AppearanceConfig()
    t = rng.uniform(0, len(SKIN_ANCHORS) - 1)
    i = min(int(t), len(SKIN_ANCHORS) - 2)
    skin = SKIN_ANCHORS[i] * (1 - (t - i)) + SKIN_ANCHORS[i + 1] * (t - i)
    skin = np.clip(skin * rng.uniform(0.95, 1.05, 3), 0, 1)
    hair = HAIR_COLORS[rng.choice(len(HAIR_COLORS), p=HAIR_WEIGHTS)] * rng.uniform(0.85, 1.15)
    iris = IRIS_COLORS[rng.choice(len(IRIS_COLORS), p=IRIS_WEIGHTS)] * rng.uniform(0.8, 1.2)
    lips = np.clip(skin * np.array([0.92, 0.62, 0.62]) * rng.uniform(0.8, 1.0) + np.array([0.06, 0.0, 0.02]), 0, 1)
    hsv_a = rng.uniform(0, 1), rng.uniform(0.1, 0.8), rng.uniform(0.15, 0.95)
    cloth_a = _hsv_to_rgb(*hsv_a)
    cloth_b = _hsv_to_rgb((hsv_a[0] + rng.uniform(0.2, 0.8)) % 1.0, rng.uniform(0.0, 0.6), rng.uniform(0.2, 1.0))
    pw = np.asarray(cfg.pattern_weights, dtype=np.float64)
    d = rng.normal(size=3)
    return AppearanceParams(
        skin=skin,
        hair=np.clip(hair, 0, 1),
        iris=np.clip(iris, 0, 1),
        lips=lips,
        cloth_a=cloth_a,
        cloth_b=cloth_b,
        pattern=int(rng.choice(4, p=pw / pw.sum())),
        pattern_freq=float(rng.uniform(12.0, 40.0)),
        pattern_dir=d / np.linalg.norm(d),
        hair_front=float(rng.uniform(0.085, 0.115)),
        hair_back=float(rng.uniform(-0.07, -0.02)),
        bald=bool(rng.uniform() < cfg.bald_fraction),
        long_hair=bool(rng.uniform() < cfg.long_hair_fraction),
        long_hair_length=float(rng.uniform(0.12, 0.30)),
        neckline=int(rng.choice(3)),
        neck_depth=float(rng.uniform(0.02, 0.09)),
        tank_top=bool(rng.uniform() < cfg.tank_top_fraction),
    )


def _hsv_to_rgb(h: float, s: float, v: float) -> np.ndarray:
    k = (np.array([5.0, 3.0, 1.0]) + h * 6.0) % 6.0
    return v - v * s * np.clip(np.minimum(k, 4.0 - k), 0.0, 1.0)


def hair_mask(geo: TexelGeometry, p: AppearanceParams) -> np.ndarray:
    """Indices (into the covered texels) of scalp hair: above a hair line that drops from the
    forehead (`hair_front` above the head centre) to the nape (`hair_back`)."""
    if p.bald:
        return np.zeros(0, dtype=np.int64)
    line = p.hair_back + (p.hair_front - p.hair_back) * geo.scalp_front
    return np.nonzero(geo.scalp_height > line)[0]  # positions within geo.scalp_index


def clothing_mask(geo: TexelGeometry, p: AppearanceParams) -> np.ndarray:
    """Indices (into geo.body_index) of texels below the neckline (scene origin = neck base)."""
    q = geo.body_pos
    x, y, z = q[:, 0], q[:, 1], q[:, 2]
    front = z > 0.0
    base = np.where(front, np.float32(-0.025), np.float32(-0.005))  # lower in front than at the back
    if p.neckline == 1:  # V
        base = base - front * (p.neck_depth * np.clip(1.0 - np.abs(x) / 0.07, 0.0, 1.0))
    elif p.neckline == 2:  # scoop
        base = base - front * (p.neck_depth * np.clip(1.0 - (x / 0.11) ** 2, 0.0, 1.0))
    m = y < base
    if p.tank_top:
        m &= np.abs(x) < 0.12 + 0.25 * np.clip(-y - 0.05, 0.0, 1.0)
    return np.nonzero(m)[0]


def paint_texture(geo: TexelGeometry, p: AppearanceParams, rng: np.random.Generator) -> np.ndarray:
    """The texture [S, S, 4] uint8 (RGB + opaque alpha) of one sample; white where unused."""
    f32 = np.float32
    col = geo.tone[:, None] * p.skin.astype(f32)[None]  # skin with low-frequency tone variation
    palette = {
        LIPS: p.lips,
        BROW: 0.55 * p.hair + 0.45 * 0.6 * p.skin,  # brows are sparser than scalp hair
        SCLERA: np.array([0.93, 0.91, 0.88]),
        IRIS: p.iris,
        PUPIL: np.array([0.03, 0.03, 0.03]),
        MOUTH: np.array([0.35, 0.10, 0.10]),
    }
    for rid, c in palette.items():
        idx = geo.region_index.get(rid)
        if idx is not None and len(idx):
            col[idx] = np.asarray(c, dtype=f32)[None] * geo.detail[idx, None]
    hair = hair_mask(geo, p)
    if len(hair):
        col[geo.scalp_index[hair]] = p.hair.astype(f32)[None] * geo.scalp_strands[hair, None]
    cloth = clothing_mask(geo, p)
    if len(cloth):
        q = geo.body_pos[cloth]
        if p.pattern == 0:
            mix = None
        elif p.pattern == 1:  # stripes
            mix = (np.sin(f32(2 * np.pi * p.pattern_freq) * (q @ p.pattern_dir.astype(f32))) > 0.3).astype(f32)
        elif p.pattern == 2:  # checks
            fq = f32(p.pattern_freq * 0.5)
            mix = ((np.floor(q[:, 0] * fq) + np.floor(q[:, 1] * fq)) % 2).astype(f32)
        else:  # dots
            cell = q[:, :2] * f32(p.pattern_freq)
            frac = cell - np.floor(cell) - 0.5
            mix = ((frac * frac).sum(1) < 0.0625).astype(f32)
        a = p.cloth_a.astype(f32)[None]
        c = a if mix is None else a + (p.cloth_b.astype(f32) - p.cloth_a.astype(f32))[None] * mix[:, None]
        ti = geo.body_index[cloth]
        col[ti] = c * geo.folds[ti, None]  # fabric folds
    # RGBA texels viewed as uint32 make the scatter into the atlas one word per texel.
    c8 = np.full((len(col), 4), 255, dtype=np.uint8)
    c8[:, :3] = np.clip(col * 255.0 + 0.5, 0.0, 255.0)
    words = c8.view(np.uint32)[:, 0]
    size = geo.size
    tex = np.full(size * size, 0xFFFFFFFF, dtype=np.uint32)
    tex[geo.covered] = words
    tex[geo.fill_dst] = words[geo.fill_src]
    return tex.view(np.uint8).reshape(size, size, 4)


# --------------------------------------------------------------------------- long-hair shell


@dataclass
class HairShell:
    """A long-hair shell in the zero-pose scene frame, rigidly attached to the head bone."""

    vertices: np.ndarray  # [V, 3] zero pose
    faces: np.ndarray  # [F, 3]
    uvs: np.ndarray  # [V, 2]
    texture: np.ndarray  # [H, W, 3] uint8


def build_hair_shell(
    neutral_vertices: np.ndarray,
    head_weight: np.ndarray,
    head_center: np.ndarray,
    p: AppearanceParams,
    rng: np.random.Generator,
    n_theta: int = 24,
    n_cap: int = 6,
    n_hang: int = 8,
) -> HairShell:
    """An offset surface around the back and sides of the skull that falls to the shoulders.

    neutral_vertices [V, 3]: this identity's zero-pose neutral body (scene space);
    head_weight [V]: head skinning weight (selects the skull). The cap is an ellipsoid fitted
    to the head vertices (above the ears), grown by a few millimetres; below ear level the
    hair hangs straight down, flaring slightly, for `p.long_hair_length` metres.
    """
    head = neutral_vertices[head_weight > 0.9]
    rel = head - head_center
    upper = rel[rel[:, 1] > -0.02]
    radii = np.maximum(np.abs(upper).max(0), 1e-3) * np.array([1.08, 1.05, 1.06]) + 0.006
    theta_min = np.radians(rng.uniform(62.0, 80.0))  # leaves the face open
    thetas = np.linspace(theta_min, 2 * np.pi - theta_min, n_theta)  # measured from +Z (face)
    rows = []
    # Cap: from the crown (elevation 85 deg) down to ear level (0 deg).
    for phi in np.linspace(np.radians(85.0), 0.0, n_cap):
        rows.append(np.stack([radii[0] * np.cos(phi) * np.sin(thetas), np.full_like(thetas, radii[1] * np.sin(phi)), radii[2] * np.cos(phi) * np.cos(thetas)], -1))
    # Hanging part: straight down with a slight outward flare.
    base = rows[-1]
    for k in range(1, n_hang + 1):
        s = k / n_hang
        drop = s * p.long_hair_length
        flare = 1.0 + 0.35 * s
        ring = base * np.array([flare, 1.0, flare])
        ring[:, 1] = -drop
        rows.append(ring)
    grid = np.stack(rows)  # [R, T, 3]
    R, T = grid.shape[:2]
    verts = (grid + head_center).reshape(-1, 3)
    ii, jj = np.meshgrid(np.arange(R - 1), np.arange(T - 1), indexing="ij")
    a = (ii * T + jj).ravel()
    faces = np.concatenate([np.stack([a, a + T, a + 1], -1), np.stack([a + 1, a + T, a + T + 1], -1)])
    uv_u = np.tile(np.linspace(0, 1, T), R)
    uv_v = np.repeat(np.linspace(1, 0, R), T)
    tex = _hair_texture(p, rng)
    return HairShell(verts.astype(np.float32), faces.astype(np.int64), np.stack([uv_u, uv_v], -1).astype(np.float32), tex)


def _hair_texture(p: AppearanceParams, rng: np.random.Generator, w: int = 128, h: int = 64) -> np.ndarray:
    u = np.arange(w) / w
    phase = rng.uniform(0, 2 * np.pi, 3)
    strands = 1.0 + 0.10 * np.sin(2 * np.pi * 37 * u + phase[0]) + 0.06 * np.sin(2 * np.pi * 91 * u + phase[1])
    shade = np.linspace(1.0, 0.9, h)[:, None]
    img = p.hair[None, None, :] * (strands[None, :, None] * shade[..., None])
    return (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)


# ------------------------------------------------------------------------------ torso skirt


@dataclass
class Skirt:
    """Closes the cut at the bottom of the upper-body mesh: every open boundary edge low on
    the torso and arms is extruded straight down, reusing the texture coordinates of the edge
    (the clothing colour there is stretched downward), so that no mesh edge and no white gap
    appear at the bottom of a portrait."""

    boundary_vertices: np.ndarray  # [K] body vertex ids that get a lower copy
    faces: np.ndarray  # [2E, 3] ids into concat(body vertices, lower copies)
    face_uvs: np.ndarray  # [2E, 3] uv ids of the body's layout
    drop: float = 0.35  # metres below the lowest boundary vertex

    def extend(self, vertices: np.ndarray) -> np.ndarray:
        """Posed body vertices [V, 3] -> [V + K, 3] with the lower copies appended."""
        low = vertices[self.boundary_vertices].copy()
        low[:, 1] = vertices[self.boundary_vertices, 1].min() - self.drop
        return np.concatenate([vertices, low])

    def extend_batch(self, vertices):
        """The lower copies only, for a torch batch [B, V, 3] -> [B, K, 3]."""
        low = vertices[:, self.boundary_vertices].clone()
        low[..., 1] = low[..., 1].amin(1, keepdim=True) - self.drop
        return low


def build_skirt(faces: np.ndarray, face_uvs: np.ndarray, neutral_vertices: np.ndarray, max_y: float = -0.1) -> Skirt:
    """Find the open boundary edges below `max_y` (scene metres, neutral body) and extrude them."""
    e = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    e_uv = np.concatenate([face_uvs[:, [0, 1]], face_uvs[:, [1, 2]], face_uvs[:, [2, 0]]])
    key = np.sort(e, axis=1)
    _, inv, counts = np.unique(key, axis=0, return_inverse=True, return_counts=True)
    open_edge = counts[inv.reshape(-1)] == 1
    low = (neutral_vertices[e[:, 0], 1] < max_y) & (neutral_vertices[e[:, 1], 1] < max_y)
    sel = open_edge & low
    edges, edges_uv = e[sel], e_uv[sel]
    bv = np.unique(edges)
    lower = np.full(int(faces.max()) + 1, -1, dtype=np.int64)
    V = len(neutral_vertices)
    lower[bv] = V + np.arange(len(bv))
    a, b = edges[:, 0], edges[:, 1]
    ua, ub = edges_uv[:, 0], edges_uv[:, 1]
    sk_faces = np.concatenate([np.stack([a, b, lower[b]], -1), np.stack([a, lower[b], lower[a]], -1)])
    sk_uvs = np.concatenate([np.stack([ua, ub, ub], -1), np.stack([ua, ub, ua], -1)])
    return Skirt(bv, sk_faces.astype(np.int64), sk_uvs.astype(np.int64))
