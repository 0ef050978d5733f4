"""Known-answer check of `data prepare`: prepare SynthPortraits renders as if they were photos and
compare the fitted labels with the true ones (docs/dataset.md records the numbers).

    from aniportraitgan.frontend.validation import synthetic_errors
    errors = synthetic_errors("prepared_dir", "synth_dir")

Photos must be the synthetic portraits under their own names (`000123.png`), so that a prepared
row finds its truth row.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np
import torch

from aniportraitgan.body import PortraitBodyModel
from aniportraitgan.cameras import Cameras
from aniportraitgan.data.dataset import LABELS_FILE, load_labels, read_card
from aniportraitgan.frames import opencv_to_opengl_c2w
from aniportraitgan.rotations import matrix_to_axis_angle

CLEAR_EXPRESSIONS = ("jawOpen", "eyeBlinkLeft", "eyeBlinkRight", "mouthSmileLeft", "mouthSmileRight")


def _angle_deg(Ra: torch.Tensor, Rb: torch.Tensor) -> np.ndarray:
    return np.degrees(matrix_to_axis_angle(Ra.transpose(1, 2) @ Rb).norm(dim=-1).numpy())


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    if len(a) < 3 or a.std() < 1e-9 or b.std() < 1e-9:
        return float("nan")
    return float(np.corrcoef(a, b)[0, 1])


def synthetic_errors(prepared: str | os.PathLike, truth: str | os.PathLike) -> dict:
    """Errors of the prepared labels against the synthetic truth (medians unless named)."""
    prepared, truth = Path(prepared), Path(truth)
    fit = load_labels(prepared / LABELS_FILE)
    rows = list(csv.DictReader((prepared / "report.csv").open()))
    true = load_labels(truth / LABELS_FILE)
    row_of = {int(i): k for k, i in enumerate(true["index"])}
    names = {r["index"]: r["file"] for r in rows}
    stems = [Path(names[str(int(i))]).stem for i in fit["index"]]
    mine = [k for k, st in enumerate(stems) if st.isdigit() and int(st) in row_of]  # other photos are skipped
    pick = [row_of[int(stems[k])] for k in mine]
    fit = {k: np.asarray(v)[mine] for k, v in fit.items()}
    T = {k: torch.from_numpy(np.asarray(v)[pick]) for k, v in true.items() if k in ("z_id", "z_exp", "z_pose", "c2w", "cam_fov", "cam_yaw", "cam_pitch")}
    F = {k: torch.from_numpy(np.asarray(v)) for k, v in fit.items()}
    body = PortraitBodyModel.load()
    with torch.no_grad():
        t_out = body(T["z_id"], T["z_exp"], T["z_pose"])
        f_out = body(F["z_id"], F["z_exp"], F["z_pose"])

    def in_camera(c2w, R):
        return opencv_to_opengl_c2w(c2w)[:, :3, :3].transpose(1, 2) @ R

    face_cam = _angle_deg(in_camera(T["c2w"], t_out.head_rotation), in_camera(F["c2w"], f_out.head_rotation))
    head = _angle_deg(t_out.head_rotation, f_out.head_rotation)
    d = lambda a, b: np.degrees(np.abs((a - b).numpy()))
    shoulder_joints = [1, 2, 4, 5]
    pose_err = np.degrees((F["z_pose"][:, shoulder_joints] - T["z_pose"][:, shoulder_joints]).norm(dim=-1).numpy())
    pose_prior = np.degrees(T["z_pose"][:, shoulder_joints].norm(dim=-1).numpy())
    exp_names = body.expression_names
    expr = {n: round(_corr(F["z_exp"][:, exp_names.index(n)].numpy(), T["z_exp"][:, exp_names.index(n)].numpy()), 3) for n in CLEAR_EXPRESSIONS}
    # Framing: where the head centre lands and how large the head-to-neck span is, as shares of
    # the image side, in the prepared portrait vs the synthetic one.
    neck = body.bone_names.index("neck01")

    def head_neck(out, c2w, fov, size):
        uv, _ = Cameras(c2w, fov).project(torch.stack([out.head_center, out.joints[:, neck]], 1), size, size)
        return uv.numpy() / size

    t_uv = head_neck(t_out, T["c2w"], T["cam_fov"], int(read_card(truth)["resolution"]))
    f_uv = head_neck(f_out, F["c2w"], F["cam_fov"], int(read_card(prepared)["resolution"]))
    zoom = np.linalg.norm(f_uv[:, 0] - f_uv[:, 1], axis=-1) / np.linalg.norm(t_uv[:, 0] - t_uv[:, 1], axis=-1)
    shift = np.linalg.norm(f_uv[:, 0] - t_uv[:, 0], axis=-1)
    counts: dict[str, int] = {}
    for r in rows:
        key = r["reason"] or "accepted"
        counts[key] = counts.get(key, 0) + 1
    return {
        "photos": len(rows),
        "accepted": len(fit["index"]),
        "outcomes": counts,
        "fit_error_px": round(float(np.median(fit["fit_error_px"])), 3),
        "face_to_camera_rotation_deg": round(float(np.median(face_cam)), 2),
        "face_to_camera_rotation_deg_p90": round(float(np.percentile(face_cam, 90)), 2),
        "head_rotation_deg": round(float(np.median(head)), 2),
        "cam_yaw_deg": round(float(np.median(d(F["cam_yaw"], T["cam_yaw"]))), 2),
        "cam_pitch_deg": round(float(np.median(d(F["cam_pitch"], T["cam_pitch"]))), 2),
        "cam_yaw_corr": round(_corr(F["cam_yaw"].numpy(), T["cam_yaw"].numpy()), 3),
        "shoulder_rotation_deg": round(float(np.median(pose_err)), 2),
        "shoulder_rotation_deg_if_zero": round(float(np.median(pose_prior)), 2),
        "expression_corr": expr,
        "head_rotation_deg_if_zero": round(float(np.median(np.degrees(matrix_to_axis_angle(t_out.head_rotation).norm(dim=-1).numpy()))), 2),
        "cam_yaw_deg_if_zero": round(float(np.median(np.degrees(np.abs(T["cam_yaw"].numpy())))), 2),
        "crop_zoom_vs_synthetic": round(float(np.median(zoom)), 3),
        "crop_zoom_spread": round(float(np.percentile(zoom, 90) - np.percentile(zoom, 10)), 3),
        "head_centre_shift_share": round(float(np.median(shift)), 4),
    }
