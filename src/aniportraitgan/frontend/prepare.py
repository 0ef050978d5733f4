"""`aniportraitgan data prepare`: a folder of real portrait photos -> a labelled dataset.

Layout of the output folder (besides the dataset format of docs/dataset.md)::

    OUT/prepare/files.txt          every input file (relative path), line k = sample id k
    OUT/prepare/settings.json      the settings; a re-run with other settings is refused
    OUT/prepare/batches/000012.npz one record per batch of `batch` consecutive ids: the label
                                   rows of its accepted photos and a report line per photo
    OUT/report.csv                 per photo: id, file, accepted/rejected, reason, fit error, ...

Sample ids are positions in `files.txt`, so images of different shards never collide; batch b
belongs to shard b mod n. A batch is done when its record exists and its images are there
(checked on resume); everything is written atomically, so an interrupted run resumes where it
stopped. When every batch of the folder is done (at the end of a run, or after `data merge`
brought in other machines' shards), the labels file, the card and the report are written.
New files added to RAW_DIR between runs are appended to files.txt (old ids stay).
"""

from __future__ import annotations

import csv
import io
import json
import multiprocessing as mp
import os
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from aniportraitgan import __version__
from aniportraitgan.atomic import atomic_write_bytes
from aniportraitgan.data.dataset import (
    CARD_FILE,
    FACE_DIR,
    PORTRAIT_DIR,
    face_path,
    image_name,
    portrait_path,
    write_dataset,
)
from aniportraitgan.errors import UserError
from aniportraitgan.frontend.align import AlignConfig, Aligner
from aniportraitgan.frontend.detection import (
    FACE_LANDMARKER_SHA256,
    MEDIAPIPE_VERSION,
    face_landmarker_path,
    import_mediapipe,
)

GENERATOR = "aniportraitgan.frontend.prepare"
GENERATOR_VERSION = "1"
WORK_DIR = "prepare"
FILES = "files.txt"
SETTINGS = "settings.json"
BATCH_DIR = "batches"
REPORT = "report.csv"
REPORT_FIELDS = ("index", "file", "status", "reason", "detail", "fit_error_px", "face_px", "upsampling", "faces",
                 "face_yaw_deg", "face_pitch_deg", "face_roll_deg")


@dataclass
class PrepareConfig:
    align: AlignConfig = field(default_factory=AlignConfig)
    workers: int = 2
    shard: tuple[int, int] = (0, 1)  # (i, n): this run does batches b with b % n == i
    batch: int = 64  # photos per fitting batch (larger batches fit faster per photo)
    progress: bool = True

    def validate(self) -> None:
        i, n = self.shard
        if n < 1 or not 0 <= i < n:
            raise UserError(f"--shard must be i/n with 0 <= i < n, got {i}/{n}")
        if self.workers < 1 or self.batch < 1:
            raise UserError(f"workers and batch must be >= 1, got {self.workers} and {self.batch}")
        if not 64 <= self.align.resolution <= 2048:
            raise UserError(f"--resolution must be in [64, 2048], got {self.align.resolution}")


@dataclass
class PrepareSummary:
    root: str
    files: int
    processed: int  # photos processed by this run
    seconds: float
    accepted: int  # in the whole folder (when complete) or in this run's batches
    rejected: dict[str, int]
    complete: bool
    missing_batches: int

    @property
    def photos_per_second(self) -> float:
        return self.processed / self.seconds if self.seconds > 0 else float("nan")


def _settings(cfg: PrepareConfig) -> dict:
    return {"align": json.loads(json.dumps(asdict(cfg.align))), "batch": cfg.batch, "generator_version": GENERATOR_VERSION}


def list_photos(raw: Path, exclude: Path | None = None) -> list[str]:
    """Every regular, non-hidden file under `raw` (relative paths, sorted), leaving out the
    folder `exclude` (an output folder inside the photo folder)."""
    out = []
    skip = exclude.resolve() if exclude is not None else None
    for dirpath, dirnames, filenames in os.walk(raw):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and (Path(dirpath) / d).resolve() != skip)
        for f in filenames:
            if not f.startswith(".") and os.path.isfile(os.path.join(dirpath, f)):
                out.append(os.path.relpath(os.path.join(dirpath, f), raw))
    return sorted(out)


def _manifest(raw: Path, root: Path) -> list[str]:
    path = root / WORK_DIR / FILES
    old = path.read_text().splitlines() if path.is_file() else []
    known = set(old)
    files = old + [f for f in list_photos(raw, exclude=root) if f not in known]
    if files != old:
        atomic_write_bytes(path, ("\n".join(files) + "\n").encode())
    return files


