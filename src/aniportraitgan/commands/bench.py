"""`aniportraitgan bench <target> ...`: timing benchmarks of the product's hot paths.

Targets are sub-subcommands registered in ``TARGETS`` (name -> register function taking the
`bench` sub-parsers); each prints its measurements and a one-line summary last.

    aniportraitgan bench generator --preset tiny|paper [--batch B] [--repeats N] [--device cpu|cuda]
        [--resolutions 128,512] [--geometry-res 128] [--threads N] [--json FILE]
    aniportraitgan bench body [--repeats N] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

from aniportraitgan.errors import UserError


# ------------------------------------------------------------------ bench generator
def _register_generator(sub) -> None:
    g = sub.add_parser(
        "generator",
        help="ms per frame of the generator: portrait 128 and 512, with and without the identity cache",
        description="Time the generator's portrait rendering (random weights; speed does not depend on "
        "training). Rows: stage 1 at 128 (phi at the intersections, the training path) and stage 2 at "
        "128 and 512 (super-resolved maps), each without and with the identity cache (mapping outputs "
        "and super-resolved maps precomputed per identity, as in animation).",
    )
    g.add_argument("--preset", default="tiny", choices=["tiny", "paper"], help="generator size")
    g.add_argument("--batch", type=int, default=1, help="frames per forward call")
    g.add_argument("--repeats", type=int, default=1, help="timed repeats per row (the median is reported)")
    g.add_argument("--warmup", type=int, default=1, help="untimed runs before each row")
    g.add_argument("--resolutions", default="128,512", help="comma-separated portrait resolutions")
    g.add_argument("--device", default="cpu", help="cpu or cuda")
    g.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--geometry-res", type=int, default=128,
                   help="also time larger portraits with deformation and M on this ray grid "
                   "(GeneratorConfig.geometry_max_resolution); 0 skips that row")
    g.add_argument("--json", default=None, help="also write the results to this JSON file")
    g.set_defaults(func=run_generator)


def _timed(fn, device, repeats: int, warmup: int) -> float:
    import torch

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


def run_generator(args: argparse.Namespace) -> int:
    import torch

    from aniportraitgan.body import PortraitBodyModel
    from aniportraitgan.cameras import look_at_cameras
    from aniportraitgan.generator import Generator, GeneratorConfig, RenderOptions
    from aniportraitgan.latents import LatentSample

    if args.batch < 1 or args.repeats < 1 or args.warmup < 0:
        raise UserError("--batch and --repeats must be >= 1, --warmup >= 0")
    try:
        resolutions = [int(r) for r in args.resolutions.split(",") if r.strip()]
    except ValueError:
        raise UserError(f"--resolutions must be comma-separated integers, got {args.resolutions!r}") from None
    if not resolutions or min(resolutions) < 1:
        raise UserError("--resolutions needs at least one positive resolution")
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda requested but CUDA is not available")
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)

    body = PortraitBodyModel.load(device=device)
    config = GeneratorConfig.preset(args.preset)
    G = Generator(config, body).to(device).eval()
    G.compute_w_avg(1024)
    B = args.batch
    gen = torch.Generator().manual_seed(args.seed)
    z_id = torch.randn(1, config.id_dim, generator=gen).expand(B, -1).to(device)
    eps = torch.randn(1, config.noise_dim, generator=gen).expand(B, -1).to(device)
    z_exp = (torch.rand(B, config.exp_dim, generator=gen) * 0.3).to(device)
    z_pose = (torch.randn(B, 6, 3, generator=gen) * 0.1).to(device)
    cams = look_at_cameras(torch.linspace(-0.3, 0.3, B), torch.zeros(B)).to(device)
    psi = 0.7

    rows = []

    def row(name, res, stage, cached, geometry=0):
        def fn():
            cache = state["cache"][stage] if cached else None
            G(LatentSample(z_id, z_exp, z_pose, eps), cams,
              options=RenderOptions(res, None, stage, psi, cache=cache, geometry_max_resolution=geometry))
        seconds = _timed(fn, device, args.repeats, args.warmup)
        ms = 1000.0 * seconds / B
        rows.append({"name": name, "resolution": res, "stage": stage, "cached": cached,
                     "geometry_max_resolution": geometry, "ms_per_frame": ms})
        print(f"{name:<28s} {ms:10.1f} ms/frame", flush=True)

    state: dict = {"cache": {}}
    with torch.inference_mode():
        t0 = time.perf_counter()
        state["cache"][1] = G.build_cache(z_id[:1], eps[:1], psi=psi, stage=1)
        state["cache"][2] = G.build_cache(z_id[:1], eps[:1], psi=psi, stage=2)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        build_ms = 1000.0 * (time.perf_counter() - t0)
        print(f"{'identity cache build':<28s} {build_ms:10.1f} ms (once per identity)", flush=True)
        for res in resolutions:
            if res <= 128:
                row(f"stage1 {res} uncached", res, 1, False)
            row(f"stage2 {res} uncached", res, 2, False)
            row(f"stage2 {res} cached", res, 2, True)
            if res > args.geometry_res > 0:
                row(f"stage2 {res} cached geo{args.geometry_res}", res, 2, True, args.geometry_res)

    threads = torch.get_num_threads()
    machine = f"{platform.processor() or platform.machine()}, {threads} threads" if device.type == "cpu" \
        else torch.cuda.get_device_name(device)
    result = {
        "preset": args.preset, "device": str(device), "machine": machine, "batch": B,
        "repeats": args.repeats, "cache_build_ms": build_ms, "rows": rows, "torch": torch.__version__,
    }
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    parts = []
    for res in resolutions:
        mine = [r for r in rows if r["resolution"] == res and r["stage"] == 2]
        un = next(r["ms_per_frame"] for r in mine if not r["cached"])
        ca = next(r["ms_per_frame"] for r in mine if r["cached"] and not r["geometry_max_resolution"])
        text = f"{res}: {un:.0f} ms uncached, {ca:.0f} ms cached (x{un / ca:.1f})"
        geo = [r for r in mine if r["geometry_max_resolution"]]
        if geo:
            text += f", {geo[0]['ms_per_frame']:.0f} ms cached geo{geo[0]['geometry_max_resolution']}"
        parts.append(text)
    print(f"bench generator preset={args.preset} device={device} ({machine}) batch={B}: " + "; ".join(parts))
    return 0


# ------------------------------------------------------------------ bench body
BODY_TARGET_MS = 20.0  # issue 2: batch 64 on a 2-core CPU


def _register_body(sub) -> None:
    b = sub.add_parser("body", help="ms per forward call of the portrait body model at batch 1 and 64")
    b.add_argument("--repeats", type=int, default=20, help="timed repeats per batch size (median reported)")
    b.add_argument("--device", default="cpu", help="cpu or cuda")
    b.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    b.set_defaults(func=run_body)


def run_body(args: argparse.Namespace) -> int:
    import torch

    from aniportraitgan.body.bench import bench_body

    if args.repeats < 1:
        raise UserError("--repeats must be >= 1")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError("--device cuda requested but CUDA is not available")
    if args.threads:
        torch.set_num_threads(args.threads)
    results = bench_body((1, 64), args.repeats, args.device)
    for batch, ms in results.items():
        print(f"body forward batch {batch:<3d} {ms:8.2f} ms", flush=True)
    machine = f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads" \
        if args.device == "cpu" else torch.cuda.get_device_name(args.device)
    verdict = "meets" if results[64] <= BODY_TARGET_MS else "misses"
    print(f"bench body device={args.device} ({machine}): batch 64 {results[64]:.2f} ms "
          f"({verdict} the {BODY_TARGET_MS:.0f} ms target)")
    return 0


# ------------------------------------------------------------------ registry
# Add a target by writing `_register_<name>(sub)` and listing it here (e.g. "body").
TARGETS = {
    "generator": _register_generator,
    "body": _register_body,
}


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "bench",
        help="timing benchmarks (generator, body)",
        description="Timing benchmarks; each target prints a one-line summary last.",
    )
    sub = p.add_subparsers(dest="bench_target", metavar="TARGET")
    for add in TARGETS.values():
        add(sub)

    def no_target(args: argparse.Namespace) -> int:
        p.print_help()
        return 1

    p.set_defaults(func=no_target)
