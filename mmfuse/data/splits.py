"""Which split each record falls in: the table's split column (or file names), else by gene, reproducibly.

A key's split depends only on the key and a seed, never on row order, so the same table split the
same way on every machine, process and run, and all isoforms of a gene share a split.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import pandas as pd
from lightning.pytorch.utilities import rank_zero_info

from mmfuse.data.errors import DataError
from mmfuse.data.sources import SPLIT_ALIASES

__all__ = ["SPLITS", "SplitRule", "gene_split", "uniform"]

#: the splits of a data module, in the order "all" concatenates them
SPLITS = ("train", "val", "test")


def uniform(key: str, seed: int) -> float:
    """A number in [0, 1) that depends only on ``key`` and ``seed``.

    Examples:
        >>> uniform("ENSG1", 0) == uniform("ENSG1", 0), 0 <= uniform("ENSG1", 0) < 1
        (True, True)
    """
    return int.from_bytes(hashlib.md5(f"{seed}:{key}".encode()).digest()[:8], "big") / 2**64


def gene_split(key: str, seed: int, val_fraction: float, test_fraction: float) -> str:
    """A split for ``key`` that depends only on the key and the seed (not on row order)."""
    u = uniform(key, seed)
    if u < test_fraction:
        return "test"
    if u < test_fraction + val_fraction:
        return "val"
    return "train"


@dataclass(frozen=True)
class SplitRule:
    """How a data module splits its records (its options of the same names)."""

    split_column: str
    gene_column: str | None
    id_column: str
    val_fraction: float
    test_fraction: float
    seed: int
    source: str
    owner: str = "TableDataModule"

    def assign(self, table: pd.DataFrame) -> tuple[np.ndarray, str | None]:
        """Each record's split (``train``/``val``/``test``), and how they were split when by key (else ``None``)."""
        if self.split_column in table.columns and table[self.split_column].notna().any():
            raw = table[self.split_column].astype(str).str.strip().str.lower()
            unknown = sorted(set(raw) - set(SPLIT_ALIASES))
            if unknown:
                first = table[self.id_column].iloc[int(np.flatnonzero(raw == unknown[0])[0])]
                raise DataError(
                    f"column {self.split_column!r} of {self.source} holds {', '.join(map(repr, unknown[:5]))}; use "
                    f"train, val or test (first such record: {str(first)!r}), or set split_column to another name "
                    f"if that column is not a split."
                )
            splits = raw.map(SPLIT_ALIASES).to_numpy()
            if "val" not in splits and self.val_fraction > 0 and (splits == "train").any():
                splits = self._carve_val(table, splits)
            return splits, None
        if self.gene_column is not None and self.gene_column not in table.columns:
            raise DataError(
                f"{self.source} has neither a {self.split_column!r} column nor the gene column "
                f"{self.gene_column!r} to split by; add one, or set gene_column: null to split by record."
            )
        keys = self._keys(table, self.gene_column is not None)
        cache = {k: gene_split(k, self.seed, self.val_fraction, self.test_fraction) for k in keys.unique()}
        by = f"{self.gene_column!r}" if self.gene_column is not None else "record"
        n = len(cache)
        return keys.map(cache).to_numpy(), (
            f"by {by} ({n} values), val_fraction {self.val_fraction}, test_fraction {self.test_fraction}: each "
            f"value draws its split, so about {n * self.val_fraction:g} values validate and "
            f"{n * self.test_fraction:g} test"
        )

    def _keys(self, table: pd.DataFrame, by_gene: bool) -> pd.Series:
        """The key each record is split by: its gene, or (no gene column, or an empty gene cell: counted)
        its own id, so records without a gene never pool into one pseudo-gene."""
        ids = table[self.id_column].astype(str)
        if not by_gene:
            return ids
        genes = table[self.gene_column]
        empty = genes.isna().to_numpy() | (genes.astype(str).str.strip() == "").to_numpy()
        if empty.any():
            rank_zero_info(
                f"{self.owner}: {int(empty.sum())} records have no {self.gene_column!r} (e.g. "
                f"{ids[empty].iloc[0]!r}); each is split on its own, as a gene of one record"
            )
        return genes.astype(str).where(~empty, "<no gene> " + ids)

    def _carve_val(self, table: pd.DataFrame, splits: np.ndarray) -> np.ndarray:
        """``val_fraction`` of the training genes (records, without a gene column) made the validation split."""
        by_gene = self.gene_column is not None and self.gene_column in table.columns
        keys = self._keys(table, by_gene)
        train = splits == "train"
        candidates = keys[train].unique()
        draws = np.array([uniform(k, self.seed) for k in candidates])
        picked = draws < self.val_fraction
        if not picked.any() and len(candidates) > 1:  # a small table: at least one gene validates
            picked[int(np.argmin(draws))] = True
        chosen = set(candidates[picked])
        val = train & keys.isin(chosen).to_numpy()
        unit = f"genes ({self.gene_column!r})" if by_gene else "records"
        rank_zero_info(
            f"{self.owner}: the {self.split_column!r} column marks no record val: {len(chosen)} of the "
            f"{len(candidates)} training {unit} ({int(val.sum())} records) validate (val_fraction {self.val_fraction})"
        )
        return np.where(val, "val", splits)
