"""Data-parallel training across processes (torchrun), and the same code in one process.

`torchrun --nproc_per_node N -m aniportraitgan train ...` sets RANK / WORLD_SIZE / LOCAL_RANK;
`init_distributed` then joins the process group (nccl on CUDA, gloo on CPU). Without those
variables everything here is a no-op and the trainer runs single-process.

Gradients are averaged with one flattened all-reduce per optimiser step (`all_reduce_grads`)
instead of wrapping the networks in DistributedDataParallel's module wrapper. That is the same
arithmetic as DDP (mean of per-rank gradients, then identical Adam steps on identical weights),
but it also works where the wrapper does not: the R1 penalty differentiates through the
discriminator twice, the generator is run several times per step (D pass, G pass), and stage
2 leaves most of the generator frozen and stage 1 leaves U unused.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from typing import Iterable

import torch
import torch.distributed as dist


@dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def init_distributed(device: str | None = None, timeout_s: float = 1800.0) -> DistInfo:
    """Join the torchrun process group if there is one; pick this process's device.

    `device`: "cpu", "cuda" or None (CUDA when available). Under torchrun on CUDA each process
    uses GPU LOCAL_RANK."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    want_cuda = torch.cuda.is_available() if device is None else str(device).startswith("cuda")
    if want_cuda:
        if ":" in str(device or ""):
            dev = torch.device(device)
        else:
            dev = torch.device("cuda", local_rank if world > 1 else 0)
        torch.cuda.set_device(dev)
    else:
        dev = torch.device("cpu")
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if dev.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend, timeout=datetime.timedelta(seconds=timeout_s))
    if world > 1:
        rank, world = dist.get_rank(), dist.get_world_size()
    return DistInfo(rank=rank, world_size=world, local_rank=local_rank, device=dev)


def shutdown_distributed() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def is_enabled() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def broadcast_parameters(modules: Iterable[torch.nn.Module], src: int = 0) -> None:
    """Make every rank start from rank `src`'s weights and buffers."""
    if not is_enabled():
        return
    for module in modules:
        for t in list(module.parameters()) + list(module.buffers()):
            dist.broadcast(t.data, src=src)


def all_reduce_grads(params: Iterable[torch.nn.Parameter]) -> None:
    """Average the gradients of `params` over ranks (missing gradients count as zeros), with
    one flattened all-reduce."""
    if not is_enabled():
        return
    params = [p for p in params if p.requires_grad]
    if not params:
        return
    grads = []
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        grads.append(p.grad.reshape(-1))
    flat = torch.cat(grads)
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    flat /= dist.get_world_size()
    offset = 0
    for p in params:
        n = p.numel()
        p.grad.copy_(flat[offset : offset + n].view_as(p.grad))
        offset += n


def sync_buffers(module: torch.nn.Module) -> None:
    """Average floating-point buffers over ranks (e.g. the generator's running mean of mapping
    outputs, which each rank updates with its own latents), so all ranks hold the same model."""
    if not is_enabled():
        return
    bufs = [b for b in module.buffers() if b.is_floating_point()]
    if not bufs:
        return
    flat = torch.cat([b.reshape(-1) for b in bufs])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    flat /= dist.get_world_size()
    offset = 0
    for b in bufs:
        n = b.numel()
        b.copy_(flat[offset : offset + n].view_as(b))
        offset += n


def all_reduce_mean(values: dict[str, float], device: torch.device) -> dict[str, float]:
    """Mean of scalar logs over ranks (for reporting)."""
    if not is_enabled() or not values:
        return values
    keys = sorted(values)
    t = torch.tensor([float(values[k]) for k in keys], device=device, dtype=torch.float64)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    t /= dist.get_world_size()
    return {k: float(v) for k, v in zip(keys, t.tolist())}


def all_reduce_max(values: list[float], device: torch.device) -> list[float]:
    """Elementwise maximum of small per-rank vectors (e.g. stop flags: any rank's says so)."""
    if not is_enabled():
        return list(values)
    t = torch.tensor([float(v) for v in values], device=device, dtype=torch.float64)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return [float(v) for v in t.tolist()]


def barrier() -> None:
    if is_enabled():
        dist.barrier()
