"""What the task and its callbacks need of a data module, named as protocols (checked, never probed with ``hasattr``).

Any ``LightningDataModule`` works with a task; these add what mmfuse uses when a data module offers it.
Every built-in data module takes tokenizers and lists its sequences; :class:`~mmfuse.data.IsoformExpression`
also gives target statistics.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol, runtime_checkable

import numpy as np

from mmfuse.tokenizers import Tokenizer

__all__ = ["ListsSequences", "SelectsRecords", "TakesTokenizers", "TargetStatistics"]


@runtime_checkable
class TakesTokenizers(Protocol):
    """A data module whose collate function tokenizes with the model's tokenizers (in DataLoader workers)."""

    def attach_tokenizers(self, tokenizers: Mapping[str, Tokenizer]) -> None:
        """Uses ``tokenizers`` (one per modality) for the batches from now on, after checking the sequences."""


@runtime_checkable
class ListsSequences(Protocol):
    """A data module that can list the sequences of its splits, so the embedding cache fills itself before
    the loop (``predict_split``: the records ``predict`` reads)."""

    eval_batch_size: int
    predict_split: str

    def split_sequences(self, splits: str | Sequence[str], modality: str) -> Sequence[str | None]:
        """The ``modality`` sequences of ``splits`` (``None`` where a record lacks it); may be lazy."""


@runtime_checkable
class SelectsRecords(Protocol):
    """A data module whose ``predict`` can be restricted to chosen records (``mmfuse explain --ids``)."""

    def select_records(self, ids: Sequence[str]) -> None:
        """From now on ``predict`` reads only the records ``ids``, in this order, and its batches also give the
        sequences as read (``batch["sequences"]``); raises a data error naming ids the data does not have."""


@runtime_checkable
class TargetStatistics(Protocol):
    """A data module of continuous targets that gives their training-split mean and standard deviation."""

    def target_stats(self) -> tuple[np.ndarray, np.ndarray]:
        """``(mean, std)`` per target over the training split."""
