"""`aniportraitgan track VIDEO --out drive.npz`: a talking video -> keyframes, one identity.

1. detect: every frame goes through `detection.Detector` in video mode (mediapipe's VIDEO mode
   face landmarker, tracking pose model), giving the 478 face points (mapped to the body model's
   68 by `correspondence`), the shoulders, the 52 blendshapes and the head rotation;
2. crop: a scale and shift per frame (`photos.Similarity`) that puts the detected points where
   the SynthPortraits framing puts the mean body, smoothed over `crop_smooth_s`, so that the
   fit sees every frame as the dataset's portraits are framed (it moves points, no pixels);
3. fit: `fitting.fit` over the clip with one shared identity and the temporal prior (consecutive
   frames' pose, expression and camera differences; `temporal_weight` is given for 25 frames/s
   and scaled by (fps / 25)^2 so that the smoothing lasts as long in seconds at any frame rate);
   clips longer than `chunk_frames` solve the identity on `identity_frames` frames spread over
   the clip, then fit chunks with that identity held;
4. frames without a face are filled by interpolation between the nearest tracked frames
   (expression and camera linearly, joint rotations by slerp; held before the first and after
   the last) and reported.

The result (`TrackResult`) holds Keyframes (expression [N, 52] with tongueOut at 0 - mediapipe
does not give it -, pose [N, 6, 3], camera [N, 2]), the frame rate, the per-frame fit error and
the frames without a face; `save` writes the keyframe .npz that `animate` reads.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, fields, replace

import numpy as np
import torch
from tqdm import tqdm

from aniportraitgan.animation.driving_formats import TRACK_FORMAT, fill_missing_frames
from aniportraitgan.animation.keyframes import ARKIT_NAMES, Keyframes
from aniportraitgan.atomic import atomic_write
from aniportraitgan.cameras import look_at_cameras
from aniportraitgan.errors import InputError
from aniportraitgan.frontend.detection import Detector
from aniportraitgan.frontend.fit_body import fit_body
from aniportraitgan.frontend.fitting import NECK_SHARE, FitConfig, Observations, blendshapes_to_body, fit
from aniportraitgan.frontend.photos import Similarity
from aniportraitgan.frontend.video_input import TRUNCATED_SHARE, open_video
from aniportraitgan.rotations import axis_angle_to_matrix, matrix_to_axis_angle

REFERENCE_FPS = 25.0  # temporal_weight is given at this frame rate
OBSERVATION_FIELDS = {f.name for f in fields(Observations)}  # the torso angle is used where the fit takes it


@dataclass
class TrackConfig:
    fit: FitConfig = field(default_factory=lambda: FitConfig(steps=120, rigid_steps=30))
    temporal_weight: float = 2.0
    crop_resolution: int = 512
    crop_smooth_s: float = 0.4
    max_side: int = 960  # larger videos are scaled down for detection
    min_confidence: float = 0.5
    min_shoulder_visibility: float = 0.5
    chunk_frames: int = 1500
    identity_frames: int = 300
    # mediapipe pose's shoulder depths as the torso's turn: measured on a known clip they follow
    # the head (28 deg of "torso turn" during a 34 deg head turn, the body still), so they are
    # left out by default; a camera orbiting the person is then tracked as head motion.
    use_torso_depth: bool = False
    # A talking video's camera holds still: the camera (yaw, pitch) is averaged over this many
    # seconds and the head re-posed so that it looks the same from the new camera (the fit
    # alone splits a head turn between head and camera by their priors); 0 = per frame.
    camera_smooth_s: float = 2.0

    def validate(self) -> None:
        if not (math.isfinite(self.temporal_weight) and self.temporal_weight >= 0):
            raise InputError(f"temporal_weight must be >= 0, got {self.temporal_weight}")
        if not (math.isfinite(self.camera_smooth_s) and self.camera_smooth_s >= 0):
            raise InputError(f"camera_smooth_s must be >= 0, got {self.camera_smooth_s}")
        if self.chunk_frames < 2 or self.identity_frames < 1:
            raise InputError("chunk_frames must be >= 2 and identity_frames >= 1")


@dataclass
class ClipDetections:
    """What the detector found in N frames of size (H, W), in pixels of those frames."""

    size: tuple[int, int]
    found: np.ndarray  # [N] bool: a face
    landmarks: np.ndarray  # [N, 68, 2]
    shoulders: np.ndarray  # [N, 2, 2]
    shoulder_weight: np.ndarray  # [N, 2]
    blendshapes: np.ndarray  # [N, 52] body-model order
    head_rotation: np.ndarray  # [N, 3, 3] in the camera frame (OpenGL axes)
    torso_angle: np.ndarray | None = None  # [N] radians: the shoulder line's turn in depth
    torso_weight: np.ndarray | None = None  # [N] 1 where both shoulders and their depths were seen

    def __len__(self) -> int:
        return len(self.found)


def detect_frames(frames, fps: float, config: TrackConfig | None = None, total: int | None = None,
                  progress: bool = True) -> ClipDetections:
    """Run the video detector over `frames` (RGB uint8 [H, W, 3], in time order)."""
    cfg = config or TrackConfig()
    body = fit_body()
    names = body.expression_names
    corr = body.correspondence
    rows: dict[str, list] = {k: [] for k in ("found", "landmarks", "shoulders", "shoulder_weight", "blendshapes", "head_rotation",
                                             "torso_angle", "torso_weight")}
    size = None
    with Detector(max_faces=1, segmentation=False, min_confidence=cfg.min_confidence, video=True) as det, \
            tqdm(total=total, desc="track", unit="frame", disable=not progress, leave=False) as bar:
        for i, rgb in enumerate(frames):
            size = size or rgb.shape[:2]
            d = det.detect(rgb, timestamp_ms=int(round(i * 1000.0 / fps)))
            ok = d.landmarks is not None
            rows["found"].append(ok)
            rows["landmarks"].append(corr.body68(torch.from_numpy(d.landmarks[:, :2])).numpy() if ok else np.zeros((68, 2), np.float32))
            if d.shoulders is not None:
                rows["shoulders"].append(d.shoulders)
                rows["shoulder_weight"].append((d.shoulder_visibility >= cfg.min_shoulder_visibility).astype(np.float32))
            else:
                rows["shoulders"].append(np.zeros((2, 2), np.float32))
                rows["shoulder_weight"].append(np.zeros(2, np.float32))
            depth = getattr(d, "shoulder_depth", None)  # pose landmarks' relative depth, where detection gives it
            seen = d.shoulders is not None and depth is not None and bool(rows["shoulder_weight"][-1].all())
            rows["torso_angle"].append(math.atan2(depth[0] - depth[1], d.shoulders[0, 0] - d.shoulders[1, 0]) if seen else 0.0)
            rows["torso_weight"].append(1.0 if seen else 0.0)
            rows["blendshapes"].append(blendshapes_to_body(d.blendshapes, names) if ok else np.zeros(len(names), np.float32))
            rows["head_rotation"].append(d.face_matrix[:3, :3] if ok and d.face_matrix is not None else np.eye(3))
            bar.update(1)
    if size is None:
        raise InputError("the video holds no frame")
    arrays = {k: np.asarray(v, dtype=bool if k == "found" else np.float32) for k, v in rows.items()}
    return ClipDetections(size=tuple(size), **arrays)


def _moving_average(x: np.ndarray, window: int) -> np.ndarray:
    """Centred moving average along axis 0 with edge padding (window odd)."""
    if window <= 1 or len(x) < 3:
        return x
    h = window // 2
    pad = np.concatenate([np.repeat(x[:1], h, 0), x, np.repeat(x[-1:], h, 0)])
    c = np.cumsum(np.concatenate([np.zeros_like(x[:1]), pad]), 0)
    return (c[window:] - c[:-window]) / window


def crop_template(resolution: int) -> np.ndarray:
    """[70, 2] where the SynthPortraits framing camera puts the mean body's 68 landmarks and two
    shoulder points in a `resolution` square (frontal, the fit's prior radius and look-at)."""
    body = fit_body()
    pr = FitConfig().priors
    with torch.no_grad():
        lms, shoulders, neck, _, size = body(*body.model.neutral_codes(1))
        look = neck + torch.tensor([0.0, pr.look_at_up, 0.0]) * size[:, None]
        cams = look_at_cameras(torch.zeros(1), torch.zeros(1), pr.radius * size, FitConfig().fov_deg, look)
        uv, _ = cams.project(torch.cat([lms, shoulders], 1), resolution, resolution)
    return uv[0].numpy().astype(np.float64)


def clip_crops(dets: ClipDetections, fps: float, config: TrackConfig) -> tuple[np.ndarray, np.ndarray]:
    """Per found frame, the (scale [M], shift [M, 2]) from frame pixels to crop pixels."""
    template = crop_template(config.crop_resolution)
    idx = np.nonzero(dets.found)[0]
    scales, shifts = [], []
    for i in idx:
        pts = np.concatenate([dets.landmarks[i], dets.shoulders[i]])
        w = np.concatenate([np.ones(68), 4.0 * dets.shoulder_weight[i]])
        s = Similarity.fit(pts, template, w)
        scales.append(s.scale)
        shifts.append(s.shift)
    window = 2 * int(round(0.5 * config.crop_smooth_s * fps)) + 1
    log_s = _moving_average(np.log(np.asarray(scales))[:, None], window)[:, 0]
    scale = np.exp(log_s)
    # Smooth where the crop puts the frame centre rather than the raw shift (which mixes in scale).
    H, W = dets.size
    centre = np.array([W / 2.0, H / 2.0])
    placed = _moving_average(np.asarray(scales)[:, None] * centre + np.asarray(shifts), window)
    return scale, placed - scale[:, None] * centre


def observations(dets: ClipDetections, scale: np.ndarray, shift: np.ndarray, config: TrackConfig) -> Observations:
    """The found frames as fit observations in the crop."""
    idx = np.nonzero(dets.found)[0]
    s, t = scale[:, None, None], shift[:, None, :]
    f = lambda a: torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))  # noqa: E731
    extra = {}
    if config.use_torso_depth and dets.torso_angle is not None and dets.torso_weight[idx].any() and "torso_angle" in OBSERVATION_FIELDS:
        extra = {"torso_angle": f(dets.torso_angle[idx]), "torso_weight": f(dets.torso_weight[idx])}
    return Observations(config.crop_resolution, f(dets.landmarks[idx] * s + t), None, f(dets.shoulders[idx] * s + t),
                        f(dets.shoulder_weight[idx]), f(dets.blendshapes[idx]), f(dets.head_rotation[idx]), **extra)


