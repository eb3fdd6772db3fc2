"""Batching of raw records: tokenization by each backbone's tokenizer, in DataLoader workers."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from mmfuse.data.errors import DataError
from mmfuse.tokenizers import InvalidSequenceError, Tokenizer

__all__ = ["MultiModalCollate", "Record", "sequence_key"]

#: one data set item: ``{"id": str, "sequences": {modality: str | None}, "target": array}``
#: (a ``None`` sequence: the record lacks that modality; ``target`` is absent when the table has no
#: labels, e.g. for prediction)
Record = Mapping[str, Any]


def sequence_key(sequence: str) -> str:
    """A 128-bit digest of a sequence (hex), the embedding cache's key of a record's modality.

    Examples:
        >>> sequence_key("ACGT") == sequence_key("ACGT"), len(sequence_key("ACGT"))
        (True, 32)
    """
    return hashlib.blake2b(sequence.encode(), digest_size=16).hexdigest()


class MultiModalCollate:
    """Turns records into a batch, tokenizing each modality with its backbone's tokenizer.

    Batch layout::

        {"ids": [str] * B,
         "inputs": {modality: tokenizer output},
         "present": {modality: (B,) bool},  # False: the record lacks that modality
         "target": (B, T) float32 or (B,) int64}   # when the records carry labels

    A tokenizer's output is whatever its backbone reads: token tensors
    (``{"input_ids": (B, L), "attention_mask": (B, L)}``) or plain lists, e.g. an embedding cache's
    ``{"keys": [str] * B, "sequences": [str] * B}``; the collate function passes it on unchanged.

    A record without a modality gets a stand-in in its slot (the batch's shortest present sequence,
    so nothing is padded further) and ``present`` False, which the task turns into an all-masked row
    that adapters ignore. A modality no record of the batch has is left out of ``inputs``.

    Args:
        tokenizers: one tokenizer per modality; other modalities of the records are ignored.
        keep_sequences: also give the records' sequences as read, ``"sequences": {modality: [str | None] * B}``
            (``mmfuse explain`` reads their letters).
    """

    def __init__(self, tokenizers: Mapping[str, Tokenizer], keep_sequences: bool = False) -> None:
        self.tokenizers = dict(tokenizers)
        self.keep_sequences = keep_sequences

    def __call__(self, records: Sequence[Record]) -> dict[str, Any]:
        ids = [r["id"] for r in records]
        inputs, present = {}, {}
        for modality, tokenizer in self.tokenizers.items():
            sequences = [r["sequences"][modality] for r in records]
            have = [s is not None for s in sequences]
            present[modality] = torch.tensor(have, dtype=torch.bool)
            if not any(have):
                continue
            if not all(have):
                stand_in = min((s for s in sequences if s is not None), key=len)
                sequences = [s if s is not None else stand_in for s in sequences]
            try:
                inputs[modality] = tokenizer(sequences)
            except InvalidSequenceError as exc:
                where = f"record {ids[exc.index]!r}" if exc.index is not None else "a record of this batch"
                raise DataError(f"{where}, {modality} sequence: {exc.reason}") from None
        batch: dict[str, Any] = {"ids": ids, "inputs": inputs, "present": present}
        if records and "target" in records[0]:
            batch["target"] = torch.from_numpy(np.stack([r["target"] for r in records]))
        if self.keep_sequences:
            batch["sequences"] = {m: [r["sequences"][m] for r in records] for m in self.tokenizers}
        return batch
