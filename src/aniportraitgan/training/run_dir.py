"""A run folder's files other than checkpoints: config.json (checked on resume), train.log, the
TensorBoard events and the sample grids. Only rank 0 writes them."""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from aniportraitgan.artefacts import CheckpointManager
from aniportraitgan.atomic import atomic_write_bytes
from aniportraitgan.errors import AssetError, InputError, UserError
from aniportraitgan.training.config import TrainConfig
from aniportraitgan.training.grids import save_grid

LOG = logging.getLogger("aniportraitgan.train")


def prepare_run_dir(run_dir: Path, cfg: TrainConfig, ckpt: CheckpointManager, resume: bool, stage: str) -> None:
    """Create `run_dir` and write config.json. A folder with checkpoints needs `resume` (or stage 2,
    which starts from them); a resumed run must have the configuration it was started with."""
    cfg_path = run_dir / "config.json"
    run_dir.mkdir(parents=True, exist_ok=True)
    existing = ckpt.list()
    if existing and not resume and stage != "2":
        raise UserError(
            f"{run_dir} already holds checkpoints ({existing[-1][2].name}); pass --resume to "
            f"continue that run or choose a new --out folder"
        )
    if cfg_path.exists() and resume:
        try:
            old = TrainConfig.from_json(cfg_path.read_text())
        except InputError as exc:
            raise AssetError(f"{cfg_path} is corrupted: {exc}") from None
        if old.model_signature() != cfg.model_signature():
            raise AssetError(
                f"{cfg_path} describes another configuration ({old.name}, ablation {old.ablation}) "
                f"than the one requested ({cfg.name}, ablation {cfg.ablation}): "
                f"resume with the same --config and ablation flags, or use a new --out"
            )
    atomic_write_bytes(cfg_path, (cfg.to_json() + "\n").encode())


class RunLog:
    """train.log (and the console when there is no progress bar), TensorBoard when installed,
    PNG sample grids in RUN/samples."""

    def __init__(self, run_dir: Path, console: bool):
        self.run_dir = run_dir
        self.handlers: list[logging.Handler] = [logging.FileHandler(run_dir / "train.log")]
        self.handlers[0].setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        if console:
            self.handlers.append(logging.StreamHandler())
            self.handlers[1].setFormatter(logging.Formatter("%(asctime)s %(message)s"))
        for h in self.handlers:
            LOG.addHandler(h)
        LOG.setLevel(logging.INFO)
        self.writer = None
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            LOG.info("tensorboard is not installed: no TensorBoard logs (pip install tensorboard)")
        else:
            self.writer = SummaryWriter(str(run_dir / "tensorboard"))

    def scalars(self, stage: int, step: int, logs: dict[str, float]) -> None:
        LOG.info("stage %d step %d %s", stage, step, " ".join(f"{k}={v:.4g}" for k, v in sorted(logs.items())))
        if self.writer is not None:
            for k, v in logs.items():
                self.writer.add_scalar(f"stage{stage}/{k}", v, step)
            self.writer.flush()

    def grid(self, stage: int, step: int, grid: torch.Tensor) -> None:
        save_grid(grid, self.run_dir / "samples" / f"s{stage}-{step:08d}.png")
        if self.writer is not None:
            self.writer.add_image(f"stage{stage}/samples", grid, step)
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
        for h in self.handlers:
            LOG.removeHandler(h)
            h.close()
        self.handlers = []