def _check_settings(root: Path, work: Path, settings: dict) -> None:
    card = root / CARD_FILE
    if card.is_file() and not (work / SETTINGS).is_file():
        raise UserError(f"{root} holds a dataset that `data prepare` did not make; use another --out folder")
    path = work / SETTINGS
    if path.is_file():
        old = json.loads(path.read_text())
        if old != settings:
            diff = sorted(k for k in set(old) | set(settings) if old.get(k) != settings.get(k))
            raise UserError(f"{root} was prepared with other settings ({', '.join(diff)}); use another --out folder")
    else:
        atomic_write_bytes(path, (json.dumps(settings, indent=1) + "\n").encode())


def _record_path(work: Path, batch: int) -> Path:
    return work / BATCH_DIR / f"{batch:06d}.npz"


def read_record(path: Path) -> tuple[dict[str, np.ndarray], list[dict]] | None:
    """A batch record (labels of its accepted photos, report rows), or None when unreadable."""
    try:
        with np.load(path, allow_pickle=False) as z:
            data = {k: z[k] for k in z.files}
        report = json.loads(str(data.pop("report")))
    except (OSError, ValueError, KeyError, EOFError):
        return None
    return data, report


def _png_ok(path: Path, size: int) -> bool:
    from PIL import Image

    try:
        with Image.open(path) as im:
            if im.size != (size, size) or im.format != "PNG":
                return False
            im.verify()  # every chunk and its checksum: a truncated or damaged file fails
            return True
    except (OSError, ValueError, SyntaxError):
        return False


def _batch_done(root: Path, work: Path, b: int, cfg: AlignConfig) -> bool:
    rec = read_record(_record_path(work, b))
    if rec is None:
        return False
    labels, _ = rec
    return all(_png_ok(portrait_path(root, i), cfg.resolution) and _png_ok(face_path(root, i), cfg.face_resolution)
               for i in labels.get("index", []))


def _write_record(work: Path, b: int, labels: dict, report: list[dict]) -> None:
    buf = io.BytesIO()
    np.savez(buf, report=np.array(json.dumps(report)), **labels)
    atomic_write_bytes(_record_path(work, b), buf.getvalue())


def _clean_partials(root: Path, indices: set[int]) -> None:
    """Temporary files that a killed run left behind for these ids."""
    for folder in (PORTRAIT_DIR, FACE_DIR):
        for name in os.listdir(root / folder):
            if name.startswith(".") and ".partial" in name and name[1:7].isdigit() and int(name[1:7]) in indices:
                (root / folder / name).unlink(missing_ok=True)


# ----------------------------------------------------------------------------- workers
_ALIGNER: Aligner | None = None


def _init_worker(cfg: AlignConfig) -> None:
    global _ALIGNER
    torch.set_num_threads(1)
    _ALIGNER = Aligner(cfg)


def _run_batch(args) -> tuple[int, list[dict]]:
    b, items, root, work = args
    labels, report = _ALIGNER.run(items, root)
    _write_record(Path(work), b, labels, report)
    return b, report


