"""The two-stage GAN trainer (paper sections 3.4-3.6).

Stage 1 renders portraits and faces at the stage-1 resolutions (128 in the paper) and trains
every generator sub-network except the manifold super-resolution U, against D_whole, D_face and
D_torso. Stage 2 freezes all of that (starting from the stage-1 EMA weights), and trains U with
new high-resolution discriminators (portrait 512, face 256 in the paper).

Each step: one discriminator step (non-saturating loss on real and generated images, R1 on
real images every `r1_every` steps) and one generator step (weighted non-saturating terms;
in stage 1 also the landmark loss through the frozen R and the deformation losses of eqs.
10-13), then the EMA update. Latent codes and cameras are resampled from the dataset's labels.

Determinism: the data order is a function of (seed, stage, step) and every step reseeds all
random number generators from (seed, stage, step, rank), so a run resumed from a checkpoint
at step k continues exactly as the uninterrupted run did (bit-identical on CPU).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch
from torch import nn

from aniportraitgan.atomic import atomic_write_bytes
from aniportraitgan.errors import AssetError, InputError, UserError
from aniportraitgan.generator import Rendered, RenderOptions
from aniportraitgan.training import distributed as dist_utils
from aniportraitgan.training.checkpoint import (
    CheckpointManager,
    export_generator,
    load_checkpoint,
    load_module_state,
    subdict,
)
from aniportraitgan.training.config import TrainConfig, generator_config_to_dict, load_body_model
from aniportraitgan.training.discriminator import build_discriminators
from aniportraitgan.training.ema import EMA, ema_beta
from aniportraitgan.training.losses import (
    LinearLandmarks,
    d_loss,
    face_crop,
    g_loss,
    landmark_loss,
    r1_penalty,
    torso_crop,
)

LOG = logging.getLogger("aniportraitgan.train")


# ------------------------------------------------------------------------------ options
@dataclass
class RunOptions:
    data: Path
    out: Path
    stage: str = "1"  # "1", "2" or "both"
    steps: int | None = None  # target step count of each stage run (default: the config's)
    stage2_steps: int | None = None  # target for stage 2 when it differs from `steps`
    resume: bool = False
    device: str | None = None  # None: CUDA when available
    facerecon: Path | None = None  # trained R for the landmark loss (None: no landmark loss)
    # Stage 2: the stage-1 checkpoint folder (of another run) to start from. Stage 1: a
    # generator to fine-tune (exported .safetensors, checkpoint or run folder; e.g. the bundled
    # demo), with fresh discriminators and optimisers.
    init: Path | None = None
    progress: bool = True
    # Wall-clock budget of this invocation in minutes (None: none). When it runs out the trainer
    # writes a checkpoint and stops; `--resume` continues (for job time limits and leased GPUs).
    max_minutes: float | None = None
    # Test hook: called after every completed step as on_step(stage, step).
    on_step: Callable[[int, int], None] | None = None


# -------------------------------------------------------------------------- data order
class StepBatches:
    """Deterministic batches: global step s of a stage reads positions [s*B, (s+1)*B) of an
    endless stream of per-epoch permutations (seeded by seed, stage, epoch); rank r of W takes
    its contiguous share of each global batch. Independent of the number of processes."""

    def __init__(self, n: int, batch: int, rank: int, world: int, seed: int, stage: int, start_step: int, stop_step: int):
        if batch % world:
            raise UserError(f"batch size {batch} is not divisible by the number of processes {world}")
        self.n, self.batch, self.rank, self.world = n, batch, rank, world
        self.seed, self.stage = seed, stage
        self.start, self.stop = start_step, stop_step
        self._cache: dict[int, torch.Tensor] = {}

    def _perm(self, epoch: int) -> torch.Tensor:
        if epoch not in self._cache:
            g = torch.Generator().manual_seed(_mix(self.seed, self.stage, epoch, 0x5EED))
            self._cache = {epoch: torch.randperm(self.n, generator=g)}
        return self._cache[epoch]

    def indices(self, step: int) -> list[int]:
        per = self.batch // self.world
        lo = step * self.batch + self.rank * per
        out = []
        for pos in range(lo, lo + per):
            out.append(int(self._perm(pos // self.n)[pos % self.n]))
        return out

    def __iter__(self) -> Iterator[list[int]]:
        for step in range(self.start, self.stop):
            yield self.indices(step)

    def __len__(self) -> int:
        return max(0, self.stop - self.start)


def _mix(*values: int) -> int:
    """A 63-bit seed from a few integers (splitmix-style)."""
    h = 0x9E3779B97F4A7C15
    for v in values:
        h ^= (int(v) + 0x9E3779B97F4A7C15 + (h << 6) + (h >> 2)) & 0xFFFFFFFFFFFFFFFF
        h = (h * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
        h ^= h >> 31
    return h & 0x7FFFFFFFFFFFFFFF


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def rng_state() -> dict:
    py = random.getstate()
    np_state = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "python": (py[0], tuple(py[1]), py[2]),
        "numpy": (np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), int(np_state[2]), int(np_state[3]), float(np_state[4])),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    n = state["numpy"]
    np.random.set_state((n[0], n[1].numpy().astype(np.uint32), n[2], n[3], n[4]))
    if "cuda" in state and torch.cuda.is_available():
        with contextlib.suppress(RuntimeError):
            torch.cuda.set_rng_state_all(state["cuda"])


# ------------------------------------------------------------------------ generator API
def find_superres(G: nn.Module) -> nn.Module | None:
    from aniportraitgan.generator.superres import ManifoldSuperResolution

    for m in G.modules():
        if isinstance(m, ManifoldSuperResolution):
            return m
    return None


def set_stage_trainable(G: nn.Module, stage: int) -> list[nn.Parameter]:
    """Stage 1: everything but U (and the body model); stage 2: U only. Returns trainable params."""
    U = find_superres(G)
    u_params = {id(p) for p in U.parameters()} if U is not None else set()
    body_params = set()
    for m in G.modules():
        if type(m).__name__ == "PortraitBodyModel":
            body_params |= {id(p) for p in m.parameters()}
    trainable = []
    for p in G.parameters():
        if id(p) in body_params:
            flag = False
        elif stage == 1:
            flag = id(p) not in u_params
        else:
            flag = id(p) in u_params
        p.requires_grad_(flag)
        if flag:
            trainable.append(p)
    if not trainable:
        raise InputError(f"stage {stage}: the generator has no parameters to train")
    return trainable


def generator_param_groups(G: nn.Module, trainable: list[nn.Parameter], st) -> list[dict]:
    """Adam parameter groups: one per sub-network with a learning-rate multiplier, one for the rest."""
    subnets = G.subnetworks() if hasattr(G, "subnetworks") else {}
    unknown = set(st.lr_scale) - set(subnets)
    if unknown:
        raise InputError(f"lr_scale names unknown generator sub-networks {sorted(unknown)}; known: {sorted(subnets)}")
    owner = {}
    for name, module in subnets.items():
        if name in st.lr_scale:
            for p in module.parameters():
                owner[id(p)] = name
    groups: dict[str, list] = {}
    for p in trainable:
        groups.setdefault(owner.get(id(p), ""), []).append(p)
    out = []
    for name in sorted(groups):
        scale = st.lr_scale.get(name, 1.0) if name else 1.0
        out.append({"params": groups[name], "lr": st.g_lr * scale, "name": name or "rest"})
    return out


# -------------------------------------------------------------------------------- trainer
class Trainer:
    def __init__(self, cfg: TrainConfig, opts: RunOptions, info: dist_utils.DistInfo | None = None):
        cfg.validate()
        self.cfg = cfg
        self.opts = opts
        self.info = info or dist_utils.DistInfo()
        self.device = self.info.device
        self.run_dir = Path(opts.out)
        self.ckpt = CheckpointManager(self.run_dir, keep_every=cfg.keep_every)
        self.signature = cfg.model_signature()
        self.writer = None
        self._logs_ready = False
        self.amp_dtype = None
        if self.device.type == "cuda" and cfg.amp != "none":
            self.amp_dtype = torch.bfloat16 if cfg.amp == "bf16" else torch.float16
        self.scaler = None

    # ------------------------------------------------------------------ set-up
    def _setup_run_dir(self) -> None:
        cfg_path = self.run_dir / "config.json"
        if self.info.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            existing = self.ckpt.list()
            if existing and not self.opts.resume and self.opts.stage != "2":
                raise UserError(
                    f"{self.run_dir} already holds checkpoints ({existing[-1][2].name}); pass --resume to "
                    f"continue that run or choose a new --out folder"
                )
            if cfg_path.exists() and self.opts.resume:
                try:
                    old = TrainConfig.from_json(cfg_path.read_text())
                except InputError as exc:
                    raise AssetError(f"{cfg_path} is corrupted: {exc}") from None
                if old.model_signature() != self.signature:
                    raise AssetError(
                        f"{cfg_path} describes another configuration ({old.name}, ablation {old.ablation}) "
                        f"than the one requested ({self.cfg.name}, ablation {self.cfg.ablation}): "
                        f"resume with the same --config and ablation flags, or use a new --out"
                    )
            atomic_write_bytes(cfg_path, (self.cfg.to_json() + "\n").encode())
        dist_utils.barrier()
        self._setup_logging()

    def _setup_logging(self) -> None:
        if self._logs_ready or not self.info.is_main:
            self._logs_ready = True
            return
        handler = logging.FileHandler(self.run_dir / "train.log")
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        LOG.addHandler(handler)
        LOG.setLevel(logging.INFO)
        self._log_handler = handler
        self._console_handler = None
        if not self.opts.progress:  # no progress bar: show the log lines instead
            self._console_handler = logging.StreamHandler()
            self._console_handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
            LOG.addHandler(self._console_handler)
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(self.run_dir / "tensorboard"))
        except ImportError:
            LOG.info("tensorboard is not installed: no TensorBoard logs (pip install tensorboard)")
        self._logs_ready = True

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
        if getattr(self, "_log_handler", None) is not None:
            LOG.removeHandler(self._log_handler)
            self._log_handler.close()
            self._log_handler = None
        if getattr(self, "_console_handler", None) is not None:
            LOG.removeHandler(self._console_handler)
            self._console_handler = None

    def _load_dataset(self, stage: int):
        from aniportraitgan.data import PortraitDataset
        from aniportraitgan.latents import LabelSampler

        st = self.cfg.stage(stage)
        root = Path(self.opts.data)
        ds = PortraitDataset(root, resolution=st.portrait_resolution, face_resolution=st.face_resolution)
        if len(ds) == 0:
            raise AssetError(f"dataset {root} is empty: it has no samples to train on")
        body = self.body
        z_id = ds.label_array("z_id")
        if z_id.ndim != 2 or z_id.shape[1] != body.id_dim:
            raise AssetError(
                f"dataset {root}: z_id has {z_id.shape[1:]} coefficients but the body model has {body.id_dim}: "
                f"the dataset was labelled with another body model"
            )
        if ds.stored_resolution < st.portrait_resolution or ds.stored_face_resolution < st.face_resolution:
            LOG.warning(
                "dataset %s is stored at %d / %d pixels (portrait / face), below stage %d's %d / %d: images are upsampled",
                root, ds.stored_resolution, ds.stored_face_resolution, stage, st.portrait_resolution, st.face_resolution,
            )
        sampler = LabelSampler.from_dataset(ds, eps_dim=self.gen_cfg.noise_dim)
        return ds, sampler

    def _build_generator(self):
        from aniportraitgan.generator import Generator, GeneratorConfig

        overrides = dict(self.cfg.generator_overrides)
        if self.cfg.ablation.no_dp:
            names = {f for f in GeneratorConfig.__dataclass_fields__}
            for name, value in (("use_dp", False), ("pose_cnn", False), ("no_dp", True)):
                if name in names:
                    overrides[name] = value
                    break
            else:
                raise UserError("the generator has no switch to disable Dp (no_dp ablation unsupported)")
        self.gen_cfg = GeneratorConfig.preset(self.cfg.generator_preset, **overrides)
        G = Generator(self.gen_cfg, self.body).to(self.device)
        return G

    def _load_facerecon(self):
        if self.opts.facerecon is None:
            if self.cfg.loss.landmark > 0 and self.info.is_main:
                LOG.warning("no face reconstruction network given (--facerecon): the landmark loss (eq. 9) is off")
            return None
        from aniportraitgan.facerecon import FaceRecon

        R = FaceRecon.load(self.opts.facerecon, device=self.device)
        if R.config.id_dim != self.body.id_dim or R.config.exp_dim != self.body.exp_dim:
            raise AssetError(
                f"{self.opts.facerecon}: R estimates {R.config.id_dim} / {R.config.exp_dim} coefficients, "
                f"the body model has {self.body.id_dim} / {self.body.exp_dim}"
            )
        return R

    def _autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)

    # ------------------------------------------------------------------- run
    def run(self) -> dict:
        opts = self.opts
        if opts.stage not in ("1", "2", "both"):
            raise UserError(f"--stage must be 1, 2 or both, got {opts.stage!r}")
        stages = [1, 2] if opts.stage == "both" else [int(opts.stage)]
        self._setup_run_dir()
        seed_everything(self.cfg.seed)
        self.body = load_body_model(self.device)
        self.G = self._build_generator()
        self.G_ema = EMA(self.G)
        self.R = self._load_facerecon()
        self.landmarks = None
        if self.R is not None:
            self.landmarks = LinearLandmarks.fit(self.body, seed=self.cfg.seed)
            if self.info.is_main:
                LOG.info("landmark model: affine fit of the body model's landmarks, residual %.3f mm", self.landmarks.fit_error_mm)
        dist_utils.broadcast_parameters([self.G])
        self.G_ema.copy_from(self.G)
        summary = {}
        self.deadline = None if opts.max_minutes is None else time.time() + 60.0 * float(opts.max_minutes)
        try:
            for stage in stages:
                steps = self.cfg.stage(stage).steps if opts.steps is None else opts.steps
                if stage == 2 and opts.stage2_steps is not None:
                    steps = opts.stage2_steps
                summary[f"stage{stage}"] = self._run_stage(stage, int(steps))
                if summary[f"stage{stage}"].get("out_of_time"):
                    break
        finally:
            self.close()
        return summary

    def _restore(self, stage: int, Ds: nn.ModuleDict, opt_G, opt_D) -> int:
        """Load the newest checkpoint that applies to `stage`; returns the step to start from."""
        ck_path = None
        if self.opts.resume or stage == 2:
            ck_path = self.ckpt.latest()
        if ck_path is None and stage == 2 and self.opts.init is not None:
            ck_path = Path(self.opts.init)
        if ck_path is None and stage == 1 and self.opts.init is not None:
            self._init_generator(Path(self.opts.init))
            return 0
        if ck_path is None:
            if stage == 2:
                raise UserError(
                    f"stage 2 starts from a stage-1 checkpoint: none in {self.run_dir / 'checkpoints'} "
                    f"(run stage 1 first, use --stage both, or pass --init CHECKPOINT_DIR)"
                )
            return 0
        ck = load_checkpoint(ck_path, self.signature, map_location="cpu")
        if ck.stage > stage:
            return -1  # this stage is already done
        load_module_state(self.G, subdict(ck.weights, "G"), "the generator", ck.path)
        load_module_state(self.G_ema.module, subdict(ck.weights, "G_ema"), "the EMA generator", ck.path)
        if ck.stage < stage:
            # Stage 2 starts from the stage-1 EMA weights (the better generator); U is fresh.
            self.G.load_state_dict(self.G_ema.module.state_dict())
            if self.info.is_main:
                LOG.info("stage %d starts from %s (stage %d, step %d)", stage, ck.path, ck.stage, ck.step)
            return 0
        load_module_state(Ds, subdict(ck.weights, f"D{stage}"), f"the stage-{stage} discriminators", ck.path)
        # Learning rates come from the current config (a resumed run may change its schedule).
        lrs = [[g["lr"] for g in opt.param_groups] for opt in (opt_G, opt_D)]
        try:
            opt_G.load_state_dict(ck.state["opt_G"])
            opt_D.load_state_dict(ck.state["opt_D"])
            for opt, rates in zip((opt_G, opt_D), lrs):
                for group, lr in zip(opt.param_groups, rates):
                    group["lr"] = lr
            if self.scaler is not None and "scaler" in ck.state:
                self.scaler.load_state_dict(ck.state["scaler"])
            self.cur_nimg = int(ck.state["cur_nimg"])
            rng = ck.state["rng"]
        except (KeyError, ValueError) as exc:
            raise AssetError(f"checkpoint {ck.path}: training state does not fit this run ({exc})") from None
        if self.info.world_size == ck.state.get("world_size", 1):
            set_rng_state(rng)
        if self.info.is_main:
            LOG.info("resumed stage %d at step %d from %s", stage, ck.step, ck.path)
        return ck.step

    def _init_generator(self, source: Path) -> None:
        """Fine-tuning: start G and G_ema from a trained generator of the same configuration.

        Mesh guidance may differ (it has no parameters): a generator trained without it can be
        fine-tuned with it."""
        from aniportraitgan.inference import _config_diff, load_generator

        loaded = load_generator(str(source), "cpu")
        mine, theirs = self.gen_cfg.to_dict(), loaded.config.to_dict()
        mine.pop("exp_mesh_guided")
        theirs.pop("exp_mesh_guided")
        diff = _config_diff(theirs, mine)
        if diff:
            raise AssetError(f"--init {source} was trained with another generator config: "
                             + "; ".join(diff[:6]) + (" ..." if len(diff) > 6 else ""))
        state = loaded.state_dict()
        self.G.load_state_dict(state)
        self.G_ema.module.load_state_dict(state)
        if self.info.is_main:
            LOG.info("stage 1 fine-tunes the generator of %s (discriminators start fresh)", source)

    def _save(self, stage: int, step: int, Ds, opt_G, opt_D, keep: bool = False) -> None:
        if not self.info.is_main:
            return
        weights = {}
        for prefix, module in (("G", self.G), ("G_ema", self.G_ema.module), (f"D{stage}", Ds)):
            for k, v in module.state_dict().items():
                weights[f"{prefix}.{k}"] = v
        state = {
            "stage": stage,
            "step": step,
            "cur_nimg": self.cur_nimg,
            "opt_G": opt_G.state_dict(),
            "opt_D": opt_D.state_dict(),
            "rng": rng_state(),
            "world_size": self.info.world_size,
            "config_json": self.cfg.to_json(),
        }
        if self.scaler is not None:
            state["scaler"] = self.scaler.state_dict()
        extra = {"generator_config": generator_config_to_dict(self.gen_cfg)}
        prior = self._latent_prior_json()
        if prior is not None:
            extra["latent_prior"] = prior
        path = self.ckpt.save(stage, step, weights, state, self.cfg.to_dict(), self.signature, keep=keep,
                              extra_meta=extra)
        export_generator(
            self.run_dir / "generator.safetensors",
            self.G_ema.module.state_dict(),
            generator_config_to_dict(self.gen_cfg),
            self.cfg.to_dict(),
            step=step,
            stage=stage,
            extra_metadata={"latent_prior": prior} if prior is not None else None,
        )
        LOG.info("checkpoint %s", path)

    def _latent_prior_json(self) -> str | None:
        """Label statistics for sampling identities and cameras at inference (latents.LatentPrior)."""
        sampler = getattr(self, "sampler", None)
        if sampler is None:
            return None
        try:
            from aniportraitgan.latents import LatentPrior
        except ImportError:
            return None
        return LatentPrior.from_sampler(sampler).to_json()

    def _run_stage(self, stage: int, steps: int) -> dict:
        cfg, st, info = self.cfg, self.cfg.stage(stage), self.info
        ab = cfg.ablation
        ds, sampler = self._load_dataset(stage)
        self.sampler = sampler
        Ds = build_discriminators(
            st.portrait_resolution, st.face_resolution, cfg.disc,
            use_face=not ab.no_face_disc, use_torso=not ab.no_torso_disc,
        ).to(self.device)
        dist_utils.broadcast_parameters([Ds])
        g_params = set_stage_trainable(self.G, stage)
        opt_G = torch.optim.Adam(generator_param_groups(self.G, g_params, st), lr=st.g_lr, betas=st.betas, eps=1e-8)
        opt_D = torch.optim.Adam(Ds.parameters(), lr=st.d_lr, betas=st.betas, eps=1e-8)
        if self.amp_dtype == torch.float16:
            self.scaler = torch.amp.GradScaler("cuda")
        self.cur_nimg = 0
        start = self._restore(stage, Ds, opt_G, opt_D)
        if start < 0:
            if info.is_main:
                LOG.info("stage %d already finished in %s", stage, self.run_dir)
            return {"skipped": True}
        if stage == 2:
            set_stage_trainable(self.G, stage)  # loading may not touch flags, but be explicit
        if start >= steps:
            if info.is_main:
                LOG.info("stage %d: checkpoint at step %d >= requested %d steps; nothing to do", stage, start, steps)
            return {"steps": start, "resumed_at": start}
        batches = StepBatches(len(ds), st.batch_size, info.rank, info.world_size, cfg.seed, stage, start, steps)
        loader = torch.utils.data.DataLoader(
            ds, batch_sampler=batches, num_workers=cfg.num_workers, pin_memory=self.device.type == "cuda",
            persistent_workers=False,
        )
        bar = None
        if info.is_main and self.opts.progress:
            from tqdm import tqdm

            bar = tqdm(total=steps, initial=start, desc=f"stage {stage}", dynamic_ncols=True)
        if info.is_main:
            LOG.info(
                "stage %d: steps %d..%d, batch %d on %d process(es), portrait %d, face %d, discriminators %s, device %s",
                stage, start, steps, st.batch_size, info.world_size, st.portrait_resolution, st.face_resolution,
                list(Ds.keys()), self.device,
            )
        per_rank = st.batch_size // info.world_size
        last_logs: dict[str, float] = {}
        t_last, n_last = time.time(), 0
        step = start
        for step, batch in zip(range(start, steps), loader):
            seed = _mix(cfg.seed, stage, step, info.rank)
            seed_everything(seed)
            latent_gen = torch.Generator().manual_seed(_mix(seed, 1))
            logs = self._train_step(stage, step, batch, sampler, latent_gen, Ds, opt_G, opt_D, g_params, per_rank)
            self.cur_nimg += st.batch_size
            n_last += st.batch_size
            done = step + 1
            if cfg.log_every and (done % cfg.log_every == 0 or done == steps):
                logs = dist_utils.all_reduce_mean(logs, self.device)
                now = time.time()
                logs["images_per_s"] = n_last / max(now - t_last, 1e-9)
                t_last, n_last = now, 0
                last_logs = logs
                if info.is_main:
                    self._log_scalars(stage, done, logs)
            if bar is not None:
                bar.update(1)
                if last_logs:
                    bar.set_postfix({k: f"{v:.3g}" for k, v in last_logs.items() if k in _BAR_KEYS})
            if info.is_main and cfg.image_every and (done % cfg.image_every == 0 or done == steps):
                self._log_images(stage, done, sampler)
            if done % cfg.checkpoint_every == 0 or done == steps:
                self._save(stage, done, Ds, opt_G, opt_D, keep=(done == steps and stage == 1))
            dist_utils.barrier()
            if self.opts.on_step is not None:
                self.opts.on_step(stage, done)
            if done < steps and self._out_of_time():
                if done % cfg.checkpoint_every:
                    self._save(stage, done, Ds, opt_G, opt_D)
                dist_utils.barrier()
                if info.is_main:
                    LOG.info("stage %d: time budget of %g min used up at step %d of %d; --resume continues",
                             stage, self.opts.max_minutes, done, steps)
                if bar is not None:
                    bar.close()
                return {"steps": done, "resumed_at": start, "last_logs": last_logs, "out_of_time": True}
        if bar is not None:
            bar.close()
        return {"steps": steps, "resumed_at": start, "last_logs": last_logs}

    def _out_of_time(self) -> bool:
        """Whether the wall-clock budget is spent (rank 0 decides, so all ranks stop together)."""
        if self.deadline is None:
            return False
        flag = {"stop": float(time.time() >= self.deadline) if self.info.is_main else 0.0}
        return dist_utils.all_reduce_mean(flag, self.device)["stop"] > 0

    # ---------------------------------------------------------------- one step
    def _sample(self, sampler, n: int, gen: torch.Generator, stage: int):
        """Latent codes and main cameras resampled from the dataset labels. Face cameras are left
        to the generator (None: the dual camera matching each main camera); the body model is
        run here only for the face-crop ablation, which needs the posed head."""
        lat = sampler.sample(n, generator=gen, device=self.device)
        cams = lat.cameras()
        body_out = None
        if self.cfg.ablation.face_from_crop:
            with torch.no_grad():
                body_out = self.body(lat.z_id, lat.z_exp, lat.z_pose)
        return lat, cams, None, body_out

    def _real_views(self, batch: dict, stage: int) -> dict[str, torch.Tensor]:
        dev = self.device
        portrait = batch["image"].to(dev, non_blocking=True)
        views = {"whole": portrait, "torso": torso_crop(portrait)}
        if self.cfg.ablation.face_from_crop:
            from aniportraitgan.cameras import look_at_cameras

            cams = look_at_cameras(
                batch["cam_yaw"].to(dev), batch["cam_pitch"].to(dev), batch["cam_radius"].to(dev),
                batch["cam_fov"].to(dev), batch["cam_look_at"].to(dev),
            )
            if "head_center" in batch and "head_rotation" in batch:
                hc, hr = batch["head_center"].to(dev), batch["head_rotation"].to(dev)
            else:
                with torch.no_grad():
                    out = self.body(batch["z_id"].to(dev), batch["z_exp"].to(dev), batch["z_pose"].to(dev))
                hc, hr = out.head_center, out.head_rotation
            views["face"] = self._crop_face(portrait, cams, hc, hr, stage)
        else:
            views["face"] = batch["face"].to(dev, non_blocking=True)
        return views

    def _crop_face(self, portrait, cams, head_center, head_rotation, stage: int) -> torch.Tensor:
        from aniportraitgan.cameras import FACE_FOV, FACE_RADIUS

        return face_crop(portrait, cams, head_center, head_rotation, self.cfg.stage(stage).face_resolution,
                         FACE_RADIUS, FACE_FOV)

    def _fake_views(self, rendered: Rendered, cams, body_out, stage: int) -> dict[str, torch.Tensor]:
        views = {"whole": rendered.portrait, "torso": torso_crop(rendered.portrait)}
        if self.cfg.ablation.face_from_crop:
            views["face"] = self._crop_face(rendered.portrait, cams, body_out.head_center, body_out.head_rotation, stage)
        else:
            views["face"] = rendered.face
        return views

    def _face_view_needed(self, stage: int, for_g: bool, Ds) -> bool:
        """Render the face camera only where something reads it: D_face (unless faces are cropped
        from the portrait) or, in stage 1's generator step, R for the landmark loss."""
        if self.cfg.ablation.face_from_crop:
            return False
        if "face" in Ds:
            return True
        return for_g and stage == 1 and self.R is not None and self.cfg.loss.landmark > 0

    def _render(self, lat, cams, face_cams, stage: int, return_aux: bool, with_face: bool) -> Rendered:
        st = self.cfg.stage(stage)
        face_res = st.face_resolution if with_face else None
        with self._autocast():
            return self.G(lat, cams, face_cams if with_face else None,
                          RenderOptions(st.portrait_resolution, face_res, stage, return_aux=return_aux))

    def _train_step(self, stage, step, batch, sampler, gen, Ds, opt_G, opt_D, g_params, per_rank) -> dict[str, float]:
        cfg = self.cfg
        logs: dict[str, float] = {}
        weights = {"whole": cfg.loss.whole, "face": cfg.loss.face, "torso": cfg.loss.torso}

        # ---- discriminator step
        Ds.requires_grad_(True)
        lat, cams, face_cams, body_out = self._sample(sampler, per_rank, gen, stage)
        with torch.no_grad():
            rendered = self._render(lat, cams, face_cams, stage, return_aux=False,
                                    with_face=self._face_view_needed(stage, False, Ds))
            fake = self._fake_views(rendered, cams, body_out, stage)
        real = self._real_views(batch, stage)
        loss_D = torch.zeros((), device=self.device)
        do_r1 = cfg.loss.r1_gamma > 0 and step % cfg.loss.r1_every == 0
        for name, D in Ds.items():
            with self._autocast():
                lr_, lf_ = D(real[name]), D(fake[name].detach())
            l = d_loss(lr_, lf_)
            logs[f"D_{name}"] = float(l.detach())
            logs[f"D_{name}_real"] = float(lr_.float().mean().detach())
            logs[f"D_{name}_fake"] = float(lf_.float().mean().detach())
            loss_D = loss_D + l
            if do_r1:
                r1 = r1_penalty(D, real[name], cfg.loss.r1_gamma)
                logs[f"R1_{name}"] = float(r1.detach())
                loss_D = loss_D + r1 * cfg.loss.r1_every
        _check_finite(loss_D, "discriminator loss", stage, step)
        opt_D.zero_grad(set_to_none=True)
        self._backward(loss_D)
        dist_utils.all_reduce_grads(Ds.parameters())
        self._step(opt_D)

        # ---- generator step
        Ds.requires_grad_(False)
        lat, cams, face_cams, body_out = self._sample(sampler, per_rank, gen, stage)
        rendered = self._render(lat, cams, face_cams, stage, return_aux=(stage == 1),
                                with_face=self._face_view_needed(stage, True, Ds))
        fake = self._fake_views(rendered, cams, body_out, stage)
        loss_G = torch.zeros((), device=self.device)
        for name, D in Ds.items():
            with self._autocast():
                l = g_loss(D(fake[name]))
            logs[f"G_{name}"] = float(l.detach())
            loss_G = loss_G + weights[name] * l
        if stage == 1:
            if self.R is not None and cfg.loss.landmark > 0 and fake.get("face") is not None:
                est = self.R(fake["face"].float())
                lm = landmark_loss(self.landmarks, est["z_id"], est["z_exp"], lat.z_id, lat.z_exp)
                logs["landmark"] = float(lm.detach())
                loss_G = loss_G + cfg.loss.landmark * lm
            for name, value in rendered.aux.weighted(cfg.loss).items():
                logs[name] = float(value.detach())
                loss_G = loss_G + value
        logs["G_total"] = float(loss_G.detach())
        _check_finite(loss_G, "generator loss", stage, step)
        opt_G.zero_grad(set_to_none=True)
        self._backward(loss_G)
        dist_utils.all_reduce_grads(g_params)
        self._step(opt_G)
        Ds.requires_grad_(True)

        dist_utils.sync_buffers(self.G)

        # ---- EMA
        beta = ema_beta(cfg.stage(stage).batch_size, self.cur_nimg, cfg.ema_kimg, cfg.ema_rampup)
        self.G_ema.update(self.G, beta)
        return logs

    def _backward(self, loss: torch.Tensor) -> None:
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
        else:
            loss.backward()

    def _step(self, opt) -> None:
        if self.scaler is not None:
            self.scaler.step(opt)
            self.scaler.update()
        else:
            opt.step()

    # ---------------------------------------------------------------- logging
    def _log_scalars(self, stage: int, step: int, logs: dict[str, float]) -> None:
        text = " ".join(f"{k}={v:.4g}" for k, v in sorted(logs.items()))
        LOG.info("stage %d step %d %s", stage, step, text)
        if self.writer is not None:
            for k, v in logs.items():
                self.writer.add_scalar(f"stage{stage}/{k}", v, step)
            self.writer.flush()

    @torch.no_grad()
    def _log_images(self, stage: int, step: int, sampler) -> None:
        """EMA samples for fixed latents: rows portrait, face, depth. PNG in RUN/samples and
        TensorBoard."""
        st = self.cfg.stage(stage)
        n = self.cfg.grid_size
        gen = torch.Generator().manual_seed(_mix(self.cfg.seed, 0xC0FFEE))
        state = rng_state()
        lat = sampler.sample(n, generator=gen, device=self.device)
        cams = lat.cameras()
        from aniportraitgan.cameras import matching_face_cameras

        body_out = self.body(lat.z_id, lat.z_exp, lat.z_pose)
        face_cams = matching_face_cameras(cams, body_out.head_center, body_out.head_rotation)
        seed_everything(_mix(self.cfg.seed, 0xC0FFEE, 2))
        G = self.G_ema.module
        with self._autocast():
            out = G(lat, cams, face_cams, RenderOptions(st.portrait_resolution, st.face_resolution, stage))
        set_rng_state(state)  # logging must not change the training's random stream
        rows = [out.portrait.float()]
        if out.face is not None:
            rows.append(_resize(out.face.float(), st.portrait_resolution))
        depth = out.portrait_depth
        if depth is not None:
            rows.append(_depth_to_image(depth.float(), st.portrait_resolution))
        grid = torch.cat([torch.cat(list(r), dim=-1) for r in rows], dim=-2)  # [3, rows*H, n*W]
        grid = ((grid.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).cpu()
        out_dir = self.run_dir / "samples"
        out_dir.mkdir(exist_ok=True)
        from PIL import Image

        path = out_dir / f"s{stage}-{step:08d}.png"
        Image.fromarray(grid.permute(1, 2, 0).numpy()).save(path)
        if self.writer is not None:
            self.writer.add_image(f"stage{stage}/samples", grid, step)
            self.writer.flush()


_BAR_KEYS = ("D_whole", "D_face", "D_torso", "G_total", "landmark", "images_per_s")


def _check_finite(loss: torch.Tensor, what: str, stage: int, step: int) -> None:
    if not torch.isfinite(loss):
        raise FloatingPointError(f"stage {stage} step {step}: {what} is {loss.item()} (training diverged)")


def _resize(x: torch.Tensor, size: int) -> torch.Tensor:
    if x.shape[-1] == size:
        return x
    return torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)


