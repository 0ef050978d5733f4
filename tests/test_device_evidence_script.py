"""The prepared GPU evidence script runs end to end with toy sizes (DRY=1) on a CPU, from either
start: a fresh `tiny` run, or the committed `template_run/` (the bundled demo model's run state)
continued by exact resume."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from aniportraitgan.training import TrainConfig

ROOT = Path(__file__).resolve().parents[1]
OUTPUTS = ("generator.safetensors", "portrait_controls.png", "face_controls.png", "metrics.json", "train.log",
           "evidence.log")


def _dry_run(tmp_path: Path, start: str) -> Path:
    out = tmp_path / "out"
    env = dict(os.environ, DRY="1", START=start, PY=sys.executable, OUT=str(out), WORK=str(tmp_path / "work"),
               OMP_NUM_THREADS="1")
    env.pop("RUN_STATE", None)
    proc = subprocess.run(["bash", str(ROOT / "scripts" / "device_evidence.sh")], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    for name in OUTPUTS:
        assert (out / name).is_file(), name
    return out


@pytest.mark.slow  # data, R, training, sheets and control metrics in a row: ~40 s on 2 cores
def test_device_evidence_script_dry_run_fresh(tmp_path):
    out = _dry_run(tmp_path, "fresh")
    metrics = json.loads((out / "metrics.json").read_text())["metrics"]
    assert "exp_corr_real" in metrics and "head_pose_deg" in metrics


@pytest.mark.slow  # the 5000 samples template_run/ was trained on (its labels are checked): ~2-4 min on 2 cores
def test_device_evidence_script_dry_run_resume(tmp_path):
    """The committed run state of the bundled model resumes on a regenerated dataset (the same
    labels, to float rounding) and the new run state comes back ready to replace template_run/."""
    out = _dry_run(tmp_path, "resume")
    metrics = json.loads((out / "metrics.json").read_text())["metrics"]
    assert {"fid_portrait", "head_pose_deg", "response_jawOpen"} <= set(metrics), sorted(metrics)
    committed = sorted(p.name for p in (ROOT / "template_run" / "checkpoints").iterdir())
    step = int(committed[-1].split("-")[1])
    new = [p.name for p in (out / "template_run" / "checkpoints").iterdir()]
    assert len(new) == 1 and step < int(new[0].split("-")[1]) <= step + 2, new  # DRY: 2 steps at most
    for name in ("config.json", "inputs.json", "train.log", "README.md"):
        assert (out / "template_run" / name).is_file(), name
    # the same configuration (fields added since the committed file was written take their defaults)
    same = [TrainConfig.from_dict(json.loads((d / "template_run" / "config.json").read_text())).to_dict()
            for d in (out, ROOT)]
    assert same[0] == same[1]


def test_device_evidence_script_refuses_an_unknown_start(tmp_path):
    env = dict(os.environ, START="sideways", PY=sys.executable, OUT=str(tmp_path / "o"), WORK=str(tmp_path / "w"))
    proc = subprocess.run(["bash", str(ROOT / "scripts" / "device_evidence.sh")], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "START must be resume, grown or fresh" in proc.stderr


@pytest.mark.parametrize("run_state", ["docs", "no/such/folder"])
def test_device_evidence_script_refuses_a_run_state_without_checkpoints(tmp_path, run_state):
    env = dict(os.environ, START="resume", RUN_STATE=run_state, PY=sys.executable, OUT=str(tmp_path / "o"),
               WORK=str(tmp_path / "w"))
    proc = subprocess.run(["bash", str(ROOT / "scripts" / "device_evidence.sh")], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and f"RUN_STATE={run_state} is not a run state to resume" in proc.stderr
