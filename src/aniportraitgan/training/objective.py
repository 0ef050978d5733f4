"""What one training stage minimises (paper section 3.5), apart from the loop that runs it.

As StyleGAN3 splits `loss.py` from `training_loop.py`: the loop owns the optimisers, the data,
the EMA and the schedule; `PortraitObjective` turns a batch of real images and freshly sampled
latent codes into the discriminator loss (`d_phase`) and the generator loss (`g_phase`).

- D phase: the non-saturating loss of each discriminator (D_whole, D_face, D_torso) on real and
  generated views, plus the lazy R1 phase on real images every `r1_every` steps (scaled by
  the interval, StyleGAN2's lazy regularisation). Unlike StyleGAN3's "Dreg" phase, which takes
  its own optimiser step, the R1 term joins the main term's backward pass and optimiser step
  (one Adam step per D step, as before this module existed: runs give the same numbers).
- G phase: the weighted non-saturating terms; in stage 1 also the landmark loss of eq. 9 through
  the frozen R, the deformation losses of eqs. 10-13 (`Rendered.aux.weighted`) and, for a
  generator with a template, its total-variation prior (`loss.template_smooth`).
- The views the discriminators see: the whole portrait, its torso crop and the face render
  (or, for the `face_from_crop` ablation, a face resampled from the portrait).
"""

from __future__ import annotations

from typing import Callable, ContextManager

import torch
from torch import nn

from aniportraitgan.body.landmarks import LinearLandmarks, landmark_loss
from aniportraitgan.cameras import FACE_FOV, FACE_RADIUS, Cameras, look_at_cameras
from aniportraitgan.crops import face_crop, torso_crop
from aniportraitgan.facerecon import FaceRecon
from aniportraitgan.generator import Generator, Rendered, RenderOptions
from aniportraitgan.latents import LabelSampler, LatentSample
from aniportraitgan.training.config import TrainConfig
from aniportraitgan.training.losses import d_loss, g_loss, r1_penalty


