"""Which mediapipe points stand for the body model's 68 landmarks and shoulder points.

The body model's 68 landmarks (`aniportraitgan.body.landmarks`) are fixed vertices placed by a
frontal iBUG-68 layout on anny's mean face; mediapipe's 478 face-mesh points are fixed points of
its own face topology. The two faces have other proportions, so the same layout laid on
mediapipe's canonical face misses the body model's points by about 5 px in a 512-pixel portrait
(10 % of the inter-ocular distance). The table here is measured instead:

1. candidates: the layout (in inter-ocular units, as the body model places it) is laid on
   mediapipe's canonical face mesh (from the face-landmarker bundle); the K mesh points nearest
   to each layout point in the frontal view are that landmark's candidates;
2. weights: on SynthPortraits renders, where the body model's projected landmarks are known
   exactly, each landmark's image position is regressed as an affine combination of its
   candidates' detected image positions (weights summing to one, ridge-regularised), so the map
   commutes with any similarity of the image.

So a landmark is `sum_k w_k p[idx_k]` of the detected points p [478, 2]. The shoulders:
mediapipe pose landmarks 11/12 are compared with the body model's `upperarm01.L/.R` joint heads
plus an offset (scene axes, mirrored in x for the right side) measured the same way.

`build_correspondence` re-measures the table from a synthetic dataset; the shipped JSON records
the dataset, the seed and the residuals.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from aniportraitgan.atomic import atomic_write_bytes
from aniportraitgan.body import PortraitBodyModel
from aniportraitgan.body.landmarks import LAYOUT_68
from aniportraitgan.cameras import Cameras
from aniportraitgan.data.dataset import (
    LABELS_FILE,
    load_labels,
    portrait_path,
    read_card,
    read_png,
)
from aniportraitgan.errors import AssetError, InputError
from aniportraitgan.frontend.detection import Detector, canonical_face_mesh

TABLE_FILE = Path(__file__).resolve().parent / "mediapipe_body68.json"
TABLE_FORMAT = "aniportraitgan-mediapipe-body68/1"
SHOULDER_JOINTS = ("upperarm01.L", "upperarm01.R")  # subject's left first, as pose landmarks 11, 12
# mediapipe face-mesh eye contours (16 points each), whose means are the eye centres.
MP_RIGHT_EYE = (33, 7, 163, 144, 145, 153, 154, 155, 133, 173, 157, 158, 159, 160, 161, 246)
MP_LEFT_EYE = (263, 249, 390, 373, 374, 380, 381, 382, 362, 398, 384, 385, 386, 387, 388, 466)
# Landmark groups of the iBUG-68 order.
GROUPS = {"jaw": range(17), "brows": range(17, 27), "nose": range(27, 36), "eyes": range(36, 48), "mouth": range(48, 68)}


@dataclass
class Correspondence:
    indices: torch.Tensor  # [68, K] long, mediapipe face-mesh point ids
    weights: torch.Tensor  # [68, K] float, rows sum to one
    shoulder_offset: torch.Tensor  # [3] scene metres, added to the left joint (x mirrored on the right)
    meta: dict

    def body68(self, points: torch.Tensor) -> torch.Tensor:
        """Detected face-mesh points [..., 478, 2] -> the body model's 68 landmarks [..., 68, 2]."""
        points = torch.as_tensor(points)
        picked = points[..., self.indices, :]  # [..., 68, K, 2]
        return (picked * self.weights.to(picked.dtype)[..., None]).sum(-2)

    def shoulder_points(self, joints: torch.Tensor) -> torch.Tensor:
        """Shoulder joint heads [..., 2, 3] (left, right) -> the points mediapipe marks [..., 2, 3]."""
        off = self.shoulder_offset.to(joints.dtype)
        mirror = torch.tensor([-1.0, 1.0, 1.0], dtype=joints.dtype)
        return joints + torch.stack([off, off * mirror])

    def to_json(self) -> dict:
        return {
            "format": TABLE_FORMAT,
            "indices": self.indices.tolist(),
            "weights": [[round(float(w), 6) for w in row] for row in self.weights],
            "shoulder_offset": [round(float(v), 6) for v in self.shoulder_offset],
            "meta": self.meta,
        }


_CACHE: dict[str, Correspondence] = {}


