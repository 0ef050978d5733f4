"""Train the face reconstruction network R on a portrait dataset's face images and exact labels,
and measure it on held-out samples against a constant predictor (the training-label mean).

Loss: squared coefficient error (identity, expression and view, each normalised by its
training std) plus the squared 3D error of the centred landmarks built from the estimate (the
quantity the GAN's landmark loss uses, through the same affine landmark model), in centimetres.
Evaluation measures landmarks through the exact body model.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from tqdm import tqdm

from aniportraitgan.body import PortraitBodyModel
from aniportraitgan.body.landmarks import LinearLandmarks, body_landmarks, landmark_loss
from aniportraitgan.data.dataset import (
    face_path,
    image_to_tensor,
    load_labels,
    read_card,
    read_png,
)
from aniportraitgan.configs import Config
from aniportraitgan.errors import AssetError, InputError
from aniportraitgan.facerecon.model import FaceRecon, FaceReconConfig
from aniportraitgan.images import from_uint8, to_uint8


@dataclass
class FaceReconTrainConfig(Config):
    """How R is trained."""

    steps: int = 2000
    """Optimiser steps."""
    batch_size: int = 32
    """Faces per step."""
    lr: float = 1e-3
    """Adam learning rate (cosine decay to 5% of it)."""
    holdout: float = 0.1
    """Fraction of samples held out of training for evaluation."""
    landmark_weight: float = 1.0
    """Weight of the landmark term (eq. 9's quantity, cm^2)."""
    coef_weight: float = 1.0
    """Weight of the normalised coefficient term."""
    seed: int = 0
    """Seed of R's initialisation, the split, the data order, the augmentation and the landmark fit."""
    augment: bool = True
    """Brightness / contrast / colour jitter: R must not key on appearance."""
    eval_every: int = 0
    """Steps between held-out evaluations (0: only at the end)."""


def _load_faces(root: Path, indices: np.ndarray, resolution: int) -> torch.Tensor:
    """All face images as uint8 [N, 3, r, r] (kept in memory: R trains many epochs)."""
    out = torch.empty(len(indices), 3, resolution, resolution, dtype=torch.uint8)
    for k, idx in enumerate(indices):
        t = image_to_tensor(read_png(face_path(root, int(idx))), resolution)
        out[k] = to_uint8(t)
    return out


def _augment(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    b = x.shape[0]
    gain = 1.0 + 0.2 * (torch.rand(b, 1, 1, 1, generator=g) - 0.5) * 2
    colour = 1.0 + 0.1 * (torch.rand(b, 3, 1, 1, generator=g) - 0.5) * 2
    shift = 0.1 * (torch.rand(b, 1, 1, 1, generator=g) - 0.5) * 2
    return ((x + 1.0) * gain * colour - 1.0 + shift).clamp(-1.0, 1.0)


class _Data:
    def __init__(self, root: Path, resolution: int):
        read_card(root)
        labels = load_labels(root / "labels.npz")
        n = len(labels["index"])
        if n < 2:
            raise AssetError(f"dataset {root} has {n} samples; R needs at least 2 (one to train, one to evaluate)")
        if not (root / "faces").is_dir():
            raise AssetError(f"dataset {root} has no faces/ folder: R trains on face-camera images")
        self.index = np.asarray(labels["index"]).astype(np.int64)
        self.z_id = torch.from_numpy(np.asarray(labels["z_id"], dtype=np.float32))
        self.z_exp = torch.from_numpy(np.asarray(labels["z_exp"], dtype=np.float32))
        if "face_yaw" in labels and "face_pitch" in labels:
            self.view = torch.from_numpy(np.stack([labels["face_yaw"], labels["face_pitch"]], -1).astype(np.float32))
        else:
            self.view = None
        self.faces = _load_faces(root, self.index, resolution)


@torch.no_grad()
def evaluate(
    model: FaceRecon,
    body,
    faces: torch.Tensor,
    z_id: torch.Tensor,
    z_exp: torch.Tensor,
    view: torch.Tensor | None,
    const: dict[str, torch.Tensor],
    batch_size: int = 64,
) -> dict[str, float]:
    """Errors of R and of the constant predictor `const` ({"z_id", "z_exp", "view"} means):
    landmark error in mm (mean 3D distance over the 68 centred landmarks at zero pose, through
    the exact body model), RMS errors of
    identity and expression coefficients, and of the view angles in degrees."""
    model.eval()
    device = next(model.parameters()).device
    sums: dict[str, float] = {}
    n = faces.shape[0]
    for s in range(0, n, batch_size):
        sl = slice(s, min(n, s + batch_size))
        b = sl.stop - sl.start
        pred = model(from_uint8(faces[sl]).to(device))
        tid, texp = z_id[sl].to(device), z_exp[sl].to(device)
        cid = const["z_id"].to(device).expand(b, -1)
        cexp = const["z_exp"].to(device).expand(b, -1)
        lm_true = body_landmarks(body, tid, texp)
        for tag, pid, pexp in (("model", pred["z_id"], pred["z_exp"]), ("mean", cid, cexp)):
            lm = body_landmarks(body, pid, pexp)
            acc = {
                "landmark_mm": float((lm - lm_true).norm(dim=-1).mean(-1).sum() * 1000.0),
                "id_mse": float((pid - tid).square().mean(-1).sum()),
                "exp_mse": float((pexp - texp).square().mean(-1).sum()),
            }
            if view is not None and "view" in pred:
                pv = pred["view"] if tag == "model" else const["view"].to(device).expand(b, -1)
                acc["view_mse"] = float((pv - view[sl].to(device)).square().mean(-1).sum())
            for k, v in acc.items():
                sums[f"{tag}/{k}"] = sums.get(f"{tag}/{k}", 0.0) + v
    report: dict[str, float] = {}
    for key, total in sums.items():
        tag, name = key.split("/")
        mean = total / n
        if name.endswith("_mse"):
            base = name[: -len("_mse")]
            value = math.sqrt(mean)
            if base == "view":
                report[f"{tag}/view_rmse_deg"] = math.degrees(value)
            else:
                report[f"{tag}/{base}_rmse"] = value
        else:
            report[key] = mean
    report["num_eval"] = float(n)
    return report


def train_facerecon(
    data: str | Path,
    out: str | Path,
    steps: int | None = None,
    config: FaceReconConfig | None = None,
    train_config: FaceReconTrainConfig | None = None,
    device: str | torch.device | None = "cpu",
    log: Callable[[str], None] | None = print,
    progress: bool = False,
) -> dict:
    """Train R on `data`'s face images, save it to `out` (safetensors) and its evaluation report
    beside it (`out` with suffix .json). Returns the report. `device` None: CUDA when available."""
    root = Path(data)
    cfg = config or FaceReconConfig()
    tcfg = train_config or FaceReconTrainConfig()
    if steps is not None:
        tcfg.steps = int(steps)
    if tcfg.steps < 0 or tcfg.batch_size < 1 or not 0.0 < tcfg.holdout < 1.0:
        raise InputError("facerecon: steps must be >= 0, batch_size >= 1 and 0 < holdout < 1")
    device = torch.device(device if device is not None else "cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(tcfg.seed)
    body = PortraitBodyModel.load(device=device)
    lin_lm = LinearLandmarks.fit(body, seed=tcfg.seed)
    ds = _Data(root, cfg.resolution)
    if ds.z_id.shape[1] != body.id_dim or ds.z_exp.shape[1] != body.exp_dim:
        raise AssetError(
            f"dataset {root} labels z_id [{ds.z_id.shape[1]}] / z_exp [{ds.z_exp.shape[1]}] do not match the body "
            f"model ({body.id_dim} / {body.exp_dim}): the dataset was made with another body model"
        )
    cfg.id_dim, cfg.exp_dim = body.id_dim, body.exp_dim
    if ds.view is None:
        cfg.predict_pose = False

    g = torch.Generator().manual_seed(tcfg.seed)
    n = len(ds.index)
    perm = torch.randperm(n, generator=g)
    n_eval = max(1, int(round(n * tcfg.holdout)))
    eval_idx, train_idx = perm[:n_eval], perm[n_eval:]

    model = FaceRecon(cfg).to(device)
    view_train = ds.view[train_idx] if ds.view is not None else None
    model.set_label_statistics(ds.z_id[train_idx], ds.z_exp[train_idx], view_train)
    const = {"z_id": model.id_mean.cpu()[None], "z_exp": ds.z_exp[train_idx].mean(0)[None]}
    if view_train is not None:
        const["view"] = view_train.mean(0)[None]
    id_std = model.id_std.detach()
    exp_std = ds.z_exp[train_idx].std(0, unbiased=False).clamp_min(1e-2).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=tcfg.lr, betas=(0.9, 0.99))
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, tcfg.steps), eta_min=tcfg.lr * 0.05)

    def eval_now() -> dict[str, float]:
        return evaluate(model, body, ds.faces[eval_idx], ds.z_id[eval_idx], ds.z_exp[eval_idx],
                        ds.view[eval_idx] if ds.view is not None else None, const)

    bar = None
    if progress:
        bar = tqdm(total=tcfg.steps, desc="facerecon", dynamic_ncols=True)
    t0 = time.time()
    order = torch.randperm(len(train_idx), generator=g)
    cursor = 0
    history = []
    for step in range(tcfg.steps):
        model.train()
        if cursor + tcfg.batch_size > len(order):
            order, cursor = torch.randperm(len(train_idx), generator=g), 0
        rows = train_idx[order[cursor : cursor + tcfg.batch_size]]
        cursor += tcfg.batch_size
        x = from_uint8(ds.faces[rows])
        if tcfg.augment:
            x = _augment(x, g)
        x = x.to(device)
        tid, texp = ds.z_id[rows].to(device), ds.z_exp[rows].to(device)
        pred = model(x)
        coef = ((pred["z_id"] - tid) / id_std).square().mean() + ((pred["z_exp"] - texp) / exp_std).square().mean()
        if "view" in pred:
            coef = coef + ((pred["view"] - ds.view[rows].to(device)) / model.view_std).square().mean()
        lm = landmark_loss(lin_lm, pred["z_id"], pred["z_exp"], tid, texp)
        loss = tcfg.coef_weight * coef + tcfg.landmark_weight * lm
        if not torch.isfinite(loss):
            raise RuntimeError(f"facerecon: loss became {loss.item()} at step {step}")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if bar is not None:
            bar.update(1)
            bar.set_postfix(coef=f"{coef.item():.3f}", lm_cm2=f"{lm.item():.3f}")
        if tcfg.eval_every and (step + 1) % tcfg.eval_every == 0 and step + 1 < tcfg.steps:
            r = eval_now()
            history.append({"step": step + 1, **r})
            if log:
                log(f"facerecon step {step + 1}: landmark {r['model/landmark_mm']:.2f} mm (mean predictor {r['mean/landmark_mm']:.2f} mm)")
    if bar is not None:
        bar.close()
    report = eval_now()
    report.update(
        steps=tcfg.steps,
        num_train=int(len(train_idx)),
        seconds=round(time.time() - t0, 2),
        data=str(root),
        config=cfg.to_dict(),
        train_config=tcfg.to_dict(),
        history=history,
    )
    out = Path(out)
    model.save(out, extra={"report": {k: v for k, v in report.items() if isinstance(v, float)}})
    out.with_suffix(".json").write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
    if log:
        log(
            f"facerecon: {tcfg.steps} steps in {report['seconds']} s; held-out ({n_eval} samples) landmark error "
            f"{report['model/landmark_mm']:.2f} mm vs {report['mean/landmark_mm']:.2f} mm for the mean predictor; "
            f"id RMSE {report['model/id_rmse']:.3f} vs {report['mean/id_rmse']:.3f}; "
            f"exp RMSE {report['model/exp_rmse']:.3f} vs {report['mean/exp_rmse']:.3f}"
        )
    return report