def _subset(obs: Observations, index: np.ndarray) -> Observations:
    k = torch.from_numpy(index)
    return Observations(**{f.name: (getattr(obs, f.name)[k] if isinstance(getattr(obs, f.name), torch.Tensor) else getattr(obs, f.name))
                           for f in fields(Observations)})


def steady_camera(kf: Keyframes, window: int) -> Keyframes:
    """The camera (yaw, pitch) averaged over `window` frames (odd), the neck and head joints
    re-posed so that the head keeps its rotation seen from the camera (split over neck and head
    as the fit splits it); expression and shoulders unchanged."""
    if window <= 1 or len(kf) < 3:
        return kf
    cam = torch.from_numpy(_moving_average(kf.camera.double().numpy(), window))

    def cam_rot(c: torch.Tensor) -> torch.Tensor:
        return look_at_cameras(c[:, 0], c[:, 1], 1.0, 20.0, torch.zeros(len(c), 3, dtype=c.dtype)).c2w[:, :3, :3]

    pose = kf.pose.double()
    R_head = axis_angle_to_matrix(pose[:, 0]) @ axis_angle_to_matrix(pose[:, 3])
    R_new = cam_rot(cam) @ cam_rot(kf.camera.double()).transpose(1, 2) @ R_head
    w = matrix_to_axis_angle(R_new)
    pose = pose.clone()
    pose[:, 0], pose[:, 3] = NECK_SHARE * w, (1 - NECK_SHARE) * w
    return Keyframes(kf.expression, pose.float(), cam.float())


