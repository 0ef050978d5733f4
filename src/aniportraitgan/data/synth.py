"""SynthPortraits: rendered head-and-shoulder portraits of the body model with exact labels.

Each sample k of a dataset with seed S is a pure function of (S, k): its labels, appearance and
light come from `numpy.random.default_rng(SeedSequence([S, k]))`, and the body model runs on
fixed chunks of CHUNK consecutive samples (the batch composition never depends on the worker
count or on which samples were already on disk). Hence re-running fills only missing images
and any worker count gives byte-identical PNGs.
"""

from __future__ import annotations

import atexit
import json
import multiprocessing as mp
import os
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from aniportraitgan import __version__
from aniportraitgan.body import PortraitBodyModel
from aniportraitgan.data.dataset import (
    CARD_FILE,
    FACE_DIR,
    LABELS_FILE,
    PORTRAIT_DIR,
    build_card,
    face_path,
    image_name,
    portrait_path,
    save_labels,
    write_card,
)
from aniportraitgan.data.synth_config import CHUNK, GENERATOR, GENERATOR_VERSION, SynthConfig
from aniportraitgan.data.synth_labels import LabelPriors, draw_sample
from aniportraitgan.data.synth_worker import SynthWorker
from aniportraitgan.data.verify import png_problem
from aniportraitgan.errors import UserError

# Re-exported: the public names of SynthPortraits live here.
__all__ = ["CHUNK", "GENERATOR", "GENERATOR_VERSION", "LabelPriors", "SynthConfig", "SynthReport", "SynthWorker",
           "draw_sample", "make_tiny_dataset", "synthesize"]

# Multiprocessing plumbing: one worker (and one GL context) per process.
_WORKER: SynthWorker | None = None


def _init_worker(config: SynthConfig) -> None:
    global _WORKER
    # llvmpipe would start a thread per core in every process; the processes already fill the cores.
    os.environ.setdefault("LP_NUM_THREADS", "1")
    _WORKER = SynthWorker(config)


def _run_chunk(args) -> tuple[dict[str, np.ndarray], int]:
    start, stop, render, out_dir = args
    assert _WORKER is not None
    return _WORKER.run_chunk(start, stop, render, out_dir), len(render)


# ------------------------------------------------------------------------------- the command


@dataclass
class SynthReport:
    root: str
    num_samples: int
    rendered: int
    seconds: float

    @property
    def samples_per_second(self) -> float:
        return self.rendered / self.seconds if self.seconds > 0 else float("nan")


def _missing(root: Path, config: SynthConfig) -> dict[int, tuple[bool, bool]]:
    """sample -> (render portrait, render face): missing, or failing the fast check of a resume
    (`verify.png_problem`: a 0-byte, truncated or wrong-size PNG is rendered again)."""
    out = {}
    for k in range(config.num):
        need = (png_problem(portrait_path(root, k), config.resolution) is not None,
                png_problem(face_path(root, k), config.face_resolution) is not None)
        if any(need):
            out[k] = need
    return out


