"""The generator G: five sub-networks (M, phi, U, Dp, De) composed into one typed call.

This module holds the composition: the sub-networks by their paper names and their parameter
groups per training stage, the mapping networks with truncation (psi) and the identity cache,
the nearest-vertex set-up of the inverse LBS (eq. 4, with the mouth cavity of mesh-guided
expressions), the typed forward and the assembly of the ``Aux`` loss terms (eqs. 10-13). The
rays, sample depths, transform volume, chunked views and compositing (eq. 8) live in
``generator.renderer``.

Speed: stage 2 with an ``IdentityCache`` redoes only the per-frame work. For large renders,
``GeneratorConfig.geometry_max_resolution`` (e.g. 128) evaluates the deformation chain and M on
a coarser ray grid and interpolates x_c and s per pixel; detail still comes from U's 512 maps.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from aniportraitgan.cameras import Cameras, matching_face_cameras
from aniportraitgan.errors import InputError
from aniportraitgan.frames import SCENE_SCALE
from aniportraitgan.latents import LatentSample
from aniportraitgan.generator.cache import IdentityCache, WAverage
from aniportraitgan.generator.config import SUBNETWORK_FIELDS, GeneratorConfig
from aniportraitgan.generator.deformation import ExpressionDeformation, PoseDeformation
from aniportraitgan.generator.outputs import Aux, Rendered, RenderOptions
from aniportraitgan.generator.manifolds import ManifoldPredictor
from aniportraitgan.generator.radiance import RadianceGenerator
from aniportraitgan.generator.renderer import camera_rays, deform, pose_volume, render_view, sample_depths
from aniportraitgan.generator.superres import ManifoldSuperResolution, lowres_maps, map_intersections


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
                                          c.radiance_features, c.mapping_hidden, c.mapping_layers,
                                          c.radiance_input_scale, c.radiance_template, c.radiance_template_extent)
        self.superres = ManifoldSuperResolution(
            4 + c.radiance_features, c.sr_channels, c.sr_growth, c.sr_blocks, c.sr_scale,
            c.id_dim, c.noise_dim, c.sr_style_dim, c.mapping_hidden, c.mapping_layers)
        self.pose = PoseDeformation(c.dp_kernel, c.nn_chunk, c.dp_shared_blend)
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
        if c.radiance_template:
            # The mean person's neutral landmarks around its head centre: the target of every
            # person's template frame (constant, so computed once).
            with torch.no_grad():
                mean = body_model(*body_model.neutral_codes(1))
            self.register_buffer("template_mean_face", (mean.landmarks[0] - mean.head_center[0]) / SCENE_SCALE,
                                 persistent=False)

    # The five sub-networks by their names in the paper.
    SUBNETWORK_NAMES = tuple(SUBNETWORK_FIELDS)  # ("M", "phi", "U", "Dp", "De")

    def subnetworks(self) -> dict[str, nn.Module]:
        return dict(zip(self.SUBNETWORK_NAMES, (self.manifold, self.radiance, self.superres, self.pose, self.expression)))

    @classmethod
    def unknown_subnetworks(cls, names) -> list[str]:
        """The names among ``names`` that are no sub-network's (sorted; empty when all are)."""
        return sorted(set(names) - set(cls.SUBNETWORK_NAMES))

    def subnetwork_prefixes(self, names) -> tuple[str, ...]:
        """State-dict key prefixes ("radiance.", ...) of the named sub-networks."""
        unknown = self.unknown_subnetworks(names)
        if unknown:
            raise InputError(f"unknown generator sub-networks {unknown}; known: {sorted(self.SUBNETWORK_NAMES)}")
        wanted = [self.subnetworks()[n] for n in names]
        # The truncation centres belong to the mapping networks they average (phi's, U's).
        wanted += [avg for net, avg in ((self.radiance, self.w_avg_radiance), (self.superres, self.w_avg_superres))
                   if any(net is w for w in wanted)]
        return tuple(f"{attr}." for attr, module in self.named_children() if any(module is w for w in wanted))

    # ------------------------------------------------------------------ training stages
    def trainable_parameters(self, stage: int) -> list[nn.Parameter]:
        """The parameters a stage trains, in ``parameters()`` order: stage 1 everything but U,
        stage 2 U only. The body model is never trained (it is not a registered submodule)."""
        self._check_stage(stage)
        u_params = {id(p) for p in self.superres.parameters()}
        trainable = [p for p in self.parameters() if (id(p) in u_params) == (stage == 2)]
        if not trainable:
            raise InputError(f"stage {stage}: the generator has no parameters to train")
        return trainable

    def set_trainable(self, stage: int) -> list[nn.Parameter]:
        """Set ``requires_grad`` for a stage (``trainable_parameters``) and return those parameters."""
        trainable = self.trainable_parameters(stage)
        keep = {id(p) for p in trainable}
        for p in self.parameters():
            p.requires_grad_(id(p) in keep)
        return trainable

    def param_groups(self, stage: int, lr: float, lr_scale: dict[str, float]) -> list[dict]:
        """Adam parameter groups of a stage's parameters: one per sub-network named in
        ``lr_scale`` (``subnetworks()`` names) at ``lr`` times its multiplier, one ("rest") at
        ``lr``; ordered by name with "rest" first, the order resumed optimiser states rely on."""
        subnets = self.subnetworks()
        unknown = self.unknown_subnetworks(lr_scale)
        if unknown:
            raise InputError(f"lr_scale names unknown generator sub-networks {unknown}; known: {sorted(subnets)}")
        owner = {id(p): name for name, module in subnets.items() if name in lr_scale for p in module.parameters()}
        groups: dict[str, list] = {}
        for p in self.trainable_parameters(stage):
            groups.setdefault(owner.get(id(p), ""), []).append(p)
        return [{"params": groups[name], "lr": lr * (lr_scale[name] if name else 1.0), "name": name or "rest"}
                for name in sorted(groups)]

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

    def template_frame(self, z_id: torch.Tensor | None) -> torch.Tensor | None:
        """Each identity's frame of phi's template [B, 4, 3] (see ``radiance.py``): the affine
        map, least squares over the 68 landmarks of the neutral zero-pose face, from this
        person's canonical points to the mean person's (canonical units, relative to the mean
        person's head centre). None for a generator without a template."""
        if self.radiance.template is None:
            return None
        if z_id is None:
            raise InputError("this generator's phi has a template: the identities' z_id are needed")
        B = z_id.shape[0]
        _, z_exp, z_pose = self.body.neutral_codes(B, device=z_id.device)
        with torch.no_grad():  # labels, not learned
            lm = self.body(z_id, z_exp.to(z_id.dtype), z_pose.to(z_id.dtype)).landmarks / SCENE_SCALE
        target = self.template_mean_face.to(lm.dtype).expand(B, -1, -1)
        X = torch.cat([lm, lm.new_ones(B, lm.shape[1], 1)], -1)  # [B, 68, 4]
        return torch.linalg.lstsq(X.double(), target.double()).solution.to(z_id.dtype)

    def radiance_maps(self, w_radiance: torch.Tensor, w_superres: torch.Tensor,
                      z_id: torch.Tensor | None = None) -> torch.Tensor:
        """Super-resolved radiance maps [B, L, 4, R_hr, R_hr] (stage 2's per-identity work);
        ``z_id`` places phi's template (needed only with one)."""
        c = self.config
        hits = map_intersections(self.manifold, c.sr_map_resolution, c.sr_map_depth_samples,
                                 z_front=c.bbox_max[2], z_back=c.bbox_min[2], chunk=c.ray_chunk)
        low = lowres_maps(self.radiance, w_radiance, hits, c.sr_map_resolution, chunk=c.ray_chunk * 4,
                          frame=self.template_frame(z_id))
        return self.superres(low, w_superres)

    def build_cache(self, z_id: torch.Tensor, eps: torch.Tensor, psi: float = 1.0, stage: int = 2) -> IdentityCache:
        """Precompute the per-identity work for repeated rendering of the same (z_id, eps)."""
        B = _check_codes("z_id", z_id, (self.config.id_dim,), None)
        _check_codes("eps", eps, (self.config.noise_dim,), B)
        self._check_stage_psi(stage, psi)
        w_rad, w_sr = self.map_identity(z_id, eps, psi, stage)
        maps = self.radiance_maps(w_rad, w_sr, z_id) if stage == 2 else None
        return IdentityCache(z_id.detach().clone(), eps.detach().clone(), float(psi), stage, w_rad, w_sr, maps)

    @staticmethod
    def _check_stage(stage) -> None:
        if stage not in (1, 2):
            raise InputError(f"stage must be 1 or 2, got {stage!r}")

    @classmethod
    def _check_stage_psi(cls, stage, psi) -> None:
        cls._check_stage(stage)
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
            maps = self.radiance_maps(w_rad, w_sr, z_id) if o.stage == 2 else None
        w_exp = self.expression.map(z_id, z_exp)

        # Loss accumulators the views add to (empty: not asked); colour_rough only when measured.
        terms = ("pose_smooth", "exp_minimal", "exp_smooth") + (("colour_rough",) if o.colour_roughness else ())
        acc: dict = {name: z_id.new_zeros(()) for name in terms} if o.return_aux else {}
        gmax = c.geometry_max_resolution if o.geometry_max_resolution is None else o.geometry_max_resolution
        frame = self.template_frame(z_id) if maps is None else None
        portrait = render_view(self, cameras, H, H, body_out, w_rad, w_exp, maps, acc, gmax=gmax, frame=frame)
        out = Rendered(portrait.image, portrait.depth, portrait.alpha)
        if Hf:
            if face_cameras is None:
                face_cameras = matching_face_cameras(cameras, body_out.head_center, body_out.head_rotation)
            face = render_view(self, face_cameras, Hf, Hf, body_out, w_rad, w_exp, maps, acc,
                               bound=(body_out.head_center, c.face_bound_radius), gmax=gmax, frame=frame)
            out.face, out.face_depth, out.face_alpha, out.face_cameras = face.image, face.depth, face.alpha, face_cameras
        if o.return_aux:
            out.aux = self._aux(body_out, acc, 2 if Hf else 1, w_rad, w_exp)
        return out

    def _aux(self, body_out, acc: dict, views: int, w_rad: torch.Tensor, w_exp: torch.Tensor) -> Aux:
        """The loss terms of a render: eq. 10 at the mesh vertices, eqs. 11-13 averaged over views."""
        c = self.config
        verts = body_out.canonical_vertices[:, self.nn_index]
        neutral = body_out.neutral_vertices[:, self.nn_index]
        step = max(1, verts.shape[1] // c.aux_points)
        verts, neutral = verts[:, ::step], neutral[:, ::step]
        if c.exp_mesh_guided:  # De reads the neutral mesh; its residual should vanish there
            imitation = self.expression.imitation_loss(neutral, torch.zeros_like(neutral), w_exp)
        else:
            imitation = self.expression.imitation_loss(verts, neutral - verts, w_exp)
        return Aux(pose_smooth=acc["pose_smooth"] / views, exp_imitation=imitation,
                   exp_smooth=acc["exp_smooth"] / views, exp_minimal=acc["exp_minimal"] / views,
                   colour_rough=acc.get("colour_rough", torch.zeros_like(acc["pose_smooth"])) / views,
                   body=body_out, w_radiance=w_rad, w_expression=w_exp)

    @staticmethod
    def _check_cameras(name: str, cams, B: int) -> None:
        if not isinstance(cams, Cameras):
            raise InputError(f"{name} must be aniportraitgan.cameras.Cameras, got {type(cams).__name__}")
        if len(cams) != B:
            raise InputError(f"{name} holds {len(cams)} cameras for a batch of {B}")
        if not torch.isfinite(cams.c2w).all():
            raise InputError(f"{name} contains NaN or infinite values")

    # ------------------------------------------------------------------ inverse LBS (eq. 4)
    def expression_offsets(self, body_out) -> torch.Tensor | None:
        """Per nearest-search vertex, the body model's inverse expression displacement
        (neutral - expression, zero pose, metres) that mesh guidance adds to each sample."""
        if not self.config.exp_mesh_guided:
            return None
        idx = self.nn_index
        return body_out.neutral_vertices[:, idx] - body_out.canonical_vertices[:, idx]

    def inverse_lbs(self, points: torch.Tensor, body_out, split_offsets: bool = False):
        """Target-space points [B, N, 3] -> inverse transforms [B, N, 4, 4] by their nearest
        allowed vertex of the posed body ``body_out`` (with mesh guidance's offsets; with
        ``split_offsets`` and guidance, (transforms, offsets [B, N, 3]) apart)."""
        offsets = self.expression_offsets(body_out)
        return self.pose.inverse_lbs(points, body_out.vertices[:, self.nn_index], self.nn_weights,
                                     body_out.bone_transforms, offsets,
                                     split_offsets=split_offsets and offsets is not None)

    @property
    def offsets_bypass_dp(self) -> bool:
        """Whether mesh guidance's expression offsets join x_p after Dp (exp_offsets_after_dp)."""
        c = self.config
        return c.exp_mesh_guided and c.exp_offsets_after_dp and c.use_dp

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
        depths = sample_depths(cams, self.bbox_corners, self.config.samples_per_ray)
        vol = pose_volume(self, cams, R, R, depths, body_out, {})
        rays = camera_rays(cams, R, R, depths.dtype)
        x_t, x_p, x_c = deform(self, rays, depths, body_out, w_exp, vol, 0, R * R)
        return x_t, x_p, x_c, depths