def fit_clip(obs: Observations, fps: float, config: TrackConfig, progress: bool = True):
    """One identity over the clip, per-frame expression, pose and camera (see the module doc)."""
    M = len(obs)
    weight = config.temporal_weight * (fps / REFERENCE_FPS) ** 2
    if M <= config.chunk_frames:
        return fit(obs, config.fit, shared_identity=True, temporal_weight=weight)
    pick = np.unique(np.linspace(0, M - 1, min(config.identity_frames, M)).round().astype(np.int64))
    z_id = fit(_subset(obs, pick), config.fit, shared_identity=True).z_id[:1]
    parts = []
    starts = range(0, M, config.chunk_frames)
    for a in tqdm(starts, desc="fit", unit="chunk", disable=not progress, leave=False):
        b = min(M, a + config.chunk_frames)
        parts.append(fit(_subset(obs, np.arange(a, b)), config.fit, temporal_weight=weight, z_id=z_id))
    cat = {k: torch.cat([getattr(p, k) for p in parts]) for k in ("z_id", "z_exp", "z_pose", "cam_yaw", "cam_pitch",
                                                                 "cam_radius", "cam_fov", "cam_look_at",
                                                                 "landmark_error_px", "shoulder_error_px")}
    return type(parts[0])(image_size=obs.image_size, **cat)


