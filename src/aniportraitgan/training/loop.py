"""The two-stage GAN training loop (paper sections 3.4-3.6).

Stage 1 renders portraits and faces at the stage-1 resolutions (128 in the paper) and trains
every generator sub-network except the manifold super-resolution U, against D_whole, D_face and
D_torso. Stage 2 freezes all of that (starting from the stage-1 EMA weights), and trains U with
new high-resolution discriminators (portrait 512, face 256 in the paper).

This module is the generic loop: stages, optimisers, EMA, resume, the lock of the run folder,
the stop on a budget or a signal (`stopping`), logging, image grids and the checkpoint cadence. What each step minimises is
`objective.PortraitObjective` (one discriminator phase, then one generator phase); latent codes
and cameras are resampled from the dataset's labels. Every step reseeds all random number
generators (`rng`), so a resumed run continues bit-identically on CPU.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from tqdm import tqdm

from aniportraitgan.artefacts import (
    CheckpointManager,
    RunLock,
    load_checkpoint,
    load_module_state,
    subdict,
)
from aniportraitgan.body import PortraitBodyModel
from aniportraitgan.body.landmarks import LinearLandmarks
from aniportraitgan.data import PortraitDataset
from aniportraitgan.data.verify import verify_dataset
from aniportraitgan.errors import AssetError, UserError
from aniportraitgan.facerecon import FaceRecon
from aniportraitgan.generator import Generator
from aniportraitgan.latents import LabelSampler, LatentPrior
from aniportraitgan.signals import ignore_stop_signals
from aniportraitgan.training import distributed as dist_utils
from aniportraitgan.training.config import TrainConfig
from aniportraitgan.training.discriminator import build_discriminators
from aniportraitgan.training.ema import EMA, ema_beta
from aniportraitgan.training.grids import sample_grid
from aniportraitgan.training.objective import PortraitObjective
from aniportraitgan.training.options import RunOptions
from aniportraitgan.training.rng import (
    StepBatches,
    mix,
    seed_everything,
    set_rng_state,
)
from aniportraitgan.training import saving, warm_start
from aniportraitgan.training.run_dir import LOG, RunLog, prepare_run_dir
from aniportraitgan.training.stopping import StopCheck

BAR_KEYS = ("D_whole", "D_face", "D_torso", "G_total", "landmark", "images_per_s")


@dataclass
class StageRun:
    """What one stage trains with: its data, discriminators, optimisers and objective."""

    index: int
    dataset: PortraitDataset
    prior: LatentPrior  # the labels' statistics, saved for sampling at inference
    Ds: nn.ModuleDict
    g_params: list[nn.Parameter]
    opt_G: torch.optim.Optimizer
    opt_D: torch.optim.Optimizer
    objective: PortraitObjective


class Trainer:
    """One training run: the networks are built here, `run()` trains the asked stages."""

    def __init__(self, cfg: TrainConfig, opts: RunOptions, info: dist_utils.DistInfo | None = None):
        cfg.validate()
        opts.validate()
        self.cfg, self.opts = cfg, opts
        self.stages = [1, 2] if opts.stage == "both" else [int(opts.stage)]
        self.info = info or dist_utils.DistInfo()
        self.device = self.info.device
        self.run_dir = Path(opts.out)
        self.ckpt = CheckpointManager(self.run_dir, keep_every=cfg.keep_every)
        self.signature = cfg.model_signature()
        self.amp_dtype = None
        if self.device.type == "cuda" and cfg.amp != "none":
            self.amp_dtype = torch.bfloat16 if cfg.amp == "bf16" else torch.float16
        self.scaler: torch.amp.GradScaler | None = None
        self.log: RunLog | None = None  # rank 0, once the run folder is set up
        self.stop: StopCheck | None = None  # while run() runs
        self.cur_nimg = 0  # images seen in the current stage (EMA ramp-up)

        seed_everything(cfg.seed)
        self.body = PortraitBodyModel.load(device=self.device)
        self.gen_cfg = cfg.generator_config()
        self.G = Generator(self.gen_cfg, self.body).to(self.device)
        self.G_ema = EMA(self.G)
        self.R = self._load_facerecon()
        # Eq. 9's landmarks as one matmul (see LinearLandmarks); only R's estimates need them.
        self.landmarks = LinearLandmarks.fit(self.body, seed=cfg.seed) if self.R is not None else None
        dist_utils.broadcast_parameters([self.G])
        self.G_ema.copy_from(self.G)
        if cfg.compile_networks:  # after the EMA copy: it stays eager (a plain module to export)
            for net in (self.G.manifold, self.G.radiance, self.G.expression):
                net.compile(dynamic=True)

    # ------------------------------------------------------------------ set-up
    def _load_facerecon(self) -> FaceRecon | None:
        if self.opts.facerecon is None:
            return None
        R = FaceRecon.load(self.opts.facerecon, device=self.device)
        if R.config.id_dim != self.body.id_dim or R.config.exp_dim != self.body.exp_dim:
            raise AssetError(
                f"{self.opts.facerecon}: R estimates {R.config.id_dim} / {R.config.exp_dim} coefficients, "
                f"the body model has {self.body.id_dim} / {self.body.exp_dim}"
            )
        return R

    def _setup_run_dir(self) -> None:
        if self.info.is_main:
            prepare_run_dir(self.run_dir, self.cfg, self.ckpt, self.opts.resume, self.opts.stage, Path(self.opts.data),
                            self.opts.facerecon)
        dist_utils.barrier()
        if not self.info.is_main:
            return
        self.log = RunLog(self.run_dir, console=not self.opts.progress)  # no progress bar: log lines instead
        if self.R is None and self.cfg.loss.landmark > 0:
            LOG.warning("no face reconstruction network given (--facerecon): the landmark loss (eq. 9) is off")
        if self.landmarks is not None:
            LOG.info("landmark model: affine fit of the body model's landmarks, residual %.3f mm",
                     self.landmarks.fit_error_mm)

    def _autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)

    def _load_dataset(self, stage: int) -> tuple[PortraitDataset, LabelSampler]:
        st = self.cfg.stage(stage)
        root = Path(self.opts.data)
        verify_dataset(root, full=False).raise_if_bad()  # a bad image stops the run now, not at step 7
        ds = PortraitDataset(root, resolution=st.portrait_resolution, face_resolution=st.face_resolution)
        if len(ds) == 0:
            raise AssetError(f"dataset {root} is empty: it has no samples to train on")
        z_id = ds.label_array("z_id")
        if z_id.ndim != 2 or z_id.shape[1] != self.body.id_dim:
            raise AssetError(
                f"dataset {root}: z_id has {z_id.shape[1:]} coefficients but the body model has {self.body.id_dim}: "
                f"the dataset was labelled with another body model"
            )
        if ds.stored_resolution < st.portrait_resolution or ds.stored_face_resolution < st.face_resolution:
            LOG.warning(
                "dataset %s is stored at %d / %d pixels (portrait / face), below stage %d's %d / %d: images are upsampled",
                root, ds.stored_resolution, ds.stored_face_resolution, stage, st.portrait_resolution, st.face_resolution,
            )
        return ds, LabelSampler.from_dataset(ds, eps_dim=self.gen_cfg.noise_dim)

    # ------------------------------------------------------------------- run
    def run(self) -> dict:
        """Train the asked stages. The run folder is locked meanwhile (a second run on it fails at
        once). The first SIGINT / SIGTERM ends the run after the current step with a checkpoint:
        ``summary["exit_code"]`` is then 130 / 143 (0 otherwise); a second one stops at once."""
        summary: dict = {"exit_code": 0}
        lock = RunLock(self.run_dir, command="train") if self.info.is_main else None
        try:
            with StopCheck.graceful_stop() as graceful:
                if lock is not None:
                    lock.acquire()
                self.stop = StopCheck(self.info, self.device, self.opts.max_minutes, graceful)
                self._setup_run_dir()
                for stage in self.stages:
                    steps = self.cfg.stage(stage).steps if self.opts.steps is None else self.opts.steps
                    if stage == 2 and self.opts.stage2_steps is not None:
                        steps = self.opts.stage2_steps
                    summary[f"stage{stage}"] = result = self._run_stage(stage, int(steps))
                    if result.get("out_of_time") or result.get("exit_code"):
                        summary["exit_code"] = result.get("exit_code", 0)
                        break
        finally:
            if self.log is not None:
                self.log.close()
                self.log = None
            if lock is not None:
                lock.release()
        return summary

    def _begin_stage(self, stage: int, data: tuple[PortraitDataset, LabelSampler] | None = None) -> StageRun:
        """The stage's networks, optimisers and objective; `data` (dataset, sampler) replaces the
        run's dataset (`training.bench` times steps without one)."""
        cfg, st, ab = self.cfg, self.cfg.stage(stage), self.cfg.ablation
        ds, sampler = data or self._load_dataset(stage)
        Ds = build_discriminators(
            st.portrait_resolution, st.face_resolution, cfg.disc,
            use_face=not ab.no_face_disc, use_torso=not ab.no_torso_disc,
        ).to(self.device)
        dist_utils.broadcast_parameters([Ds])
        g_params = self.G.set_trainable(stage)
        opt_G = torch.optim.Adam(self.G.param_groups(stage, st.g_lr, st.lr_scale), lr=st.g_lr, betas=st.betas, eps=1e-8)
        opt_D = torch.optim.Adam(Ds.parameters(), lr=st.d_lr, betas=st.betas, eps=1e-8)
        if self.amp_dtype == torch.float16:
            self.scaler = torch.amp.GradScaler("cuda")
        objective = PortraitObjective(cfg, stage, self.G, Ds, self.body, sampler, st.batch_size // self.info.world_size,
                                      self.device, self.R, self.landmarks, self._autocast)
        return StageRun(stage, ds, LatentPrior.from_sampler(sampler), Ds, g_params, opt_G, opt_D, objective)

    def _run_stage(self, stage: int, steps: int) -> dict:
        cfg, st, info = self.cfg, self.cfg.stage(stage), self.info
        run = self._begin_stage(stage)
        self.cur_nimg = 0
        start = self._restore(run)
        if start < 0:
            if info.is_main:
                LOG.info("stage %d already finished in %s", stage, self.run_dir)
            return {"skipped": True}
        if start >= steps:
            if info.is_main:
                LOG.info("stage %d: checkpoint at step %d >= requested %d steps; nothing to do", stage, start, steps)
                saving.export_if_stale(self, run, start)
            return {"steps": start, "resumed_at": start}
        early = self._stop_early(run, start, start, steps, {}, save=False)  # a signal during the set-up
        if early is not None:
            return early
        batches = StepBatches(len(run.dataset), st.batch_size, info.rank, info.world_size, cfg.seed, stage, start, steps)
        loader = torch.utils.data.DataLoader(
            run.dataset, batch_sampler=batches, num_workers=cfg.num_workers, pin_memory=self.device.type == "cuda",
            persistent_workers=False, worker_init_fn=ignore_stop_signals,  # the main process decides
        )
        bar = None
        if info.is_main and self.opts.progress:
            bar = tqdm(total=steps, initial=start, desc=f"stage {stage}", dynamic_ncols=True)
        if info.is_main:
            LOG.info(
                "stage %d: steps %d..%d, batch %d on %d process(es), portrait %d, face %d, discriminators %s, device %s",
                stage, start, steps, st.batch_size, info.world_size, st.portrait_resolution, st.face_resolution,
                list(run.Ds.keys()), self.device,
            )
        last_logs: dict[str, float] = {}
        t_last, n_last = time.time(), 0
        try:
            for step, batch in zip(range(start, steps), loader):
                seed = mix(cfg.seed, stage, step, info.rank)
                seed_everything(seed)
                logs = self._train_step(run, step, batch, torch.Generator().manual_seed(mix(seed, 1)))
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
                        self.log.scalars(stage, done, logs)
                if bar is not None:
                    bar.update(1)
                    if last_logs:
                        bar.set_postfix({k: f"{v:.3g}" for k, v in last_logs.items() if k in BAR_KEYS})
                if info.is_main and cfg.image_every and (done % cfg.image_every == 0 or done == steps):
                    self._log_images(run, done)
                if done % cfg.checkpoint_every == 0 or done == steps:
                    saving.save(self, run, done, keep=(done == steps and stage == 1))
                dist_utils.barrier()
                if self.opts.on_step is not None:
                    self.opts.on_step(stage, done)
                early = self._stop_early(run, start, done, steps, last_logs) if done < steps else None
                if early is not None:
                    return early
        finally:
            if bar is not None:
                bar.close()
        return {"steps": steps, "resumed_at": start, "last_logs": last_logs}

    def _stop_early(self, run: StageRun, start: int, done: int, steps: int, last_logs: dict, save: bool = True):
        """The stage's summary when the budget or a signal ends it at step `done` (all ranks
        agree, `stopping`), after a checkpoint of that step; None to go on. `save=False`:
        before the first step (signals only, nothing new to save)."""
        reason = self.stop.check(budget=save)
        if reason is None:
            return None
        if save and done % self.cfg.checkpoint_every:
            saving.save(self, run, done)
        dist_utils.barrier()
        if self.info.is_main:
            LOG.info("stage %d: %s at step %d of %d; --resume continues", run.index,
                     reason.describe(self.opts.max_minutes), done, steps)
        return {"steps": done, "resumed_at": start, "last_logs": last_logs, "out_of_time": reason.out_of_time,
                "exit_code": reason.exit_code}

    # ---------------------------------------------------------------- one step
    def _train_step(self, run: StageRun, step: int, batch: dict, gen: torch.Generator) -> dict[str, float]:
        """One discriminator step, one generator step, then the EMA update."""
        Ds = run.Ds
        Ds.requires_grad_(True)
        loss_D, logs = run.objective.d_phase(batch, gen, step)
        self._optimise(loss_D, run.opt_D, Ds.parameters(), "discriminator loss", run.index, step)
        Ds.requires_grad_(False)
        loss_G, g_logs = run.objective.g_phase(gen)
        logs.update(g_logs)
        self._optimise(loss_G, run.opt_G, run.g_params, "generator loss", run.index, step)
        Ds.requires_grad_(True)
        dist_utils.sync_buffers(self.G)
        beta = ema_beta(self.cfg.stage(run.index).batch_size, self.cur_nimg, self.cfg.ema_kimg, self.cfg.ema_rampup)
        self.G_ema.update(self.G, beta)
        return logs

    def _optimise(self, loss: torch.Tensor, opt: torch.optim.Optimizer, params, what: str, stage: int, step: int) -> None:
        """Backward (loss-scaled under fp16), gradients averaged over the ranks, one optimiser step."""
        if not torch.isfinite(loss):
            raise FloatingPointError(f"stage {stage} step {step}: {what} is {loss.item()} (training diverged)")
        opt.zero_grad(set_to_none=True)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
        else:
            loss.backward()
        dist_utils.all_reduce_grads(params)
        if self.scaler is not None:
            self.scaler.step(opt)
            self.scaler.update()
        else:
            opt.step()

    # ------------------------------------------------------- restore and save
    def _restore(self, run: StageRun) -> int:
        """Load the newest checkpoint that applies to the stage; returns the step to start from
        (-1: the stage is already done)."""
        stage, opts = run.index, self.opts
        ck_path = self.ckpt.latest() if opts.resume or stage == 2 else None
        if ck_path is None and opts.init is not None:
            if stage == 1:
                self._warm_start(run)
                return 0
            ck_path = Path(opts.init)
        if ck_path is None and opts.resume and stage == 1 and self.info.is_main:
            LOG.warning("--resume: %s holds no checkpoint: stage 1 starts from step 0", self.ckpt.dir)
        if ck_path is None:
            if stage == 2:
                raise UserError(
                    f"stage 2 starts from a stage-1 checkpoint: none in {self.run_dir / 'checkpoints'} "
                    f"(run stage 1 first, use --stage both, or pass --init CHECKPOINT_DIR)"
                )
            return 0
        ck = load_checkpoint(ck_path, self.signature, map_location="cpu")
        if ck.stage > stage:
            return -1
        kept = warm_start.keep_stored_meaning([self.G, self.G_ema.module], ck.meta.get("generator_config"))
        if kept and self.info.is_main:
            LOG.warning("resuming %s: kept the generator settings it was trained with (default now, kept): %s",
                        ck.path, kept)
        load_module_state(self.G, subdict(ck.weights, "G"), "the generator", ck.path)
        load_module_state(self.G_ema.module, subdict(ck.weights, "G_ema"), "the EMA generator", ck.path)
        if ck.stage < stage:
            # Stage 2 starts from the stage-1 EMA weights (the better generator); U is fresh.
            self.G.load_state_dict(self.G_ema.module.state_dict())
            if self.info.is_main:
                LOG.info("stage %d starts from %s (stage %d, step %d)", stage, ck.path, ck.stage, ck.step)
            return 0
        load_module_state(run.Ds, subdict(ck.weights, f"D{stage}"), f"the stage-{stage} discriminators", ck.path)
        # Learning rates come from the current config (a resumed run may change its schedule).
        try:
            warm_start.load_keeping_rates(run.opt_G, ck.state["opt_G"])
            warm_start.load_keeping_rates(run.opt_D, ck.state["opt_D"])
            if self.scaler is not None and "scaler" in ck.state:
                self.scaler.load_state_dict(ck.state["scaler"])
            self.cur_nimg = int(ck.state["cur_nimg"])
            rng = ck.state["rng"]
        except (KeyError, ValueError) as exc:
            raise AssetError(f"checkpoint {ck.path}: training state does not fit this run ({exc})") from None
        # Per-rank streams only fit the same number of ranks; otherwise each step's reseeding rules.
        if self.info.world_size == ck.state.get("world_size", 1):
            set_rng_state(rng)
        if self.info.is_main:
            LOG.info("resumed stage %d at step %d from %s", stage, ck.step, ck.path)
        return ck.step

    def _warm_start(self, run: StageRun) -> None:
        """Stage 1 with --init: the generator (and with --init-discriminators, D1) from trained runs."""
        opts = self.opts
        warm_start.init_generator(self.G, self.G_ema.module, Path(opts.init), opts.init_fresh, self.device, self.body)
        carried = "discriminators start fresh"
        if opts.init_discriminators is not None:
            step = warm_start.init_discriminators(run.Ds, run.opt_D, opts.init_discriminators)
            carried = f"discriminators continue from {opts.init_discriminators} (step {step})"
        if self.info.is_main:
            fresh = f"; fresh: {', '.join(opts.init_fresh)}" if opts.init_fresh else ""
            LOG.info("stage 1 fine-tunes the generator of %s (%s%s)", opts.init, carried, fresh)

    def _log_images(self, run: StageRun, step: int) -> None:
        grid = sample_grid(self.G_ema.module, run.objective.sampler, self.cfg.seed, self.cfg.grid_size,
                           self.cfg.stage(run.index), run.index, self.device, self._autocast)
        self.log.grid(run.index, step, grid)


def train(cfg: TrainConfig, opts: RunOptions) -> dict:
    """Run training (single process, or one rank of a torchrun job)."""
    info = dist_utils.init_distributed(opts.device)
    if not info.is_main:
        opts.progress = False
    try:
        return Trainer(cfg, opts, info).run()
    finally:
        dist_utils.shutdown_distributed()