def synthesize(out: str | os.PathLike, config: SynthConfig) -> SynthReport:
    """Build (or complete) a synthetic dataset in `out`."""
    config.validate()
    root = Path(out)
    root.mkdir(parents=True, exist_ok=True)
    (root / PORTRAIT_DIR).mkdir(exist_ok=True)
    (root / FACE_DIR).mkdir(exist_ok=True)
    settings = config.card_settings()
    card_path = root / CARD_FILE
    if card_path.exists():
        try:
            old_card = json.loads(card_path.read_text())
        except ValueError:
            old_card = {}
        old = old_card.get("synth_settings") if isinstance(old_card, dict) else None
        if old is None and old_card:
            raise UserError(f"{root} holds a dataset that `data synth` did not make ({card_path}); use another folder")
        if old is not None and json.loads(json.dumps(settings)) != old:
            diff = sorted(k for k in settings if json.loads(json.dumps(settings[k])) != old.get(k))
            raise UserError(
                f"{root} holds a synthetic dataset made with other settings ({', '.join(diff)}); "
                "use another folder (or delete it) to change them"
            )
    extra = sorted(
        int(p[:-4]) for d in (PORTRAIT_DIR, FACE_DIR) for p in os.listdir(root / d)
        if p.endswith(".png") and p[:-4].isdigit() and int(p[:-4]) >= config.num
    )
    if extra:
        raise UserError(f"{root} already holds samples beyond --num {config.num} (e.g. {image_name(extra[0])}); use a larger --num or another folder")
    # A provisional card records the settings, so that a resumed run cannot mix settings.
    write_card(root, {"format": "aniportraitgan-portraits", "format_version": 1, "complete": False,
                      "num_samples": config.num, "resolution": config.resolution,
                      "face_resolution": config.face_resolution, "synth_settings": settings})
    missing = _missing(root, config)
    tasks = [(s, min(s + CHUNK, config.num), {k: missing[k] for k in range(s, min(s + CHUNK, config.num)) if k in missing}, str(root))
             for s in range(0, config.num, CHUNK)]
    t0 = time.time()
    parts: list[dict[str, np.ndarray]] = []
    rendered = 0
    bar = tqdm(total=config.num, unit="sample", desc="synth", disable=not config.progress, initial=config.num - len(missing))
    workers = min(config.workers, max(1, len(missing) // CHUNK + 1))
    if workers <= 1:
        worker = SynthWorker(config)  # one torch thread until close()
        try:
            for t in tasks:
                parts.append(worker.run_chunk(*t))
                rendered += len(t[2])
                bar.update(len(t[2]))
        finally:
            worker.close()
    else:
        ctx = mp.get_context("spawn")  # a fresh process per GL context (no forked GL/driver state)
        with ctx.Pool(workers, initializer=_init_worker, initargs=(config,)) as pool:
            for labels, count in pool.imap(_run_chunk, tasks):
                parts.append(labels)
                rendered += count
                bar.update(count)
    bar.close()
    if rendered:
        os.sync()  # the images of _write_png reach the disk before the labels and the card
    seconds = time.time() - t0
    labels = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]} if parts else {}
    if labels:
        save_labels(root / LABELS_FILE, labels)
        body_meta = PortraitBodyModel.load().meta
        card = build_card(
            labels,
            config.resolution,
            config.face_resolution,
            GENERATOR,
            f"{GENERATOR_VERSION} (aniportraitgan {__version__})",
            source="synthetic",
            complete=True,
            synth_settings=settings,
            priors=asdict(config.priors),
            body_model={"source": body_meta.get("source"), "expression_names": list(body_meta.get("expression_names", []))},
            label_notes={
                "z_pose": "axis-angle radians in scene axes; joints neck, left collar, right collar, head, left shoulder, right shoulder",
                "landmarks": "iBUG 68 points of the posed body model projected into the portrait, pixels (u right, v down; pixel centres at +0.5)",
                "face_landmarks": "the same points projected into the face image",
                "cam_*": "main camera: look_at_cameras(yaw, pitch, radius, fov, look_at) of aniportraitgan.cameras",
                "face_*": "the matching face camera (matching_face_cameras): head-relative yaw/pitch",
            },
        )
        write_card(root, card)
    return SynthReport(str(root), config.num, rendered, seconds)


_TINY_CACHE: dict[tuple[int, int, int], Path] = {}


def make_tiny_dataset(path: str | os.PathLike, num: int = 64, resolution: int = 64, seed: int = 0, workers: int = 1) -> Path:
    """A small synthetic dataset at `path` for tests of later stages (64 samples at 64x64 in a
    few seconds). Within one process, a repeated request is a copy of the first build (the
    data are deterministic), so many test modules can each ask for their own folder cheaply."""
    key = (num, resolution, seed)
    cached = _TINY_CACHE.get(key)
    if cached is None or not (cached / LABELS_FILE).is_file():
        tmp = tempfile.mkdtemp(prefix="aniportraitgan-tiny-")
        atexit.register(shutil.rmtree, tmp, ignore_errors=True)
        cached = Path(tmp) / "data"
        synthesize(cached, SynthConfig(num=num, resolution=resolution, seed=seed, workers=workers, progress=False))
        _TINY_CACHE[key] = cached
    path = Path(path)
    if path.exists() and any(path.iterdir()):
        raise UserError(f"make_tiny_dataset: {path} exists and is not empty")
    shutil.copytree(cached, path, dirs_exist_ok=True)
    return path