@dataclass
class TrackResult:
    keyframes: Keyframes
    fps: float
    fit_error_px: np.ndarray  # [N] mean landmark error in pixels of the video frame (nan: no face)
    no_face: np.ndarray  # [N] bool
    z_id: np.ndarray  # [40] the tracked person
    frame_size: tuple[int, int]  # (H, W) as detected
    source: str = ""
    frames_expected: int | None = None  # what the video's header announced
    has_audio: bool = False  # the video has an audio track
    seconds: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.keyframes)

    @property
    def truncated(self) -> bool:
        return self.frames_expected is not None and len(self) < TRUNCATED_SHARE * self.frames_expected - 1

    def save(self, path) -> None:
        """The keyframe .npz (`animate --drive`, or --expression/--pose/--camera) plus the report."""
        kf = self.keyframes
        arrays = dict(format=np.array(TRACK_FORMAT), expression=kf.expression.numpy(), pose=kf.pose.numpy(),
                      camera=kf.camera.numpy(), pose_format=np.array("axis-angle"), fps=np.array(self.fps),
                      fit_error_px=self.fit_error_px.astype(np.float32), no_face=self.no_face.astype(bool),
                      z_id=self.z_id.astype(np.float32), frame_size=np.array(self.frame_size, np.int64),
                      source=np.array(self.source), frames_expected=np.array(self.frames_expected or -1))
        atomic_write(path, lambda fh: np.savez(fh, **arrays))

    def summary(self) -> str:
        """The report `track` prints."""
        N = len(self)
        err = self.fit_error_px[~self.no_face]
        lines = [f"{N} frames at {self.fps:g} frames/s ({N / self.fps:.1f} s), frames {self.frame_size[1]}x{self.frame_size[0]}"]
        missing = int(self.no_face.sum())
        if missing:
            lines.append(f"no face in {missing} frames ({_ranges(np.nonzero(self.no_face)[0])}): interpolated")
        else:
            lines.append("a face in every frame")
        if len(err):
            lines.append(f"fit error (mean landmark distance, video pixels): median {np.median(err):.2f}, "
                         f"95th percentile {np.percentile(err, 95):.2f}, max {err.max():.2f} (frame {int(np.nanargmax(self.fit_error_px))})")
        if self.truncated:
            lines.append(f"warning: decoded {N} frames but the file announces {self.frames_expected}: it may be truncated")
        if self.seconds:
            total = self.seconds.get("total", float("nan"))
            parts = ", ".join(f"{k} {v:.1f} s" for k, v in self.seconds.items() if k not in ("total", "cpu"))
            cpu = self.seconds.get("cpu")
            cpu_txt = f"; {cpu:.1f} s of CPU time in this process, {N / max(cpu, 1e-9):.1f} frames per CPU second" if cpu else ""
            lines.append(f"{total:.1f} s in all ({N / max(total, 1e-9):.1f} frames/s; {parts}{cpu_txt})")
        return "\n".join(lines)


def _ranges(idx: np.ndarray) -> str:
    """'3-7, 12' from sorted frame indices (at most 8 ranges shown)."""
    out, start, prev = [], None, None
    for i in list(idx) + [None]:
        if start is None:
            start = prev = i
        elif i is not None and i == prev + 1:
            prev = i
        else:
            out.append(f"{start}" if start == prev else f"{start}-{prev}")
            start = prev = i
    return ", ".join(out[:8]) + (f" and {len(out) - 8} more" if len(out) > 8 else "")


def track_detections(dets: ClipDetections, fps: float, config: TrackConfig | None = None, progress: bool = True) -> TrackResult:
    """Fit detections (see `detect_frames`) into a TrackResult."""
    cfg = config or TrackConfig()
    cfg.validate()
    if not dets.found.any():
        raise InputError(f"no face was found in any of the {len(dets)} frames")
    scale, shift = clip_crops(dets, fps, cfg)
    res = fit_clip(observations(dets, scale, shift, cfg), fps, cfg, progress)
    exp = res.z_exp.clone()
    exp[:, ARKIT_NAMES.index("tongueOut")] = 0.0  # mediapipe gives no tongue
    tracked = Keyframes(exp, res.z_pose, torch.stack([res.cam_yaw, res.cam_pitch], 1))
    kf = steady_camera(fill_missing_frames(tracked, dets.found), 2 * int(round(0.5 * cfg.camera_smooth_s * fps)) + 1)
    err = np.full(len(dets), np.nan, np.float32)
    err[dets.found] = res.landmark_error_px.numpy() / scale
    return TrackResult(kf, float(fps), err, ~dets.found, res.z_id[0].numpy(), dets.size)


def track_video(path, config: TrackConfig | None = None, progress: bool = True) -> TrackResult:
    """Track a video file (see the module docstring)."""
    cfg = config or TrackConfig()
    cfg.validate()
    t0, c0 = time.perf_counter(), time.process_time()
    reader = open_video(path, cfg.max_side)
    info = reader.info
    dets = detect_frames(reader, info.fps, cfg, total=info.expected_frames, progress=progress)
    t1 = time.perf_counter()
    result = track_detections(dets, info.fps, replace(cfg), progress)
    t2 = time.perf_counter()
    result.source, result.frames_expected, result.has_audio = str(path), info.expected_frames, info.has_audio
    result.seconds = {"decode and detect": t1 - t0, "fit": t2 - t1, "total": t2 - t0, "cpu": time.process_time() - c0}
    return result
