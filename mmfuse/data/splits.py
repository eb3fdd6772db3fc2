"""Which split each record falls in: the table's split column (or file names), else by gene, reproducibly.

A key's split depends only on the key and a seed, never on row order, so the same table split the
same way on every machine, process and run, and all isoforms of a gene share a split.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from lightning.pytorch.utilities import rank_zero_info

from mmfuse.data.errors import DataError
from mmfuse.data.files.tables import SPLIT_ALIASES
from mmfuse.data.options import SplitOptions
from mmfuse.data.store.rows import SequenceView, SplitRecords

__all__ = ["SPLITS", "SplitRule", "fold_of", "gene_split", "per_value", "split_groups", "split_view", "uniform"]

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


def fold_of(keys: Sequence[str], folds: int, seed: int) -> dict[str, int]:
    """Each key's cross-validation fold: keys ranked by their draw (:func:`uniform`) and dealt out in turn,
    so the folds differ in size by at most one key, and a key's fold depends on the seed and the set of
    keys, never on row order.

    Examples:
        >>> sorted(fold_of(["g1", "g2", "g3", "g4", "g5"], 2, seed=0).values())
        [0, 0, 0, 1, 1]
    """
    ranked = sorted(dict.fromkeys(map(str, keys)), key=lambda k: (uniform(k, seed), k))
    return {key: rank % folds for rank, key in enumerate(ranked)}


def per_value(column: pd.Series, fn: Callable[[str], str]) -> pd.Series:
    """``fn`` of each record's value as text (NaN as ``nan``, as ``astype(str)`` writes it). A categorical
    column (a split, a gene, a donor) has ``fn`` run once per distinct value and its records point at those
    few strings, instead of a new string per record."""
    if isinstance(column.dtype, pd.CategoricalDtype):
        names = np.array([fn(str(c)) for c in column.cat.categories] + [fn("nan")], dtype=object)
        return pd.Series(names[column.cat.codes.to_numpy()], index=column.index, dtype=object)
    return column.astype(str).map(fn) if fn is not str else column.astype(str)


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
    #: cross-validation: ``folds`` groups of genes (records without a gene column), fold ``fold`` tests
    folds: int | None = None
    fold: int = 0
    #: the groups (values of ``gene_column``) of the validation and test splits, when named
    val_groups: tuple[str, ...] | None = None
    test_groups: tuple[str, ...] | None = None

    @classmethod
    def of(cls, split: SplitOptions, id_column: str, source: str, owner: str, group: str | None = None) -> SplitRule:
        """The rule of a data module's ``split`` options (``group``: the column to split by, default
        ``split.group``; the split column is used only when ``split.column`` names it)."""
        group = split.group if group is None else group
        val_fraction = 0.1 if split.val_fraction is None else split.val_fraction
        return cls(split.column or "", group, id_column, val_fraction, split.test_fraction, split.seed, source, owner,
                   split.folds, split.fold, split.val_groups, split.test_groups)  # fmt: skip

    def assign(self, table: pd.DataFrame) -> tuple[np.ndarray, str | None]:
        """Each record's split (``train``/``val``/``test``), and how they were split when by key (else ``None``)."""
        if self.folds is not None:
            return self._fold_splits(table)
        if self.val_groups is not None or self.test_groups is not None:
            return self._named_splits(table)
        if self.split_column in table.columns and table[self.split_column].notna().any():
            raw = per_value(table[self.split_column], lambda v: v.strip().lower())
            unknown = sorted(set(raw) - set(SPLIT_ALIASES))
            if unknown:
                first = table[self.id_column].iloc[int(np.flatnonzero(raw == unknown[0])[0])]
                raise DataError(
                    f"column {self.split_column!r} of {self.source} holds {', '.join(map(repr, unknown[:5]))}; use "
                    f"train, val or test (first such record: {str(first)!r}), or set split.column to another name "
                    f"(or null) if that column is not a split."
                )
            splits = raw.map(SPLIT_ALIASES).to_numpy()
            if "val" not in splits and self.val_fraction > 0 and (splits == "train").any():
                splits = self._carve_val(table, splits)
            return splits, None
        if self.gene_column is not None and self.gene_column not in table.columns:
            raise DataError(
                f"{self.source} has neither a {self.split_column!r} column nor the gene column "
                f"{self.gene_column!r} to split by; add one, or set split: {{group: null}} to split by record."
            )
        keys = self._keys(table, self.gene_column is not None)
        cache = {k: gene_split(k, self.seed, self.val_fraction, self.test_fraction) for k in keys.unique()}
        by = f"{self.gene_column!r}" if self.gene_column is not None else "record"
        n = len(cache)
        return keys.map(cache).to_numpy(), (
            f"by {by} ({n} value{'s' if n != 1 else ''}), val_fraction {self.val_fraction}, test_fraction "
            f"{self.test_fraction}: each value draws its split, so about {n * self.val_fraction:g} values validate and "
            f"{n * self.test_fraction:g} test"
        )

    def needed(self, stage: str | None, validates: bool = True) -> dict[str, str]:
        """The splits a run of ``stage`` needs records in, each with why (``validates``: the trainer runs
        validation). Only ``fit`` needs two or more: train, val when the options ask for validation, and
        the test fold of cross-validation, which holds its genes out. (One split, as ``test`` needs, has a
        record whenever the table has one; a draw that leaves it empty is named by its loader.)"""
        if _stage_name(stage) != "fit":
            return {}
        needed = {"train": "to train"}
        if validates and self.val_groups is not None:
            needed["val"] = f"val_groups {list(self.val_groups)}"
        elif validates and self.val_fraction > 0:
            needed["val"] = f"val_fraction {self.val_fraction:g}"
        if self.folds is not None:
            needed["test"] = f"fold {self.fold} of {self.folds}"
        return needed

    def too_small(self, table: pd.DataFrame, stage: str | None, validates: bool = True) -> str | None:
        """Why ``table`` cannot be split for a run of ``stage``: fewer groups (genes; records without a gene
        column) than the splits it needs (:meth:`needed`), with how many it has and how many each split
        needs (said after the file's empty split is named); ``None`` when it has enough (a draw may still
        leave a split empty: its loader says so)."""
        needed = self.needed(stage, validates)
        if len(table) == 0:  # no record at all: the empty split's message says what dropped them
            return None
        by_gene = self.gene_column is not None and self.gene_column in table.columns
        n = int(self._keys(table, by_gene, quiet=True).nunique())
        if n >= len(needed):
            return None
        one, many = ("gene", "genes") if by_gene else ("record", "records")
        column = f" ({self.gene_column!r})" if by_gene else ""
        splits = [f"{split} ({why})" for split, why in needed.items()]
        each = ", ".join(splits[:-1]) + f" and {splits[-1]}"
        odds = ""
        if needed.get("val", "").startswith("val_fraction"):
            in_every = int(np.ceil(1 / self.val_fraction))
            odds = f"; val_fraction {self.val_fraction:g} draws about one {one} in {in_every}"
        records = f"{len(table)} record{'s' if len(table) != 1 else ''}"
        return (
            f"the table has {records} in {n} {one if n == 1 else many}{column}, too few to split for fit: "
            f"{each} each need at least one {one}, {len(needed)} in all{odds}. Add rows (more {many}), or set "
            f"split.val_fraction: 0 and trainer.limit_val_batches: 0 to train on every {one} without validation"
        )

    def _named_splits(self, table: pd.DataFrame) -> tuple[np.ndarray, str]:
        """The groups named by ``val_groups``/``test_groups`` validate/test (e.g. held-out contigs); the rest
        train, except that with no ``val_groups`` ``val_fraction`` of the training groups validate."""
        if self.gene_column is None or self.gene_column not in table.columns:
            raise DataError(
                f"{self.source} has no column {self.gene_column!r} holding the groups that split.val_groups and "
                f"split.test_groups name; set split.group to that column"
            )
        keys = per_value(table[self.gene_column], str)
        splits = np.where(keys.isin(self.test_groups or ()), "test",
                          np.where(keys.isin(self.val_groups or ()), "val", "train"))  # fmt: skip
        if self.val_groups is None and self.val_fraction > 0 and (splits == "train").any():
            splits = self._carve_val(table, splits)
        named = [g for g in (*(self.val_groups or ()), *(self.test_groups or ())) if g not in set(keys)]
        if named:
            rank_zero_info(f"{self.owner}: split names groups no record has ({', '.join(named[:8])})")
        return splits, f"by {self.gene_column!r}: {list(self.val_groups or ())} validate, " \
                       f"{list(self.test_groups or ())} test"

    def _fold_splits(self, table: pd.DataFrame) -> tuple[np.ndarray, str]:
        """Cross-validation: the genes (records, without a gene column) in ``folds`` groups of equal size, by
        the rank of each key's draw (:func:`fold_of`); fold ``fold`` tests, ``val_fraction`` of the other
        genes validate, the rest train. The table's split column is not used."""
        by_gene = self.gene_column is not None
        if by_gene and self.gene_column not in table.columns:
            raise DataError(
                f"{self.source} has no gene column {self.gene_column!r} to make cross-validation folds of; add one, "
                f"or set split: {{group: null}} to fold by record (isoforms of a gene may then straddle folds)"
            )
        keys = self._keys(table, by_gene)
        folds = fold_of(keys.unique(), self.folds, self.seed)
        unit = f"genes ({self.gene_column!r})" if by_gene else "records"
        if len(folds) < self.folds:
            raise DataError(f"{self.source} has {len(folds)} {unit}, fewer than the {self.folds} folds asked for")
        tested = {k for k, f in folds.items() if f == self.fold}
        rest = [k for k in folds if k not in tested]
        draws = np.array([uniform(k, self.seed + 1) for k in rest])  # another draw than the folds'
        picked = draws < self.val_fraction
        if self.val_fraction > 0 and not picked.any() and len(rest) > 1:
            picked[int(np.argmin(draws))] = True
        validating = {k for k, p in zip(rest, picked, strict=True) if p}
        splits = np.where(keys.isin(tested), "test", np.where(keys.isin(validating), "val", "train"))
        return splits, (
            f"cross-validation fold {self.fold} of {self.folds} by {unit}: {len(tested)} of {len(folds)} test, "
            f"{len(validating)} of the others validate (val_fraction {self.val_fraction})"
        )

    def _keys(self, table: pd.DataFrame, by_gene: bool, quiet: bool = False) -> pd.Series:
        """The key each record is split by: its gene, or (no gene column, or an empty gene cell: counted and,
        unless ``quiet``, logged) its own id, so records without a gene never pool into one pseudo-gene."""
        ids = table[self.id_column].astype(str)
        if not by_gene:
            return ids
        genes = table[self.gene_column]
        keys = per_value(genes, str)
        empty = genes.isna().to_numpy() | (per_value(genes, lambda v: v.strip()) == "").to_numpy()
        if empty.any() and not quiet:
            rank_zero_info(
                f"{self.owner}: {int(empty.sum())} records have no {self.gene_column!r} (e.g. "
                f"{ids[empty].iloc[0]!r}); each is split on its own, as a gene of one record"
            )
        if empty.any():  # only those records' keys are made (a prefix on every id would copy every id)
            keys[empty] = "<no gene> " + ids[empty]
        return keys

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


