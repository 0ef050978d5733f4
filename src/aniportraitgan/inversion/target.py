"""What an inversion fits: the aligned portrait and face images with their masks, and the
expression, pose, cameras and body identity the front end found (``InversionTarget``).

``target_from_photo`` runs the real-photo front end of ``data prepare`` (``frontend.align.
Aligner``: mediapipe detection, body-model fitting, the SynthPortraits crop) on one photo and
brings its outputs to the generator's resolutions: the portrait resized with antialiasing, the
face image cut from the aligned portrait by the same face crop ``data prepare`` uses (so it shows
what the dual face camera of the fitted labels sees), the person's mask cut alike.

``target_from_render`` makes a target with known answers: an image the generator itself renders
from known latents, with those latents' expression, pose and cameras (tests and measurements).
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from aniportraitgan.cameras import FACE_FOV, FACE_RADIUS, Cameras, look_at_cameras
from aniportraitgan.crops import face_crop
from aniportraitgan.errors import InputError, UserError
from aniportraitgan.frontend import photos
from aniportraitgan.frontend.align import AlignConfig, Aligner
from aniportraitgan.generator import RenderOptions
from aniportraitgan.images import from_uint8
from aniportraitgan.latents import LatentSample

# The aligned crop is made at least this large before it is resized to the generator's side: the
# fit's pixel tolerances are tuned for 256-512 px crops.
MIN_ALIGN_RESOLUTION = 256


@dataclass
class InversionTarget:
    """Images in [-1, 1] and masks in [0, 1] (batch 1) with the labels they were made with."""

    portrait: torch.Tensor  # [1, 3, H, H]
    portrait_mask: torch.Tensor  # [1, 1, H, H]
    face: torch.Tensor  # [1, 3, Hf, Hf]
    face_mask: torch.Tensor  # [1, 1, Hf, Hf]
    z_exp: torch.Tensor  # [1, 52]
    z_pose: torch.Tensor  # [1, 6, 3]
    z_id: torch.Tensor  # [1, id_dim]: the body fit's identity, the start of the search
    cameras: Cameras  # the main camera
    face_cameras: Cameras  # the dual face camera of the fitted labels
    source: str = ""
    fit_error_px: float | None = None  # landmark error of the body fit (photos only)

    @property
    def resolution(self) -> int:
        return int(self.portrait.shape[-1])

    @property
    def face_resolution(self) -> int:
        return int(self.face.shape[-1])

    def to(self, device) -> InversionTarget:
        moved = {k: getattr(self, k).to(device) for k in ("portrait", "portrait_mask", "face", "face_mask", "z_exp",
                                                          "z_pose", "z_id", "cameras", "face_cameras")}
        return InversionTarget(**moved, source=self.source, fit_error_px=self.fit_error_px)


@torch.no_grad()
def target_from_render(model, latents: LatentSample, cameras: Cameras, psi: float, z_id_start: torch.Tensor | None = None,
                       source: str = "generator render") -> InversionTarget:
    """The generator's own render of ``latents`` (batch 1) at the model's resolutions: a target
    whose identity is known. ``z_id_start`` (default: the true z_id) plays the body fit's."""
    G = model.generator
    out = G(latents, cameras, None, RenderOptions(model.portrait_resolution, model.face_resolution, model.stage, psi))
    z_id = latents.z_id if z_id_start is None else z_id_start.reshape(1, -1).to(latents.z_id)
    return InversionTarget(out.portrait, out.portrait_alpha, out.face, out.face_alpha, latents.z_exp, latents.z_pose,
                           z_id, cameras, out.face_cameras, source)


