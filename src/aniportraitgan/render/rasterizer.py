"""Headless OpenGL rasterizer for textured triangle meshes (moderngl + EGL).

The projection is written directly from the pinhole model of `aniportraitgan.cameras`
(OpenCV camera axes, square pixels, principal point at the image centre,
`f = 0.5 * H / tan(fov / 2)`, pixel (i, j) centred at (j + 0.5, i + 0.5)), so that a point
projected by the cameras module lands on the pixel where it is rasterized. The vertex shader
maps camera coordinates to clip space so that window row 0 is image row 0 (v down); reading the
framebuffer then gives the image top row first with no flip.

One `MeshRenderer` owns one GL context (create it once per process and reuse it for every
frame); framebuffers are created once per (height, width) and cached.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from aniportraitgan.errors import InputError
from aniportraitgan.render.mesh import (
    Light,
    MeshTopology,
    RenderOutput,
    TexturedMesh,
    focal_pixels,
    vertex_normals,
)

EGL_PACKAGES = "libegl1 libegl-mesa0 libgl1-mesa-dri"


class RenderBackendError(RuntimeError):
    """No usable OpenGL (EGL) context: the system packages or the moderngl wheel are missing."""


_VERTEX_SHADER = """
#version 330
uniform mat4 w2c;        // scene -> OpenCV camera
uniform vec2 focal_ndc;  // (2 f / W, 2 f / H)
uniform vec2 depth_ab;   // z_ndc = a + b / z
in vec3 in_pos;
in vec3 in_normal;
in vec2 in_uv;
out vec3 v_normal;
out vec3 v_pos;
out vec2 v_uv;
out float v_z;
void main() {
    vec4 pc = w2c * vec4(in_pos, 1.0);
    // Clip w = camera z, so x_ndc = 2 f x / (W z) = 2 u / W - 1 and y_ndc = 2 v / H - 1.
    gl_Position = vec4(focal_ndc.x * pc.x, focal_ndc.y * pc.y,
                       depth_ab.x * pc.z + depth_ab.y, pc.z);
    v_normal = in_normal;
    v_pos = in_pos;
    v_uv = in_uv;
    v_z = pc.z;
}
"""

_FRAGMENT_SHADER = """
#version 330
uniform sampler2D tex;
uniform vec3 light_dir;
uniform vec3 light_color;
uniform float ambient;
uniform float diffuse;
uniform vec3 cam_pos;
in vec3 v_normal;
in vec3 v_pos;
in vec2 v_uv;
in float v_z;
layout(location = 0) out vec4 out_color;
layout(location = 1) out float out_depth;
void main() {
    vec3 n = normalize(v_normal);
    // Two-sided lighting: thin shells (hair) are seen from both sides.
    if (dot(n, cam_pos - v_pos) < 0.0) n = -n;
    float lambert = max(dot(n, light_dir), 0.0);
    vec3 albedo = texture(tex, v_uv).rgb;
    vec3 c = albedo * (ambient + diffuse * lambert) * light_color;
    out_color = vec4(clamp(c, 0.0, 1.0), 1.0);
    out_depth = v_z;
}
"""


@dataclass
class _Targets:
    fbo: object
    resolve: object | None
    attachments: list = field(default_factory=list)


@dataclass
class _Slot:
    """GPU buffers of one uploaded mesh."""

    topology: MeshTopology
    dynamic: object  # position + normal per render vertex
    uv: object
    ibo: object
    vao: object
    texture: object
    count: int


class MeshRenderer:
    """Reusable rasterizer: one GL context, framebuffers cached per resolution.

    samples: MSAA sample count (0 or 1 disables multi-sampling). near/far: clip planes in metres.
    `render` uploads meshes and draws one view; to draw several views of the same meshes
    (e.g. a portrait and its face image) call `set_meshes` once and `draw` per view.
    """

    def __init__(self, samples: int = 4, near: float = 0.05, far: float = 50.0) -> None:
        try:
            import moderngl
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise RenderBackendError(
                "moderngl is not installed: pip install 'moderngl>=5.8' "
                f"(and the Debian packages {EGL_PACKAGES})"
            ) from exc
        try:
            self.ctx = moderngl.create_standalone_context(backend="egl")
        except Exception as exc:  # pragma: no cover - depends on the environment
            raise RenderBackendError(
                f"cannot create a headless EGL OpenGL context ({exc}); install the Debian packages "
                f"{EGL_PACKAGES} (apt-get install -y {EGL_PACKAGES})"
            ) from exc
        self._moderngl = moderngl
        max_samples = int(self.ctx.max_samples)
        self.samples = 0 if samples <= 1 else min(int(samples), max_samples)
        self.near, self.far = float(near), float(far)
        self.prog = self.ctx.program(vertex_shader=_VERTEX_SHADER, fragment_shader=_FRAGMENT_SHADER)
        self._targets: dict[tuple[int, int, bool], _Targets] = {}
        # GPU buffers per topology (kept while the topology object is alive in the cache) and
        # textures per (mesh slot, size).
        self._static: dict[int, tuple[MeshTopology, object, object]] = {}
        self._textures: dict[tuple[int, int, int, int], object] = {}
        self._dynamic: dict[int, tuple[object, int]] = {}
        self._slots: list[_Slot] = []

    # -- resources -------------------------------------------------------------------------
    def _get_targets(self, height: int, width: int, with_depth: bool) -> _Targets:
        key = (height, width, with_depth)
        if key not in self._targets:
            ctx, size, s = self.ctx, (width, height), self.samples
            color = [ctx.renderbuffer(size, components=4, samples=s)]
            if with_depth:
                color.append(ctx.renderbuffer(size, components=1, dtype="f4", samples=s))
            zbuf = ctx.depth_renderbuffer(size, samples=s)
            fbo = ctx.framebuffer(color_attachments=color, depth_attachment=zbuf)
            resolve = None
            atts = color + [zbuf]
            if s:
                rc = [ctx.renderbuffer(size, components=4)]
                if with_depth:
                    rc.append(ctx.renderbuffer(size, components=1, dtype="f4"))
                resolve = ctx.framebuffer(color_attachments=rc)
                atts += rc
            self._targets[key] = _Targets(fbo, resolve, atts)
        return self._targets[key]

    def _get_texture(self, slot: int, image: np.ndarray):
        h, w, c = image.shape
        key = (slot, h, w, c)
        tex = self._textures.get(key)
        if tex is None:
            tex = self.ctx.texture((w, h), c)
            tex.filter = (self._moderngl.LINEAR_MIPMAP_LINEAR, self._moderngl.LINEAR)
            tex.repeat_x = tex.repeat_y = False
            self._textures[key] = tex
        # GL textures start at the bottom row; flipping makes uv v = 0 the image's bottom row.
        tex.write(np.ascontiguousarray(image[::-1]).tobytes())
        tex.build_mipmaps(0, 3)  # 8x minification is plenty; the full chain costs 3x more here
        return tex

    def _get_static(self, topo: MeshTopology):
        entry = self._static.get(id(topo))
        if entry is None or entry[0] is not topo:
            if len(self._static) >= 8:  # drop the oldest topology
                old_key = next(iter(self._static))
                _, a, b = self._static.pop(old_key)
                a.release()
                b.release()
            uv = self.ctx.buffer(np.ascontiguousarray(topo.uvs, dtype=np.float32).tobytes())
            ibo = self.ctx.buffer(np.ascontiguousarray(topo.indices, dtype=np.int32).tobytes())
            entry = (topo, uv, ibo)
            self._static[id(topo)] = entry
        return entry[1], entry[2]

    def _get_dynamic(self, slot: int, nbytes: int):
        buf, size = self._dynamic.get(slot, (None, 0))
        if buf is None or size < nbytes:
            if buf is not None:
                buf.release()
            buf = self.ctx.buffer(reserve=nbytes)
            self._dynamic[slot] = (buf, nbytes)
        return buf

    def _release_vaos(self) -> None:
        for sl in self._slots:
            sl.vao.release()
        self._slots = []

    def release(self) -> None:
        self._release_vaos()
        for t in self._targets.values():
            for a in t.attachments:
                a.release()
            t.fbo.release()
            if t.resolve is not None:
                t.resolve.release()
        for tex in self._textures.values():
            tex.release()
        for _, a, b in self._static.values():
            a.release()
            b.release()
        for buf, _ in self._dynamic.values():
            buf.release()
        self._targets.clear()
        self._textures.clear()
        self._static.clear()
        self._dynamic.clear()
        self.prog.release()
        self.ctx.release()

    # -- rendering -------------------------------------------------------------------------
    def set_meshes(self, meshes: TexturedMesh | Sequence[TexturedMesh]) -> None:
        """Upload geometry and textures; they stay until the next call."""
        if isinstance(meshes, TexturedMesh):
            meshes = [meshes]
        self._release_vaos()
        for i, mesh in enumerate(meshes):
            mesh.validate()
            topo = mesh.topology or MeshTopology.build(mesh.faces, mesh.face_uvs, mesh.uvs)
            verts = np.asarray(mesh.vertices, dtype=np.float32)
            normals = mesh.normals if mesh.normals is not None else vertex_normals(verts, np.asarray(mesh.faces, dtype=np.int64))
            data = np.empty((len(topo.vertex_ids), 6), dtype=np.float32)
            data[:, 0:3] = verts[topo.vertex_ids]
            data[:, 3:6] = np.asarray(normals, dtype=np.float32)[topo.vertex_ids]
            dyn = self._get_dynamic(i, data.nbytes)
            dyn.write(data.tobytes())
            uv, ibo = self._get_static(topo)
            vao = self.ctx.vertex_array(
                self.prog,
                [(dyn, "3f 3f", "in_pos", "in_normal"), (uv, "2f", "in_uv")],
                index_buffer=ibo,
                index_element_size=4,
            )
            tex = self._get_texture(i, mesh.texture)
            self._slots.append(_Slot(topo, dyn, uv, ibo, vao, tex, len(topo.indices)))

    def render(
        self,
        meshes: TexturedMesh | Sequence[TexturedMesh],
        c2w: np.ndarray,
        fov_deg: float,
        height: int,
        width: int,
        light: Light | None = None,
        background: tuple[int, int, int] = (255, 255, 255),
        with_depth: bool = True,
    ) -> RenderOutput:
        """Render meshes seen by a pinhole camera (c2w [4, 4], OpenCV axes, scene space)."""
        self.set_meshes(meshes)
        return self.draw(c2w, fov_deg, height, width, light, background, with_depth)

    def draw(
        self,
        c2w: np.ndarray,
        fov_deg: float,
        height: int,
        width: int,
        light: Light | None = None,
        background: tuple[int, int, int] = (255, 255, 255),
        with_depth: bool = True,
    ) -> RenderOutput:
        """Draw the meshes of the last `set_meshes` from one camera. `with_depth=False` skips
        the depth output (faster); `depth` is then None."""
        c2w = np.asarray(c2w, dtype=np.float64)
        if c2w.shape != (4, 4) or not np.all(np.isfinite(c2w)):
            raise InputError(f"c2w must be a finite [4, 4] matrix, got shape {c2w.shape}")
        if not (0.0 < float(fov_deg) < 180.0):
            raise InputError(f"fov_deg must be in (0, 180), got {fov_deg}")
        if height <= 0 or width <= 0:
            raise InputError(f"image size must be positive, got {height}x{width}")
        light = light or Light()
        w2c = np.linalg.inv(c2w)
        f = focal_pixels(float(fov_deg), height)
        n, fa = self.near, self.far
        # z_ndc = (a z + b) / z maps z = near -> -1, z = far -> +1.
        a = (fa + n) / (fa - n)
        b = -2.0 * fa * n / (fa - n)
        ldir = np.asarray(light.direction, dtype=np.float64)
        ldir = ldir / max(np.linalg.norm(ldir), 1e-12)

        prog = self.prog
        prog["w2c"].write(w2c.T.astype("f4").tobytes())  # GLSL matrices are column-major
        prog["focal_ndc"].value = (2.0 * f / width, 2.0 * f / height)
        prog["depth_ab"].value = (a, b)
        prog["light_dir"].value = tuple(ldir.tolist())
        prog["light_color"].value = tuple(float(c) for c in light.color)
        prog["ambient"].value = float(light.ambient)
        prog["diffuse"].value = float(light.diffuse)
        prog["cam_pos"].value = tuple(c2w[:3, 3].tolist())

        tg = self._get_targets(height, width, with_depth)
        tg.fbo.use()
        self.ctx.viewport = (0, 0, width, height)
        bg = tuple(c / 255.0 for c in background)
        tg.fbo.clear(*bg, 0.0, depth=1.0)
        if with_depth:
            # clear() sets every attachment to one colour: clear the depth attachment to 0
            # (background depth) on its own through the colour mask.
            tg.fbo.color_mask = [(False, False, False, False), (True, False, False, False)]
            tg.fbo.clear(0.0, 0.0, 0.0, 0.0)
            tg.fbo.color_mask = [(True, True, True, True), (True, False, False, False)]
        self.ctx.enable(self._moderngl.DEPTH_TEST)
        self.ctx.disable(self._moderngl.CULL_FACE)
        prog["tex"].value = 0
        for sl in self._slots:
            sl.texture.use(0)
            sl.vao.render(self._moderngl.TRIANGLES, vertices=sl.count)

        src = tg.fbo
        if tg.resolve is not None:
            self.ctx.copy_framebuffer(tg.resolve, tg.fbo)
            src = tg.resolve
        rgba = np.frombuffer(src.read(components=4, attachment=0), dtype=np.uint8)
        rgba = rgba.reshape(height, width, 4)
        alpha = rgba[..., 3].astype(np.float32) / 255.0
        depth = None
        if with_depth:
            zsum = np.frombuffer(src.read(components=1, attachment=1, dtype="f4"), dtype=np.float32)
            zsum = zsum.reshape(height, width)
            # With MSAA the resolved depth is mean(z over covered samples) * coverage.
            depth = np.where(alpha > 0, zsum / np.maximum(alpha, 1e-6), 0.0).astype(np.float32)
        return RenderOutput(
            rgb=np.ascontiguousarray(rgba[..., :3]), alpha=alpha, mask=alpha >= 0.5, depth=depth
        )
