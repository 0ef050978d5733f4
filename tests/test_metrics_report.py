"""Metric reports: JSON round trip, Markdown tables (KID x100), side-by-side comparison."""

import json
import os

import numpy as np
import pytest

from aniportraitgan.errors import AssetError, InputError
from aniportraitgan.metrics.report import atomic_write, compare, load_report, markdown_table, write_report


def test_write_and_load_round_trip(tmp_path):
    metrics = {"fid_face": np.float64(7.6412), "kid_face": 0.00431, "kid_face_std": 0.0002, "num_fake": 20000}
    jp, mp = write_report(metrics, tmp_path / "out" / "metrics.json", run="ours", meta={"extractor": "inception"})
    assert jp.is_file() and mp == tmp_path / "out" / "metrics.md"
    rep = load_report(jp)
    assert rep["run"] == "ours" and rep["meta"] == {"extractor": "inception"}
    assert rep["metrics"] == {"fid_face": 7.6412, "kid_face": 0.00431, "kid_face_std": 0.0002, "num_fake": 20000}
    md = mp.read_text()
    assert "| fid_face | 7.64 |" in md
    assert "| kid_face (x100) | 0.431 |" in md and "| kid_face_std (x100) | 0.020 |" in md
    assert "| num_fake | 20000 |" in md and "x100" in md
    assert not [p for p in os.listdir(jp.parent) if p.endswith(".tmp")]
    assert markdown_table(rep) == md


def test_write_report_rejects_bad_metrics(tmp_path):
    with pytest.raises(InputError, match="non-empty mapping"):
        write_report({}, tmp_path / "m.json")
    with pytest.raises(InputError, match="'fid' is nan"):
        write_report({"fid": float("nan")}, tmp_path / "m.json")
    with pytest.raises(InputError, match="unsupported type"):
        write_report({"fid": [1, 2]}, tmp_path / "m.json")
    assert not (tmp_path / "m.json").exists()


def test_compare_side_by_side(tmp_path):
    a, _ = write_report({"fid_face": 11.26, "kid_face": 0.0057, "fid_full": 16.68}, tmp_path / "a.json", run="full")
    b, _ = write_report({"fid_face": 23.00, "kid_face": 0.0148, "extra": 3}, tmp_path / "b.json", run="no_dface")
    c, _ = write_report({"fid_face": 10.68, "kid_face": 0.0052}, tmp_path / "c.json", run="full")
    table = compare([a, b, c])
    lines = table.splitlines()
    assert lines[0] == "| metric | full | no_dface | full #2 |"
    assert "| fid_face | 11.26 | 23.00 | **10.68** |" in lines
    assert "| kid_face (x100) | 0.570 | 1.480 | **0.520** |" in lines
    assert "| fid_full | 16.68 | - | - |" in lines  # single value: nothing to bold
    assert "| extra | - | 3 | - |" in lines
    assert [ln.split(" |")[0] for ln in lines[2:6]] == ["| fid_face", "| kid_face (x100)", "| fid_full", "| extra"]
    named = compare([a, b], names=["A", "B"])
    assert named.splitlines()[0] == "| metric | A | B |"


def test_compare_and_load_errors(tmp_path):
    with pytest.raises(AssetError, match="does not exist"):
        compare([tmp_path / "missing.json"])
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(AssetError, match="not valid JSON"):
        load_report(bad)
    bad.write_text(json.dumps({"run": "x"}))
    with pytest.raises(AssetError, match="no 'metrics'"):
        load_report(bad)
    with pytest.raises(InputError, match="at least one"):
        compare([])


def test_atomic_write_leaves_old_file_on_failure(tmp_path):
    p = tmp_path / "f.txt"
    atomic_write(p, lambda f: f.write("old"), mode="w")

    def boom(f):
        f.write("partial")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        atomic_write(p, boom, mode="w")
    assert p.read_text() == "old" and os.listdir(tmp_path) == ["f.txt"]
