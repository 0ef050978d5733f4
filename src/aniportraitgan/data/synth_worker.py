"""SynthPortraits' per-process renderer: body model, GL context and UV geometry, drawing chunks
of samples for `synthesize` and single samples with changed labels for the control-response
ceiling (`metrics.response`)."""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from aniportraitgan.atomic import atomic_path
from aniportraitgan.body import PortraitBodyModel
from aniportraitgan.cameras import face_angles_from_main, look_at_cameras, matching_face_cameras
from aniportraitgan.data.dataset import face_path, portrait_path
from aniportraitgan.data.synth_config import CHUNK, SynthConfig
from aniportraitgan.data.synth_labels import draw_sample
from aniportraitgan.render import Light, MeshRenderer, MeshTopology, TexturedMesh, batch_vertex_normals
from aniportraitgan.render.appearance import AppearanceConfig, paint_texture, sample_appearance
from aniportraitgan.render.extra_meshes import build_hair_shell, build_skirt
from aniportraitgan.render.texels import portrait_uv_layout, texel_geometry


class SynthWorker:
    """Per-process state: body model, GL renderer, UV geometry. Renders chunks of samples.
    Runs torch on one thread (a sample's bits then do not depend on the caller's threads);
    `close` gives the caller its thread count back."""

    def __init__(self, config: SynthConfig) -> None:
        self._caller_threads = torch.get_num_threads()
        torch.set_num_threads(1)
        self.config = config
        self.body = PortraitBodyModel.load()
        self._renderer = None  # created on first use: a labels-only pass needs no GL context
        self._geo = None
        self.uvs, self.face_uvs = portrait_uv_layout(self.body)
        self.faces = self.body.faces.numpy().astype(np.int64)
        with torch.no_grad():
            neutral = self.body(*self.body.neutral_codes(1)).vertices[0].numpy()
        self.skirt = build_skirt(self.faces, self.face_uvs, neutral)
        self.all_faces = np.concatenate([self.faces, self.skirt.faces])
        self.all_face_uvs = np.concatenate([self.face_uvs, self.skirt.face_uvs])
        self.topology = MeshTopology.build(self.all_faces, self.all_face_uvs, self.uvs)
        self.all_faces_t = torch.from_numpy(self.all_faces)
        self._shell_topology = None
        self._last_look: tuple[int, _Look] | None = None  # render_posed: (sample, look) it drew last
        w = self.body.skinning_weights.numpy()
        names = self.body.bone_names
        self.head_index = names.index("head")
        self.neck_index = names.index("neck01")
        with torch.no_grad():
            mean = self.body(*self.body.neutral_codes(1))
        self.ref_neck_to_head = float((mean.head_center[0] - mean.joints[0, self.neck_index]).norm())
        self.head_weight = w[:, names.index("head")] + w[:, names.index("eye.L")] + w[:, names.index("eye.R")]
        self.appearance = AppearanceConfig(texture_size=config.resolved_texture_size(), long_hair_fraction=config.long_hair_fraction)

    @property
    def renderer(self):
        if self._renderer is None:
            self._renderer = MeshRenderer(samples=self.config.msaa)
        return self._renderer

    @property
    def geo(self):
        if self._geo is None:
            self._geo = texel_geometry(self.body, self.config.resolved_texture_size())
        return self._geo

    def run_chunk(self, start: int, stop: int, render: dict[int, tuple[bool, bool]], out_dir: str) -> dict[str, np.ndarray]:
        """Labels of samples [start, stop); writes the missing images listed in `render`
        (sample -> (portrait missing, face missing))."""

        cfg = self.config
        R, Rf = cfg.resolution, cfg.face_resolution
        # Always a full chunk through the body model (the tail is dropped), so that a sample's
        # numbers never depend on how many samples the dataset has.
        draws = [draw_sample(cfg.seed, k, self.body.id_dim, self.body.expression_names, cfg.priors) for k in range(start, start + CHUNK)]
        z_id = torch.from_numpy(np.stack([d.z_id for d in draws]))
        z_exp = torch.from_numpy(np.stack([d.z_exp for d in draws]))
        z_pose = torch.from_numpy(np.stack([d.z_pose for d in draws]))
        with torch.no_grad():
            out = self.body(z_id, z_exp, z_pose)
            neck = out.joints[:, self.neck_index]
            size = (out.head_center - neck).norm(dim=-1) / self.ref_neck_to_head  # [n]
            radius = torch.tensor([d.cam_radius for d in draws]) * size
            look_at = neck + torch.from_numpy(np.stack([d.cam_look_at for d in draws])) * size[:, None]
            for b, d in enumerate(draws):
                d.cam_radius = float(radius[b])
                d.cam_look_at = look_at[b].numpy().astype(np.float32)
            cams = look_at_cameras(
                torch.tensor([d.cam_yaw for d in draws]),
                torch.tensor([d.cam_pitch for d in draws]),
                radius,
                torch.tensor([d.cam_fov for d in draws]),
                look_at,
            )
            face = matching_face_cameras(cams, out.head_center, out.head_rotation)
            f_yaw, f_pitch = face_angles_from_main(cams, out.head_center, out.head_rotation)
            lm, _ = cams.project(out.landmarks, R, R)
            flm, _ = face.project(out.landmarks, Rf, Rf)
        n = stop - start
        draws = draws[:n]
        z_id, z_exp, z_pose = z_id[:n], z_exp[:n], z_pose[:n]
        out = out[:n]
        cams, face, lm, flm, f_yaw, f_pitch = cams[:n], face[:n], lm[:n], flm[:n], f_yaw[:n], f_pitch[:n]
        long_hair = np.zeros(n, dtype=bool)
        verts_t = torch.cat([out.vertices, self.skirt.extend_batch(out.vertices)], 1)
        normals = batch_vertex_normals(verts_t, self.all_faces_t).numpy()
        verts = verts_t.numpy()
        for b, d in enumerate(draws):
            k = start + b
            p, rng = self._appearance(d)
            long_hair[b] = p.long_hair
            if k not in render:
                continue
            look = self._look(d, p, rng, out[b:b + 1])
            self.renderer.set_meshes(self._meshes(verts[b], normals[b], out.bone_transforms[b, self.head_index].numpy(), look))
            need_portrait, need_face = render[k]
            if need_portrait:
                img = self.renderer.draw(cams.c2w[b].numpy(), float(cams.fov_deg[b]), R, R, look.light, with_depth=False)
                _write_png(portrait_path(out_dir, k), img.rgb, cfg.png_compress)
            if need_face:
                fimg = self.renderer.draw(face.c2w[b].numpy(), float(face.fov_deg[b]), Rf, Rf, look.light, with_depth=False)
                _write_png(face_path(out_dir, k), fimg.rgb, cfg.png_compress)
        return {
            "index": np.arange(start, stop, dtype=np.int64),
            "z_id": z_id.numpy(),
            "z_exp": z_exp.numpy(),
            "z_pose": z_pose.numpy(),
            "cam_yaw": np.array([d.cam_yaw for d in draws], np.float32),
            "cam_pitch": np.array([d.cam_pitch for d in draws], np.float32),
            "cam_radius": np.array([d.cam_radius for d in draws], np.float32),
            "cam_fov": np.array([d.cam_fov for d in draws], np.float32),
            "cam_look_at": np.stack([d.cam_look_at for d in draws]).astype(np.float32),
            "c2w": cams.c2w.numpy().astype(np.float32),
            "face_yaw": f_yaw.numpy().astype(np.float32),
            "face_pitch": f_pitch.numpy().astype(np.float32),
            "face_c2w": face.c2w.numpy().astype(np.float32),
            "face_fov": face.fov_deg.numpy().astype(np.float32),
            "head_center": out.head_center.numpy().astype(np.float32),
            "head_rotation": out.head_rotation.numpy().astype(np.float32),
            "landmarks": lm.numpy().astype(np.float32),
            "face_landmarks": flm.numpy().astype(np.float32),
            "long_hair": long_hair,
            "light_dir": np.stack([d.light_dir for d in draws]).astype(np.float32),
        }

    def _appearance(self, d):
        """Sample d's appearance parameters and the generator its texture and hair draw from next."""
        rng = np.random.default_rng(d.appearance_seed)
        return sample_appearance(rng, self.appearance), rng

    def _look(self, d, p, rng: np.random.Generator, out_b) -> "_Look":
        """Sample d's texture, light and (long hair) hair shell, built around its zero-pose head;
        `rng` continues where `sample_appearance` left it, so the draws match the dataset's."""
        tex = paint_texture(self.geo, p, rng)
        shell = None
        if p.long_hair:
            T = out_b.bone_transforms[0, self.head_index].numpy()
            centre0 = np.linalg.solve(T[:3, :3], out_b.head_center[0].numpy() - T[:3, 3])
            shell = build_hair_shell(out_b.neutral_vertices[0].numpy(), self.head_weight, centre0, p, rng)
        light = Light(tuple(d.light_dir.tolist()), ambient=d.ambient, diffuse=d.diffuse)
        return _Look(tex, shell, light)

    def _meshes(self, verts: np.ndarray, normals: np.ndarray, head_T: np.ndarray, look: "_Look") -> list:
        """The meshes of one posed sample (body and skirt, plus the hair shell moved by the head bone)."""
        meshes = [TexturedMesh(verts, self.all_faces, self.uvs, self.all_face_uvs, look.texture, normals, self.topology)]
        if look.shell is not None:
            shell = look.shell
            hv = shell.vertices @ head_T[:3, :3].T + head_T[:3, 3]
            if self._shell_topology is None or len(self._shell_topology.indices) != shell.faces.size:
                self._shell_topology = MeshTopology.build(shell.faces, shell.faces, shell.uvs)
            meshes.append(TexturedMesh(hv.astype(np.float32), shell.faces, shell.uvs, shell.faces, shell.texture, topology=self._shell_topology))
        return meshes

    def render_posed(self, k: int, out, cams, resolution: int) -> np.ndarray:
        """uint8 [B, H, W, 3]: dataset sample k's person (its identity's texture, hair and light)
        in each of the B body-model outputs `out` (e.g. sample k's codes with one control
        changed), seen by `cams` [B] at `resolution`. What the dataset would have shown for
        those labels: the control-response metric's ceiling (`metrics.response`)."""
        if self._last_look is None or self._last_look[0] != k:
            d = draw_sample(self.config.seed, k, self.body.id_dim, self.body.expression_names, self.config.priors)
            p, rng = self._appearance(d)
            self._last_look = (k, self._look(d, p, rng, out[0:1]))
        look = self._last_look[1]
        verts_t = torch.cat([out.vertices, self.skirt.extend_batch(out.vertices)], 1)
        normals = batch_vertex_normals(verts_t, self.all_faces_t).numpy()
        verts = verts_t.numpy()
        images = []
        for b in range(len(verts)):
            self.renderer.set_meshes(self._meshes(verts[b], normals[b], out.bone_transforms[b, self.head_index].numpy(), look))
            img = self.renderer.draw(cams.c2w[b].detach().cpu().numpy(), float(cams.fov_deg[b]), resolution, resolution, look.light, with_depth=False)
            images.append(img.rgb)
        return np.stack(images)

    def close(self) -> None:
        if self._renderer is not None:
            self._renderer.release()
            self._renderer = None
        torch.set_num_threads(self._caller_threads)


@dataclass
class _Look:
    """What stays fixed when one sample's labels change: texture, hair shell, light."""

    texture: np.ndarray
    shell: Any  # the hair shell around the zero-pose head, or None (short hair)
    light: Light


def _write_png(path: Path, rgb: np.ndarray, level: int) -> None:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG", compress_level=level)
    # Atomic (a killed worker leaves no partial PNG) but not fsynced one by one: the two fsyncs
    # were a quarter of a 256 px sample's time. `synthesize` flushes them all at once (os.sync)
    # before the card says complete.
    with atomic_path(path) as tmp:
        tmp.write_bytes(buf.getvalue())

