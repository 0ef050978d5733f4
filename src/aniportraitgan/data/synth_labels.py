"""Labels of a SynthPortraits sample: the priors they are drawn from and one sample's draw.

`draw_sample(seed, index, ...)` is a pure function of (seed, index): its generator is
`numpy.random.default_rng(SeedSequence([seed, index]))`, so a sample's labels and appearance
seed never depend on the worker count or on which samples already exist.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.spatial.transform import Rotation


@dataclass
class LabelPriors:
    """How labels are drawn (angles in degrees). Ranges are truncated normals: std = range/2,
    clipped to +-range, so most samples are near frontal/neutral, as in portrait photos."""

    head_yaw: float = 35.0
    head_pitch: float = 20.0
    head_roll: float = 10.0
    neck_share: float = 0.4  # part of the head rotation carried by the neck joint
    collar: float = 8.0  # clavicle rotation range (shrug / forward)
    shoulder: float = 15.0  # upper-arm rotation range
    cam_yaw: float = 30.0
    cam_pitch: float = 15.0
    # Framing follows the person, as crops of real photos do: the look-at point is the posed
    # neck base (neck01 joint) plus `look_at` and the radius is drawn from `cam_radius`, both
    # scaled by the person's neck-to-head-centre distance over that of the mean body.
    cam_radius: tuple[float, float] = (1.55, 1.75)  # metres for the mean body, uniform
    cam_fov: float = 20.0
    look_at: tuple[float, float, float] = (0.0, 0.07, 0.0)  # metres above the neck base (mean body)
    look_at_jitter: float = 0.01  # metres (std, per axis)
    exp_neutral: float = 0.10  # share of samples with an exactly neutral face
    exp_strong: float = 0.20  # share of samples with one or two strong expressions
    exp_mild_count: float = 3.0  # Poisson mean of mildly active coefficients
    exp_mild_max: float = 0.35
    exp_symmetric: float = 0.7  # chance that a Left/Right coefficient is mirrored
    id_std: float = 1.0  # z_id ~ N(0, id_std^2)
    light_azimuth: float = 60.0
    light_elevation: tuple[float, float] = (0.0, 60.0)
    ambient: tuple[float, float] = (0.35, 0.6)
    diffuse: tuple[float, float] = (0.35, 0.65)


def _tnormal(rng: np.random.Generator, limit: float, size=None) -> np.ndarray:
    """Normal with std limit/2, clipped at +-limit (degrees in, radians out)."""
    return np.radians(np.clip(rng.normal(0.0, limit / 2.0, size), -limit, limit))


def _rotvec_yxz(yaw: float, pitch: float, roll: float) -> np.ndarray:
    return Rotation.from_euler("YXZ", [yaw, pitch, roll]).as_rotvec()


def sample_expression(rng: np.random.Generator, names: list[str], pr: LabelPriors) -> np.ndarray:
    """Mostly near neutral, sometimes strong; Left/Right pairs are usually mirrored."""
    E = len(names)
    z = np.zeros(E)
    index = {n: i for i, n in enumerate(names)}

    def put(i: int, value: float) -> None:
        z[i] = max(z[i], value)
        n = names[i]
        for a, b in (("Left", "Right"), ("Right", "Left")):
            if n.endswith(a) and n[: -len(a)] + b in index and rng.uniform() < pr.exp_symmetric:
                j = index[n[: -len(a)] + b]
                z[j] = max(z[j], value * rng.uniform(0.85, 1.0))

    u = rng.uniform()
    if u < pr.exp_neutral:
        return z.astype(np.float32)
    for i in rng.choice(E, size=min(rng.poisson(pr.exp_mild_count), E), replace=False):
        put(int(i), rng.uniform(0.0, pr.exp_mild_max))
    if u > 1.0 - pr.exp_strong:
        for i in rng.choice(E, size=int(rng.integers(1, 3)), replace=False):
            put(int(i), rng.uniform(0.5, 1.0))
    return np.clip(z, 0.0, 1.0).astype(np.float32)


@dataclass
class SampleDraw:
    z_id: np.ndarray
    z_exp: np.ndarray
    z_pose: np.ndarray
    cam_yaw: float
    cam_pitch: float
    cam_radius: float
    cam_fov: float
    cam_look_at: np.ndarray
    light_dir: np.ndarray
    ambient: float
    diffuse: float
    appearance_seed: int


def draw_sample(seed: int, index: int, id_dim: int, exp_names: list[str], pr: LabelPriors) -> SampleDraw:
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), int(index)]))
    z_id = (rng.normal(size=id_dim) * pr.id_std).astype(np.float32)
    z_exp = sample_expression(rng, exp_names, pr)
    yaw, pitch, roll = _tnormal(rng, pr.head_yaw), _tnormal(rng, pr.head_pitch), _tnormal(rng, pr.head_roll)
    s = pr.neck_share
    z_pose = np.zeros((6, 3))
    z_pose[0] = _rotvec_yxz(s * yaw, s * pitch, s * roll)  # neck
    z_pose[3] = _rotvec_yxz((1 - s) * yaw, (1 - s) * pitch, (1 - s) * roll)  # head
    for j in (1, 2):  # collars: shrug (about the forward axis) and forward/back (about up)
        z_pose[j] = [0.0, _tnormal(rng, pr.collar) * 0.5, _tnormal(rng, pr.collar)]
    for j in (4, 5):  # shoulders: raise/lower the arm and swing it forward/back
        z_pose[j] = [_tnormal(rng, pr.shoulder) * 0.6, 0.0, _tnormal(rng, pr.shoulder)]
    look = np.asarray(pr.look_at) + rng.normal(0.0, pr.look_at_jitter, 3)
    az = np.radians(rng.uniform(-pr.light_azimuth, pr.light_azimuth))
    el = np.radians(rng.uniform(*pr.light_elevation))
    light = np.array([np.cos(el) * np.sin(az), np.sin(el), np.cos(el) * np.cos(az)])
    return SampleDraw(
        z_id=z_id,
        z_exp=z_exp,
        z_pose=z_pose.astype(np.float32),
        cam_yaw=float(_tnormal(rng, pr.cam_yaw)),
        cam_pitch=float(_tnormal(rng, pr.cam_pitch)),
        cam_radius=float(rng.uniform(*pr.cam_radius)),
        cam_fov=float(pr.cam_fov),
        cam_look_at=look.astype(np.float32),
        light_dir=light.astype(np.float32),
        ambient=float(rng.uniform(*pr.ambient)),
        diffuse=float(rng.uniform(*pr.diffuse)),
        appearance_seed=int(rng.integers(2**63 - 1)),
    )
