"""The shared part of table-based data modules: reading, splitting, cropping, missing modalities, loaders.

A table has one record per row: an id, one sequence column per modality (or coordinates to cut DNA
from a genome, :class:`~mmfuse.data.genomics.windows.GenomeWindows`), and labels (targets or a class). It
comes from a CSV/TSV/Parquet file, a directory of them, a Hugging Face ``datasets`` hub id or a
local data set directory, and is read into a memory-mapped records store once
(:mod:`mmfuse.data.store.records`); records are read from it by row in the DataLoader workers, so no
process holds the sequences. Subclasses say which columns are labels and how to turn them into
arrays (:meth:`TableDataModule._labels`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal

import lightning as L
import numpy as np
import pandas as pd
from lightning.pytorch.utilities import rank_zero_info

from mmfuse.data.collate import MultiModalCollate
from mmfuse.data.datasets.checks import _DEFAULT_CROP, _KEPT, TableChecks
from mmfuse.data.datasets.loaders import TableLoaders
from mmfuse.data.datasets.store import TableStore
from mmfuse.data.errors import DataError
from mmfuse.data.files.tables import read_table
from mmfuse.data.genomics.windows import GenomeWindows
from mmfuse.data.options import (
    GeneSplit,
    LengthOptions,
    LoaderOptions,
    SampleOptions,
    SplitOptions,
    TableSource,
    group,
)  # fmt: skip
from mmfuse.data.splits import SPLITS, SplitRule
from mmfuse.data.store.records import ROW_ID, RecordStore
from mmfuse.data.store.rows import Crop, SequenceView, SplitRecords, crop_sequence
from mmfuse.errors import ConfigError

__all__ = ["Crop", "GenomeWindows", "TableDataModule", "crop_sequence", "read_table"]


class TableDataModule(TableStore, TableLoaders, TableChecks, L.LightningDataModule):
    """Base of data modules that read one record per table row (see :class:`IsoformExpression`).

    Args:
        source: where the records come from (:class:`~mmfuse.data.options.TableSource`), or just the
            table's path.
        modalities: ``{modality: column}``; modalities must cover the task's backbones.
        missing_modalities: what to do with a record whose sequence of some modality is missing
            (empty or NaN, e.g. no protein for a non-coding transcript): ``mask`` keeps it with that
            modality marked absent (counted and logged; adapters ignore absent modalities) and drops
            records with no sequence at all (counted and logged, e.g. non-coding transcripts for a
            protein-only model); ``error`` refuses the table.
        split: how records are split (:class:`~mmfuse.data.options.SplitOptions`; by gene by default).
        loader: batch sizes, workers, bucketing (:class:`~mmfuse.data.options.LoaderOptions`).
        lengths: maximum lengths and crop policies (:class:`~mmfuse.data.options.LengthOptions`).
        sample: size and seed of ``source: sample`` (:class:`~mmfuse.data.options.SampleOptions`).
    """

    #: the default size of ``source: sample`` (genes)
    _sample_size = 240

    def __init__(
        self,
        source: TableSource | str = TableSource(),
        modalities: dict[str, str] | None = None,
        missing_modalities: Literal["mask", "error"] = "mask",
        split: GeneSplit = GeneSplit(),
        loader: LoaderOptions = LoaderOptions(),
        lengths: LengthOptions = LengthOptions(),
        sample: SampleOptions = SampleOptions(),
    ) -> None:
        super().__init__()
        self._set_options(group(source, TableSource, "path"), modalities or {}, missing_modalities,
                          group(split, GeneSplit), group(loader, LoaderOptions), group(lengths, LengthOptions),
                          group(sample, SampleOptions))  # fmt: skip

    def _set_options(self, source: TableSource, modalities: Mapping[str, str], missing_modalities: str,
                     split: SplitOptions, loader: LoaderOptions, lengths: LengthOptions,
                     sample: SampleOptions) -> None:  # fmt: skip
        """Checks the option groups and keeps what the store, splitter and loaders read."""
        self.options = {"source": source, "split": split, "loader": loader, "lengths": lengths, "sample": sample}
        genome = source.genome
        if isinstance(genome, str):
            genome = GenomeWindows(genome)
        if genome is not None and genome.modality in modalities:
            raise ConfigError(
                f"{genome.modality} is both read from column {modalities[genome.modality]!r} and cut from the genome "
                f"{genome.fasta}; remove `modalities.{genome.modality}` to cut it from the genome, or "
                f"`source.genome` to read the column"
            )
        if not modalities and genome is None:
            raise ConfigError("`modalities` is empty: map each modality to its column, e.g. {dna: DNA}")
        if missing_modalities not in ("mask", "error"):
            raise ConfigError(f"`missing_modalities` is 'mask' or 'error', not {missing_modalities!r}")
        self.path = source.path
        self.modalities = dict(modalities)
        self.id_column = source.id_column if source.id_column is not None else ROW_ID
        self.gene_column = split.group
        self.split_column = split.column if split.column is not None else "split"
        self.val_fraction = 0.1 if split.val_fraction is None else split.val_fraction
        self.test_fraction, self.split_seed = split.test_fraction, split.seed
        self.folds, self.fold = split.folds, split.fold
        self.missing_modalities = missing_modalities
        self.predict_split = split.predict
        self.batch_size = loader.batch_size
        self.eval_batch_size = loader.eval_batch_size or loader.batch_size
        self.num_workers = loader.num_workers
        self.sample_genes = sample.size if sample.size is not None else self._sample_size
        self.sample_seed = sample.seed
        self.max_lengths = dict(lengths.max or {})
        self.genome_windows, self.records_dir = genome, source.records_dir
        self.served = [*self.modalities, *([genome.modality] if genome is not None else [])]
        self.crop = {m: _DEFAULT_CROP.get(m, "error") for m in self.served} | dict(lengths.crop or {})
        self.dataset_revision = source.revision
        self.bucketing, self.bucket_pool = loader.bucketing, loader.bucket_pool
        for option, keys in (("lengths.max", self.max_lengths), ("lengths.crop", lengths.crop or {})):
            unknown = sorted(set(keys) - set(self.served))
            if unknown:
                raise ConfigError(
                    f"`{option}` names {unknown}, which are not among the modalities {sorted(self.served)}; "
                    f"use those names (or map the modality to its column in `modalities`)"
                )
        bad = {m: n for m, n in self.max_lengths.items() if not isinstance(n, int) or n < 1}
        if bad:
            raise ConfigError(f"`lengths.max` must be positive whole numbers of letters, not {bad}")
        policies = {m: c for m, c in self.crop.items() if c not in _KEPT and c != "error"}
        if policies:
            raise ConfigError(f"`lengths.crop` policies are center, end, start or error, not {policies}")
        self.crop_counts: dict[str, int] = {}
        self._splits: dict[str, SplitRecords] | None = None
        self._store: RecordStore | None = None
        self.padded_counts: dict[str, int] = {}  # genome windows padded with N past a contig end
        self._collate: MultiModalCollate | None = None
        self._validated: set[str] = set()
        self.absent_counts: dict[str, int] = {}
        self._split_by: str | None = None  # how setup split the records, for an empty split's message

    # subclass hooks -------------------------------------------------------------------------------
    #: the option that names the label columns, in messages
    _label_option = "label columns"
    #: whether label columns hold numbers (parsed in Arrow when a table stores them as text)
    _numeric_label_columns = False

    @property
    def _numeric_labels(self) -> list[str]:
        return self._label_columns() if self._numeric_label_columns else []

    def _label_columns(self) -> list[str]:
        """Columns holding the labels (required for fit/validate/test, optional for predict)."""
        raise NotImplementedError

    def _labels(self, table: pd.DataFrame) -> tuple[pd.DataFrame, np.ndarray]:
        """Checks the labels, drops records by the subclass's policy, returns ``(table, labels)``."""
        raise NotImplementedError

    # records and splits ---------------------------------------------------------------------------
    def setup(self, stage: str | None = None) -> None:
        """Reads and checks the table, and splits it (once). Sequences stay in the records store."""
        if self._splits is not None:
            return
        store = self.records()
        self._check_columns(store.names, needs_labels=stage != "predict")
        meta = [self.id_column, self.gene_column, self.split_column, *self._label_columns(), *self._coordinate_columns]
        table = store.frame(
            [c for c in meta if c is not None],
            numeric={**dict.fromkeys(self._numeric_labels, "float32"),
                     **dict.fromkeys(self._coordinate_columns[2:], "float64")},  # fmt: skip
            categorical=self._categorical_columns(),
        )
        table["__row__"] = np.arange(len(table))
        missing = table[self.id_column].isna().to_numpy() | (table[self.id_column].astype(str).str.strip() == "")
        if missing.any():
            raise DataError(
                f"{int(missing.sum())} records of {self.path} have no id in column {self.id_column!r} (the first at "
                f"data row {int(np.flatnonzero(missing)[0]) + 1}); give every record an id, or set "
                f"source: {{id_column: null}} to name records by file and row"
            )
        ids = table[self.id_column].astype(str)
        duplicated = ids[ids.duplicated()].unique()
        if len(duplicated):
            raise DataError(
                f"{len(duplicated)} ids occur more than once in column {self.id_column!r} of {self.path} "
                f"(e.g. {', '.join(map(repr, duplicated[:3]))}); ids must be unique. Make them unique (drop repeated "
                f"rows, or rename the ids), or set id_column to a column with one value per record"
                f"{self._unique_columns(table)}."
            )
        reader = self._reader(store, table, ids.tolist())
        labels = None
        # prediction needs no labels: every record is predicted, whatever its label holds
        if stage != "predict" and all(c in table.columns for c in self._label_columns()):
            table, labels = self._labels(table)
            ids = table[self.id_column].astype(str)
        rows = table["__row__"].to_numpy(dtype=np.int64)
        splits = self._assign_splits(table)
        self._check_text(store, rows, ids.tolist())
        self._count_crops(reader, rows)
        keep = self._check_missing(ids.tolist(), reader.present[rows])
        splits = np.where(keep, splits, "dropped")
        self._splits = {}
        for name in SPLITS:
            chosen = np.flatnonzero(splits == name)
            self._splits[name] = SplitRecords(reader, rows[chosen], labels[chosen] if labels is not None else None)
        counts = ", ".join(f"{k} {len(v)}" for k, v in self._splits.items())
        rank_zero_info(f"{type(self).__name__}: {int(keep.sum())} records from {self.path} ({counts})")

    def _categorical_columns(self) -> list[str]:
        """Text columns of few distinct values read as pandas categoricals (one Python string per value, not
        per record): the split, the group (gene) and the contig and strand."""
        return [c for c in (self.split_column, self.gene_column, *self._coordinate_columns[:2]) if c is not None]

    def _assign_splits(self, table: pd.DataFrame) -> np.ndarray:
        split = self.options["split"]
        rule = SplitRule(self.split_column if split.column is not None else "", self.gene_column, self.id_column,
                         self.val_fraction, self.test_fraction, self.split_seed, self.path, type(self).__name__,
                         self.folds, self.fold, split.val_groups, split.test_groups)  # fmt: skip
        splits, self._split_by = rule.assign(table)
        return splits

    def split_ids(self, split: str) -> Sequence[str]:
        """Record ids of one split (after :meth:`setup`)."""
        self.setup()
        assert self._splits is not None
        return list(self._splits[split].ids)

    def split_sequences(self, splits: str | Sequence[str], modality: str) -> SequenceView:
        """The sequences of ``modality`` in one split, several, or ``all``, as batches carry them (after the
        length policy), read lazily from the records store; records lacking the modality are left out."""
        self.setup()
        assert self._splits is not None
        names = SPLITS if splits == "all" else (splits,) if isinstance(splits, str) else tuple(splits)
        names = tuple(s for name in names for s in (SPLITS if name == "all" else (name,)))
        records = self._splits[names[0]] if names else self._splits["train"]
        rows = np.concatenate([self._splits[name].rows for name in names]) if names else np.zeros(0, np.int64)
        return SequenceView(records.reader, modality, rows)

    def split_labels(self, split: str) -> np.ndarray | None:
        """Labels of one split, in record order (``None`` for a table without labels)."""
        self.setup()
        assert self._splits is not None
        return self._splits[split].labels
