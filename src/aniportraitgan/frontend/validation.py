"""Known-answer check of `data prepare`: prepare SynthPortraits renders as if they were photos and
compare the fitted labels with the true ones (docs/dataset.md records the numbers).

    python -m aniportraitgan.frontend.validation OUT [--num 128 --resolution 512 --seed 21]

renders `OUT/truth` (SynthPortraits whose expressions are the ones a face shows clearly: jaw,
blinks, smiles), copies the portraits alone to `OUT/raw`, prepares them into `OUT/prepared` and
prints `synthetic_errors`. Photos must keep their synthetic names (`000123.png`), so that a
prepared row finds its truth row; other photos are skipped.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import importlib
import json
import os
import shutil
from pathlib import Path

import numpy as np
import torch

from aniportraitgan.body import PortraitBodyModel
from aniportraitgan.cameras import Cameras
from aniportraitgan.data import synth
from aniportraitgan.data.dataset import (
    LABELS_FILE,
    PORTRAIT_DIR,
    load_labels,
    read_card,
)
from aniportraitgan.frames import opencv_to_opengl_c2w
from aniportraitgan.frontend.align import AlignConfig
from aniportraitgan.frontend.prepare import PrepareConfig, prepare
from aniportraitgan.rotations import matrix_to_axis_angle

CLEAR_EXPRESSIONS = ("jawOpen", "eyeBlinkLeft", "eyeBlinkRight", "mouthSmileLeft", "mouthSmileRight")


def clear_expressions(rng, names, priors):
    """An expression draw for known-answer sets: jaw open in half the samples, both eyes
    blinking in 40 %, a smile in half, each at a random strength; everything else neutral."""
    z = np.zeros(len(names), np.float32)
    if rng.uniform() < 0.5:
        z[names.index("jawOpen")] = rng.uniform(0.0, 0.8)
    if rng.uniform() < 0.4:
        v = rng.uniform(0.0, 1.0)
        z[names.index("eyeBlinkLeft")], z[names.index("eyeBlinkRight")] = v, v * rng.uniform(0.85, 1.0)
    if rng.uniform() < 0.5:
        v = rng.uniform(0.0, 0.9)
        z[names.index("mouthSmileLeft")], z[names.index("mouthSmileRight")] = v, v * rng.uniform(0.85, 1.0)
    return z


@contextlib.contextmanager
def expression_draw(draw):
    """SynthPortraits with another expression draw, inside this block (one process: workers=1)."""
    module = importlib.import_module(synth.draw_sample.__module__)
    old = module.sample_expression
    module.sample_expression = draw
    try:
        yield
    finally:
        module.sample_expression = old


def make_known_answer_set(root: str | os.PathLike, num: int, resolution: int, seed: int) -> Path:
    """Render `root/truth` with clear expressions and copy its portraits alone to `root/raw`."""
    root = Path(root)
    with expression_draw(clear_expressions):
        synth.synthesize(root / "truth", synth.SynthConfig(num=num, resolution=resolution, seed=seed, workers=1, progress=False))
    raw = root / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for p in sorted((root / "truth" / PORTRAIT_DIR).glob("*.png")):
        shutil.copyfile(p, raw / p.name)
    return raw


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


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out")
    ap.add_argument("--num", type=int, default=128)
    ap.add_argument("--resolution", type=int, default=512)
    ap.add_argument("--seed", type=int, default=21)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args(argv)
    raw = make_known_answer_set(args.out, args.num, args.resolution, args.seed)
    prepare(raw, Path(args.out) / "prepared", PrepareConfig(align=AlignConfig(resolution=args.resolution), workers=args.workers))
    print(json.dumps(synthetic_errors(Path(args.out) / "prepared", Path(args.out) / "truth"), indent=1))


if __name__ == "__main__":
    main()
