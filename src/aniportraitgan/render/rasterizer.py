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

import math
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from aniportraitgan.errors import InputError

EGL_PACKAGES = "libegl1 libegl-mesa0 libgl1-mesa-dri"


class RenderBackendError(RuntimeError):
    """No usable OpenGL (EGL) context: the system packages or the moderngl wheel are missing."""


@dataclass
class Light:
    """One directional light plus ambient light, in scene space.

    `direction` points from the surface toward the light (it need not be normalised).
    Shading is Lambertian: colour = albedo * (ambient + diffuse * max(0, n . l)).
    """

    direction: tuple[float, float, float] = (0.3, 0.5, 1.0)
    ambient: float = 0.45
    diffuse: float = 0.65
    color: tuple[float, float, float] = (1.0, 1.0, 1.0)


@dataclass
class TexturedMesh:
    """A triangle mesh in scene space with a per-corner UV layout and an RGB texture.

    vertices [V, 3] float metres; faces [F, 3] int vertex ids; uvs [Vt, 2] in [0, 1] with v = 0
    at the bottom row of the texture image (the OBJ/anny convention); face_uvs [F, 3] uv ids;
    texture [Th, Tw, 3] uint8 (row 0 = top of the image).
    """

    vertices: np.ndarray
    faces: np.ndarray
    uvs: np.ndarray
    face_uvs: np.ndarray
    texture: np.ndarray

    def validate(self) -> None:
        v, f, uv, fuv, tex = self.vertices, self.faces, self.uvs, self.face_uvs, self.texture
        if v.ndim != 2 or v.shape[1] != 3:
            raise InputError(f"mesh vertices must be [V, 3], got {tuple(v.shape)}")
        if not np.all(np.isfinite(v)):
            raise InputError("mesh vertices contain NaN or inf")
        if f.ndim != 2 or f.shape[1] != 3:
            raise InputError(f"mesh faces must be [F, 3], got {tuple(f.shape)}")
        if fuv.shape != f.shape:
            raise InputError(f"face_uvs {tuple(fuv.shape)} must match faces {tuple(f.shape)}")
        if uv.ndim != 2 or uv.shape[1] != 2:
            raise InputError(f"mesh uvs must be [Vt, 2], got {tuple(uv.shape)}")
        if f.size and (f.min() < 0 or f.max() >= len(v)):
            raise InputError(f"face vertex ids out of range [0, {len(v)})")
        if fuv.size and (fuv.min() < 0 or fuv.max() >= len(uv)):
            raise InputError(f"face uv ids out of range [0, {len(uv)})")
        if tex.ndim != 3 or tex.shape[2] != 3 or tex.dtype != np.uint8:
            raise InputError(f"texture must be uint8 [H, W, 3], got {tex.dtype} {tuple(tex.shape)}")


@dataclass
class RenderOutput:
    """rgb [H, W, 3] uint8 on a white (or given) background; alpha [H, W] float32 coverage in
    [0, 1] (fractional at anti-aliased edges); mask [H, W] bool (alpha >= 0.5); depth [H, W]
    float32 camera-space z in metres (0 where nothing was drawn)."""

    rgb: np.ndarray
    alpha: np.ndarray
    mask: np.ndarray
    depth: np.ndarray


