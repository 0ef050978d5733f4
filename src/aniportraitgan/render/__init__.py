"""Rendering of textured meshes (headless OpenGL) and procedural appearance for synthetic data."""

from aniportraitgan.render.mesh import (
    Light,
    MeshTopology,
    RenderOutput,
    TexturedMesh,
    batch_vertex_normals,
    focal_pixels,
    vertex_normals,
)
from aniportraitgan.render.rasterizer import (
    EGL_PACKAGES,
    MeshRenderer,
    RenderBackendError,
)

__all__ = [
    "EGL_PACKAGES",
    "Light",
    "MeshRenderer",
    "MeshTopology",
    "RenderBackendError",
    "RenderOutput",
    "TexturedMesh",
    "batch_vertex_normals",
    "focal_pixels",
    "vertex_normals",
]
