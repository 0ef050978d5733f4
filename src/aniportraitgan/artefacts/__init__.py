"""Artefacts: the only reader and writer of training checkpoint folders and exported generator
files (format, checksums, pruning, model signature, config diff, rebuilding a generator), of
checksummed safetensors files in general, and of the lock of a run folder."""

from aniportraitgan.artefacts.checkpoints import (
    FORMAT_VERSION,
    Checkpoint,
    CheckpointManager,
    load_checkpoint,
    load_module_state,
    model_signature,
    subdict,
)
from aniportraitgan.artefacts.checksummed import (
    SafetensorsFile,
    UnverifiedFileWarning,
    read_checksummed,
    warn_unverified,
    write_checksummed,
)
from aniportraitgan.artefacts.generator_files import (
    PRIOR_KEY,
    export_generator,
    read_generator_file,
    save_generator,
)
from aniportraitgan.artefacts.loading import (
    DEMO_CHECKPOINT,
    DEMO_NAME,
    StoredGenerator,
    config_diff,
    fill_missing_averages,
    generator_config,
    load_generator,
    open_generator,
    resolve_checkpoint,
)
from aniportraitgan.artefacts.run_lock import RunLock, RunLocked

__all__ = [
    "DEMO_CHECKPOINT", "DEMO_NAME", "FORMAT_VERSION", "PRIOR_KEY", "Checkpoint", "CheckpointManager",
    "StoredGenerator", "config_diff", "export_generator", "fill_missing_averages", "generator_config",
    "load_checkpoint", "load_generator", "load_module_state", "model_signature", "open_generator",
    "read_checksummed", "read_generator_file", "resolve_checkpoint", "save_generator", "subdict",
    "RunLock", "RunLocked", "SafetensorsFile", "UnverifiedFileWarning", "warn_unverified", "write_checksummed",
]
