"""One batch of photos -> aligned portraits, face images and labels (the worker of `data prepare`).

Per photo: decode (`photos.read_photo`), detect (`detection.Detector`), check (no face, several
faces, face too small, shoulders cut off), then for the batch together:

1. a first crop: the similarity that best maps the detected landmarks and shoulders onto the
   mean body seen by the SynthPortraits framing camera (frontal, radius 1.65 m, 20 degrees,
   looking 7 cm above the neck base);
2. a fit in that crop (`fitting.fit`);
3. the crop the SynthPortraits convention gives this person: the similarity from the fitted
   model's projection to its projection by the framing camera at the fitted yaw and pitch
   (look-at 7 cm above the neck base and radius 1.65 m, both times the person's size), then a
   short warm-started refit in the final crop, so that labels and image agree exactly;
4. range checks (face angles to the camera, fit error, the crop reaching past a photo edge
   that the person touches), then the portrait (white background from the pose model's mask),
   the face image as the dual face camera frames it (`training.losses.face_crop` on the
   portrait: centred on the projected head centre, upright in the head frame, the face
   camera's extent), and the label rows.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from aniportraitgan.body import PortraitBodyModel
from aniportraitgan.cameras import (
    FACE_FOV,
    FACE_RADIUS,
    face_angles_from_main,
    look_at_cameras,
    matching_face_cameras,
)
from aniportraitgan.crops import face_crop
from aniportraitgan.data.dataset import face_path, portrait_path, write_png
from aniportraitgan.frames import opencv_to_opengl_c2w
from aniportraitgan.frontend import photos
from aniportraitgan.frontend.detection import Detection, Detector
from aniportraitgan.frontend.fitting import (
    FitConfig,
    FitResult,
    Observations,
    blendshapes_to_body,
    fit,
    fit_body,
)
from aniportraitgan.frontend.photos import PhotoRejected, Similarity
from aniportraitgan.images import from_uint8, to_uint8


@dataclass
class AlignConfig:
    resolution: int = 512
    work_max_side: int = 2048  # photos are decoded at most this large
    detect_max_side: int = 1024  # ... and detected at most this large
    max_upsampling: float = 2.0  # "face too small" when the crop would enlarge the photo more
    several_faces_ratio: float = 0.5  # a second face at least this big (height ratio) = several faces
    min_shoulder_visibility: float = 0.5
    max_outside: float = 0.10  # share of the crop side allowed past a photo edge the person touches (edge pixels repeated)
    max_fit_error_px: float = 6.0  # mean landmark error at 512 pixels (scales with resolution)
    max_face_yaw_deg: float = 55.0  # face angles to the camera
    max_face_pitch_deg: float = 35.0
    max_face_roll_deg: float = 30.0
    refine_steps: int = 100
    png_compress: int = 1
    fit: FitConfig = field(default_factory=FitConfig)

    @property
    def face_resolution(self) -> int:
        return max(self.resolution // 2, 8)


@dataclass
class _Item:
    index: int
    file: str
    record: dict
    photo: photos.Photo | None = None
    det: Detection | None = None
    det_scale: float = 1.0  # detection pixels per working pixel
    crop: Similarity | None = None  # detection pixels -> portrait pixels


class Aligner:
    """Per-process state (mediapipe models, body models, the framing template)."""

    def __init__(self, config: AlignConfig) -> None:
        self.config = config
        self.detector = Detector(max_faces=2, segmentation=True)
        self.fit_body = fit_body()
        self.body = PortraitBodyModel.load()
        self.names = self.body.expression_names
        R = config.resolution
        with torch.no_grad():
            lms, shoulders, neck, _, size = self.fit_body(*self.body.neutral_codes(1))
            cams = self._framing(torch.zeros(1), torch.zeros(1), neck, size)
            uv, _ = cams.project(torch.cat([lms, shoulders], 1), R, R)
        self.template = uv[0].numpy().astype(np.float64)  # [70, 2]

    def _framing(self, yaw, pitch, neck, size):
        pr = self.config.fit.priors
        look = neck + torch.tensor([0.0, pr.look_at_up, 0.0]) * size[:, None]
        return look_at_cameras(yaw, pitch, pr.radius * size, self.config.fit.fov_deg, look)

    # ------------------------------------------------------------------ per photo
    def _detect(self, item: _Item, path: Path) -> None:
        import cv2  # the [track] extra's OpenCV, like mediapipe imported on first use

        cfg = self.config
        item.photo = photos.read_photo(path, cfg.work_max_side)
        rgb = item.photo.rgb
        H, W = rgb.shape[:2]
        f = min(1.0, cfg.detect_max_side / max(H, W))
        det_rgb = cv2.resize(rgb, (max(1, round(W * f)), max(1, round(H * f))), interpolation=cv2.INTER_AREA) if f < 1 else rgb
        item.det_scale = det_rgb.shape[1] / W
        det = item.det = self.detector.detect(det_rgb)
        rec = item.record
        rec["faces"] = det.num_faces
        if det.landmarks is None:
            raise PhotoRejected(photos.NO_FACE)
        if det.num_faces > 1 and det.face_sizes[1] >= cfg.several_faces_ratio * det.face_sizes[0]:
            raise PhotoRejected(photos.SEVERAL_FACES, f"{det.num_faces} faces")
        rec["face_px"] = round(det.face_sizes[0] / item.det_scale / item.photo.scale, 1)
        Hd, Wd = det_rgb.shape[:2]
        if det.shoulders is None:
            raise PhotoRejected(photos.SHOULDERS_CUT_OFF, "no shoulders found")
        inside = (det.shoulders[:, 0] >= 0) & (det.shoulders[:, 0] <= Wd) & (det.shoulders[:, 1] >= 0) & (det.shoulders[:, 1] <= Hd)
        if det.shoulder_visibility.min() < cfg.min_shoulder_visibility or not inside.all():
            raise PhotoRejected(photos.SHOULDERS_CUT_OFF, f"shoulder visibility {det.shoulder_visibility.min():.2f}")
        points = np.concatenate([self.fit_body.correspondence.body68(torch.from_numpy(det.landmarks[:, :2])).numpy(), det.shoulders])
        w = np.concatenate([np.ones(68), np.full(2, 4.0)])
        item.crop = Similarity.fit(points, self.template, w)
        upsampling = item.crop.scale * item.det_scale * item.photo.scale
        rec["upsampling"] = round(upsampling, 3)
        if upsampling > cfg.max_upsampling:
            raise PhotoRejected(photos.FACE_TOO_SMALL, f"face {rec['face_px']:.0f} px high; the crop would enlarge the photo {upsampling:.1f}x")

    def _observations(self, items: list[_Item]) -> Observations:
        lms, sh, shw, exp, rot, torso = [], [], [], [], [], []
        for it in items:
            d, c = it.det, it.crop
            lms.append(c.apply(self.fit_body.correspondence.body68(torch.from_numpy(d.landmarks[:, :2])).numpy()))
            sh.append(c.apply(d.shoulders))
            shw.append((d.shoulder_visibility >= self.config.min_shoulder_visibility).astype(np.float32))
            exp.append(blendshapes_to_body(d.blendshapes, self.names))
            rot.append(d.face_matrix[:3, :3] if d.face_matrix is not None else np.eye(3))
            dz, dx = d.shoulder_depth[0] - d.shoulder_depth[1], d.shoulders[0, 0] - d.shoulders[1, 0]
            torso.append(math.atan2(dz, dx))
        t = lambda a: torch.from_numpy(np.stack(a).astype(np.float32))
        return Observations(self.config.resolution, t(lms), None, t(sh), t(shw), t(exp), t(rot), t(torso))

    @staticmethod
    def _moved(obs: Observations, sims: list[Similarity]) -> Observations:
        scale = torch.tensor([s.scale for s in sims], dtype=torch.float32)[:, None, None]
        shift = torch.from_numpy(np.stack([s.shift for s in sims]).astype(np.float32))[:, None]
        return replace(obs, landmarks=obs.landmarks * scale + shift, shoulders=obs.shoulders * scale + shift)

    # ------------------------------------------------------------------ batch
    def run(self, batch: list[tuple[int, str, str]], out_dir: str | os.PathLike) -> tuple[dict[str, np.ndarray], list[dict]]:
        """batch: (index, file name for the report, path). Writes the accepted images; returns
        the label rows of the accepted photos and one report record per photo."""
        import cv2

        cfg = self.config
        R = cfg.resolution
        every, items = [], []
        for index, name, path in batch:
            it = _Item(index, name, {"index": int(index), "file": name, "status": "rejected", "reason": "", "detail": ""})
            every.append(it)
            try:
                self._detect(it, Path(path))
                items.append(it)
            except PhotoRejected as exc:
                it.record.update(reason=exc.reason, detail=exc.detail)
            except (RuntimeError, ValueError, MemoryError, cv2.error) as exc:  # one odd image must not stop a 40K-photo run
                it.record.update(reason=photos.DETECTION_FAILED, detail=f"{type(exc).__name__}: {exc}"[:300])
        records = [it.record for it in every]
        if not items:
            return {}, records
        obs = self._observations(items)
        first = fit(obs, cfg.fit)
        with torch.no_grad():
            lms, shoulders, neck, _, size = self.fit_body(first.z_id, first.z_exp, first.z_pose)
            pts = torch.cat([lms, shoulders, neck[:, None]], 1)
            uv_fit, _ = first.cameras().project(pts, R, R)
            framing = self._framing(first.cam_yaw, first.cam_pitch, neck, size)
            uv_frame, _ = framing.project(pts, R, R)
        sims = [Similarity.fit(a.numpy(), b.numpy()) for a, b in zip(uv_fit, uv_frame)]
        pr = cfg.fit.priors
        start = replace(first, cam_radius=pr.radius * size, cam_look_at=neck + torch.tensor([0.0, pr.look_at_up, 0.0]) * size[:, None])
        result = fit(self._moved(obs, sims), replace(cfg.fit, steps=cfg.refine_steps, rigid_steps=0), init=start)
        for it, s in zip(items, sims):
            it.crop = it.crop.then(s)
        labels = self._finish(items, result, out_dir)
        return labels, records

    def _finish(self, items: list[_Item], res: FitResult, out_dir) -> dict[str, np.ndarray]:
        cfg = self.config
        R, Rf = cfg.resolution, cfg.face_resolution
        with torch.no_grad():
            out = self.body(res.z_id, res.z_exp, res.z_pose)
            cams = res.cameras()
            face = matching_face_cameras(cams, out.head_center, out.head_rotation)
            f_yaw, f_pitch = face_angles_from_main(cams, out.head_center, out.head_rotation)
            head_cam = opencv_to_opengl_c2w(cams.c2w)[:, :3, :3].transpose(1, 2) @ out.head_rotation
            roll = torch.atan2(-head_cam[:, 0, 1], head_cam[:, 1, 1])
            lm, _ = cams.project(out.landmarks, R, R)
            flm, _ = face.project(out.landmarks, Rf, Rf)
        max_err = cfg.max_fit_error_px * R / 512
        keep, portraits = [], []
        for b, it in enumerate(items):
            rec = it.record
            err = float(res.landmark_error_px[b])
            rec["fit_error_px"] = round(err, 3)
            angles = (math.degrees(f_yaw[b]), math.degrees(f_pitch[b]), math.degrees(roll[b]))
            rec["face_yaw_deg"], rec["face_pitch_deg"], rec["face_roll_deg"] = (round(a, 2) for a in angles)
            try:
                if not math.isfinite(err) or err > max_err:
                    raise PhotoRejected(photos.FIT_FAILED, f"landmark error {err:.1f} px > {max_err:.1f}")
                limits = (cfg.max_face_yaw_deg, cfg.max_face_pitch_deg, cfg.max_face_roll_deg)
                for name, a, lim in zip(("yaw", "pitch", "roll"), angles, limits):
                    if abs(a) > lim:
                        raise PhotoRejected(photos.POSE_OUT_OF_RANGE, f"face {name} {a:.0f} deg (limit {lim:.0f})")
                portraits.append(self._portrait(it))
                keep.append(b)
            except PhotoRejected as exc:
                rec.update(reason=exc.reason, detail=exc.detail)
        if not keep:
            return {}
        k = torch.tensor(keep)
        images = from_uint8(torch.from_numpy(np.stack(portraits)).permute(0, 3, 1, 2))
        faces = face_crop(images, cams[k], out.head_center[k], out.head_rotation[k], Rf, FACE_RADIUS, FACE_FOV)
        faces = to_uint8(faces).permute(0, 2, 3, 1).numpy()
        for j, b in enumerate(keep):
            it = items[b]
            write_png(face_path(out_dir, it.index), faces[j], cfg.png_compress)
            write_png(portrait_path(out_dir, it.index), portraits[j], cfg.png_compress)
            it.record.update(status="accepted", reason="")
        rows = res.select(k).labels()
        rows.update(
            index=np.array([items[b].index for b in keep], np.int64),
            c2w=cams.c2w[k].numpy().astype(np.float32),
            face_yaw=f_yaw[k].numpy().astype(np.float32), face_pitch=f_pitch[k].numpy().astype(np.float32),
            face_c2w=face.c2w[k].numpy().astype(np.float32), face_fov=face.fov_deg[k].numpy().astype(np.float32),
            head_center=out.head_center[k].numpy().astype(np.float32), head_rotation=out.head_rotation[k].numpy().astype(np.float32),
            landmarks=lm[k].numpy().astype(np.float32), face_landmarks=flm[k].numpy().astype(np.float32),
            detected_landmarks=self._observations([items[b] for b in keep]).landmarks.numpy(),
            fit_error_px=res.landmark_error_px[k].numpy().astype(np.float32),
        )
        return rows

    def _portrait(self, it: _Item) -> np.ndarray:
        """The aligned portrait on white; PhotoRejected when the crop needs what the photo cut off."""
        cfg = self.config
        R = cfg.resolution
        det, crop = it.det, it.crop
        work_crop = Similarity(crop.scale * it.det_scale, crop.shift)  # working pixels -> portrait
        Hd, Wd = det.mask.shape
        # Photo edges in portrait pixels, and how far the crop reaches past each.
        lo, hi = crop.apply(np.zeros(2)), crop.apply(np.array([Wd, Hd], np.float64))
        tol = cfg.max_outside * R
        mask = det.mask > 0.5
        span_u = slice(max(0, int((0 - crop.shift[0]) / crop.scale)), min(Wd, int((R - crop.shift[0]) / crop.scale) + 1))
        span_v = slice(max(0, int((0 - crop.shift[1]) / crop.scale)), min(Hd, int((R - crop.shift[1]) / crop.scale) + 1))
        edges = (
            ("bottom", hi[1] < R - tol, mask[-1, span_u], photos.SHOULDERS_CUT_OFF),
            ("left", lo[0] > tol, mask[span_v, 0], photos.SHOULDERS_CUT_OFF),
            ("right", hi[0] < R - tol, mask[span_v, -1], photos.SHOULDERS_CUT_OFF),
            ("top", lo[1] > tol, mask[0, span_u], photos.HEAD_CUT_OFF),
        )
        for name, past, touching, reason in edges:
            if past and touching.size and touching.mean() > 0.02:
                raise PhotoRejected(reason, f"the person reaches the photo's {name} edge inside the crop")
        # Past the photo's edges its border pixels repeat: where the person reaches an edge (up
        # to max_outside), the body continues instead of ending in a white band.
        rgb = photos.warp(it.photo.rgb, work_crop, R)
        m = photos.warp(det.mask, crop, R)
        return photos.white_background(rgb, m)

    def close(self) -> None:
        self.detector.close()
