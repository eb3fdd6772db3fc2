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
from mmfuse.data.splits import SPLITS, SplitRule
from mmfuse.data.store.records import ROW_ID, RecordStore
from mmfuse.data.store.rows import Crop, SequenceView, SplitRecords, crop_sequence
from mmfuse.errors import ConfigError

__all__ = ["Crop", "GenomeWindows", "TableDataModule", "crop_sequence", "read_table"]


class TableDataModule(TableStore, TableLoaders, TableChecks, L.LightningDataModule):
    """Base of data modules that read one record per table row (see :class:`IsoformExpression`).

    Args:
        path: the table file (CSV/TSV/Parquet, optionally compressed), a local ``datasets``
            directory, a Hugging Face hub data set id (see :func:`~mmfuse.data.files.tables.source_parts`),
            or ``sample`` for the bundled synthetic data set.
        modalities: ``{modality: column}``; modalities must cover the task's backbones.
        id_column: unique record id, written next to predictions; ``null``: the file and data row
            (``train_0.tsv:17``, rows counted from 0), for tables without ids.
        gene_column: gene of each record, used for the split; ``null`` splits by record.
        split_column: column holding train/val/test; used when present in the table.
        val_fraction: share of genes in the validation split (when splitting by gene, and carved
            from the training genes when the split column or the files mark no record val).
        test_fraction: share of genes in the test split (when splitting by gene).
        split_seed: seed of the split by gene.
        missing_modalities: what to do with a record whose sequence of some modality is missing
            (empty or NaN, e.g. no protein for a non-coding transcript): ``mask`` keeps it with that
            modality marked absent (counted and logged; adapters ignore absent modalities) and drops
            records with no sequence at all (counted and logged, e.g. non-coding transcripts for a
            protein-only model); ``error`` refuses the table.
        predict_split: records to predict: ``all`` or one split.
        batch_size: training batch size.
        eval_batch_size: batch size of validation/test/predict (default: ``batch_size``).
        num_workers: DataLoader worker processes (tokenization runs there).
        sample_genes: genes in the sample data set (with ``path: sample``).
        sample_seed: seed of the sample data set.
        max_lengths: ``{modality: letters}``: longer sequences are cropped by ``crop`` once, in
            :meth:`setup` (counted in :attr:`crop_counts` and logged); default: no limit.
        crop: ``{modality: policy}`` for sequences over ``max_lengths``: ``center`` keeps the middle,
            ``end`` the end, ``start`` the start, ``error`` leaves them whole (the tokenizer then
            rejects them, naming the record). Defaults: dna ``center`` (around the TSS), rna ``end``
            (the 3' end with the 3'UTR, as IsoFormer), protein ``start`` (the N-terminus), other
            modalities ``error``.
        dataset_revision: branch, tag or commit of a hub data set ``path``.
        bucketing: batch records of similar total length (letters summed over modalities) together,
            so each batch is padded only to its own longest sequence (the Hugging Face Trainer's
            ``group_by_length``; see :class:`~mmfuse.data.sampler.BucketBatchSampler`). Training
            batches still come in random order; evaluation batches come longest first.
        bucket_pool: with ``bucketing``, how many batches' worth of records are sorted by length
            together; larger pools pad less but make batches less random.
        genome: cut a modality's sequences (DNA) from a genome FASTA by each record's coordinates,
            when the record is read: a FASTA path, or :class:`~mmfuse.data.genomics.windows.GenomeWindows`
            options (``{fasta: GRCh38.fa, window: 196608, contig_column: chr, ...}``).
        records_dir: where the records store (the table in a memory-mapped Arrow file, written
            once per source) is kept; default ``$MMFUSE_CACHE/records`` or ``~/.cache/mmfuse/records``.
        folds: cross-validation: split the genes (records, with ``gene_column: null``) into this many
            folds of equal size, so the isoforms of a gene never straddle folds; fold ``fold`` is the test
            split, ``val_fraction`` of the other genes validate, and the table's split column is not used.
            ``mmfuse cv`` runs one ``fit`` per fold.
        fold: with ``folds``, the fold that tests (0 … folds - 1).
    """

    def __init__(
        self,
        path: str,
        modalities: dict[str, str],
        id_column: str | None = "transcript_id",
        gene_column: str | None = "gene_id",
        split_column: str = "split",
        val_fraction: float = 0.1,
        test_fraction: float = 0.1,
        split_seed: int = 0,
        missing_modalities: Literal["mask", "error"] = "mask",
        predict_split: Literal["all", "train", "val", "test"] = "all",
        batch_size: int = 8,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        sample_genes: int = 240,
        sample_seed: int = 0,
        max_lengths: dict[str, int] | None = None,
        crop: dict[str, Crop] | None = None,
        dataset_revision: str | None = None,
        bucketing: bool = False,
        bucket_pool: int = 100,
        genome: GenomeWindows | str | None = None,
        records_dir: str | None = None,
        folds: int | None = None,
        fold: int = 0,
    ) -> None:
        super().__init__()
        if folds is not None and (isinstance(folds, bool) or not isinstance(folds, int) or folds < 2):
            raise ConfigError(f"`folds` (cross-validation) must be a whole number of at least 2, not {folds!r}")
        if folds is not None and (isinstance(fold, bool) or not isinstance(fold, int) or not 0 <= fold < folds):
            raise ConfigError(f"`fold` must be one of 0 … {folds - 1} (the fold that tests), not {fold!r}")
        if not isinstance(bucket_pool, int) or isinstance(bucket_pool, bool) or bucket_pool < 1:
            raise ConfigError(f"`bucket_pool` must be a positive whole number of batches, not {bucket_pool!r}")
        if not 0 <= val_fraction < 1 or not 0 <= test_fraction < 1 or val_fraction + test_fraction >= 1:
            raise ConfigError("val_fraction and test_fraction must be in [0, 1) and sum to less than 1")
        if isinstance(genome, str):
            genome = GenomeWindows(genome)
        elif isinstance(genome, Mapping):
            genome = GenomeWindows(**genome)
        if genome is not None and genome.modality in (modalities or {}):
            raise ConfigError(
                f"{genome.modality} is both read from column {modalities[genome.modality]!r} and cut from the genome "
                f"{genome.fasta}; remove `modalities.{genome.modality}` to cut it from the genome, or `genome` to read "
                f"the column"
            )
        if not modalities and genome is None:
            raise ConfigError("`modalities` is empty: map each modality to its column, e.g. {dna: DNA}")
        for option, value in (("batch_size", batch_size), ("eval_batch_size", eval_batch_size),
                              ("num_workers", num_workers)):  # fmt: skip
            least = 0 if option == "num_workers" else 1
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < least):
                raise ConfigError(f"data option {option} must be a whole number of at least {least}, not {value!r}")
        if missing_modalities not in ("mask", "error"):
            raise ConfigError(f"`missing_modalities` is 'mask' or 'error', not {missing_modalities!r}")
        self.path = path
        self.modalities = dict(modalities)
        self.id_column = id_column if id_column is not None else ROW_ID
        self.gene_column = gene_column
        self.split_column = split_column
        self.val_fraction, self.test_fraction, self.split_seed = val_fraction, test_fraction, split_seed
        self.folds, self.fold = folds, fold
        self.missing_modalities = missing_modalities
        self.predict_split = predict_split
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.num_workers = num_workers
        self.sample_genes, self.sample_seed = sample_genes, sample_seed
        self.max_lengths = dict(max_lengths or {})
        self.genome_windows, self.records_dir = genome, records_dir
        self.served = [*self.modalities, *([genome.modality] if genome is not None else [])]
        self.crop = {m: _DEFAULT_CROP.get(m, "error") for m in self.served} | dict(crop or {})
        self.dataset_revision = dataset_revision
        self.bucketing, self.bucket_pool = bucketing, bucket_pool
        for option, keys in (("max_lengths", self.max_lengths), ("crop", crop or {})):
            unknown = sorted(set(keys) - set(self.served))
            if unknown:
                raise ConfigError(
                    f"`{option}` names {unknown}, which are not among the modalities {sorted(self.served)}; "
                    f"use those names (or map the modality to its column in `modalities`)"
                )
        bad = {m: n for m, n in self.max_lengths.items() if not isinstance(n, int) or n < 1}
        if bad:
            raise ConfigError(f"`max_lengths` must be positive whole numbers of letters, not {bad}")
        policies = {m: c for m, c in self.crop.items() if c not in _KEPT and c != "error"}
        if policies:
            raise ConfigError(f"`crop` policies are center, end, start or error, not {policies}")
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
            categorical=[self.split_column, *(self._coordinate_columns[:2])],
        )
        table["__row__"] = np.arange(len(table))
        missing = table[self.id_column].isna().to_numpy() | (table[self.id_column].astype(str).str.strip() == "")
        if missing.any():
            raise DataError(
                f"{int(missing.sum())} records of {self.path} have no id in column {self.id_column!r} (the first at "
                f"data row {int(np.flatnonzero(missing)[0]) + 1}); give every record an id, or set id_column: null "
                f"to name records by file and row"
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

    def _assign_splits(self, table: pd.DataFrame) -> np.ndarray:
        rule = SplitRule(self.split_column, self.gene_column, self.id_column, self.val_fraction, self.test_fraction,
                         self.split_seed, self.path, type(self).__name__, self.folds, self.fold)  # fmt: skip
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
