"""Timing of the body-model forward pass (`aniportraitgan bench body`)."""

from __future__ import annotations

import time

import torch

from aniportraitgan.body.model import PortraitBodyModel


def bench_body(batch_sizes=(1, 64), repeats: int = 20, device: str = "cpu") -> dict[int, float]:
    """Median milliseconds per forward call (no autograd) for each batch size."""
    body = PortraitBodyModel.load(device=device)
    g = torch.Generator().manual_seed(0)
    results = {}
    for batch in batch_sizes:
        codes = (
            torch.randn(batch, body.id_dim, generator=g).to(device),
            (torch.rand(batch, body.exp_dim, generator=g) * 0.5).to(device),
            (torch.randn(batch, 6, 3, generator=g) * 0.2).to(device),
        )
        times = []
        with torch.no_grad():
            for i in range(repeats + 3):
                if device != "cpu":
                    torch.cuda.synchronize()
                t0 = time.perf_counter()
                body(*codes)
                if device != "cpu":
                    torch.cuda.synchronize()
                if i >= 3:  # warm-up
                    times.append(time.perf_counter() - t0)
        times.sort()
        results[batch] = 1000.0 * times[len(times) // 2]
    return results
