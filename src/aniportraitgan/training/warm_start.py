"""Fine-tuning starts: a stage-1 run that begins from trained networks instead of from scratch.

`init_generator` loads a trained generator into G and G_ema (the config may differ only where the
loaded weights stay meaningful); `init_discriminators` continues the stage-1 discriminators and
their Adam moments from a checkpoint. Together they let a generator change shape (a radiance
template added to phi, a wider phi) without the critic forgetting what real portraits look like:
fresh discriminators cost a grown run far more FID than the change gains (docs/evaluation.md).
"""

from __future__ import annotations

from pathlib import Path

import torch

from aniportraitgan.artefacts import config_diff, load_checkpoint, load_generator, load_module_state, subdict
from aniportraitgan.body import PortraitBodyModel
from aniportraitgan.errors import AssetError, InputError
from aniportraitgan.generator import SUBNETWORK_FIELDS, Generator, GeneratorConfig

# Generator config fields without parameters: they change what the networks compute, not the
# shapes of their weights.
MEANING_FIELDS = ("exp_mesh_guided", "exp_input_scale", "exp_offsets_after_dp")


def init_generator(G: Generator, G_ema: Generator, source: Path, init_fresh: tuple[str, ...],
                   device: torch.device, body: PortraitBodyModel) -> None:
    """Start G and G_ema from the generator at `source` (export, checkpoint or run folder).

    Mesh guidance, where its offsets join, and De's input scale may differ (none has parameters): a generator
    trained without guidance, or with the plain SIREN scale, can be fine-tuned with them (De's
    residual then starts as a smoother field of the same weights). The sizes of sub-networks
    that start afresh (`init_fresh`) may differ too: e.g. a wider phi on a trained surface."""
    loaded = load_generator(str(source), device, body_model=body)  # the run's body model, not a second one
    free = set(MEANING_FIELDS)
    free.update(f for name in init_fresh for f in SUBNETWORK_FIELDS[name])
    diff = config_diff(loaded.config.to_dict(), G.config.to_dict(), ignore=free)
    if diff:
        raise AssetError(f"--init {source} was trained with another generator config: {diff}")
    prefixes = G.subnetwork_prefixes(init_fresh)  # names checked by RunOptions
    state = {k: v for k, v in loaded.state_dict().items() if not k.startswith(prefixes)}
    for k, v in G.state_dict().items():  # the fresh sub-networks keep G's initialisation
        state.setdefault(k, v)
    G.load_state_dict(state)
    G_ema.load_state_dict(state)


def init_discriminators(Ds: torch.nn.Module, opt_D: torch.optim.Optimizer, source: Path) -> int:
    """Continue the stage-1 discriminators and their optimiser state from the checkpoint folder
    `source` (of any run whose discriminators have the same architecture); the learning rates
    stay this run's. Returns the step the checkpoint was written at."""
    ck = load_checkpoint(source, map_location="cpu")  # any generator: only D1 is read
    if ck.stage != 1:
        raise AssetError(f"--init-discriminators {ck.path} is a stage-{ck.stage} checkpoint: "
                         f"give a stage-1 one (its D_whole, D_face and D_torso are carried over)")
    load_module_state(Ds, subdict(ck.weights, "D1"), "the stage-1 discriminators", ck.path)
    try:
        load_keeping_rates(opt_D, ck.state["opt_D"])
    except (KeyError, ValueError) as exc:
        raise AssetError(f"--init-discriminators {ck.path}: its discriminator optimiser does not fit this run ({exc})") from None
    return ck.step


def load_keeping_rates(opt: torch.optim.Optimizer, state: dict) -> None:
    """Load an optimiser's saved state but keep its current learning rates (they come from this
    run's config, which may change the schedule)."""
    rates = [g["lr"] for g in opt.param_groups]
    opt.load_state_dict(state)
    for group, lr in zip(opt.param_groups, rates):
        group["lr"] = lr


def keep_stored_meaning(generators: list[Generator], stored: dict | None) -> dict[str, tuple]:
    """On --resume: the parameter-free fields a checkpoint's generator was trained with
    (``stored``: its ``generator_config`` metadata) win over today's defaults, so that a run
    does not change meaning halfway when a default changes (the model signature hashes the
    preset and overrides, not the defaults). Returns {field: (default now, kept)} of those set."""
    if not stored:
        return {}
    try:
        trained = GeneratorConfig.from_dict(stored)  # fields added since take their legacy values
    except (InputError, TypeError, ValueError) as exc:
        raise AssetError(f"the checkpoint stores an invalid generator config ({exc})") from None
    kept = {}
    for name in MEANING_FIELDS:
        now, then = getattr(generators[0].config, name), getattr(trained, name)
        if now != then:
            kept[name] = (now, then)
            for G in generators:
                setattr(G.config, name, then)
    return kept
