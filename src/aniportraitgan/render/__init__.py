"""Rendering of textured meshes (headless OpenGL) and procedural appearance for synthetic data."""

from aniportraitgan.render.rasterizer import (
    EGL_PACKAGES,
    Light,
    MeshRenderer,
    MeshTopology,
    RenderBackendError,
    RenderOutput,
    TexturedMesh,
    focal_pixels,
    vertex_normals,
)

__all__ = [
    "EGL_PACKAGES",
    "Light",
    "MeshRenderer",
    "MeshTopology",
    "RenderBackendError",
    "RenderOutput",
    "TexturedMesh",
    "focal_pixels",
    "vertex_normals",
]
