"""Token labels of gene (token) classification, made in the DataLoader workers from the tokenizer's own output.

:class:`TokenLabels` wraps the collate function: each batch gains ``target``, int64 ``(B, L)`` aligned with the
labelled modality's tokens (:data:`IGNORE` where a token has no label), looked up by token id in a table that
:func:`token_tables` builds from a tokenizer's ``genes`` (gene → token id). So a label follows its token
exactly: rank order, the cut to ``max_genes`` and the special tokens included.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from mmfuse.data.collate import MultiModalCollate
from mmfuse.data.errors import DataError
from mmfuse.data.files.gene_labels import GeneLabels
from mmfuse.data.splits import SPLITS
from mmfuse.tokenizers import Tokenizer

__all__ = ["IGNORE", "TokenLabels", "token_tables"]

#: the token label of a token without a label (PyTorch's ``ignore_index``)
IGNORE = -100


class TokenLabels:
    """A collate function: :class:`~mmfuse.data.collate.MultiModalCollate`'s batch, plus each token's label.

    ``batch["target"]`` is int64 ``(B, L)`` aligned with ``batch["inputs"][modality]["input_ids"]``: the class
    of the token's gene where ``labels`` (by token id) has one, :data:`IGNORE` elsewhere (padding, special
    tokens, unlabelled genes, records lacking the modality). With ``predict`` the batch also names the tokens
    to predict, ``batch["tokens"] = {"name": "gene", "position": (N, 2) (record, token), "values": [gene] * N}``:
    the labelled ones, or (``every_gene``) every token that is a gene.

    Args:
        base: the collate function that tokenizes.
        modality: the labelled modality.
        labels: ``(V,)`` class index per token id, :data:`IGNORE` for tokens without a label.
        names: ``(V,)`` gene per token id (``None`` for special tokens).
        predict: also name the tokens to predict.
        every_gene: with ``predict``, every gene token, not only the labelled ones.
    """

    def __init__(self, base: MultiModalCollate, modality: str, labels: np.ndarray, names: np.ndarray,
                 predict: bool = False, every_gene: bool = False) -> None:  # fmt: skip
        self.base, self.modality, self.labels, self.names = base, modality, labels, names
        self.predict, self.every_gene = predict, every_gene

    @property
    def tokenizers(self) -> dict[str, Tokenizer]:
        return self.base.tokenizers

    def __call__(self, records: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        batch = self.base(records)
        tokens = batch["inputs"].get(self.modality)
        if tokens is None:  # no record of the batch has the modality: one masked token each
            ids = np.zeros((len(records), 1), dtype=np.int64)
            target = np.full(ids.shape, IGNORE, dtype=np.int64)
        else:
            if "input_ids" not in tokens:
                raise DataError(
                    f"the {self.modality} tokenizer gives no input_ids to label; gene classification reads each "
                    f"token (is the modality cached? leave it out of embedding_cache)"
                )
            ids = tokens["input_ids"].numpy()
            known = ids < len(self.labels)
            target = np.where(known, self.labels[np.where(known, ids, 0)], IGNORE).astype(np.int64)
            target[~batch["present"][self.modality].numpy()] = IGNORE
        batch["target"] = torch.from_numpy(target)
        if self.predict:
            chosen = target != IGNORE
            if self.every_gene and tokens is not None:
                gene = np.where(known, self.names[np.where(known, ids, 0)], None) != None  # noqa: E711
                chosen = gene & batch["present"][self.modality].numpy()[:, None]
            batch["tokens"] = {"name": "gene", "position": torch.from_numpy(np.argwhere(chosen)),
                               "values": self.names[ids[chosen]].tolist()}  # fmt: skip
        return batch


def token_tables(vocabulary: Mapping[str, Any], labels: GeneLabels,
                 splits: Mapping[str, str]) -> tuple[np.ndarray, dict[str, np.ndarray]]:  # fmt: skip
    """Each token id's gene (``None``: a special token), and per split (and ``all``) each token id's class, or
    :data:`IGNORE`, from a tokenizer's ``genes`` (gene → (token id, …))."""
    size = max(int(entry[0]) for entry in vocabulary.values()) + 1
    names = np.full(size, None, dtype=object)
    for gene, entry in vocabulary.items():
        names[int(entry[0])] = gene
    tables = {}
    for split in (*SPLITS, "all"):
        table = np.full(size, IGNORE, dtype=np.int64)
        for gene, where in splits.items():
            if split in ("all", where) and gene in vocabulary:
                table[int(vocabulary[gene][0])] = labels.index(gene)
        tables[split] = table
    return names, tables
