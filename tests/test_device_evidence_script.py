"""The prepared GPU evidence script runs end to end with toy sizes (DRY=1) on a CPU."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow  # data, R, training, sheets and control metrics in a row: ~40 s on 2 cores
def test_device_evidence_script_dry_run(tmp_path):
    out = tmp_path / "out"
    env = dict(os.environ, DRY="1", PY=sys.executable, OUT=str(out), WORK=str(tmp_path / "work"),
               OMP_NUM_THREADS="1")
    proc = subprocess.run(["bash", str(ROOT / "scripts" / "device_evidence.sh")], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    for name in ("generator.safetensors", "portrait_controls.png", "face_controls.png", "metrics.json",
                 "train.log", "evidence.log"):
        assert (out / name).is_file(), name
    metrics = json.loads((out / "metrics.json").read_text())["metrics"]
    assert "exp_corr_real" in metrics and "head_pose_deg" in metrics
