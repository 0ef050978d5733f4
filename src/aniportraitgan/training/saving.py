"""Saving a training run: its checkpoint folder (`artefacts.CheckpointManager`) and the exported
EMA generator beside it (`RUN/generator.safetensors`), from rank 0 only.

The export follows each checkpoint, so a kill can fall between the two: a resumed run that
has nothing left to do exports again when the exported file is not the newest checkpoint's.
"""

from __future__ import annotations

from aniportraitgan.artefacts import PRIOR_KEY, read_generator_file, save_generator
from aniportraitgan.errors import AssetError
from aniportraitgan.training.rng import rng_state
from aniportraitgan.training.run_dir import LOG

EXPORT_NAME = "generator.safetensors"


def save(trainer, run, step: int, keep: bool = False) -> None:
    """Checkpoint `trainer` (a `loop.Trainer`) at `step` of stage `run` (a `loop.StageRun`)."""
    if not trainer.info.is_main:
        return
    weights = {}
    for prefix, module in (("G", trainer.G), ("G_ema", trainer.G_ema.module), (f"D{run.index}", run.Ds)):
        for k, v in module.state_dict().items():
            weights[f"{prefix}.{k}"] = v
    state = {
        "stage": run.index,
        "step": step,
        "cur_nimg": trainer.cur_nimg,
        "opt_G": run.opt_G.state_dict(),
        "opt_D": run.opt_D.state_dict(),
        "rng": rng_state(),
        "world_size": trainer.info.world_size,
        "config_json": trainer.cfg.to_json(),
    }
    if trainer.scaler is not None:
        state["scaler"] = trainer.scaler.state_dict()
    extra = {"generator_config": trainer.gen_cfg.to_dict(), PRIOR_KEY: run.prior.to_json()}
    path = trainer.ckpt.save(run.index, step, weights, state, trainer.cfg.to_dict(), trainer.signature, keep=keep,
                             extra_meta=extra)
    export(trainer, run, step)
    LOG.info("checkpoint %s", path)


def export(trainer, run, step: int) -> None:
    save_generator(trainer.run_dir / EXPORT_NAME, trainer.G_ema.module, stage=run.index, step=step, prior=run.prior,
                   train_config=trainer.cfg.to_dict())


def export_if_stale(trainer, run, step: int) -> None:
    """Export the checkpoint's EMA generator (restored in `trainer`) unless the exported file
    is already that of stage `run.index`, step `step`."""
    try:
        meta = read_generator_file(trainer.run_dir / EXPORT_NAME)[1]
        current = (meta.get("stage"), meta.get("step")) == (str(run.index), str(step))
    except AssetError:
        current = False
    if not current:
        export(trainer, run, step)
        LOG.info("exported %s (stage %d, step %d)", trainer.run_dir / EXPORT_NAME, run.index, step)