def _stage_name(stage: str | None) -> str | None:
    """``fit`` of Lightning's ``TrainerFn.FITTING`` (a string enum: its text is its value), or ``stage`` as given."""
    return None if stage is None else str(getattr(stage, "value", stage))


def split_groups(keys: Sequence[str], rule: SplitRule, name: str = "group") -> tuple[dict[str, str], str | None]:
    """Each distinct group key's split under ``rule`` (its ``gene_column`` is ignored: the keys are the groups),
    decided once over the whole set of keys, so records sharing a key (a contig, a TF) share a split wherever
    they come from (bound peaks, drawn or given negatives). ``name``: what the keys are, in messages."""
    distinct = list(dict.fromkeys(map(str, keys)))
    frame = pd.DataFrame({name: distinct})
    grouped = SplitRule("", name, name, rule.val_fraction, rule.test_fraction, rule.seed, rule.source,
                        rule.owner, rule.folds, rule.fold, rule.val_groups, rule.test_groups)  # fmt: skip
    splits, how = grouped.assign(frame)
    return dict(zip(distinct, splits, strict=True)), how


def split_view(splits: Mapping[str, SplitRecords], names: str | Sequence[str], modality: str) -> SequenceView:
    """The sequences of ``modality`` in one split of ``splits``, several, or ``all`` (in split order)."""
    chosen = (names,) if isinstance(names, str) else tuple(names)
    chosen = tuple(s for name in chosen for s in (SPLITS if name == "all" else (name,)))
    records = splits[chosen[0]] if chosen else splits["train"]
    rows = np.concatenate([splits[name].rows for name in chosen]) if chosen else np.zeros(0, np.int64)
    return SequenceView(records.reader, modality, rows)
