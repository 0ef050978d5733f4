"""A run folder's files other than checkpoints: config.json and inputs.json (what the run was
started with, checked on resume), train.log, the TensorBoard events and the sample grids. Only
rank 0 writes them.

Exact resume needs the same run: ``--resume`` on a folder with checkpoints refuses a config that
differs in anything but ``RESUMABLE_CHANGES`` (which schedule logging and saving, not what is
learned), another dataset or another R. A dataset is the same when its labels.npz has the same SHA-256
or, failing that, when its label arrays agree with the recorded fingerprint to float rounding:
the same recipe rendered on another CPU (or GPU machine) rounds its float32 labels differently.
The folder may move.
"""

from __future__ import annotations

import hashlib
import json
import logging
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from aniportraitgan.artefacts import CheckpointManager, config_diff
from aniportraitgan.atomic import atomic_write_bytes, is_disk_full
from aniportraitgan.data.dataset import LABELS_FILE, load_labels
from aniportraitgan.errors import AssetError, InputError, UserError
from aniportraitgan.training.config import TrainConfig
from aniportraitgan.training.grids import save_grid

LOG = logging.getLogger("aniportraitgan.train")
INPUTS_FILE = "inputs.json"
FINGERPRINT_PROJECTIONS = 4
FINGERPRINT_TOLERANCE = 1e-5  # relative to an array's norm: float32 rounding is ~1e-7, one changed row of 5000 ~1e-2
RESUMABLE_CHANGES = ("checkpoint_every", "keep_every", "log_every", "image_every", "num_workers", "grid_size",
                     "stage1.steps", "stage2.steps")


def _flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict) and k != "generator_overrides" and k != "lr_scale":
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def resume_conflicts(old: TrainConfig, new: TrainConfig) -> str:
    """The fields that differ and would end exact resume ("" when none)."""
    return config_diff(_flat(old.to_dict()), _flat(new.to_dict()), ignore=RESUMABLE_CHANGES)


def _sha256(path: Path | None) -> str | None:
    if path is None or not Path(path).is_file():
        return None
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def labels_fingerprint(labels: dict[str, np.ndarray]) -> dict[str, list[float]]:
    """Per label array, in float64: its L2 norm and its dot products with fixed random-sign
    vectors. Unlike a SHA-256 it survives float rounding; unlike a norm alone it sees a change
    in any row."""
    out = {}
    for name in sorted(labels):
        a = np.asarray(labels[name])
        if not np.issubdtype(a.dtype, np.number):
            continue
        x = a.astype(np.float64).ravel()
        signs = np.random.default_rng(0).choice((-1.0, 1.0), size=(FINGERPRINT_PROJECTIONS, x.size))
        out[name] = [float(np.linalg.norm(x)), *map(float, signs @ x)]
    return out


def fingerprints_agree(old: dict[str, list[float]], new: dict[str, list[float]]) -> bool:
    """The same arrays to float rounding (`FINGERPRINT_TOLERANCE` of each array's norm)."""
    if sorted(old) != sorted(new):
        return False
    for name, before in old.items():
        after = new[name]
        scale = max(abs(before[0]), 1e-12)
        if len(before) != len(after) or max(abs(b - a) for b, a in zip(before, after)) > FINGERPRINT_TOLERANCE * scale:
            return False
    return True


def run_inputs(data: Path, facerecon: Path | None) -> dict[str, Any]:
    """What a run trains on besides its config: the dataset and R, by content."""
    labels = Path(data) / LABELS_FILE
    return {"data": str(Path(data).resolve()), "labels_sha256": _sha256(labels),
            "labels_fingerprint": labels_fingerprint(load_labels(labels)) if labels.is_file() else None,
            "facerecon": None if facerecon is None else str(Path(facerecon).resolve()),
            "facerecon_sha256": _sha256(facerecon)}


