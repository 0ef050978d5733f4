"""Known-answer measurements of the inversion (the numbers of docs/inversion.md).

A known-answer case is an image the generator renders from known latents: a seed's identity at
``psi``, a random small expression, a head rotation split over neck and head as SynthPortraits
draws it, and a camera off frontal. The inversion gets the case's expression, pose and cameras
(what the front end would give) and a start for the body's z_id: the true one ("exact", a
perfect body fit) or the prior mean ("mean": what the landmark fit of a photo gives in practice,
which does not recover the body's identity coefficients). Scored: PSNR in the target view, and
PSNR of novel views (other yaws, the case's expression and pose) against the generator's own
renders of the true latents.

    python -m aniportraitgan.inversion.measure --ckpt demo --seeds 5,7,11 --steps 150 \\
        --facerecon R32.safetensors --out inversion_measure.json

prints one row per (variant, seed) and the means per variant, and the cost of one search step:
its FLOPs (``torch.utils.flop_counter``) and the number of operators it dispatches (about one GPU
kernel launch each: what bounds a GPU's time on a model this small).
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass, replace

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

from aniportraitgan.animation.presets import NECK_SHARE
from aniportraitgan.facerecon import FaceRecon
from aniportraitgan.inference import load_inference_model
from aniportraitgan.inversion.optimize import InversionConfig, LatentCodes, ReconstructionLoss, invert_latents, psnr
from aniportraitgan.inversion.optimize import render_target_view
from aniportraitgan.inversion.perceptual import make_feature_distance
from aniportraitgan.inversion.target import InversionTarget, target_from_render
from aniportraitgan.latents import LatentSample

CASE_YAW, CASE_PITCH = 0.15, 0.05  # radians: the target's camera
NOVEL_YAWS = (-0.45, 0.5)  # radians: the novel views scored


@dataclass
class KnownCase:
    latents: LatentSample  # the truth (batch 1)
    psi: float
    target: InversionTarget


def known_case(model, seed: int, start: str = "mean", psi: float = 0.7) -> KnownCase:
    """The known-answer case of ``seed`` (see the module doc); ``start``: "exact" or "mean"."""
    z_id, eps = model.identity(seed)
    g = torch.Generator().manual_seed(seed)
    dev = model.device
    z_exp = (torch.rand(1, model.config.exp_dim, generator=g) * 0.2).to(dev)
    head = torch.randn(1, 3, generator=g) * 0.12
    z_pose = torch.zeros(1, 6, 3)
    z_pose[:, 0], z_pose[:, 3] = NECK_SHARE * head, (1 - NECK_SHARE) * head
    lat = LatentSample(z_id, z_exp, z_pose.to(dev), eps)
    cams = model.cameras(torch.tensor([CASE_YAW]), torch.tensor([CASE_PITCH]))
    z_start = {"exact": z_id, "mean": model.prior.z_id_mean[None].to(dev)}[start]
    return KnownCase(lat, psi, target_from_render(model, lat, cams, psi, z_start, f"seed {seed}"))


@torch.no_grad()
def novel_view_psnr(model, codes: LatentCodes, case: KnownCase, generator=None) -> list[float]:
    """PSNR of ``codes``'s portraits at NOVEL_YAWS against the true latents' (the case's expression and pose)."""
    G = generator if generator is not None else model.generator
    n = len(NOVEL_YAWS)
    cams = model.cameras(torch.tensor(NOVEL_YAWS), torch.zeros(n))
    lat = case.latents
    truth = LatentCodes(lat.z_id, lat.eps, case.psi).render(model.generator, model.stage, lat.z_exp, lat.z_pose, cams,
                                                           None, model.portrait_resolution, None).portrait
    mine = codes.render(G, model.stage, lat.z_exp, lat.z_pose, cams, None, model.portrait_resolution, None).portrait
    return [psnr(mine[i], truth[i]) for i in range(n)]


class _OpCounter(TorchDispatchMode):
    """Counts the aten operators dispatched (about one GPU kernel launch each)."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.count += 1
        return func(*args, **(kwargs or {}))


def step_cost(model, target: InversionTarget, cfg: InversionConfig, perceptual=None) -> dict[str, int]:
    """FLOPs (torch's counter: matmuls and convolutions) and operators dispatched of one search
    step (w space), forward and backward."""
    loss_fn = ReconstructionLoss(target, cfg, perceptual)  # the target's features: once per inversion

    def one_step():
        codes = LatentCodes(target.z_id.clone().requires_grad_(True), torch.zeros(1, model.config.noise_dim),
                            cfg.psi, model.generator.w_avg_radiance.w_avg[None].clone().requires_grad_(True))
        loss, _ = loss_fn(render_target_view(codes, model, target))
        loss.backward()

    with torch.enable_grad():
        with FlopCounterMode(display=False) as counter:
            one_step()
        with _OpCounter() as ops:
            one_step()
    return {"flops": int(counter.get_total_flops()), "operators": ops.count}


VARIANTS = {
    "zw, no perceptual, z_id start mean": dict(start="mean", space="zw", perceptual="none"),
    "zw, Inception features, start mean": dict(start="mean", space="zw", perceptual="inception"),
    "zw, R features, start mean": dict(start="mean", space="zw", perceptual="facerecon"),
    "z only, no perceptual, start mean": dict(start="mean", space="z", perceptual="none"),
    "w only, no perceptual, start mean": dict(start="mean", space="w", perceptual="none"),
    "zw, no perceptual, z_id start exact": dict(start="exact", space="zw", perceptual="none"),
}


def run(ckpt: str, seeds: list[int], steps: int, facerecon_path: str | None, variants: list[str]) -> dict:
    model = load_inference_model(ckpt, "cpu")
    facerecon = FaceRecon.load(facerecon_path) if facerecon_path else None
    rows = []
    for name in variants:
        v = VARIANTS[name]
        if v["perceptual"] == "facerecon" and facerecon is None:
            continue
        cfg = InversionConfig(steps=steps, space=v["space"], perceptual=v["perceptual"])
        feats = make_feature_distance(cfg.perceptual, facerecon) if cfg.perceptual != "none" else None
        for seed in seeds:
            case = known_case(model, seed, v["start"])
            res = invert_latents(model, case.target, cfg, feats, progress=False)
            with torch.no_grad():
                out = render_target_view(res.codes, model, case.target)
            row = {"variant": name, "seed": seed, "psnr": psnr(out.portrait, case.target.portrait),
                   "face_psnr": psnr(out.face, case.target.face),
                   "novel_psnr": novel_view_psnr(model, res.codes, case), "seconds": round(res.seconds, 1),
                   "z_id_error": float((res.codes.z_id - case.latents.z_id).norm())}
            rows.append(row)
            print(json.dumps(row), flush=True)
    means = {}
    for name in variants:
        rs = [r for r in rows if r["variant"] == name]
        if rs:
            means[name] = {k: round(sum(r[k] if k != "novel_psnr" else sum(r[k]) / len(r[k]) for r in rs) / len(rs), 2)
                           for k in ("psnr", "face_psnr", "novel_psnr", "seconds", "z_id_error")}
    case = known_case(model, seeds[0])
    cost = {p: step_cost(model, case.target, replace(InversionConfig(), perceptual=p),
                         make_feature_distance(p, facerecon) if p != "none" else None)
            for p in ("none", "inception")}
    return {"checkpoint": ckpt, "steps": steps, "seeds": seeds, "threads": torch.get_num_threads(), "rows": rows,
            "means": means, "cost_per_step": cost}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m aniportraitgan.inversion.measure", description=__doc__.split("\n\n")[0])
    p.add_argument("--ckpt", default="demo")
    p.add_argument("--seeds", default="5,7,11")
    p.add_argument("--steps", type=int, default=150)
    p.add_argument("--facerecon", default=None)
    p.add_argument("--variants", default=",".join(str(i) for i in range(len(VARIANTS))),
                   help="indices into the variant table (default: all)")
    p.add_argument("--out", default=None)
    a = p.parse_args(argv)
    names = list(VARIANTS)
    t0 = time.perf_counter()
    result = run(a.ckpt, [int(s) for s in a.seeds.split(",")], a.steps, a.facerecon,
                 [names[int(i)] for i in a.variants.split(",")])
    result["seconds"] = round(time.perf_counter() - t0, 1)
    print(json.dumps({"means": result["means"], "cost_per_step": result["cost_per_step"]}, indent=2))
    if a.out:
        with open(a.out, "w") as f:
            json.dump(result, f, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
