"""`aniportraitgan bench generator` runs and prints its one-line summary last."""

from __future__ import annotations

import json

import pytest

from aniportraitgan.cli import main


def test_bench_generator_tiny_prints_summary_last(tmp_path, capsys):
    out_json = tmp_path / "bench.json"
    rc = main(["bench", "generator", "--preset", "tiny", "--resolutions", "16,32", "--repeats", "1",
               "--warmup", "0", "--geometry-res", "16", "--json", str(out_json)])
    assert rc == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-1].startswith("bench generator preset=tiny device=cpu")
    assert "16: " in lines[-1] and "32: " in lines[-1] and "cached geo16" in lines[-1]
    result = json.loads(out_json.read_text())
    names = [r["name"] for r in result["rows"]]
    assert names == ["stage1 16 uncached", "stage2 16 uncached", "stage2 16 cached",
                     "stage1 32 uncached", "stage2 32 uncached", "stage2 32 cached", "stage2 32 cached geo16"]
    assert all(r["ms_per_frame"] > 0 for r in result["rows"])


def test_bench_without_target_prints_help(capsys):
    assert main(["bench"]) == 1
    assert "generator" in capsys.readouterr().out


@pytest.mark.parametrize("args", [["--resolutions", "abc"], ["--batch", "0"]])
def test_bench_generator_rejects_bad_arguments(args, capsys):
    assert main(["bench", "generator", "--preset", "tiny"] + args) == 2
    assert "error:" in capsys.readouterr().err
