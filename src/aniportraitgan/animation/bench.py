"""Frame-time benchmark of the generator as animation uses it (``aniportraitgan bench generator``).

Random weights (speed does not depend on training). Rows: stage 1 at resolutions <= 128 (phi at
the intersections, the training path) and stage 2 at each resolution (super-resolved maps),
without and with the identity cache (mapping outputs and super-resolved maps precomputed per
identity, as ``GeneratorFrames`` does), and optionally larger portraits with deformation and M
on a coarser ray grid (``RenderOptions.geometry_max_resolution``).
"""

from __future__ import annotations

import platform
import time
from typing import Callable

import torch

from aniportraitgan.body import PortraitBodyModel
from aniportraitgan.cameras import look_at_cameras
from aniportraitgan.generator import DEFAULT_PSI, Generator, GeneratorConfig, RenderOptions
from aniportraitgan.latents import LatentSample

__all__ = ["bench_generator", "machine_name", "median_seconds", "summary_line"]

STAGE1_MAX_RESOLUTION = 128  # stage 1 (the training path) is timed up to this side
W_AVG_SAMPLES = 1024  # mapping samples for psi's average


def machine_name(device: torch.device) -> str:
    """The CPU and its thread count, or the GPU's name."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"


def median_seconds(fn: Callable[[], object], device: torch.device, repeats: int, warmup: int) -> float:
    """Median wall time of ``fn()`` over ``repeats`` runs after ``warmup`` untimed ones."""
    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    for _ in range(warmup):
        fn()
    sync()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    times.sort()
    return times[len(times) // 2]


def bench_generator(preset: str = "tiny", resolutions=(128, 512), batch: int = 1, repeats: int = 1, warmup: int = 1,
                    device: str | torch.device = "cpu", seed: int = 0, geometry_res: int = 128,
                    say: Callable[[str], None] = lambda line: None) -> dict:
    """Milliseconds per frame of each row (see the module docstring); ``say`` gets one line per
    row as it is measured. Returns the JSON-ready result (rows, cache build time, machine)."""
    device = torch.device(device)
    torch.manual_seed(seed)
    body = PortraitBodyModel.load(device=device)
    config = GeneratorConfig.preset(preset)
    G = Generator(config, body).to(device).eval()
    G.compute_w_avg(W_AVG_SAMPLES)
    gen = torch.Generator().manual_seed(seed)
    z_id = torch.randn(1, config.id_dim, generator=gen).expand(batch, -1).to(device)
    eps = torch.randn(1, config.noise_dim, generator=gen).expand(batch, -1).to(device)
    z_exp = (torch.rand(batch, config.exp_dim, generator=gen) * 0.3).to(device)
    z_pose = (torch.randn(batch, 6, 3, generator=gen) * 0.1).to(device)
    latents = LatentSample(z_id, z_exp, z_pose, eps)
    cams = look_at_cameras(torch.linspace(-0.3, 0.3, batch), torch.zeros(batch)).to(device)

    with torch.inference_mode():
        t0 = time.perf_counter()
        caches = {stage: G.build_cache(z_id[:1], eps[:1], psi=DEFAULT_PSI, stage=stage) for stage in (1, 2)}
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        build_ms = 1000.0 * (time.perf_counter() - t0)
        say(f"{'identity cache build':<28s} {build_ms:10.1f} ms (once per identity)")

        rows = []

        def row(name, res, stage, cached, geometry=0):
            options = RenderOptions(res, None, stage, DEFAULT_PSI, cache=caches[stage] if cached else None,
                                    geometry_max_resolution=geometry)
            ms = 1000.0 * median_seconds(lambda: G(latents, cams, options=options), device, repeats, warmup) / batch
            rows.append({"name": name, "resolution": res, "stage": stage, "cached": cached,
                         "geometry_max_resolution": geometry, "ms_per_frame": ms})
            say(f"{name:<28s} {ms:10.1f} ms/frame")

        for res in resolutions:
            if res <= STAGE1_MAX_RESOLUTION:
                row(f"stage1 {res} uncached", res, 1, False)
            row(f"stage2 {res} uncached", res, 2, False)
            row(f"stage2 {res} cached", res, 2, True)
            if res > geometry_res > 0:
                row(f"stage2 {res} cached geo{geometry_res}", res, 2, True, geometry_res)
    return {"preset": preset, "device": str(device), "machine": machine_name(device), "batch": batch,
            "repeats": repeats, "cache_build_ms": build_ms, "rows": rows, "torch": torch.__version__}


def summary_line(result: dict) -> str:
    """One line: per resolution the stage-2 ms per frame uncached, cached and their ratio."""
    parts = []
    for res in dict.fromkeys(r["resolution"] for r in result["rows"]):
        mine = [r for r in result["rows"] if r["resolution"] == res and r["stage"] == 2]
        un = next(r["ms_per_frame"] for r in mine if not r["cached"])
        ca = next(r["ms_per_frame"] for r in mine if r["cached"] and not r["geometry_max_resolution"])
        text = f"{res}: {un:.0f} ms uncached, {ca:.0f} ms cached (x{un / ca:.1f})"
        geo = [r for r in mine if r["geometry_max_resolution"]]
        if geo:
            text += f", {geo[0]['ms_per_frame']:.0f} ms cached geo{geo[0]['geometry_max_resolution']}"
        parts.append(text)
    return (f"bench generator preset={result['preset']} device={result['device']} ({result['machine']}) "
            f"batch={result['batch']}: " + "; ".join(parts))
