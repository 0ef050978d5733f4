"""Per-sample procedural appearance painted on the texel geometry of the UV atlas.

A sample's random parameters (skin, hair, iris and clothing colours, hair line, neckline,
clothing pattern) are drawn by `sample_appearance`; `paint_texture` evaluates them on the
texel positions of `render.texels.TexelGeometry`. Everything here is numpy and deterministic
for a given `numpy.random.Generator` state.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from aniportraitgan.render.texels import (
    BROW,
    IRIS,
    LIPS,
    MOUTH,
    PUPIL,
    SCLERA,
    TexelGeometry,
)

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