class _PhotoAligner(Aligner):
    """The ``data prepare`` aligner that also keeps the aligned portrait and mask it makes."""

    def __init__(self, config: AlignConfig) -> None:
        super().__init__(config)
        self.kept: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def _portrait(self, it) -> np.ndarray:
        rgb = super()._portrait(it)
        mask = photos.warp(it.det.mask, it.crop, self.config.resolution, 0.0)
        # The sharpening white_background composites with (its default edges 0.25..0.75).
        self.kept[it.index] = (rgb, np.clip((mask.astype(np.float32) - 0.25) / 0.5, 0.0, 1.0))
        return rgb


def check_photo(path: str | Path) -> None:
    """A clear UserError for a photo that is missing, unreadable or too small (before any model loads)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"photo {path} does not exist")
    try:
        photos.read_photo(path, max_side=64)
    except photos.PhotoRejected as exc:
        raise UserError(f"photo {path} cannot be used: {exc}") from None


def _resize(x: torch.Tensor, size: int) -> torch.Tensor:
    if x.shape[-1] == size:
        return x
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)


def target_from_photo(path: str | Path, model, align_resolution: int | None = None,
                      aligner: Aligner | None = None) -> InversionTarget:
    """Detect, fit and align one photo (see the module doc). UserError with the front end's reason
    (no face, several faces, face too small, shoulders cut off, pose out of range, fit failed)."""
    path = Path(path)
    check_photo(path)
    if aligner is not None and not isinstance(aligner, _PhotoAligner):
        raise InputError("aligner must come from photo_aligner()")
    own = aligner is None
    if own:
        res = max(MIN_ALIGN_RESOLUTION, model.portrait_resolution) if align_resolution is None else align_resolution
        aligner = photo_aligner(res)
    res = aligner.config.resolution
    try:
        aligner.kept.clear()
        with tempfile.TemporaryDirectory(prefix="aniportraitgan-invert-") as tmp:
            labels, records = aligner.run([(0, path.name, str(path))], tmp)
    finally:
        if own:
            aligner.close()
    rec = records[0]
    if rec.get("status") != "accepted" or 0 not in aligner.kept:
        detail = f" ({rec['detail']})" if rec.get("detail") else ""
        raise UserError(f"photo {path} cannot be inverted: {rec.get('reason') or 'rejected by the front end'}{detail}")
    rgb, mask = aligner.kept[0]
    dev = model.device
    t = lambda name: torch.from_numpy(np.asarray(labels[name][:1])).float()
    cams = look_at_cameras(t("cam_yaw"), t("cam_pitch"), t("cam_radius"), t("cam_fov"), t("cam_look_at"))
    image = from_uint8(torch.from_numpy(rgb).permute(2, 0, 1)[None])
    m = torch.from_numpy(mask)[None, None].float()
    # Crop at half the aligned side, then resize with antialiasing (a direct crop to 32 px aliases).
    crop = lambda x: face_crop(x, cams, t("head_center"), t("head_rotation"), res // 2, FACE_RADIUS, FACE_FOV)
    face_rgb = _resize(crop(image), model.face_resolution).clamp(-1, 1)
    face_m = (1.0 - _resize(crop(1.0 - m), model.face_resolution)).clamp(0, 1)  # outside the crop: background
    face_cams = Cameras(t("face_c2w"), t("face_fov"))
    H = model.portrait_resolution
    return InversionTarget(_resize(image, H).clamp(-1, 1).to(dev), _resize(m, H).clamp(0, 1).to(dev), face_rgb.to(dev),
                           face_m.to(dev), t("z_exp").to(dev), t("z_pose").to(dev), t("z_id").to(dev), cams.to(dev),
                           face_cams.to(dev), str(path), float(labels["fit_error_px"][0]))


def photo_aligner(resolution: int = MIN_ALIGN_RESOLUTION) -> Aligner:
    """The front end for ``target_from_photo`` (mediapipe models load here: seconds); reuse it for
    several photos and ``close()`` it after."""
    return _PhotoAligner(AlignConfig(resolution=resolution))


__all__ = ["InversionTarget", "check_photo", "photo_aligner", "target_from_photo", "target_from_render"]
