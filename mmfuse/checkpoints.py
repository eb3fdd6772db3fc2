"""Checking that saved weights fit a model, with a message that says what differs and what to do."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from torch import Tensor

from mmfuse.errors import MmfuseError

__all__ = ["CheckpointMismatchError", "describe_mismatch", "state_dict_mismatch"]


class CheckpointMismatchError(MmfuseError, ValueError):
    """Saved weights that do not fit the model they are loaded into."""


def describe_mismatch(missing: Sequence[str], unexpected: Sequence[str], wrong_shape: Sequence[str]) -> str | None:
    """A one-line summary of a state-dict mismatch, or ``None`` when everything fits."""
    parts = [
        f"{len(items)} {label} (e.g. {', '.join(list(items)[:3])})"
        for label, items in (("missing", missing), ("unexpected", unexpected), ("mis-shaped", wrong_shape))
        if items
    ]
    return "; ".join(parts) or None


def state_dict_mismatch(expected: Mapping[str, Tensor], given: Mapping[str, Tensor]) -> str | None:
    """How ``given`` differs from ``expected`` (names and shapes), or ``None`` if it fits."""
    missing = sorted(set(expected) - set(given))
    unexpected = sorted(set(given) - set(expected))
    wrong_shape = [
        f"{k}: saved {tuple(given[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in sorted(set(expected) & set(given))
        if hasattr(given[k], "shape") and tuple(given[k].shape) != tuple(expected[k].shape)
    ]
    return describe_mismatch(missing, unexpected, wrong_shape)
