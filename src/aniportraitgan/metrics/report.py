"""Metric reports: one JSON file per evaluation run (+ a Markdown table), and side-by-side tables.

JSON layout (`format` "aniportraitgan-metrics/1"):
    {"format": ..., "run": "<name>", "metrics": {"fid_face": 7.64, "kid_face": 0.0043, ...},
     "meta": {...free-form: checkpoint, num images, extractor, machine...}}
Values are stored raw. In the Markdown tables every metric whose name starts with "kid"
(kid, kid_std, kid_face, ...) is shown multiplied by 100 and labelled "(x100)", as the paper's
tables print KID; FID is shown as is.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from ..atomic import atomic_write  # noqa: F401 (re-exported)
from ..errors import AssetError, InputError

__all__ = ["REPORT_FORMAT", "KID_DISPLAY_SCALE", "atomic_write", "compare", "load_report", "markdown_table", "write_report"]

REPORT_FORMAT = "aniportraitgan-metrics/1"
KID_DISPLAY_SCALE = 100.0


def _is_kid(key: str) -> bool:
    return key.lower().startswith("kid")


def _lower_is_better(key: str) -> bool:
    k = key.lower()
    return (k.startswith("fid") or k.startswith("kid")) and not k.endswith("_std")


def display_label(key: str) -> str:
    return f"{key} (x100)" if _is_kid(key) else key


def display_value(key: str, value) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if _is_kid(key):
        return f"{value * KID_DISPLAY_SCALE:.3f}"
    if isinstance(value, int):
        return str(value)
    return f"{value:.2f}" if key.lower().startswith("fid") else f"{value:.4g}"


def _clean_metrics(metrics: Mapping) -> dict:
    if not isinstance(metrics, Mapping) or not metrics:
        raise InputError("write_report: metrics must be a non-empty mapping name -> value")
    out = {}
    for k, v in metrics.items():
        if not isinstance(k, str) or not k:
            raise InputError(f"write_report: metric names must be non-empty strings, got {k!r}")
        if hasattr(v, "item") and callable(v.item):  # numpy / torch scalars
            v = v.item()
        if isinstance(v, float) and not math.isfinite(v):
            raise InputError(f"write_report: metric {k!r} is {v}")
        if not isinstance(v, (int, float, str, bool)) and v is not None:
            raise InputError(f"write_report: metric {k!r} has unsupported type {type(v).__name__}")
        out[k] = v
    return out


def markdown_table(report: Mapping) -> str:
    """Markdown table (metric | value) for one report dict as written by `write_report`."""
    run = report.get("run", "run")
    lines = [f"### {run}", "", "| metric | value |", "|---|---:|"]
    for k, v in report["metrics"].items():
        lines.append(f"| {display_label(k)} | {display_value(k, v)} |")
    if any(_is_kid(k) for k in report["metrics"]):
        lines += ["", "KID values are shown x100 (as in the paper's tables); the JSON keeps raw values."]
    meta = report.get("meta") or {}
    if meta:
        lines += ["", "| setting | value |", "|---|---|"]
        lines += [f"| {k} | {v} |" for k, v in meta.items()]
    return "\n".join(lines) + "\n"


def write_report(
    metrics: Mapping,
    json_path: str | os.PathLike,
    run: str | None = None,
    meta: Mapping | None = None,
    markdown_path: str | os.PathLike | None = None,
) -> tuple[Path, Path]:
    """Write metrics to `json_path` (atomic) and a Markdown table beside it (default: same
    name with .md). Returns (json_path, markdown_path)."""
    json_path = Path(json_path)
    report = {
        "format": REPORT_FORMAT,
        "run": run or json_path.stem,
        "metrics": _clean_metrics(metrics),
        "meta": dict(meta or {}),
    }
    try:
        text = json.dumps(report, indent=2, default=str) + "\n"
    except (TypeError, ValueError) as exc:
        raise InputError(f"write_report: report is not JSON-serialisable ({exc})") from exc
    atomic_write(json_path, lambda f: f.write(text), mode="w")
    md_path = Path(markdown_path) if markdown_path is not None else json_path.with_suffix(".md")
    md = markdown_table(report)
    atomic_write(md_path, lambda f: f.write(md), mode="w")
    return json_path, md_path


def load_report(path: str | os.PathLike) -> dict:
    """Read a report JSON; AssetError if missing or malformed."""
    path = Path(path)
    if not path.is_file():
        raise AssetError(f"metrics report {path} does not exist")
    try:
        report = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise AssetError(f"metrics report {path} is not valid JSON ({exc})") from exc
    if not isinstance(report, dict) or not isinstance(report.get("metrics"), dict):
        raise AssetError(f"metrics report {path} has no 'metrics' object")
    report.setdefault("run", path.stem)
    return report


def compare(paths: Sequence[str | os.PathLike], names: Sequence[str] | None = None) -> str:
    """Markdown table of several reports side by side: rows = metrics (union, in order of first
    appearance), columns = runs. The best value of each FID/KID row is in bold."""
    if not paths:
        raise InputError("compare: give at least one report path")
    if names is not None and len(names) != len(paths):
        raise InputError(f"compare: {len(names)} names for {len(paths)} reports")
    reports = [load_report(p) for p in paths]
    cols: list[str] = []
    for i, r in enumerate(reports):
        name = names[i] if names is not None else str(r["run"])
        base, k = name, 2
        while name in cols:  # duplicate run names: keep columns distinguishable
            name, k = f"{base} #{k}", k + 1
        cols.append(name)
    keys: list[str] = []
    for r in reports:
        keys += [k for k in r["metrics"] if k not in keys]
    lines = ["| metric | " + " | ".join(cols) + " |", "|---|" + "---:|" * len(cols)]
    for key in keys:
        vals = [r["metrics"].get(key) for r in reports]
        cells = [display_value(key, v) for v in vals]
        nums = [v for v in vals if isinstance(v, (int, float)) and not isinstance(v, bool)]
        if _lower_is_better(key) and len(nums) > 1:
            best = min(nums)
            cells = [f"**{c}**" if v == best else c for c, v in zip(cells, vals)]
        lines.append(f"| {display_label(key)} | " + " | ".join(cells) + " |")
    notes = []
    if any(_is_kid(k) for k in keys):
        notes.append("KID values are shown x100.")
    if len(reports) > 1 and any(_lower_is_better(k) for k in keys):
        notes.append("Bold: best (lowest) FID/KID of each row.")
    if notes:
        lines += ["", " ".join(notes)]
    return "\n".join(lines) + "\n"
