"""Errors about input data; each message names the record or column and the fix."""

from mmfuse.errors import MmfuseError

__all__ = ["DataError"]


class DataError(MmfuseError, ValueError):
    """Input data that cannot be used as given."""
