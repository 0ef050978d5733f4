"""Errors shared across the package."""


class AssetError(RuntimeError):
    """A missing, corrupt or incompatible data file (asset, checkpoint, dataset)."""


class InputError(ValueError):
    """A tensor or value given by the caller has the wrong shape, dtype, range or contains NaN."""


class UserError(Exception):
    """A bad command-line request: printed without a traceback, exit code 2."""