class PortraitObjective:
    """The losses of one stage for the live generator `G` and that stage's discriminators `Ds`
    ({"whole", "face", "torso"}, some dropped by ablations).

    `sampler` draws `per_rank` latent codes and cameras per phase from the dataset's labels; `R`
    and `landmarks` (the affine landmark model) give the landmark loss, or are None when it is
    off; `autocast()` opens the mixed-precision context of the run."""

    def __init__(self, cfg: TrainConfig, stage: int, G: Generator, Ds: nn.ModuleDict, body: nn.Module,
                 sampler: LabelSampler, per_rank: int, device: torch.device,
                 R: FaceRecon | None, landmarks: LinearLandmarks | None,
                 autocast: Callable[[], ContextManager]):
        self.cfg, self.stage, self.st = cfg, stage, cfg.stage(stage)
        self.G, self.Ds, self.body = G, Ds, body
        self.sampler, self.per_rank, self.device = sampler, per_rank, device
        self.R, self.landmarks = R, landmarks
        self.autocast = autocast
        self.crop_faces = cfg.ablation.face_from_crop
        self.adversarial_weights = {"whole": cfg.loss.whole, "face": cfg.loss.face, "torso": cfg.loss.torso}
        # Eq. 9 in stage 1 only: stage 2 trains U alone, which does not change the face's shape.
        self.use_landmarks = stage == 1 and R is not None and cfg.loss.landmark > 0
        self.use_template_prior = cfg.loss.template_smooth > 0 and G.radiance.template is not None
        self.reuse_fakes = cfg.reuse_fakes
        self.last_fakes: dict[str, torch.Tensor] | None = None  # the last G phase's views (reuse_fakes)

    # ------------------------------------------------------------------ phases
    def r1_due(self, step: int) -> bool:
        """Whether the lazy R1 phase runs at `step` (every `r1_every` D steps)."""
        return self.cfg.loss.r1_gamma > 0 and step % self.cfg.loss.r1_every == 0

    def d_phase(self, batch: dict, gen: torch.Generator, step: int) -> tuple[torch.Tensor, dict[str, float]]:
        """The discriminators' loss on `batch` (real) and fresh generated views, with the R1 phase
        when due. Returns (loss, logs)."""
        logs: dict[str, float] = {}
        fake = self.last_fakes
        if fake is None:
            lat, cams, body_out = self.sample(gen)
            with torch.no_grad():
                rendered = self.render(lat, cams, return_aux=False, with_face=self._face_view_needed(for_g=False))
                fake = self.fake_views(rendered, cams, body_out)
        real = self.real_views(batch)
        loss = torch.zeros((), device=self.device)
        r1 = self.r1_due(step)
        for name, D in self.Ds.items():
            with self.autocast():
                real_logits, fake_logits = D(real[name]), D(fake[name].detach())
            term = d_loss(real_logits, fake_logits)
            logs[f"D_{name}"] = float(term.detach())
            logs[f"D_{name}_real"] = float(real_logits.float().mean().detach())
            logs[f"D_{name}_fake"] = float(fake_logits.float().mean().detach())
            loss = loss + term
            if r1:
                loss = loss + self.r1_phase(name, D, real[name], logs)
        return loss, logs

    def r1_phase(self, name: str, D: nn.Module, real: torch.Tensor, logs: dict[str, float]) -> torch.Tensor:
        """The lazy R1 term of one discriminator, scaled by its interval (logged unscaled)."""
        penalty = r1_penalty(D, real, self.cfg.loss.r1_gamma)
        logs[f"R1_{name}"] = float(penalty.detach())
        return penalty * self.cfg.loss.r1_every

    def g_phase(self, gen: torch.Generator) -> tuple[torch.Tensor, dict[str, float]]:
        """The generator's loss on fresh samples: adversarial terms, and in stage 1 eqs. 9-13."""
        logs: dict[str, float] = {}
        lat, cams, body_out = self.sample(gen)
        rendered = self.render(lat, cams, return_aux=(self.stage == 1), with_face=self._face_view_needed(for_g=True))
        fake = self.fake_views(rendered, cams, body_out)
        if self.reuse_fakes:
            self.last_fakes = {k: v.detach() for k, v in fake.items()}
        loss = torch.zeros((), device=self.device)
        for name, D in self.Ds.items():
            with self.autocast():
                term = g_loss(D(fake[name]))
            logs[f"G_{name}"] = float(term.detach())
            loss = loss + self.adversarial_weights[name] * term
        if self.stage == 1:
            if self.use_landmarks:
                est = self.R(fake["face"].float())
                lm = landmark_loss(self.landmarks, est["z_id"], est["z_exp"], lat.z_id, lat.z_exp)
                logs["landmark"] = float(lm.detach())
                loss = loss + self.cfg.loss.landmark * lm
            for name, value in rendered.aux.weighted(self.cfg.loss).items():
                logs[name] = float(value.detach())
                loss = loss + value
            if self.use_template_prior:
                rough = self.G.radiance.template_roughness()
                logs["template_rough"] = float(rough.detach())
                loss = loss + self.cfg.loss.template_smooth * rough
        logs["G_total"] = float(loss.detach())
        return loss, logs

    # ------------------------------------------------------------ samples, views
    def sample(self, gen: torch.Generator) -> tuple[LatentSample, Cameras, object | None]:
        """Latent codes and main cameras resampled from the dataset labels. Face cameras are left
        to the generator (the dual camera matching each main camera); the body model runs here
        only for the face-crop ablation, which needs the posed head."""
        lat = self.sampler.sample(self.per_rank, generator=gen, device=self.device)
        body_out = None
        if self.crop_faces:
            with torch.no_grad():
                body_out = self.body(lat.z_id, lat.z_exp, lat.z_pose)
        return lat, lat.cameras(), body_out

    def render(self, lat: LatentSample, cams: Cameras, return_aux: bool, with_face: bool) -> Rendered:
        face_res = self.st.face_resolution if with_face else None
        with self.autocast():
            return self.G(lat, cams, None, RenderOptions(self.st.portrait_resolution, face_res, self.stage,
                                                         return_aux=return_aux,
                                                         colour_roughness=self.cfg.loss.colour_smooth > 0))

    def _face_view_needed(self, for_g: bool) -> bool:
        """Render the face camera only where something reads it: D_face (unless faces are cropped
        from the portrait) or, in stage 1's generator step, R for the landmark loss."""
        if self.crop_faces:
            return False
        return "face" in self.Ds or (for_g and self.use_landmarks)

    def real_views(self, batch: dict) -> dict[str, torch.Tensor]:
        dev = self.device
        portrait = batch["image"].to(dev, non_blocking=True)
        views = {"whole": portrait, "torso": torso_crop(portrait)}
        if not self.crop_faces:
            views["face"] = batch["face"].to(dev, non_blocking=True)
            return views
        cams = look_at_cameras(batch["cam_yaw"].to(dev), batch["cam_pitch"].to(dev), batch["cam_radius"].to(dev),
                               batch["cam_fov"].to(dev), batch["cam_look_at"].to(dev))
        if "head_center" in batch and "head_rotation" in batch:
            hc, hr = batch["head_center"].to(dev), batch["head_rotation"].to(dev)
        else:  # real photos carry no head labels: pose the body model
            with torch.no_grad():
                out = self.body(batch["z_id"].to(dev), batch["z_exp"].to(dev), batch["z_pose"].to(dev))
            hc, hr = out.head_center, out.head_rotation
        views["face"] = self._crop_face(portrait, cams, hc, hr)
        return views

    def fake_views(self, rendered: Rendered, cams: Cameras, body_out) -> dict[str, torch.Tensor]:
        views = {"whole": rendered.portrait, "torso": torso_crop(rendered.portrait)}
        if self.crop_faces:
            views["face"] = self._crop_face(rendered.portrait, cams, body_out.head_center, body_out.head_rotation)
        else:
            views["face"] = rendered.face
        return views

    def _crop_face(self, portrait: torch.Tensor, cams: Cameras, head_center: torch.Tensor,
                   head_rotation: torch.Tensor) -> torch.Tensor:
        return face_crop(portrait, cams, head_center, head_rotation, self.st.face_resolution, FACE_RADIUS, FACE_FOV)
