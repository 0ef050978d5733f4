"""What one training invocation is asked to do (the `aniportraitgan train` options that are not
part of the TrainConfig): data, run folder, stages, resume, initialisation, budget."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from aniportraitgan.errors import UserError
from aniportraitgan.generator import Generator


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
    # Stage 1 with `init`: generator sub-networks (paper names, e.g. "De") that keep their fresh
    # initialisation instead of the loaded weights (a De trained without mesh guidance has
    # learned a displacement the guidance already applies).
    init_fresh: tuple[str, ...] = ()
    # Stage 1 with `init`: a stage-1 checkpoint folder whose discriminators (and their Adam
    # moments) continue instead of starting fresh, e.g. the one `init`'s generator was derived
    # from. A critic that already knows real portraits keeps a reshaped generator from drifting.
    init_discriminators: Path | None = None
    progress: bool = True
    # Wall-clock budget of this invocation in minutes (None: none). When it runs out the trainer
    # writes a checkpoint and stops; `--resume` continues (for job time limits and leased GPUs).
    max_minutes: float | None = None
    # Test hook: called after every completed step as on_step(stage, step).
    on_step: Callable[[int, int], None] | None = None

    def validate(self) -> None:
        if self.stage not in ("1", "2", "both"):
            raise UserError(f"--stage must be 1, 2 or both, got {self.stage!r}")
        for name in ("steps", "stage2_steps"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise UserError(f"--{name.replace('_', '-')} must be >= 0, got {value}")
        if self.init_fresh and self.init is None:
            raise UserError("--init-fresh names sub-networks of the --init generator: give --init too")
        if self.init_discriminators is not None and self.init is None:
            raise UserError("--init-discriminators continues the critics of a fine-tuned generator: give --init too")
        if self.init_discriminators is not None and self.stage != "1":
            raise UserError("--init-discriminators applies to stage 1 (stage 2 trains new high-resolution discriminators): use --stage 1")
        unknown = Generator.unknown_subnetworks(self.init_fresh)
        if unknown:
            raise UserError(f"--init-fresh names unknown generator sub-networks {unknown}; "
                            f"known: {sorted(Generator.SUBNETWORK_NAMES)}")
        if self.max_minutes is not None and not self.max_minutes > 0:
            raise UserError(f"--max-minutes must be > 0, got {self.max_minutes}")
