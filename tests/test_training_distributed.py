"""Two gloo processes (the torchrun set-up on CPU): ranks stay in sync, rank 0 writes the run."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import torch
import torch.multiprocessing as mp

from test_training_loop import test_config, tiny_dataset


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, data: str, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(world), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    from aniportraitgan.training import distributed
    from aniportraitgan.training import RunOptions, Trainer

    info = distributed.init_distributed("cpu")
    try:
        trainer = Trainer(test_config(), RunOptions(data=Path(data), out=Path(out), steps=2, progress=False), info)
        trainer.run()
        torch.save({k: v.clone() for k, v in trainer.G.state_dict().items()}, Path(out).parent / f"rank{rank}.pt")
    finally:
        distributed.shutdown_distributed()


def test_two_process_gloo_run(tmp_path):
    data = tiny_dataset(tmp_path / "data", num=8)
    out = tmp_path / "run"
    mp.start_processes(_worker, args=(2, _free_port(), str(data), str(out)), nprocs=2, join=True, start_method="spawn")
    g0 = torch.load(tmp_path / "rank0.pt")
    g1 = torch.load(tmp_path / "rank1.pt")
    for k in g0:
        assert torch.equal(g0[k], g1[k]), f"ranks disagree on {k}"
    # Rank 0 alone wrote the run folder; the checkpoint records the world size.
    from aniportraitgan.artefacts import CheckpointManager, load_checkpoint

    ck = load_checkpoint(CheckpointManager(out).latest())
    assert ck.step == 2 and ck.state["world_size"] == 2
    for k, v in g0.items():
        assert torch.equal(ck.weights["G." + k], v)
    assert (out / "train.log").read_text().count("on 2 process(es)") == 1