def prepare(raw_dir: str | os.PathLike, out: str | os.PathLike, config: PrepareConfig | None = None) -> PrepareSummary:
    """Prepare this run's shard of `raw_dir` into `out` (resumable); finish the dataset when
    every batch is done."""
    cfg = config or PrepareConfig()
    cfg.validate()
    raw, root = Path(raw_dir), Path(out)
    if not raw.is_dir():
        raise UserError(f"photo folder not found: {raw}")
    import_mediapipe()  # a clear error before any output is made
    face_landmarker_path()
    work = root / WORK_DIR
    if not (work / FILES).is_file() and not list_photos(raw, exclude=root):
        raise UserError(f"no files in {raw}")  # before anything is written
    try:
        for d in (root / PORTRAIT_DIR, root / FACE_DIR, work / BATCH_DIR):
            d.mkdir(parents=True, exist_ok=True)
        _check_settings(root, work, _settings(cfg))
        files = _manifest(raw, root)
    except OSError as exc:
        raise UserError(f"cannot write to {root}: {exc}") from None
    B = cfg.batch
    i, n = cfg.shard
    mine = [b for b in range((len(files) + B - 1) // B) if b % n == i]
    todo = [b for b in mine if not _batch_done(root, work, b, cfg.align)]
    _clean_partials(root, {k for b in todo for k in range(b * B, min((b + 1) * B, len(files)))})
    tasks = [(b, [(k, files[k], str(raw / files[k])) for k in range(b * B, min((b + 1) * B, len(files)))], str(root), str(work))
             for b in todo]
    done_before = sum(min(B, len(files) - b * B) for b in mine) - sum(len(t[1]) for t in tasks)
    bar = tqdm(total=done_before + sum(len(t[1]) for t in tasks), initial=done_before, unit="photo", desc="prepare",
               disable=not cfg.progress)
    t0 = time.time()
    reports: list[dict] = []
    workers = min(cfg.workers, len(tasks))
    try:
        if workers <= 1:
            threads = torch.get_num_threads()
            torch.set_num_threads(1)
            aligner = Aligner(cfg.align) if tasks else None
            try:
                for t in tasks:
                    labels, report = aligner.run(t[1], root)
                    _write_record(work, t[0], labels, report)
                    reports += report
                    bar.update(len(report))
            finally:
                if aligner is not None:
                    aligner.close()
                torch.set_num_threads(threads)
        else:
            ctx = mp.get_context("spawn")
            with ctx.Pool(workers, initializer=_init_worker, initargs=(cfg.align,)) as pool:
                for _, report in pool.imap_unordered(_run_batch, tasks):
                    reports += report
                    bar.update(len(report))
    finally:
        bar.close()
    seconds = time.time() - t0
    complete, missing, counts = finish(root)
    if not complete:
        counts = Counter(r["reason"] or "accepted" for r in reports)
    accepted = counts.pop("accepted", 0)
    return PrepareSummary(str(root), len(files), len(reports), seconds, accepted, dict(counts), complete, missing)


def finish(root: str | os.PathLike) -> tuple[bool, int, Counter]:
    """Write labels, card and report when every batch of `root` is done. Returns (complete,
    number of missing batches, counts of accepted and of each rejection reason)."""
    root = Path(root)
    work = root / WORK_DIR
    files = (work / FILES).read_text().splitlines()
    settings = json.loads((work / SETTINGS).read_text())
    B = int(settings["batch"])
    parts, rows, missing = [], [], 0
    for b in range((len(files) + B - 1) // B):
        rec = read_record(_record_path(work, b))
        if rec is None:
            missing += 1
            continue
        parts.append(rec[0])
        rows += rec[1]
    counts = Counter(r["reason"] or "accepted" for r in rows)
    if missing:
        return False, missing, counts
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=REPORT_FIELDS, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_bytes(root / REPORT, buf.getvalue().encode())
    parts = [p for p in parts if len(p.get("index", [])) > 0]
    if not parts:
        return True, 0, counts
    labels = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    align = settings["align"]
    err = labels["fit_error_px"]
    write_dataset(
        root, labels, int(align["resolution"]), max(int(align["resolution"]) // 2, 8), GENERATOR,
        f"{GENERATOR_VERSION} (aniportraitgan {__version__})", source="real", complete=True,
        prepare_settings=settings,
        detector={"mediapipe": MEDIAPIPE_VERSION, "face_landmarker_sha256": FACE_LANDMARKER_SHA256, "pose_model_complexity": 1},
        report={"file": REPORT, "photos": len(rows), "accepted": counts.get("accepted", 0),
                "rejected": {k: v for k, v in sorted(counts.items()) if k != "accepted"},
                "fit_error_px": {"median": round(float(np.median(err)), 3), "p90": round(float(np.percentile(err, 90)), 3)}},
        label_notes={
            "z_id, z_exp, z_pose, cam_*": "fitted to mediapipe detections (aniportraitgan.frontend.fitting); camera convention as SynthPortraits",
            "landmarks": "the fitted body model's 68 landmarks projected into the portrait, pixels",
            "detected_landmarks": "mediapipe's face mesh mapped to the 68 landmarks (frontend.correspondence), portrait pixels",
            "fit_error_px": "mean distance between the two, portrait pixels",
        },
    )
    return True, 0, counts


def merge(root: str | os.PathLike, others: list[str | os.PathLike]) -> tuple[bool, int, Counter]:
    """Bring the batches and images of other output folders of the same photo folder (other
    machines' shards) into `root`, then finish it when complete."""
    root = Path(root)
    work = root / WORK_DIR
    if not (work / SETTINGS).is_file():
        raise UserError(f"{root} is not a `data prepare` output folder (no {WORK_DIR}/{SETTINGS})")
    mine = (work / SETTINGS).read_text(), (work / FILES).read_text()
    for other in map(Path, others):
        ow = other / WORK_DIR
        if not (ow / SETTINGS).is_file():
            raise UserError(f"{other} is not a `data prepare` output folder (no {WORK_DIR}/{SETTINGS})")
        if (ow / SETTINGS).read_text() != mine[0]:
            raise UserError(f"{other} was prepared with other settings than {root}")
        theirs = (ow / FILES).read_text()
        if not (theirs.startswith(mine[1]) or mine[1].startswith(theirs)):
            raise UserError(f"{other} lists other photos than {root} ({FILES} differ)")
        if len(theirs) > len(mine[1]):
            atomic_write_bytes(work / FILES, theirs.encode())
            mine = mine[0], theirs
        for rec_path in sorted((ow / BATCH_DIR).glob("*.npz")):
            target = work / BATCH_DIR / rec_path.name
            rec = read_record(rec_path)
            if rec is None or target.exists():
                continue
            for k in rec[0].get("index", []):
                for folder in (PORTRAIT_DIR, FACE_DIR):
                    src = other / folder / image_name(int(k))
                    if not src.is_file():
                        raise UserError(f"{rec_path} lists {src}, which is missing")
                    atomic_write_bytes(root / folder / image_name(int(k)), src.read_bytes())
            atomic_write_bytes(target, rec_path.read_bytes())  # the record last: it marks the batch done
    return finish(root)