def _depth_to_image(depth: torch.Tensor, size: int) -> torch.Tensor:
    """Depth [B, H, W] or [B, 1, H, W] -> grey images in [-1, 1] (near bright), per-sample range."""
    if depth.dim() == 3:
        depth = depth[:, None]
    d = depth[:, :1]
    flat = d.flatten(1)
    finite = torch.isfinite(flat)
    lo = torch.where(finite, flat, torch.full_like(flat, math.inf)).min(1).values.view(-1, 1, 1, 1)
    hi = torch.where(finite, flat, torch.full_like(flat, -math.inf)).max(1).values.view(-1, 1, 1, 1)
    img = 1.0 - (d - lo) / (hi - lo).clamp_min(1e-6)
    img = torch.where(torch.isfinite(img), img, torch.zeros_like(img)) * 2 - 1
    return _resize(img.expand(-1, 3, -1, -1), size)


# --------------------------------------------------------------------------- entry point
def train(cfg: TrainConfig, opts: RunOptions) -> dict:
    """Run training (single process, or one rank of a torchrun job)."""
    info = dist_utils.init_distributed(opts.device)
    if not info.is_main:
        opts.progress = False
    try:
        trainer = Trainer(cfg, opts, info)
        return trainer.run()
    finally:
        dist_utils.shutdown_distributed()


def summary_json(summary: dict) -> str:
    return json.dumps(summary, indent=2, sort_keys=True, default=str)
