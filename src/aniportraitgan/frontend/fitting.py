"""Fit body-model labels (z_id, z_exp, z_pose, camera) to 2D observations: batched torch MAP.

Shared by `data prepare` (independent photos), `track` (a clip: one identity, smooth motion) and
`invert` (one photo, identity given or solved). `fit(observations, ...)` solves every frame of a
batch at once with Adam on the exact, differentiable portrait body model, restricted to the
vertices it needs (the 68 landmark vertices; joints come from the full kinematic chain).

Energy per frame (every term a Gaussian negative log-likelihood, Huber-robust for the data):

- landmarks: the 68 projected body-model landmarks vs the observed ones (`Observations.landmarks`,
  e.g. mediapipe's face mesh mapped by `frontend.correspondence`), std `landmark_sigma_px`;
- shoulders: the projected shoulder points vs pose keypoints 11/12, std `shoulder_sigma_px`;
- the shoulder line's turn in depth vs an observed one (`torso_angle`), std `torso_sigma_deg`;
- priors: z_id ~ N(0, 1); head rotation (relative to the body), collars and upper arms ~ N(0,
  sigma) per axis; camera yaw/pitch ~ N(0, sigma); radius ~ 1.65 s (log std 0.1) and look-at ~
  neck base + 7 cm s up (std 3 cm s), s the person's size: the SynthPortraits framing; z_exp ~
  N(init, `exp_sigma`) around its start (mediapipe's blendshapes), clamped to [0, 1];
- with `temporal_weight` > 0, squared differences of consecutive frames' head rotation, pose,
  expression and camera (in prior-std units) times that weight; with `shared_identity`, one
  z_id for all frames.

Parameterisation (what makes it converge): the face's rotation relative to the camera is a
parameter of its own (the landmarks pin it down; mediapipe's transformation matrix starts it),
and the head rotation w relative to the body follows from it and the camera's yaw and pitch, so
trading camera yaw against neck turn moves only the shoulders. w is split over the neck (0.4 w)
and head (0.6 w) joints as SynthPortraits draws it (the body model then gives exactly exp(w)).
The camera is `look_at_cameras(yaw, pitch, radius, fov, look_at)` with look-at and radius
relative to the person's framing (fov fixed at `fov_deg` unless `fit_fov`, which solves fov with
the radius at its prior): the same convention as the synthetic labels. Adam on all frames at
once: first the camera and face rotation (`rigid_steps`), then everything.

What 2D points show (measured, docs/dataset.md): the face's rotation to the camera, the
expression where landmarks move, the reprojection; weakly: how a turn splits between camera and
neck (only the shoulders and their depth tell) and the arms.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np
import torch

from aniportraitgan.cameras import Cameras, look_at_cameras
from aniportraitgan.errors import InputError
from aniportraitgan.frames import opencv_to_opengl_c2w
from aniportraitgan.frontend.correspondence import GROUPS
from aniportraitgan.frontend.fit_body import FitBody, fit_body
from aniportraitgan.rotations import axis_angle_to_matrix, matrix_to_axis_angle

NECK_SHARE = 0.4  # share of the head rotation on the neck joint (SynthPortraits' draw)
FACE_STD = 0.3  # radians per unit of the face-rotation parameter (optimiser scale only, no prior)
REF_RESOLUTION = 512  # pixel sigmas are given for a 512-pixel image and scale with it
LANDMARK_GROUP_WEIGHTS = {"jaw": 0.5}  # the contour points follow the silhouette less exactly


@dataclass
class FitPriors:
    """Prior standard deviations (degrees for angles) and framing means."""

    id_std: float = 1.0
    head_deg: tuple[float, float, float] = (20.0, 30.0, 12.0)  # about scene x (pitch), y (yaw), z (roll)
    collar_deg: tuple[float, float, float] = (1.0, 3.0, 5.0)
    shoulder_deg: tuple[float, float, float] = (6.0, 1.0, 9.0)
    cam_yaw_deg: float = 20.0
    cam_pitch_deg: float = 12.0
    radius: float = 1.65  # metres for the mean body (times the person's size)
    log_radius_std: float = 0.1
    look_at_up: float = 0.07  # metres above the neck base (mean body)
    look_at_std: float = 0.03
    fov_deg: float = 20.0
    log_fov_std: float = 0.3  # only with fit_fov


@dataclass
class FitConfig:
    steps: int = 250
    rigid_steps: int = 60  # first camera + head rotation only
    lr: float = 0.05
    fov_deg: float = 20.0
    fit_fov: bool = False
    landmark_sigma_px: float = 2.0
    shoulder_sigma_px: float = 15.0
    torso_sigma_deg: float = 20.0
    exp_sigma: float = 0.25
    huber: float = 3.0  # in sigmas
    priors: FitPriors = field(default_factory=FitPriors)


@dataclass
class Observations:
    """What a batch of N frames shows, in pixels of a square image of `image_size`.

    landmarks [N, 68, 2] and landmark_weight [N, 68] (0 = not seen); shoulders [N, 2, 2]
    (subject's left, right) and shoulder_weight [N, 2]; z_exp_init [N, 52] (e.g. blendshapes in
    body-model order) or None for neutral; head_rotation_camera [N, 3, 3] or None: the head's
    rotation in the camera frame with OpenGL axes (x right, y up, z toward the viewer), which is
    the rotation part of mediapipe's facial transformation matrix. torso_angle [N] (radians) and
    torso_weight [N]: the shoulder line's turn in depth, atan2(z_left - z_right, x_left - x_right)
    in camera axes (x right, z away from the camera), e.g. from mediapipe pose's relative depths;
    it is what tells the camera's yaw from the head's.
    """

    image_size: int
    landmarks: torch.Tensor
    landmark_weight: torch.Tensor | None = None
    shoulders: torch.Tensor | None = None
    shoulder_weight: torch.Tensor | None = None
    z_exp_init: torch.Tensor | None = None
    head_rotation_camera: torch.Tensor | None = None
    torso_angle: torch.Tensor | None = None
    torso_weight: torch.Tensor | None = None

    def __post_init__(self) -> None:
        self.landmarks = torch.as_tensor(self.landmarks, dtype=torch.float32)
        if self.landmarks.ndim != 3 or self.landmarks.shape[1:] != (68, 2):
            raise InputError(f"landmarks must be [N, 68, 2], got {tuple(self.landmarks.shape)}")
        N = len(self)
        if self.landmark_weight is None:
            self.landmark_weight = torch.ones(N, 68)
        if self.shoulders is None:
            self.shoulders, self.shoulder_weight = torch.zeros(N, 2, 2), torch.zeros(N, 2)
        elif self.shoulder_weight is None:
            self.shoulder_weight = torch.ones(N, 2)
        for name, shape in (("landmark_weight", (N, 68)), ("shoulders", (N, 2, 2)), ("shoulder_weight", (N, 2)),
                            ("z_exp_init", (N, 52)), ("head_rotation_camera", (N, 3, 3)), ("torso_angle", (N,)),
                            ("torso_weight", (N,))):
            value = getattr(self, name)
            if value is None:
                continue
            value = torch.as_tensor(value, dtype=torch.float32)
            if tuple(value.shape) != shape or not torch.isfinite(value).all():
                raise InputError(f"{name} must be a finite [{', '.join(map(str, shape))}] tensor, got {tuple(value.shape)}")
            setattr(self, name, value)
        if self.torso_angle is not None and self.torso_weight is None:
            self.torso_weight = torch.ones(N)
        if not torch.isfinite(self.landmarks).all():
            raise InputError("landmarks contain NaN or inf")

    def __len__(self) -> int:
        return self.landmarks.shape[0]


@dataclass
class FitResult:
    """Fitted labels of N frames (float32 tensors) and the remaining errors in pixels."""

    z_id: torch.Tensor  # [N, 40]
    z_exp: torch.Tensor  # [N, 52]
    z_pose: torch.Tensor  # [N, 6, 3]
    cam_yaw: torch.Tensor  # [N] radians
    cam_pitch: torch.Tensor
    cam_radius: torch.Tensor  # metres
    cam_fov: torch.Tensor  # degrees
    cam_look_at: torch.Tensor  # [N, 3]
    landmark_error_px: torch.Tensor  # [N] mean over the seen landmarks
    shoulder_error_px: torch.Tensor  # [N] mean over the seen shoulders (nan when none)
    image_size: int

    def __len__(self) -> int:
        return self.z_id.shape[0]

    def cameras(self) -> Cameras:
        return look_at_cameras(self.cam_yaw, self.cam_pitch, self.cam_radius, self.cam_fov, self.cam_look_at)

    def select(self, index) -> FitResult:
        pick = {k: getattr(self, k)[index] for k in ("z_id", "z_exp", "z_pose", "cam_yaw", "cam_pitch", "cam_radius",
                                                    "cam_fov", "cam_look_at", "landmark_error_px", "shoulder_error_px")}
        return FitResult(image_size=self.image_size, **pick)

    def labels(self) -> dict[str, np.ndarray]:
        """The dataset label arrays (docs/dataset.md names)."""
        return {k: getattr(self, k).detach().cpu().numpy().astype(np.float32)
                for k in ("z_id", "z_exp", "z_pose", "cam_yaw", "cam_pitch", "cam_radius", "cam_fov", "cam_look_at")}


def landmark_group_weights() -> torch.Tensor:
    """[68] relative weights of the landmarks (LANDMARK_GROUP_WEIGHTS by iBUG group)."""
    w = torch.ones(68)
    for name, weight in LANDMARK_GROUP_WEIGHTS.items():
        w[list(GROUPS[name])] = weight
    return w


def _huber(r: torch.Tensor, delta: float) -> torch.Tensor:
    a = r.abs()
    return torch.where(a < delta, 0.5 * r * r, delta * (a - 0.5 * delta))


class _Problem:
    """Parameters (in prior-std units) and the energy of one fit."""

    def __init__(self, body: FitBody, obs: Observations, cfg: FitConfig, shared_identity: bool, temporal_weight: float,
                 z_id: torch.Tensor | None, init: FitResult | None) -> None:
        self.body, self.obs, self.cfg = body, obs, cfg
        pr = cfg.priors
        N = len(obs)
        self.N = N
        self.temporal_weight = float(temporal_weight)
        rad = math.radians
        self.head_std = torch.tensor([rad(a) for a in pr.head_deg])
        self.pose_std = torch.tensor([[rad(a) for a in pr.collar_deg]] * 2 + [[rad(a) for a in pr.shoulder_deg]] * 2)
        self.yaw_std, self.pitch_std = rad(pr.cam_yaw_deg), rad(pr.cam_pitch_deg)
        self.fixed_id = z_id is not None
        n_id = 1 if shared_identity else N
        if z_id is not None:
            z_id = torch.as_tensor(z_id, dtype=torch.float32)
            self.z_id_fixed = z_id.expand(N, -1) if z_id.shape[0] == 1 else z_id
            self.id_p = torch.zeros(0)
        elif init is not None:
            base = init.z_id.mean(0, keepdim=True) if shared_identity else init.z_id
            self.id_p = (base / pr.id_std).clone()
        else:
            self.id_p = torch.zeros(n_id, body.id_dim)
        self.shared = shared_identity
        exp0 = obs.z_exp_init if obs.z_exp_init is not None else torch.zeros(N, body.exp_dim)
        self.exp0 = exp0.clamp(0, 1)
        # The camera is parameterised relative to the person's framing (look-at point and radius
        # scale with the neck position and size), in prior-std units.
        self.fov_p = torch.zeros(N)
        if init is not None:
            self.exp = init.z_exp.clone()
            self.pose_p = init.z_pose[:, [1, 2, 4, 5]] / self.pose_std
            self.yaw_p, self.pitch_p = init.cam_yaw / self.yaw_std, init.cam_pitch / self.pitch_std
            head = axis_angle_to_matrix(init.z_pose[:, 3] / (1 - NECK_SHARE))
            self.face_p = matrix_to_axis_angle(self._camera_rotation().transpose(1, 2) @ head) / FACE_STD
            with torch.no_grad():
                _, _, neck, _, size = body(self.z_id(), self.exp, init.z_pose)
            self.look_p = (init.cam_look_at - self._framing(neck, size)) / (pr.look_at_std * size[:, None])
            self.radius_p = torch.log(init.cam_radius / (pr.radius * size)) / pr.log_radius_std
            if cfg.fit_fov:
                self.fov_p = torch.log(init.cam_fov / pr.fov_deg) / pr.log_fov_std
        else:
            self.exp = self.exp0.clone()
            self.yaw_p, self.pitch_p = torch.zeros(N), torch.zeros(N)
            if obs.torso_angle is not None:  # the shoulder line turns by about -yaw in the camera
                yaw = -obs.torso_angle * (obs.torso_weight > 0)
                self.yaw_p = (yaw / self.yaw_std).clamp(-2.0, 2.0)
            self.pose_p = torch.zeros(N, 4, 3)
            self.look_p, self.radius_p = torch.zeros(N, 3), torch.zeros(N)
            self.face_p = torch.zeros(N, 3)
            if obs.head_rotation_camera is not None:
                self.face_p = matrix_to_axis_angle(obs.head_rotation_camera) / FACE_STD
        for t in self.tensors():
            t.requires_grad_(True)
        self.lm_weight = obs.landmark_weight * landmark_group_weights()

    def tensors(self, rigid: bool = False) -> list[torch.Tensor]:
        cam = [self.yaw_p, self.pitch_p, self.look_p, self.fov_p if self.cfg.fit_fov else self.radius_p]
        if rigid:
            return cam + [self.face_p]
        return cam + [self.face_p, self.pose_p, self.exp] + ([] if self.fixed_id else [self.id_p])

    def z_id(self) -> torch.Tensor:
        if self.fixed_id:
            return self.z_id_fixed
        z = self.id_p * self.cfg.priors.id_std
        return z.expand(self.N, -1) if self.shared else z

    def _camera_rotation(self) -> torch.Tensor:
        """The main camera's axes in scene space, OpenGL convention [N, 3, 3] (yaw, pitch only)."""
        pitch = (self.pitch_p * self.pitch_std).clamp(-1.4, 1.4)
        unit = look_at_cameras(self.yaw_p * self.yaw_std, pitch, 1.0, self.cfg.fov_deg, torch.zeros(1, 3))
        return opencv_to_opengl_c2w(unit.c2w)[:, :3, :3]

    def head_rotation(self) -> torch.Tensor:
        """Head axis-angle w [N, 3] relative to the body: the face's rotation in the camera
        (a parameter: it is what the landmarks pin down) carried into the scene by the camera."""
        return matrix_to_axis_angle(self._camera_rotation() @ axis_angle_to_matrix(self.face_p * FACE_STD))

    def z_pose(self) -> torch.Tensor:
        w = self.head_rotation()
        other = self.pose_p * self.pose_std
        return torch.stack([NECK_SHARE * w, other[:, 0], other[:, 1], (1 - NECK_SHARE) * w, other[:, 2], other[:, 3]], 1)

    def _framing(self, neck: torch.Tensor, size: torch.Tensor) -> torch.Tensor:
        return neck + torch.tensor([0.0, self.cfg.priors.look_at_up, 0.0]) * size[:, None]

    def camera_values(self, neck: torch.Tensor, size: torch.Tensor):
        """(yaw, pitch, radius, fov, look_at) of the current parameters for this person."""
        pr = self.cfg.priors
        pitch = (self.pitch_p * self.pitch_std).clamp(-1.4, 1.4)
        look = self._framing(neck, size) + self.look_p * pr.look_at_std * size[:, None]
        if self.cfg.fit_fov:
            radius = pr.radius * size
            fov = pr.fov_deg * torch.exp(self.fov_p * pr.log_fov_std)
        else:
            radius = pr.radius * size * torch.exp(self.radius_p * pr.log_radius_std)
            fov = torch.full((self.N,), self.cfg.fov_deg)
        return self.yaw_p * self.yaw_std, pitch, radius, fov, look

    def cameras(self, neck: torch.Tensor, size: torch.Tensor) -> Cameras:
        return look_at_cameras(*self.camera_values(neck, size))

    def energy(self, details: bool = False):
        cfg, obs = self.cfg, self.obs
        R = obs.image_size
        scale = R / REF_RESOLUTION
        lms, shoulders, neck, _, size = self.body(self.z_id(), self.exp, self.z_pose())
        cams = self.cameras(neck, size)
        uv, _ = cams.project(torch.cat([lms, shoulders], 1), R, R)
        d_lm = (uv[:, :68] - obs.landmarks).norm(dim=-1)
        d_sh = (uv[:, 68:] - obs.shoulders).norm(dim=-1)
        e = (_huber(d_lm / (cfg.landmark_sigma_px * scale), cfg.huber) * self.lm_weight).sum(1)
        e = e + (_huber(d_sh / (cfg.shoulder_sigma_px * scale), cfg.huber) * obs.shoulder_weight).sum(1)
        if obs.torso_angle is not None:
            line = ((shoulders[:, 0] - shoulders[:, 1])[:, None] @ cams.c2w[:, :3, :3])[:, 0]  # camera axes
            angle = torch.atan2(line[:, 2], line[:, 0])
            e = e + 0.5 * ((angle - obs.torso_angle) / math.radians(cfg.torso_sigma_deg)).square() * obs.torso_weight
        cam = [self.yaw_p, self.pitch_p, self.fov_p if cfg.fit_fov else self.radius_p]
        head = self.head_rotation() / self.head_std
        e = e + 0.5 * (head.square().sum(1) + self.pose_p.square().sum((1, 2)) + self.look_p.square().sum(1)
                       + sum(c.square() for c in cam))
        e = e + 0.5 * ((self.exp - self.exp0) / cfg.exp_sigma).square().sum(1)
        total = e.sum()
        if not self.fixed_id:
            total = total + 0.5 * self.id_p.square().sum()
        if self.temporal_weight > 0 and self.N > 1:
            series = torch.cat([head, self.pose_p.flatten(1), self.exp / cfg.exp_sigma, self.look_p,
                                torch.stack(cam, 1)], 1)
            total = total + self.temporal_weight * (series[1:] - series[:-1]).square().sum()
        if details:
            return total, d_lm, d_sh, (neck, size)
        return total

    def run(self) -> None:
        cfg = self.cfg
        for stage, steps in (("rigid", min(cfg.rigid_steps, cfg.steps)), ("all", max(cfg.steps - cfg.rigid_steps, 0))):
            if steps <= 0:
                continue
            params = self.tensors(rigid=stage == "rigid")
            opt = torch.optim.Adam(params, lr=cfg.lr)
            sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps, eta_min=cfg.lr * 0.05)
            for _ in range(steps):
                opt.zero_grad(set_to_none=True)
                self.energy().backward()
                opt.step()
                sched.step()
                with torch.no_grad():
                    self.exp.clamp_(0.0, 1.0)
                    self.pitch_p.clamp_(-1.3 / self.pitch_std, 1.3 / self.pitch_std)

    def result(self) -> FitResult:
        with torch.no_grad():
            _, d_lm, d_sh, (neck, size) = self.energy(details=True)
            yaw, pitch, radius, fov, look = self.camera_values(neck, size)
            w, ws = self.obs.landmark_weight, self.obs.shoulder_weight
            lm_err = (d_lm * (w > 0)).sum(1) / (w > 0).sum(1).clamp_min(1)
            sh_err = torch.where((ws > 0).any(1), (d_sh * (ws > 0)).sum(1) / (ws > 0).sum(1).clamp_min(1), torch.full_like(lm_err, float("nan")))
            return FitResult(
                z_id=self.z_id().detach().clone(), z_exp=self.exp.detach().clone(), z_pose=self.z_pose().detach(),
                cam_yaw=yaw.detach().clone(), cam_pitch=pitch.detach().clone(), cam_radius=radius.detach().clone(),
                cam_fov=fov.detach().clone(), cam_look_at=look.detach().clone(),
                landmark_error_px=lm_err, shoulder_error_px=sh_err, image_size=self.obs.image_size,
            )


