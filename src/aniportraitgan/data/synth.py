"""SynthPortraits: rendered head-and-shoulder portraits of the body model with exact labels.

Each sample k of a dataset with seed S is a pure function of (S, k): its labels, appearance and
light come from `numpy.random.default_rng(SeedSequence([S, k]))`, and the body model runs on
fixed chunks of CHUNK consecutive samples (the batch composition never depends on the worker
count or on which samples were already on disk). Hence re-running fills only missing images
and any worker count gives byte-identical PNGs.
"""

from __future__ import annotations

import atexit
import io
import json
import math
import multiprocessing as mp
import os
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from aniportraitgan import __version__
from aniportraitgan.atomic import atomic_path
from aniportraitgan.body import PortraitBodyModel
from aniportraitgan.cameras import (
    face_angles_from_main,
    look_at_cameras,
    matching_face_cameras,
)
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
from aniportraitgan.data.synth_labels import LabelPriors, draw_sample
from aniportraitgan.data.verify import png_problem
from aniportraitgan.errors import InputError, UserError
from aniportraitgan.images import MAX_RESOLUTION
from aniportraitgan.render import (
    Light,
    MeshRenderer,
    MeshTopology,
    TexturedMesh,
    batch_vertex_normals,
)
from aniportraitgan.render.appearance import (
    AppearanceConfig,
    paint_texture,
    sample_appearance,
)
from aniportraitgan.render.extra_meshes import build_hair_shell, build_skirt
from aniportraitgan.render.texels import portrait_uv_layout, texel_geometry

GENERATOR = "aniportraitgan.data.synth"
GENERATOR_VERSION = "1"
CHUNK = 16  # samples per body-model batch; fixed so that results do not depend on scheduling