def vertex_normals(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Area-weighted unit vertex normals [V, 3] (float32)."""
    v = vertices.astype(np.float64, copy=False)
    tri = v[faces]
    fn = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])  # length = 2 * area
    n = np.zeros_like(v)
    idx = faces.reshape(-1)
    rep = np.repeat(fn, 3, axis=0)
    for k in range(3):
        n[:, k] = np.bincount(idx, weights=rep[:, k], minlength=len(v))
    norm = np.linalg.norm(n, axis=1, keepdims=True)
    return (n / np.maximum(norm, 1e-12)).astype(np.float32)


def focal_pixels(fov_deg: float, height: int) -> float:
    """Pinhole focal length in pixels from the vertical field of view (cameras module model)."""
    return 0.5 * height / math.tan(math.radians(fov_deg) / 2.0)


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


class MeshRenderer:
    """Reusable rasterizer: one GL context, framebuffers cached per resolution.

    samples: MSAA sample count (0 or 1 disables multi-sampling). near/far: clip planes in metres.
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
        self._targets: dict[tuple[int, int], _Targets] = {}
        self._textures: dict[tuple[int, int], object] = {}
        self._vbo = None
        self._vbo_bytes = 0

    # -- resources -------------------------------------------------------------------------
    def _get_targets(self, height: int, width: int) -> _Targets:
        key = (height, width)
        if key not in self._targets:
            ctx, size, s = self.ctx, (width, height), self.samples
            color = ctx.renderbuffer(size, components=4, samples=s)
            depth_z = ctx.renderbuffer(size, components=1, dtype="f4", samples=s)
            zbuf = ctx.depth_renderbuffer(size, samples=s)
            fbo = ctx.framebuffer(color_attachments=[color, depth_z], depth_attachment=zbuf)
            resolve = None
            atts = [color, depth_z, zbuf]
            if s:
                rc = ctx.renderbuffer(size, components=4)
                rz = ctx.renderbuffer(size, components=1, dtype="f4")
                resolve = ctx.framebuffer(color_attachments=[rc, rz])
                atts += [rc, rz]
            self._targets[key] = _Targets(fbo, resolve, atts)
        return self._targets[key]

    def _get_texture(self, image: np.ndarray):
        h, w = image.shape[:2]
        key = (h, w)
        tex = self._textures.get(key)
        if tex is None:
            tex = self.ctx.texture((w, h), 3)
            tex.filter = (self._moderngl.LINEAR_MIPMAP_LINEAR, self._moderngl.LINEAR)
            tex.repeat_x = tex.repeat_y = False
            self._textures[key] = tex
        # GL textures start at the bottom row; flipping makes uv v = 0 the image's bottom row.
        tex.write(np.ascontiguousarray(image[::-1]).tobytes())
        tex.build_mipmaps()
        return tex

    def release(self) -> None:
        for t in self._targets.values():
            for a in t.attachments:
                a.release()
            t.fbo.release()
            if t.resolve is not None:
                t.resolve.release()
        for tex in self._textures.values():
            tex.release()
        self._targets.clear()
        self._textures.clear()
        if self._vbo is not None:
            self._vbo.release()
            self._vbo = None
        self.prog.release()
        self.ctx.release()

    # -- rendering -------------------------------------------------------------------------
    def render(
        self,
        meshes: TexturedMesh | Sequence[TexturedMesh],
        c2w: np.ndarray,
        fov_deg: float,
        height: int,
        width: int,
        light: Light | None = None,
        background: tuple[int, int, int] = (255, 255, 255),
    ) -> RenderOutput:
        """Render meshes seen by a pinhole camera (c2w [4, 4], OpenCV axes, scene space)."""
        if isinstance(meshes, TexturedMesh):
            meshes = [meshes]
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

        tg = self._get_targets(height, width)
        tg.fbo.use()
        self.ctx.viewport = (0, 0, width, height)
        bg = tuple(c / 255.0 for c in background)
        tg.fbo.clear(*bg, 0.0, depth=1.0)
        # Clear the depth colour attachment to 0 (background depth); clear() sets all of them
        # to the same colour, so clear attachment 1 separately through a draw-buffer mask.
        tg.fbo.color_mask = [(False, False, False, False), (True, False, False, False)]
        tg.fbo.clear(0.0, 0.0, 0.0, 0.0)
        tg.fbo.color_mask = [(True, True, True, True), (True, False, False, False)]
        self.ctx.enable(self._moderngl.DEPTH_TEST)
        self.ctx.disable(self._moderngl.CULL_FACE)

        for mesh in meshes:
            mesh.validate()
            data = _interleave(mesh)
            if self._vbo is None or self._vbo_bytes < data.nbytes:
                if self._vbo is not None:
                    self._vbo.release()
                self._vbo = self.ctx.buffer(reserve=data.nbytes)
                self._vbo_bytes = data.nbytes
            self._vbo.write(data.tobytes())
            tex = self._get_texture(mesh.texture)
            tex.use(0)
            prog["tex"].value = 0
            vao = self.ctx.vertex_array(
                prog, [(self._vbo, "3f 3f 2f", "in_pos", "in_normal", "in_uv")]
            )
            vao.render(self._moderngl.TRIANGLES, vertices=len(mesh.faces) * 3)
            vao.release()

        src = tg.fbo
        if tg.resolve is not None:
            self.ctx.copy_framebuffer(tg.resolve, tg.fbo)
            src = tg.resolve
        rgba = np.frombuffer(src.read(components=4, attachment=0), dtype=np.uint8)
        rgba = rgba.reshape(height, width, 4)
        zsum = np.frombuffer(src.read(components=1, attachment=1, dtype="f4"), dtype=np.float32)
        zsum = zsum.reshape(height, width)
        alpha = rgba[..., 3].astype(np.float32) / 255.0
        # With MSAA the resolved depth is mean(z over covered samples) * coverage.
        depth = np.where(alpha > 0, zsum / np.maximum(alpha, 1e-6), 0.0).astype(np.float32)
        return RenderOutput(
            rgb=np.ascontiguousarray(rgba[..., :3]), alpha=alpha, mask=alpha >= 0.5, depth=depth
        )


def _interleave(mesh: TexturedMesh) -> np.ndarray:
    """Per-corner vertex stream [F*3, 8] float32: position, smooth normal, uv."""
    faces = np.asarray(mesh.faces, dtype=np.int64)
    verts = np.asarray(mesh.vertices, dtype=np.float32)
    normals = vertex_normals(verts, faces)
    corner_v = faces.reshape(-1)
    corner_t = np.asarray(mesh.face_uvs, dtype=np.int64).reshape(-1)
    out = np.empty((len(corner_v), 8), dtype=np.float32)
    out[:, 0:3] = verts[corner_v]
    out[:, 3:6] = normals[corner_v]
    out[:, 6:8] = np.asarray(mesh.uvs, dtype=np.float32)[corner_t]
    return out
