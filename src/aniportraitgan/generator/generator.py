"""The generator G: five sub-networks (M, phi, U, Dp, De) and dual-camera rendering.

Per view (main portrait camera, face camera) and per ray sample:

    x_t (scene, posed)  --inverse LBS + Dp-->  x_p  --De-->  x_c (scene)  --/SCENE_SCALE-->
    canonical  --M-->  s  --levels-->  intersections  --phi or U's maps-->  colour, alpha
    --eq. 8-->  pixel

Samples lie on planes of constant camera depth between the near and far depths of the
portrait's bounding box (face views: a sphere around the posed head), so the samples of all rays
form a regular (D, H, W) frustum grid: the transform volume that Dp convolves.

Speed: stage 2 with an ``IdentityCache`` redoes only the per-frame work. For large renders,
``GeneratorConfig.geometry_max_resolution`` (e.g. 128) evaluates the deformation chain and M on
a coarser ray grid and interpolates x_c and s per pixel; detail still comes from U's 512 maps.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from aniportraitgan.cameras import Cameras, matching_face_cameras
from aniportraitgan.errors import InputError
from aniportraitgan.frames import SCENE_SCALE
from aniportraitgan.latents import LatentSample
from aniportraitgan.generator.cache import IdentityCache, WAverage
from aniportraitgan.generator.compositing import composite
from aniportraitgan.generator.config import GeneratorConfig
from aniportraitgan.generator.deformation import (
    ExpressionDeformation,
    PoseDeformation,
    apply_transforms,
    upsample_volume_at,
)
from aniportraitgan.generator.outputs import Aux, Rendered, RenderOptions
from aniportraitgan.generator.manifolds import ManifoldPredictor, intersect_levels, sort_by_depth
from aniportraitgan.generator.radiance import RadianceGenerator
from aniportraitgan.generator.superres import (
    ManifoldSuperResolution,
    lowres_maps,
    map_intersections,
    sample_maps,
)


@dataclass
class _View:
    image: torch.Tensor
    depth: torch.Tensor
    alpha: torch.Tensor


def _check_codes(name: str, x, shape_tail: tuple[int, ...], B: int | None) -> int:
    if not isinstance(x, torch.Tensor):
        raise InputError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.ndim != 1 + len(shape_tail) or tuple(x.shape[1:]) != shape_tail:
        want = "[B, " + ", ".join(str(s) for s in shape_tail) + "]"
        raise InputError(f"{name} must have shape {want}, got {tuple(x.shape)}")
    if B is not None and x.shape[0] != B:
        raise InputError(f"{name} has batch {x.shape[0]}, expected {B}")
    if not x.is_floating_point():
        raise InputError(f"{name} must be a floating-point tensor, got {x.dtype}")
    if not torch.isfinite(x).all():
        raise InputError(f"{name} contains NaN or infinite values")
    return x.shape[0]


def _check_resolution(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InputError(f"{name} must be a positive int, got {value!r}")
    return value


@torch.no_grad()
def mouth_cavity(body_model: nn.Module, threshold: float = 3e-3) -> torch.Tensor:
    """[V] bool: the interior vertices (outside ``nn_valid``) that jawOpen moves by > threshold m.

    With mesh-guided expressions these join the nearest-vertex search, so that samples between
    parted lips map to the mouth interior behind the closed lips in canonical space (where the
    radiance field can hold a dark mouth that stays hidden while the mouth is closed) instead of
    onto stretched lips. Eye sockets and the other cavities stay out.
    """
    inside = ~body_model.nn_valid.bool()
    names = list(getattr(body_model, "expression_names", []))
    if "jawOpen" not in names or not inside.any():
        return torch.zeros_like(inside)
    dev = body_model.nn_valid.device
    z_id = torch.zeros(2, body_model.id_dim, device=dev)
    z_exp = torch.zeros(2, body_model.exp_dim, device=dev)
    z_exp[1, names.index("jawOpen")] = 1.0
    verts = body_model(z_id, z_exp, torch.zeros(2, 6, 3, device=dev)).vertices
    moved = (verts[1] - verts[0]).norm(dim=-1) > threshold
    return inside & moved


class Generator(nn.Module):
    """``Generator(config, body_model)``; see ``forward``.

    The body model is used but not owned: it is not part of ``state_dict`` (it is an asset),
    but ``.to()`` moves it along with the generator.
    """

    def __init__(self, config: GeneratorConfig, body_model: nn.Module) -> None:
        super().__init__()
        c = config
        if body_model.id_dim != c.id_dim or body_model.exp_dim != c.exp_dim:
            raise InputError(
                f"body model codes (id {body_model.id_dim}, exp {body_model.exp_dim}) do not match "
                f"the generator config (id {c.id_dim}, exp {c.exp_dim})"
            )
        self.config = c
        self.__dict__["body"] = body_model  # not a registered submodule (see class doc)
        self.manifold = ManifoldPredictor(c.manifold_hidden, c.manifold_layers, c.shell_center,
                                          (c.level_min, c.level_max, c.num_levels))
        self.radiance = RadianceGenerator(c.id_dim, c.noise_dim, c.radiance_hidden, c.radiance_layers,
                                          c.radiance_features, c.mapping_hidden, c.mapping_layers)
        self.superres = ManifoldSuperResolution(
            4 + c.radiance_features, c.sr_channels, c.sr_growth, c.sr_blocks, c.sr_scale,
            c.id_dim, c.noise_dim, c.sr_style_dim, c.mapping_hidden, c.mapping_layers)
        self.pose = PoseDeformation(c.dp_kernel, c.nn_chunk)
        self.expression = ExpressionDeformation(c.id_dim, c.exp_dim, c.exp_hidden, c.exp_layers,
                                                c.exp_mapping_hidden, c.exp_mapping_layers, c.exp_input_scale)
        self.w_avg_radiance = WAverage(self.radiance.siren.w_dim, c.w_avg_beta)
        self.w_avg_superres = WAverage(c.sr_style_dim, c.w_avg_beta)
        allowed = body_model.nn_valid.bool()
        if c.exp_mesh_guided:
            allowed = allowed | mouth_cavity(body_model)
        valid = allowed.nonzero().squeeze(1)
        if valid.numel() == 0:
            raise InputError("body model has no vertex allowed in the nearest-vertex search (nn_valid)")
        self.register_buffer("nn_index", valid.clone(), persistent=False)
        self.register_buffer("nn_weights", body_model.skinning_weights[valid].float().clone(), persistent=False)
        bmin = torch.tensor(c.bbox_min) * SCENE_SCALE
        bmax = torch.tensor(c.bbox_max) * SCENE_SCALE
        corners = torch.stack(torch.meshgrid(*[torch.stack([a, b]) for a, b in zip(bmin, bmax)], indexing="ij"), -1)
        self.register_buffer("bbox_corners", corners.reshape(8, 3), persistent=False)

    # The five sub-networks by their names in the paper.
    def subnetworks(self) -> dict[str, nn.Module]:
        return {"M": self.manifold, "phi": self.radiance, "U": self.superres,
                "Dp": self.pose, "De": self.expression}

    def _apply(self, fn, *args, **kwargs):
        super()._apply(fn, *args, **kwargs)
        self.body._apply(fn, *args, **kwargs)
        return self

    # ------------------------------------------------------------------ mapping / truncation
    @torch.no_grad()
    def compute_w_avg(self, n: int = 4096, z_id: torch.Tensor | None = None, seed: int = 0) -> None:
        """Set the truncation centres to the mean mapping output over n samples.

        z_id defaults to N(0, 1) (the body model's prior); pass samples from the training set's
        label distribution to match training. eps is always N(0, 1).
        """
        dev = self.nn_weights.device
        g = torch.Generator(device="cpu").manual_seed(seed)
        if z_id is None:
            z_id = torch.randn(n, self.config.id_dim, generator=g)
        n = z_id.shape[0]
        eps = torch.randn(n, self.config.noise_dim, generator=g)
        z_id, eps = z_id.to(dev), eps.to(dev)
        self.w_avg_radiance.set(self.radiance.map(z_id, eps).mean(0))
        self.w_avg_superres.set(self.superres.map(z_id, eps).mean(0))

    def map_identity(self, z_id: torch.Tensor, eps: torch.Tensor, psi: float = 1.0,
                     stage: int = 1) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Truncated mapping outputs of phi and (stage 2) U; updates the running averages in training."""
        w_rad = self.radiance.map(z_id, eps)
        w_sr = self.superres.map(z_id, eps) if stage == 2 else None
        if self.training:
            self.w_avg_radiance.update(w_rad)
            if w_sr is not None:
                self.w_avg_superres.update(w_sr)
        w_rad = self.w_avg_radiance.truncate(w_rad, psi)
        if w_sr is not None:
            w_sr = self.w_avg_superres.truncate(w_sr, psi)
        return w_rad, w_sr

    def radiance_maps(self, w_radiance: torch.Tensor, w_superres: torch.Tensor) -> torch.Tensor:
        """Super-resolved radiance maps [B, L, 4, R_hr, R_hr] (stage 2's per-identity work)."""
        c = self.config
        hits = map_intersections(self.manifold, c.sr_map_resolution, c.sr_map_depth_samples,
                                 z_front=c.bbox_max[2], z_back=c.bbox_min[2], chunk=c.ray_chunk)
        low = lowres_maps(self.radiance, w_radiance, hits, c.sr_map_resolution, chunk=c.ray_chunk * 4)
        return self.superres(low, w_superres)

    def build_cache(self, z_id: torch.Tensor, eps: torch.Tensor, psi: float = 1.0, stage: int = 2) -> IdentityCache:
        """Precompute the per-identity work for repeated rendering of the same (z_id, eps)."""
        B = _check_codes("z_id", z_id, (self.config.id_dim,), None)
        _check_codes("eps", eps, (self.config.noise_dim,), B)
        self._check_stage_psi(stage, psi)
        w_rad, w_sr = self.map_identity(z_id, eps, psi, stage)
        maps = self.radiance_maps(w_rad, w_sr) if stage == 2 else None
        return IdentityCache(z_id.detach().clone(), eps.detach().clone(), float(psi), stage, w_rad, w_sr, maps)

    @staticmethod
    def _check_stage_psi(stage, psi) -> None:
        if stage not in (1, 2):
            raise InputError(f"stage must be 1 or 2, got {stage!r}")
        if not isinstance(psi, (int, float)) or not math.isfinite(psi):
            raise InputError(f"psi must be a finite number, got {psi!r}")

    # ------------------------------------------------------------------ rendering
    def forward(self, latents: LatentSample, cameras: Cameras, face_cameras: Cameras | None = None,
                options: RenderOptions = RenderOptions()) -> Rendered:
        """Render portraits (main cameras) and faces (face cameras) of a batch of latent codes.

        latents: z_id [B, id_dim], z_exp [B, exp_dim], z_pose [B, 6, 3], eps [B, noise_dim];
        cameras: B main cameras. face_cameras: B cameras, or None for the dual face camera that
        matches each main camera (``cameras.matching_face_cameras`` around the posed head).
        ``options`` sets the resolutions (a face resolution of None skips the face view), the
        stage, psi, the identity cache and whether to return the ``Aux`` loss terms.
        """
        c, o = self.config, options
        if not isinstance(latents, LatentSample):
            raise InputError(f"latents must be an aniportraitgan.latents.LatentSample, got {type(latents).__name__}")
        if not isinstance(o, RenderOptions):
            raise InputError(f"options must be a RenderOptions, got {type(o).__name__}")
        z_id, z_exp, z_pose, eps = latents.z_id, latents.z_exp, latents.z_pose, latents.eps
        B = _check_codes("z_id", z_id, (c.id_dim,), None)
        _check_codes("z_exp", z_exp, (c.exp_dim,), B)
        _check_codes("z_pose", z_pose, (6, 3), B)
        _check_codes("eps", eps, (c.noise_dim,), B)
        self._check_stage_psi(o.stage, o.psi)
        H = _check_resolution("portrait_resolution", o.portrait_resolution)
        Hf = 0 if o.face_resolution in (None, 0) else _check_resolution("face_resolution", o.face_resolution)
        self._check_cameras("cameras", cameras, B)
        if face_cameras is not None:
            self._check_cameras("face_cameras", face_cameras, B)

        body_out = self.body(z_id, z_exp, z_pose)
        if o.cache is not None:
            o.cache.check(z_id, eps, o.stage, o.psi)
            cache = o.cache.expand(B)
            w_rad, maps = cache.w_radiance, cache.maps
        else:
            w_rad, w_sr = self.map_identity(z_id, eps, o.psi, o.stage)
            maps = self.radiance_maps(w_rad, w_sr) if o.stage == 2 else None
        w_exp = self.expression.map(z_id, z_exp)

        # Loss accumulators the views add to (empty: not asked).
        acc: dict = {"pose_smooth": z_id.new_zeros(()), "exp_minimal": z_id.new_zeros(()),
                     "exp_smooth": z_id.new_zeros(())} if o.return_aux else {}
        gmax = c.geometry_max_resolution if o.geometry_max_resolution is None else o.geometry_max_resolution
        portrait = self._render_view(cameras, H, H, body_out, w_rad, w_exp, maps, acc, gmax=gmax)
        out = Rendered(portrait.image, portrait.depth, portrait.alpha)
        if Hf:
            if face_cameras is None:
                face_cameras = matching_face_cameras(cameras, body_out.head_center, body_out.head_rotation)
            face = self._render_view(face_cameras, Hf, Hf, body_out, w_rad, w_exp, maps, acc,
                                     bound=(body_out.head_center, c.face_bound_radius), gmax=gmax)
            out.face, out.face_depth, out.face_alpha, out.face_cameras = face.image, face.depth, face.alpha, face_cameras
        if o.return_aux:
            views = 2 if Hf else 1
            verts = body_out.canonical_vertices[:, self.nn_index]
            neutral = body_out.neutral_vertices[:, self.nn_index]
            step = max(1, verts.shape[1] // c.aux_points)
            verts, neutral = verts[:, ::step], neutral[:, ::step]
            if c.exp_mesh_guided:  # De reads the neutral mesh; its residual should vanish there
                imitation = self.expression.imitation_loss(neutral, torch.zeros_like(neutral), w_exp)
            else:
                imitation = self.expression.imitation_loss(verts, neutral - verts, w_exp)
            out.aux = Aux(pose_smooth=acc["pose_smooth"] / views, exp_imitation=imitation,
                          exp_smooth=acc["exp_smooth"] / views, exp_minimal=acc["exp_minimal"] / views,
                          body=body_out, w_radiance=w_rad, w_expression=w_exp)
        return out

    def loss_dict(self, aux: Aux, weights) -> dict[str, torch.Tensor]:
        """The weighted deformation losses (eqs. 10-13) of a render: {name: weight * value}."""
        return aux.weighted(weights)

    @staticmethod
    def _check_cameras(name: str, cams, B: int) -> None:
        if not isinstance(cams, Cameras):
            raise InputError(f"{name} must be aniportraitgan.cameras.Cameras, got {type(cams).__name__}")
        if len(cams) != B:
            raise InputError(f"{name} holds {len(cams)} cameras for a batch of {B}")
        if not torch.isfinite(cams.c2w).all():
            raise InputError(f"{name} contains NaN or infinite values")

    def sample_depths(self, cams: Cameras, center: torch.Tensor | None = None,
                      radius: float | None = None) -> torch.Tensor:
        """Camera z-depths [B, D] of the sample planes.

        They span the portrait bounding box or, given a bounding sphere (center [B, 3] scene
        metres, radius metres; the face view uses one around the posed head), that sphere.
        """
        c2w = cams.c2w.to(self.bbox_corners.dtype)
        forward = c2w[:, :3, 2]
        if center is None:
            rel = self.bbox_corners[None] - c2w[:, None, :3, 3]
            z = (rel * forward[:, None]).sum(-1)  # [B, 8]
            near, far = z.min(1).values, z.max(1).values
        else:
            zc = ((center.to(c2w.dtype) - c2w[:, :3, 3]) * forward).sum(-1)
            near, far = zc - radius, zc + radius
        near = near.clamp_min(1e-3)
        far = torch.maximum(far, near + 1e-3)
        steps = torch.linspace(0.0, 1.0, self.config.samples_per_ray, device=near.device, dtype=near.dtype)
        return near[:, None] + (far - near)[:, None] * steps

    @staticmethod
    def _rays(cams: Cameras, H: int, W: int, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """Ray origins [B, H*W, 3] and directions scaled to unit camera depth [B, H*W, 3]."""
        o, d = cams.rays(H, W)
        o, d = o.to(dtype), d.to(dtype)
        forward = cams.c2w[:, None, :3, 2].to(dtype)
        return o, d / (d * forward).sum(-1, keepdim=True)

    @staticmethod
    def _points(rays: tuple[torch.Tensor, torch.Tensor], depths: torch.Tensor, start: int = 0,
                stop: int | None = None) -> torch.Tensor:
        """Samples [B, n, D, 3] on the depth planes for rays start:stop (row-major pixels)."""
        o, d = rays
        return o[:, start:stop, None, :] + d[:, start:stop, None, :] * depths[:, None, :, None]

    def volume_shape(self, H: int, W: int, D: int) -> tuple[int, int, int]:
        """(D, H, W) of the transform volume that Dp processes for an H x W view with D samples."""
        c = self.config
        if not c.dp_half_resolution:
            return D, H, W
        h, w = (H + 1) // 2, (W + 1) // 2
        if c.dp_volume_max:
            scale = min(1.0, c.dp_volume_max / max(h, w))
            h, w = max(1, round(h * scale)), max(1, round(w * scale))
        return (D + 1) // 2, h, w

    def volume_points(self, cams: Cameras, H: int, W: int, depths: torch.Tensor) -> torch.Tensor:
        """Target-space points [B, h, w, Dv, 3] of the transform volume of an H x W view.

        Its voxel centres coincide with the full-resolution samples under trilinear,
        align_corners=False resampling (pixel centres across the same field of view; depth
        planes at the matching fractional sample index).
        """
        B, D = depths.shape
        Dv, h, w = self.volume_shape(H, W, D)
        m = torch.arange(Dv, dtype=depths.dtype, device=depths.device)
        index = (m + 0.5) * D / Dv - 0.5  # fractional full-resolution sample index
        near, far = depths[:, :1], depths[:, -1:]
        vdepths = near + (far - near) * index / max(D - 1, 1)
        return self._points(self._rays(cams, h, w, depths.dtype), vdepths).reshape(B, h, w, Dv, 3)

    def _expression_offsets(self, body_out) -> torch.Tensor | None:
        """Per nearest-search vertex, the body model's inverse expression displacement
        (neutral - expression, zero pose, metres) that mesh guidance adds to each sample."""
        if not self.config.exp_mesh_guided:
            return None
        idx = self.nn_index
        return body_out.neutral_vertices[:, idx] - body_out.canonical_vertices[:, idx]

    def _transform_volume(self, cams: Cameras, H: int, W: int, depths: torch.Tensor, body_out) -> torch.Tensor:
        """Inverse LBS transforms of the transform-volume samples: [B, 16, Dv, h, w]."""
        pts = self.volume_points(cams, H, W, depths)
        B, h, w, Dv, _ = pts.shape
        T = self.pose.inverse_lbs(pts.reshape(B, -1, 3), body_out.vertices[:, self.nn_index], self.nn_weights,
                                  body_out.bone_transforms, self._expression_offsets(body_out))
        return T.reshape(B, h, w, Dv, 16).permute(0, 4, 3, 1, 2)

    def _pose_volume(self, cams: Cameras, H: int, W: int, depths: torch.Tensor, body_out,
                     aux: dict) -> tuple[torch.Tensor, torch.Tensor] | None:
        """Dp-processed transform volume and the full-resolution pixel grid to read it at."""
        if not self.config.use_dp:
            return None
        B = depths.shape[0]
        volume = self._transform_volume(cams, H, W, depths, body_out)
        processed = self.pose.process(volume)
        if aux:
            aux["pose_smooth"] = aux["pose_smooth"] + self.pose.smooth_loss(volume, processed)
        D = depths.shape[1]
        if B * 16 * D * H * W <= self.config.dp_dense_upsample_max:
            # Small views: one dense trilinear upsampling (its backward is far cheaper than
            # grid_sample's), laid out per ray for the chunks.
            dense = F.interpolate(processed, size=(D, H, W), mode="trilinear", align_corners=False)
            return dense.permute(0, 3, 4, 2, 1).reshape(B, H * W, D, 16), None
        uv = cams.pixel_centers(H, W).to(depths.dtype)
        uv = uv / torch.tensor([W, H], dtype=uv.dtype, device=uv.device) * 2.0 - 1.0
        return processed, uv[None].expand(B, -1, -1)

    def _deform(self, rays, depths: torch.Tensor, body_out, w_exp: torch.Tensor, pose_volume,
                start: int, stop: int):
        """Samples of rays start:stop: x_t, x_p, x_c, all [B, n, D, 3] scene metres."""
        B, D = depths.shape
        n = stop - start
        x_t = self._points(rays, depths, start, stop)
        if pose_volume is not None:
            processed, uv = pose_volume
            if uv is None:  # already upsampled per ray
                T = processed[:, start:stop]
            else:
                T = upsample_volume_at(processed, uv[:, start:stop], D)  # [B, n, D, 16]
        else:
            T = self.pose.inverse_lbs(x_t.reshape(B, n * D, 3), body_out.vertices[:, self.nn_index],
                                      self.nn_weights, body_out.bone_transforms,
                                      self._expression_offsets(body_out)).reshape(B, n, D, 16)
        x_p = apply_transforms(T, x_t)
        x_c = self.expression(x_p.reshape(B, n * D, 3), w_exp).reshape(B, n, D, 3)
        return x_t, x_p, x_c

    @torch.no_grad()
    def deform_view(self, z_id: torch.Tensor, z_exp: torch.Tensor, z_pose: torch.Tensor,
                    cams: Cameras, resolution: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """The deformation chain of a view, for inspection and tests.

        Returns x_t, x_p, x_c [B, R*R, D, 3] (scene metres) and the sample depths [B, D]. x_p is
        after the inverse pose transform (and, with mesh guidance, the inverse expression
        displacement), x_c after De.
        """
        B = _check_codes("z_id", z_id, (self.config.id_dim,), None)
        _check_codes("z_exp", z_exp, (self.config.exp_dim,), B)
        _check_codes("z_pose", z_pose, (6, 3), B)
        self._check_cameras("cams", cams, B)
        R = _check_resolution("resolution", resolution)
        body_out = self.body(z_id, z_exp, z_pose)
        w_exp = self.expression.map(z_id, z_exp)
        depths = self.sample_depths(cams)
        vol = self._pose_volume(cams, R, R, depths, body_out, {})
        rays = self._rays(cams, R, R, depths.dtype)
        x_t, x_p, x_c = self._deform(rays, depths, body_out, w_exp, vol, 0, R * R)
        return x_t, x_p, x_c, depths

    def _geometry(self, rays, depths: torch.Tensor, body_out, w_exp: torch.Tensor, pose_volume,
                  start: int, stop: int, aux: dict, n_rays: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Canonical samples x_can [B, n, D, 3] and the field s [B, n, D] of rays start:stop.

        Adds the De loss terms of these rays to ``aux`` (weighted by their share of n_rays).
        """
        B, D = depths.shape
        n = stop - start
        _, x_p, x_c = self._deform(rays, depths, body_out, w_exp, pose_volume, start, stop)
        if aux:
            aux_step = max(1, (n_rays * D) // max(1, self.config.aux_points))
            x_p_flat = x_p.reshape(B, n * D, 3)
            aux["exp_minimal"] = aux["exp_minimal"] + self.expression.minimal_loss(
                x_p_flat, x_c.reshape(B, n * D, 3)) * (n / n_rays)
            sub = x_p_flat[:, ::aux_step]
            aux["exp_smooth"] = aux["exp_smooth"] + self.expression.smooth_loss(sub, w_exp) * (n / n_rays)
        x_can = x_c / SCENE_SCALE
        return x_can, self.manifold(x_can)

    def _render_view(self, cams: Cameras, H: int, W: int, body_out, w_rad: torch.Tensor,
                     w_exp: torch.Tensor, maps: torch.Tensor | None, aux: dict,
                     bound: tuple[torch.Tensor, float] | None = None, gmax: int = 0) -> _View:
        c = self.config
        B = w_rad.shape[0]
        depths = self.sample_depths(cams, *(bound or (None, None)))  # [B, D]
        D = depths.shape[1]
        chunk = max(1, c.ray_chunk // B)
        coarse = None
        if gmax and max(H, W) > gmax:
            # Deformation and M on a coarser ray grid (same depth planes), read per pixel by
            # bilinear interpolation: the manifolds are smooth, the detail is in U's maps.
            scale = gmax / max(H, W)
            h, w = max(1, round(H * scale)), max(1, round(W * scale))
            pose_volume = self._pose_volume(cams, h, w, depths, body_out, aux)
            crays = self._rays(cams, h, w, depths.dtype)
            parts = []
            for start in range(0, h * w, chunk):
                x_can, s = self._geometry(crays, depths, body_out, w_exp, pose_volume, start,
                                          min(h * w, start + chunk), aux, h * w)
                parts.append(torch.cat([x_can, s[..., None]], -1))
            grid = torch.cat(parts, 1).reshape(B, h, w, D, 4).permute(0, 4, 3, 1, 2)  # [B, 4, D, h, w]
            uv = cams.pixel_centers(H, W).to(depths.dtype)
            uv = uv / torch.tensor([W, H], dtype=uv.dtype, device=uv.device) * 2.0 - 1.0
            coarse = (grid, uv[None].expand(B, -1, -1))
        else:
            # Pose transforms: volume at (half) ray resolution, Dp, then read at full resolution.
            pose_volume = self._pose_volume(cams, H, W, depths, body_out, aux)
        rays = self._rays(cams, H, W, depths.dtype)
        levels = self.manifold.levels
        L = levels.shape[0]
        n_rays = H * W
        colors, dep, acc = [], [], []
        for start in range(0, n_rays, chunk):
            stop = min(n_rays, start + chunk)
            n = stop - start
            if coarse is None:
                x_can, s = self._geometry(rays, depths, body_out, w_exp, pose_volume, start, stop, aux, n_rays)
            else:
                g = upsample_volume_at(coarse[0], coarse[1][:, start:stop], D)  # [B, n, D, 4]
                x_can, s = g[..., :3], g[..., 3]
            hits = intersect_levels(s, levels, depths[:, None, :], x_can)
            if maps is None:
                rad = self.radiance(hits.points.reshape(B, n * L, 3), w_rad)
                color = rad.color.reshape(B, n, L, 3)
                alpha = rad.alpha.reshape(B, n, L)
            else:
                color, alpha = sample_maps(maps, hits.points)
            alpha = alpha * hits.valid.to(alpha.dtype)
            t, _, color, alpha = sort_by_depth(hits.t, hits.valid, color, alpha)
            comp = composite(color, alpha, t, background=1.0, far=depths[:, -1:])
            colors.append(comp.color)
            dep.append(comp.depth)
            acc.append(comp.alpha)
        image = torch.cat(colors, 1).reshape(B, H, W, 3).permute(0, 3, 1, 2) * 2.0 - 1.0
        depth = torch.cat(dep, 1).reshape(B, 1, H, W)
        alpha = torch.cat(acc, 1).reshape(B, 1, H, W)
        return _View(image, depth, alpha)