@dataclass
class SynthConfig:
    num: int = 1000
    resolution: int = 512
    seed: int = 0
    workers: int = 2
    msaa: int = 0  # MSAA samples; 4 gives smoother silhouettes at ~1.7x the CPU cost (docs/dataset.md)
    texture_size: int | None = None  # default: 2 x resolution, clipped to [256, 1024]
    png_compress: int = 1  # zlib level for PNGs (1: fast, a little larger)
    priors: LabelPriors = field(default_factory=LabelPriors)
    long_hair_fraction: float = 0.3
    progress: bool = True

    @property
    def face_resolution(self) -> int:
        return max(self.resolution // 2, 8)

    def resolved_texture_size(self) -> int:
        if self.texture_size:
            return int(self.texture_size)
        return int(min(max(2 ** math.ceil(math.log2(2 * self.resolution)), 256), 1024))

    def validate(self) -> None:
        if not isinstance(self.num, int) or self.num < 1:
            raise InputError(f"num must be an int >= 1 (a dataset needs samples), got {self.num!r}")
        if not isinstance(self.resolution, int) or not 16 <= self.resolution <= MAX_RESOLUTION:
            raise InputError(f"resolution must be an int in [16, {MAX_RESOLUTION}], got {self.resolution!r}")
        if self.workers < 1:
            raise InputError(f"workers must be >= 1, got {self.workers}")
        if not 0.0 <= self.long_hair_fraction <= 1.0:
            raise InputError(f"long_hair_fraction must be in [0, 1], got {self.long_hair_fraction}")


# ---------------------------------------------------------------------------------- worker


class SynthWorker:
    """Per-process state: body model, GL renderer, UV geometry. Renders chunks of samples."""

    def __init__(self, config: SynthConfig) -> None:
        torch.set_num_threads(1)
        self.config = config
        self.body = PortraitBodyModel.load()
        self._renderer = None  # created on first use: a labels-only pass needs no GL context
        self._geo = None
        self.uvs, self.face_uvs = portrait_uv_layout(self.body)
        self.faces = self.body.faces.numpy().astype(np.int64)
        with torch.no_grad():
            neutral = self.body(*self.body.neutral_codes(1)).vertices[0].numpy()
        self.skirt = build_skirt(self.faces, self.face_uvs, neutral)
        self.all_faces = np.concatenate([self.faces, self.skirt.faces])
        self.all_face_uvs = np.concatenate([self.face_uvs, self.skirt.face_uvs])
        self.topology = MeshTopology.build(self.all_faces, self.all_face_uvs, self.uvs)
        self.all_faces_t = torch.from_numpy(self.all_faces)
        self._shell_topology = None
        w = self.body.skinning_weights.numpy()
        names = self.body.bone_names
        self.head_index = names.index("head")
        self.neck_index = names.index("neck01")
        with torch.no_grad():
            mean = self.body(*self.body.neutral_codes(1))
        self.ref_neck_to_head = float((mean.head_center[0] - mean.joints[0, self.neck_index]).norm())
        self.head_weight = w[:, names.index("head")] + w[:, names.index("eye.L")] + w[:, names.index("eye.R")]
        self.appearance = AppearanceConfig(texture_size=config.resolved_texture_size(), long_hair_fraction=config.long_hair_fraction)

    @property
    def renderer(self):
        if self._renderer is None:
            self._renderer = MeshRenderer(samples=self.config.msaa)
        return self._renderer

    @property
    def geo(self):
        if self._geo is None:
            self._geo = texel_geometry(self.body, self.config.resolved_texture_size())
        return self._geo

    def run_chunk(self, start: int, stop: int, render: dict[int, tuple[bool, bool]], out_dir: str) -> dict[str, np.ndarray]:
        """Labels of samples [start, stop); writes the missing images listed in `render`
        (sample -> (portrait missing, face missing))."""

        cfg = self.config
        R, Rf = cfg.resolution, cfg.face_resolution
        # Always a full chunk through the body model (the tail is dropped), so that a sample's
        # numbers never depend on how many samples the dataset has.
        draws = [draw_sample(cfg.seed, k, self.body.id_dim, self.body.expression_names, cfg.priors) for k in range(start, start + CHUNK)]
        z_id = torch.from_numpy(np.stack([d.z_id for d in draws]))
        z_exp = torch.from_numpy(np.stack([d.z_exp for d in draws]))
        z_pose = torch.from_numpy(np.stack([d.z_pose for d in draws]))
        with torch.no_grad():
            out = self.body(z_id, z_exp, z_pose)
            neck = out.joints[:, self.neck_index]
            size = (out.head_center - neck).norm(dim=-1) / self.ref_neck_to_head  # [n]
            radius = torch.tensor([d.cam_radius for d in draws]) * size
            look_at = neck + torch.from_numpy(np.stack([d.cam_look_at for d in draws])) * size[:, None]
            for b, d in enumerate(draws):
                d.cam_radius = float(radius[b])
                d.cam_look_at = look_at[b].numpy().astype(np.float32)
            cams = look_at_cameras(
                torch.tensor([d.cam_yaw for d in draws]),
                torch.tensor([d.cam_pitch for d in draws]),
                radius,
                torch.tensor([d.cam_fov for d in draws]),
                look_at,
            )
            face = matching_face_cameras(cams, out.head_center, out.head_rotation)
            f_yaw, f_pitch = face_angles_from_main(cams, out.head_center, out.head_rotation)
            lm, _ = cams.project(out.landmarks, R, R)
            flm, _ = face.project(out.landmarks, Rf, Rf)
        n = stop - start
        draws = draws[:n]
        z_id, z_exp, z_pose = z_id[:n], z_exp[:n], z_pose[:n]
        out = out[:n]
        cams, face, lm, flm, f_yaw, f_pitch = cams[:n], face[:n], lm[:n], flm[:n], f_yaw[:n], f_pitch[:n]
        long_hair = np.zeros(n, dtype=bool)
        verts_t = torch.cat([out.vertices, self.skirt.extend_batch(out.vertices)], 1)
        verts = verts_t.numpy()
        normals = batch_vertex_normals(verts_t, self.all_faces_t).numpy()
        neutral = out.neutral_vertices.numpy()
        bone_T = out.bone_transforms[:, self.head_index].numpy()
        head_c = out.head_center.numpy()
        for b, d in enumerate(draws):
            k = start + b
            rng = np.random.default_rng(d.appearance_seed)
            p = sample_appearance(rng, self.appearance)
            long_hair[b] = p.long_hair
            if k not in render:
                continue
            tex = paint_texture(self.geo, p, rng)
            meshes = [TexturedMesh(verts[b], self.all_faces, self.uvs, self.all_face_uvs, tex, normals[b], self.topology)]
            if p.long_hair:
                T = bone_T[b]
                # The shell is built around this identity's zero-pose head and moves with the head bone.
                centre0 = np.linalg.solve(T[:3, :3], head_c[b] - T[:3, 3])
                shell = build_hair_shell(neutral[b], self.head_weight, centre0, p, rng)
                hv = shell.vertices @ T[:3, :3].T + T[:3, 3]
                if self._shell_topology is None or len(self._shell_topology.indices) != shell.faces.size:
                    self._shell_topology = MeshTopology.build(shell.faces, shell.faces, shell.uvs)
                meshes.append(TexturedMesh(hv.astype(np.float32), shell.faces, shell.uvs, shell.faces, shell.texture, topology=self._shell_topology))
            light = Light(tuple(d.light_dir.tolist()), ambient=d.ambient, diffuse=d.diffuse)
            self.renderer.set_meshes(meshes)
            need_portrait, need_face = render[k]
            if need_portrait:
                img = self.renderer.draw(cams.c2w[b].numpy(), float(cams.fov_deg[b]), R, R, light, with_depth=False)
                _write_png(portrait_path(out_dir, k), img.rgb, cfg.png_compress)
            if need_face:
                fimg = self.renderer.draw(face.c2w[b].numpy(), float(face.fov_deg[b]), Rf, Rf, light, with_depth=False)
                _write_png(face_path(out_dir, k), fimg.rgb, cfg.png_compress)
        return {
            "index": np.arange(start, stop, dtype=np.int64),
            "z_id": z_id.numpy(),
            "z_exp": z_exp.numpy(),
            "z_pose": z_pose.numpy(),
            "cam_yaw": np.array([d.cam_yaw for d in draws], np.float32),
            "cam_pitch": np.array([d.cam_pitch for d in draws], np.float32),
            "cam_radius": np.array([d.cam_radius for d in draws], np.float32),
            "cam_fov": np.array([d.cam_fov for d in draws], np.float32),
            "cam_look_at": np.stack([d.cam_look_at for d in draws]).astype(np.float32),
            "c2w": cams.c2w.numpy().astype(np.float32),
            "face_yaw": f_yaw.numpy().astype(np.float32),
            "face_pitch": f_pitch.numpy().astype(np.float32),
            "face_c2w": face.c2w.numpy().astype(np.float32),
            "face_fov": face.fov_deg.numpy().astype(np.float32),
            "head_center": out.head_center.numpy().astype(np.float32),
            "head_rotation": out.head_rotation.numpy().astype(np.float32),
            "landmarks": lm.numpy().astype(np.float32),
            "face_landmarks": flm.numpy().astype(np.float32),
            "long_hair": long_hair,
            "light_dir": np.stack([d.light_dir for d in draws]).astype(np.float32),
        }

    def close(self) -> None:
        if self._renderer is not None:
            self._renderer.release()
            self._renderer = None


def _write_png(path: Path, rgb: np.ndarray, level: int) -> None:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG", compress_level=level)
    # Atomic (a killed worker leaves no partial PNG) but not fsynced one by one: the two fsyncs
    # were a quarter of a 256 px sample's time. `synthesize` flushes them all at once (os.sync)
    # before the card says complete.
    with atomic_path(path) as tmp:
        tmp.write_bytes(buf.getvalue())


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


def _settings(config: SynthConfig) -> dict[str, Any]:
    return {
        "seed": config.seed,
        "resolution": config.resolution,
        "face_resolution": config.face_resolution,
        "texture_size": config.resolved_texture_size(),
        "msaa": config.msaa,
        "long_hair_fraction": config.long_hair_fraction,
        "priors": asdict(config.priors),
        "generator_version": GENERATOR_VERSION,
    }


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
    settings = _settings(config)
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
        threads = torch.get_num_threads()  # the worker pins torch to one thread; restore it after
        worker = SynthWorker(config)
        try:
            for t in tasks:
                parts.append(worker.run_chunk(*t))
                rendered += len(t[2])
                bar.update(len(t[2]))
        finally:
            worker.close()
            torch.set_num_threads(threads)
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
