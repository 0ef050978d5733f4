"""The unpatched operators behind the exact speed-ups of the deformation chain, for A/B timing.

Three operators of a training step have faster exact replacements (issue 13): the nearest-vertex
search (pykdtree instead of scipy's cKDTree, eq. 4), the box filter of L_pose_smooth's reference
(separable instead of ``avg_pool3d``, eq. 11) and the x2 upsampling of the Dp volume (separable
instead of a dense trilinear ``interpolate``, eq. 5). ``unpatched()`` swaps the old operators
back in, so that one process can time both paths on the same inputs:

    python -m aniportraitgan.generator.reference_ops      # prints the table of docs/benchmarks.md
"""

from __future__ import annotations

import contextlib
import os
import statistics
import time

import numpy as np
import torch
import torch.nn.functional as F
from scipy.spatial import cKDTree

from aniportraitgan.body import PortraitBodyModel
from aniportraitgan.cameras import look_at_cameras
from aniportraitgan.generator import deformation, renderer
from aniportraitgan.generator.config import GeneratorConfig
from aniportraitgan.generator.generator import Generator
from aniportraitgan.generator.outputs import RenderOptions
from aniportraitgan.latents import LatentSample

_FAST = (deformation.nearest_vertex, deformation.PoseDeformation.reference, renderer.upsample_volume)


def ckdtree_nearest_vertex(points: torch.Tensor, vertices: torch.Tensor, chunk: int = 65536,
                           method: str = "auto") -> torch.Tensor:
    """``deformation.nearest_vertex`` as it was: scipy's cKDTree on CPUs."""
    if method == "bruteforce" or (method == "auto" and points.device.type != "cpu"):
        return _FAST[0](points, vertices, chunk, method)
    p = points.detach().to(torch.float64).numpy()
    v = vertices.detach().to(torch.float64).numpy()
    workers = max(1, torch.get_num_threads())
    idx = [cKDTree(v[b]).query(p[b], k=1, workers=workers)[1] for b in range(points.shape[0])]
    return torch.from_numpy(np.stack(idx)).to(torch.long)


def avg_pool_reference(self: deformation.PoseDeformation, volume: torch.Tensor) -> torch.Tensor:
    """``PoseDeformation.reference`` as it was: two padded ``avg_pool3d``."""
    v = F.avg_pool3d(self._pad(volume), self.kernel, stride=1)
    return F.avg_pool3d(self._pad(v), self.kernel, stride=1)


def interpolate_upsample(volume: torch.Tensor, size: tuple[int, int, int]) -> torch.Tensor:
    """``deformation.upsample_volume`` as it was: one dense trilinear ``interpolate``."""
    return F.interpolate(volume, size=size, mode="trilinear", align_corners=False)


@contextlib.contextmanager
def unpatched():
    """Within the block the generator runs the old operators (same results up to float rounding)."""
    deformation.nearest_vertex = ckdtree_nearest_vertex
    deformation.PoseDeformation.reference = avg_pool_reference
    renderer.upsample_volume = interpolate_upsample
    try:
        yield
    finally:
        deformation.nearest_vertex, deformation.PoseDeformation.reference, renderer.upsample_volume = _FAST


def _ab(old, new, rounds: int, calls: int = 1) -> tuple[float, float]:
    """Median seconds per call of old and new, timed in alternating rounds of ``calls`` calls
    (load drifts on a shared machine hit both alike)."""
    old()
    new()
    t_old, t_new = [], []
    for _ in range(rounds):
        for fn, times in ((old, t_old), (new, t_new)):
            t0 = time.perf_counter()
            for _ in range(calls):
                fn()
            times.append((time.perf_counter() - t0) / calls)
    return statistics.median(t_old), statistics.median(t_new)


def measure_speedups(batch: int = 4, resolution: int = 64, rounds: int = 12) -> list[tuple[str, float, float]]:
    """(what, old s, new s) for each operator alone and for a tiny generator forward+backward
    with the loss terms (portrait and face at ``resolution``), on the same inputs."""
    torch.manual_seed(0)
    G = Generator(GeneratorConfig.tiny(), PortraitBodyModel.load(device="cpu"))
    gen = torch.Generator().manual_seed(1)
    lat = LatentSample(torch.randn(batch, G.config.id_dim, generator=gen),
                       torch.rand(batch, G.config.exp_dim, generator=gen) * 0.5,
                       torch.randn(batch, 6, 3, generator=gen) * 0.15,
                       torch.randn(batch, G.config.noise_dim, generator=gen))
    cams = look_at_cameras(torch.rand(batch, generator=gen) - 0.5, torch.rand(batch, generator=gen) * 0.3 - 0.15)
    verts = G.body(lat.z_id, lat.z_exp, lat.z_pose).vertices[:, G.nn_index]
    depths = renderer.sample_depths(cams, G.bbox_corners, G.config.samples_per_ray)
    pts = renderer.volume_points(G.config, cams, resolution, resolution, depths).reshape(batch, -1, 3)
    D = depths.shape[1]
    volume = torch.randn(batch, 16, *renderer.volume_shape(G.config, resolution, resolution, D), requires_grad=True)
    size = (D, resolution, resolution)
    weight = torch.randn(batch, 16, *size)

    def upsample(fn):
        return lambda: torch.autograd.grad((fn(volume, size) * weight).sum(), volume)

    options = RenderOptions(portrait_resolution=resolution, face_resolution=resolution, return_aux=True)

    def step(old: bool):
        def run():
            with unpatched() if old else contextlib.nullcontext():
                G.zero_grad(set_to_none=True)
                torch.manual_seed(5)
                out = G(lat, cams, options=options)
                aux = out.aux
                loss = (out.portrait.square().mean() + out.face.square().mean() + aux.pose_smooth
                        + aux.exp_imitation + aux.exp_smooth + aux.exp_minimal)
                loss.backward()
        return run

    rows = [
        (f"nearest vertex: {pts.shape[0] * pts.shape[1]} points, {verts.shape[1]} vertices",
         *_ab(lambda: ckdtree_nearest_vertex(pts, verts), lambda: _FAST[0](pts, verts), rounds, 5)),
        (f"L_pose_smooth reference: volume {tuple(volume.shape)}, kernel {G.pose.kernel}",
         *_ab(lambda: avg_pool_reference(G.pose, volume.detach()), lambda: _FAST[1](G.pose, volume.detach()), rounds, 5)),
        (f"Dp volume upsample {tuple(volume.shape[2:])} -> {size}, forward + backward",
         *_ab(upsample(interpolate_upsample), upsample(_FAST[2]), rounds, 5)),
        (f"G forward + backward: tiny, portrait and face {resolution} px, batch {batch}, loss terms",
         *_ab(step(True), step(False), rounds)),
    ]
    return rows


if __name__ == "__main__":
    torch.set_num_threads(1)
    print(f"1 thread; load average before: {os.getloadavg()[0]:.1f}")
    print("| what | before (ms) | after (ms) | after / before |\n| --- | ---: | ---: | ---: |")
    for what, old_s, new_s in measure_speedups():
        print(f"| {what} | {old_s * 1e3:.1f} | {new_s * 1e3:.1f} | {new_s / old_s:.2f} |")
    print(f"load average after: {os.getloadavg()[0]:.1f}")