def _same_labels(run_dir: Path, before: dict[str, Any], inputs: dict[str, Any]) -> bool:
    """The recorded labels.npz by SHA-256 or, failing that, by fingerprint (float rounding)."""
    if before.get("labels_sha256") == inputs["labels_sha256"]:
        return True
    old, new = before.get("labels_fingerprint"), inputs.get("labels_fingerprint")
    if not (old and new and fingerprints_agree(old, new)):
        return False
    LOG.info("--data %s: labels.npz differs in its bytes from the one %s was trained on, but its label arrays "
             "agree to float rounding (%g of their norm): resuming", inputs["data"], run_dir, FINGERPRINT_TOLERANCE)
    return True


def _check_same_run(run_dir: Path, cfg: TrainConfig, inputs: dict[str, Any]) -> None:
    cfg_path, inputs_path = run_dir / "config.json", run_dir / INPUTS_FILE
    if cfg_path.exists():
        try:
            old = TrainConfig.from_json(cfg_path.read_text())
        except InputError as exc:
            raise AssetError(f"{cfg_path} is corrupted: {exc}") from None
        diff = resume_conflicts(old, cfg)
        if diff:
            raise AssetError(
                f"--resume: {run_dir} was started with another configuration ({diff}); exact resume needs "
                f"the same one: resume with --config {cfg_path} and the same options, or use a new --out"
            )
    try:
        before = json.loads(inputs_path.read_text())
    except FileNotFoundError:
        return  # written before inputs were recorded
    except (OSError, ValueError) as exc:
        raise AssetError(f"{inputs_path} is corrupted: {exc}") from None
    for what, option in (("labels_sha256", "--data"), ("facerecon_sha256", "--facerecon")):
        same = _same_labels(run_dir, before, inputs) if what == "labels_sha256" else before.get(what) == inputs[what]
        if not same:
            key = what.replace("_sha256", "").replace("labels", "data")
            raise AssetError(
                f"--resume: {run_dir} was trained with {option} {before.get(key)} ({what} "
                f"{str(before.get(what))[:12]}), not {inputs[key]} ({str(inputs[what])[:12]}): resume with the "
                f"same {option}, or use a new --out"
            )


def prepare_run_dir(run_dir: Path, cfg: TrainConfig, ckpt: CheckpointManager, resume: bool, stage: str,
                    data: Path, facerecon: Path | None = None) -> None:
    """Create `run_dir` and write config.json and inputs.json. A folder with checkpoints needs
    `resume` (or stage 2, which starts from them); a resumed run must be the run it continues."""
    run_dir.mkdir(parents=True, exist_ok=True)
    existing = ckpt.list()
    if existing and not resume and stage != "2":
        raise UserError(
            f"{run_dir} already holds checkpoints ({existing[-1][2].name}); pass --resume to "
            f"continue that run or choose a new --out folder"
        )
    inputs = run_inputs(data, facerecon)
    if existing and resume:
        _check_same_run(run_dir, cfg, inputs)
    atomic_write_bytes(run_dir / "config.json", (cfg.to_json() + "\n").encode())
    atomic_write_bytes(run_dir / INPUTS_FILE, (json.dumps(inputs, indent=2, sort_keys=True) + "\n").encode())


class _LogFile(logging.FileHandler):
    """train.log that says once, in one line, that the disk is full (logging's default prints a
    traceback for every record); the next checkpoint then fails with a clear error."""

    full = False

    def handleError(self, record: logging.LogRecord) -> None:
        if is_disk_full(sys.exc_info()[1]):
            if not self.full:
                self.full = True
                print(f"warning: {self.baseFilename}: the disk is full, the log stops here", file=sys.stderr)
            return
        super().handleError(record)


class RunLog:
    """train.log (and the console when there is no progress bar), TensorBoard when installed,
    PNG sample grids in RUN/samples."""

    def __init__(self, run_dir: Path, console: bool):
        self.run_dir = run_dir
        self.handlers: list[logging.Handler] = [_LogFile(run_dir / "train.log")]
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
