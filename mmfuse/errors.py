"""The base of errors about the user's input (data, config, weights, checkpoints).

The ``mmfuse`` command prints these as one message, without a traceback (``MMFUSE_DEBUG=1`` shows
it); every message names the record, key or file and the fix.
"""

__all__ = ["CheckpointMismatchError", "ConfigError", "InputError", "MmfuseError", "NonFiniteError"]


class MmfuseError(Exception):
    """An error in what the user gave mmfuse, reported by the CLI without a traceback."""


class ConfigError(MmfuseError, ValueError):
    """An option value that cannot work (unknown preset, impossible combination, …)."""


class NonFiniteError(MmfuseError, ArithmeticError):
    """A loss, weight or prediction that is NaN or infinite: the run stops (never exits 0 after it)."""


class CheckpointMismatchError(MmfuseError, ValueError):
    """Saved weights that do not fit the model they are loaded into."""


class InputError(MmfuseError, ValueError):
    """A record a model cannot read (an exported model's ``predict``, ``mmfuse serve``): one line naming it."""