def load_correspondence(path: str | Path | None = None) -> Correspondence:
    path = Path(path) if path is not None else TABLE_FILE
    key = str(path)
    if key not in _CACHE:
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise AssetError(f"landmark correspondence table {path} is missing or not JSON: {exc}") from None
        if data.get("format") != TABLE_FORMAT:
            raise AssetError(f"landmark correspondence table {path}: format must be {TABLE_FORMAT!r}")
        idx = torch.tensor(data["indices"], dtype=torch.long)
        w = torch.tensor(data["weights"], dtype=torch.float32)
        if idx.shape != w.shape or idx.shape[0] != 68 or idx.min() < 0 or idx.max() >= 478:
            raise AssetError(f"landmark correspondence table {path}: indices/weights must be [68, K] with ids in [0, 478)")
        _CACHE[key] = Correspondence(idx, w, torch.tensor(data["shoulder_offset"], dtype=torch.float32), data.get("meta", {}))
    return _CACHE[key]


# ------------------------------------------------------------------------------ measuring


def layout_candidates(canonical: np.ndarray, k: int) -> np.ndarray:
    """[68, k] ids of mediapipe's canonical-mesh points (cm; x = subject's left, y up, z toward
    the viewer) nearest to the body model's frontal 68-point layout laid on that face."""
    right, left = canonical[list(MP_RIGHT_EYE)].mean(0), canonical[list(MP_LEFT_EYE)].mean(0)
    iod = float(np.linalg.norm(left - right))
    mid = 0.5 * (left + right)
    layout = np.asarray(LAYOUT_68, dtype=np.float64)
    targets = np.stack([mid[0] + layout[:, 0] * iod, mid[1] - layout[:, 1] * iod], -1)
    front = np.nonzero(canonical[:, 2] > mid[2] - 0.5 * iod)[0]
    dist = np.linalg.norm(canonical[front, None, :2] - targets[None], axis=-1)  # [C, 68]
    return front[np.argsort(dist, axis=0)[:k].T]


def regress_weights(detected: np.ndarray, truth: np.ndarray, candidates: np.ndarray, ridge: float = 0.1):
    """Affine weights (rows sum to one) of each landmark's candidates.

    detected [N, 478, 2], truth [N, 68, 2] pixels, candidates [68, K]. Returns weights [68, K]
    and the per-landmark residuals [N, 68] (pixels) on the given samples."""
    N = len(detected)
    K = candidates.shape[1]
    weights = np.zeros(candidates.shape)
    resid = np.zeros((N, 68))
    for j in range(68):
        P = detected[:, candidates[j]].astype(np.float64)  # [N, K, 2]
        base = P[:, -1]
        A = (P[:, :-1] - base[:, None]).transpose(0, 2, 1).reshape(-1, K - 1)
        y = (truth[:, j] - base).reshape(-1)
        a = np.linalg.solve(A.T @ A + ridge * np.eye(K - 1), A.T @ y)
        weights[j, :-1] = a
        weights[j, -1] = 1.0 - a.sum()
        pred = np.einsum("nkc,k->nc", P, weights[j])
        resid[:, j] = np.linalg.norm(pred - truth[:, j], axis=-1)
    return weights, resid


def fit_shoulder_offset(cams, joints: torch.Tensor, observed: torch.Tensor, valid: torch.Tensor, size: int, steps: int = 300) -> tuple[torch.Tensor, float]:
    """The scene offset [3] (left side; x mirrored on the right) that brings the projected
    shoulder joints [N, 2, 3] closest to the detected points [N, 2, 2]; returns it and the
    median residual in pixels."""
    offset = torch.zeros(3, requires_grad=True)
    opt = torch.optim.Adam([offset], lr=0.003)
    mirror = torch.tensor([-1.0, 1.0, 1.0])
    for _ in range(steps):
        pts = joints + torch.stack([offset, offset * mirror])
        uv, _ = cams.project(pts, size, size)
        err = ((uv - observed).norm(dim=-1) * valid).sum() / valid.sum().clamp_min(1)
        opt.zero_grad()
        err.backward()
        opt.step()
    with torch.no_grad():
        uv, _ = cams.project(joints + torch.stack([offset, offset * mirror]), size, size)
        resid = (uv - observed).norm(dim=-1)[valid > 0]
    return offset.detach(), float(resid.median()) if len(resid) else float("nan")