def fit(
    observations: Observations,
    config: FitConfig | None = None,
    *,
    shared_identity: bool = False,
    temporal_weight: float = 0.0,
    z_id: torch.Tensor | None = None,
    init: FitResult | None = None,
    body: FitBody | None = None,
) -> FitResult:
    """Solve the labels of every frame of `observations` (see the module docstring).

    shared_identity: one z_id for the whole batch (a video clip of one person).
    temporal_weight: smoothness of consecutive frames (frames in time order); 0 = independent.
    z_id: a known identity ([40], [1, 40] or [N, 40]), held fixed (e.g. `invert` of a photo of
    a person already fitted). init: a previous result to start from (warm start)."""
    cfg = config or FitConfig()
    if len(observations) == 0:
        raise InputError("fit needs at least one frame")
    if temporal_weight < 0:
        raise InputError(f"temporal_weight must be >= 0, got {temporal_weight}")
    if z_id is not None:
        z_id = torch.as_tensor(z_id, dtype=torch.float32).reshape(-1, torch.as_tensor(z_id).shape[-1])
        if z_id.shape[0] not in (1, len(observations)):
            raise InputError(f"z_id must be [40], [1, 40] or [{len(observations)}, 40], got {tuple(z_id.shape)}")
    with torch.enable_grad():
        problem = _Problem(body or fit_body(), observations, cfg, shared_identity, temporal_weight, z_id, init)
        problem.run()
        return problem.result()


def with_steps(config: FitConfig, steps: int, rigid_steps: int = 0) -> FitConfig:
    """A copy of `config` with other step counts (a warm-started refinement needs fewer)."""
    return replace(config, steps=steps, rigid_steps=rigid_steps)


def blendshapes_to_body(scores: dict[str, float], names: list[str]) -> np.ndarray:
    """mediapipe blendshape scores by ARKit name -> z_exp [52] in the body model's order (names
    it lacks, such as tongueOut, are 0)."""
    return np.clip(np.array([float(scores.get(n, 0.0)) for n in names], dtype=np.float32), 0.0, 1.0)
