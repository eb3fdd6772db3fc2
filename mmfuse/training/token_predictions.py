"""Predictions of token classification summarised per token (per gene): the mean over the records it appears in.

:class:`~mmfuse.training.writer.PredictionWriter` writes one row per (record, token) of a token classifier
(:class:`~mmfuse.training.TokenClassification`: a cell and one of its genes); :func:`write_token_table` then
reads that file back, a block of rows at a time, and writes ``<stem>_<token>s<suffix>`` beside it (``_genes``):
one row per token with the number of records it was predicted in, its mean probability of each class, the
class of the highest mean (``predicted``) and its true class where known (``true_label``), as Geneformer
reports a gene classifier's predictions per gene.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from mmfuse.io import atomic_path

__all__ = ["TRUE_LABEL", "token_column_of", "token_table_path", "write_token_table"]

#: the column of the true class of a token row ("" where unknown)
TRUE_LABEL = "true_label"
_BLOCK = 65_536


def token_table_path(path: Path, token_column: str) -> Path:
    """Where the per-token table of the predictions ``path`` goes: ``predictions_genes.csv`` beside
    ``predictions.csv`` (``token_column`` ``gene``)."""
    return path.with_name(f"{path.stem}_{token_column}s{path.suffix}")


def token_column_of(path: Path) -> str | None:
    """The token column of a predictions file written per (record, token) (the column after the id, in a file
    with :data:`TRUE_LABEL`), or ``None`` for predictions per record."""
    if path.suffix.lower() == ".parquet":
        import pyarrow.parquet as pq

        names = list(pq.read_schema(path).names)
    else:
        names = list(pd.read_csv(path, sep="\t" if path.suffix.lower() == ".tsv" else ",", nrows=0).columns)
    return str(names[1]) if TRUE_LABEL in names and len(names) > 1 else None


def _blocks(path: Path, columns: Sequence[str], text: Sequence[str]) -> Iterator[pd.DataFrame]:
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        for batch in pq.ParquetFile(path).iter_batches(batch_size=_BLOCK, columns=list(columns)):
            yield batch.to_pandas()
        return
    yield from pd.read_csv(path, sep="\t" if suffix == ".tsv" else ",", usecols=list(columns), chunksize=_BLOCK,
                           dtype=dict.fromkeys(text, str), keep_default_na=False)  # fmt: skip


def write_token_table(path: Path, token_column: str, classes: Sequence[str]) -> Path:
    """Writes the per-token table of the predictions file ``path`` (see the module) and returns its path.

    Args:
        path: the predictions, one row per (record, token), with ``token_column``, one probability column per
            class and :data:`TRUE_LABEL`.
        token_column: the column naming the token (``gene``).
        classes: the class columns, in class-index order.
    """
    classes = list(classes)
    sums: dict[str, np.ndarray] = {}
    counts: dict[str, int] = {}
    truth: dict[str, str] = {}
    for block in _blocks(path, [token_column, *classes, TRUE_LABEL], [token_column, TRUE_LABEL]):
        block[token_column] = block[token_column].astype(str)
        grouped = block.groupby(token_column, sort=False)
        totals = grouped[classes].sum()
        sizes = grouped.size()
        labels = block[block[TRUE_LABEL].astype(str) != ""].groupby(token_column, sort=False)[TRUE_LABEL].first()
        for token, row in zip(totals.index, totals.to_numpy(dtype=np.float64), strict=True):
            sums[token] = sums.get(token, 0.0) + row
            counts[token] = counts.get(token, 0) + int(sizes[token])
        for token, label in labels.items():
            truth.setdefault(str(token), str(label))
    tokens = sorted(sums)
    means = np.stack([sums[t] / counts[t] for t in tokens]) if tokens else np.zeros((0, len(classes)))
    table = pd.DataFrame(means, columns=classes)
    table.insert(0, "records", [counts[t] for t in tokens])
    table.insert(0, token_column, tokens)
    table["predicted"] = [classes[i] for i in means.argmax(axis=1)] if tokens else []
    table[TRUE_LABEL] = [truth.get(t, "") for t in tokens]
    target = token_table_path(path, token_column)
    with atomic_path(target) as tmp:
        if target.suffix.lower() == ".parquet":
            table.to_parquet(tmp, index=False)
        else:
            table.to_csv(tmp, index=False, sep="\t" if target.suffix.lower() == ".tsv" else ",")
    return target