def save_correspondence(table: Correspondence, path: str | Path = TABLE_FILE) -> None:
    atomic_write_bytes(path, (json.dumps(table.to_json(), indent=1) + "\n").encode())
    _CACHE.pop(str(path), None)


def build_correspondence(root: str | Path, k: int = 8, ridge: float = 0.1, holdout: float = 0.25, progress: bool = True) -> Correspondence:
    """Measure the table on a SynthPortraits dataset (`aniportraitgan data synth`): detect every
    portrait, regress on the first (1 - holdout) share of the samples with a face and shoulders,
    and record the residuals on the rest."""
    from tqdm import tqdm

    root = Path(root)
    card = read_card(root)
    labels = load_labels(root / LABELS_FILE)
    if card.get("source") != "synthetic" or "landmarks" not in labels or "c2w" not in labels:
        raise InputError(f"{root}: build_correspondence needs a synthetic dataset with landmarks and cameras")
    R = int(card["resolution"])
    keep, mesh, shoulders, vis = [], [], [], []
    with Detector(segmentation=False) as det:
        for row, idx in enumerate(tqdm(labels["index"], desc="detect", disable=not progress)):
            d = det.detect(read_png(portrait_path(root, int(idx)), R))
            if d.landmarks is None or d.shoulders is None:
                continue
            keep.append(row)
            mesh.append(d.landmarks[:, :2])
            shoulders.append(d.shoulders)
            vis.append(d.shoulder_visibility)
    keep = np.asarray(keep)
    if len(keep) < 20:
        raise InputError(f"{root}: only {len(keep)} portraits with a detected face; need at least 20")
    mesh, shoulders, vis = np.stack(mesh), np.stack(shoulders), np.stack(vis)
    n_fit = round(len(keep) * (1.0 - holdout))
    truth = labels["landmarks"][keep]
    candidates = layout_candidates(canonical_face_mesh(), k)
    weights, _ = regress_weights(mesh[:n_fit], truth[:n_fit], candidates, ridge)
    pred = np.einsum("njkc,jk->njc", mesh[:, candidates], weights)
    resid = np.linalg.norm(pred - truth, axis=-1)[n_fit:]
    body = PortraitBodyModel.load()
    sel = {name: torch.from_numpy(labels[name][keep]) for name in ("z_id", "z_exp", "z_pose", "c2w", "cam_fov")}
    with torch.no_grad():
        joints = body(sel["z_id"], sel["z_exp"], sel["z_pose"]).joints[:, [body.bone_names.index(j) for j in SHOULDER_JOINTS]]
    cams = Cameras(sel["c2w"], sel["cam_fov"])
    valid = torch.from_numpy((vis > 0.5).astype(np.float32))
    fit_rows = torch.arange(len(keep)) < n_fit
    offset, _ = fit_shoulder_offset(cams[:n_fit], joints[:n_fit], torch.from_numpy(shoulders[:n_fit]), valid[:n_fit], R)
    with torch.no_grad():
        mirror = torch.tensor([-1.0, 1.0, 1.0])
        uv, _ = cams.project(joints + torch.stack([offset, offset * mirror]), R, R)
        sh_err = (uv - torch.from_numpy(shoulders)).norm(dim=-1)[~fit_rows][valid[~fit_rows] > 0]
    meta = {
        "built_from": {"generator": card.get("generator"), "seed": card.get("synth_settings", {}).get("seed"),
                       "num_samples": int(card["num_samples"]), "resolution": R, "detected": len(keep),
                       "fitted_on": int(n_fit), "held_out": int(len(keep) - n_fit)},
        "candidates_per_landmark": int(k),
        "ridge": ridge,
        "held_out_median_px": {g: round(float(np.median(resid[:, list(r)])), 3) for g, r in GROUPS.items()},
        "held_out_median_px_all": round(float(np.median(resid)), 3),
        "shoulder_held_out_median_px": round(float(sh_err.median()), 3),
        "shoulder_joints": list(SHOULDER_JOINTS),
    }
    return Correspondence(torch.from_numpy(candidates), torch.from_numpy(weights).float(), offset.float(), meta)
