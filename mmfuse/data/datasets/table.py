"""The shared part of table-based data modules: reading, splitting, cropping, missing modalities, loaders.

A table has one record per row: an id, one sequence column per modality (or coordinates to cut DNA
from a genome, :class:`~mmfuse.data.genomics.windows.GenomeWindows`), and labels (targets or a class). It
comes from a CSV/TSV/Parquet file, a directory of them, a Hugging Face ``datasets`` hub id or a
local data set directory, and is read into a memory-mapped records store once
(:mod:`mmfuse.data.store.records`); records are read from it by row in the DataLoader workers, so no
process holds the sequences. Subclasses say which columns are labels and how to turn them into
arrays (:meth:`TableDataModule._labels`), and may build their records store themselves
(:meth:`TableDataModule.records`) or derive modalities from a store row (:meth:`TableDataModule._derived`).

A data module composes, rather than inherits, the rest: the records store and its reader
(:func:`~mmfuse.data.datasets.store.record_reader`), the checks and their messages
(:class:`~mmfuse.data.datasets.checks.RecordChecks`), the splitter (:class:`~mmfuse.data.splits.SplitRule`)
and the loader builder (:class:`~mmfuse.data.datasets.loaders.LoaderBuilder`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

import lightning as L
import numpy as np
import pandas as pd
from lightning.pytorch.utilities import rank_zero_info
from torch.utils.data import DataLoader, Dataset

from mmfuse.data.collate import MultiModalCollate
from mmfuse.data.datasets.checks import (
    DEFAULT_CROP,
    RecordChecks,
    check_length_options,
    check_modality_options,
    crop_hint,
    fill_hint,
    validates,
)
from mmfuse.data.datasets.loaders import LoaderBuilder, check_served, check_tokenizer, deferred, select
from mmfuse.data.datasets.store import record_reader
from mmfuse.data.files.tables import read_table
from mmfuse.data.genomics.windows import GenomeWindows
from mmfuse.data.options import (
    GeneSplit,
    LengthOptions,
    LoaderOptions,
    SampleOptions,
    TableSource,
    group,
)  # fmt: skip
from mmfuse.data.splits import SPLITS, SplitRule, split_view
from mmfuse.data.store.records import ROW_ID, RecordStore, open_records
from mmfuse.data.store.rows import Crop, DerivedSequences, RecordReader, SequenceView, SplitRecords, crop_sequence
from mmfuse.tokenizers import Tokenizer

__all__ = ["Crop", "GenomeWindows", "TableDataModule", "crop_sequence", "read_table"]


def _split_records(reader: RecordReader, rows: np.ndarray, labels: np.ndarray | None,
                   splits: np.ndarray) -> dict[str, SplitRecords]:  # fmt: skip
    """The records of each split (``splits``: each row's split name, ``dropped`` for the rows left out)."""
    chosen = {name: np.flatnonzero(splits == name) for name in SPLITS}
    return {name: SplitRecords(reader, rows[c], None if labels is None else labels[c]) for name, c in chosen.items()}


class TableDataModule(L.LightningDataModule):
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
        source, split = group(source, TableSource, "path"), group(split, GeneSplit)
        sample = group(sample, SampleOptions)
        loader, lengths = group(loader, LoaderOptions), group(lengths, LengthOptions)
        self.options = {"source": source, "split": split, "loader": loader, "lengths": lengths, "sample": sample}
        genome = GenomeWindows(source.genome) if isinstance(source.genome, str) else source.genome
        self.path, self.modalities = source.path, dict(modalities or {})
        check_modality_options(self.modalities, genome, missing_modalities)
        self.id_column = source.id_column if source.id_column is not None else ROW_ID
        self.gene_column = split.group
        self.split_column = split.column if split.column is not None else "split"
        self.missing_modalities = missing_modalities
        self.predict_split = split.predict
        self.batch_size = loader.batch_size
        self.eval_batch_size = loader.eval_batch_size or loader.batch_size
        self.sample_genes = sample.size if sample.size is not None else self._sample_size
        self.sample_seed = sample.seed
        self.max_lengths = dict(lengths.max or {})
        self.genome_windows, self.records_dir = genome, source.records_dir
        self.served = [*self.modalities, *([genome.modality] if genome is not None else [])]
        self.crop = {m: DEFAULT_CROP.get(m, "error") for m in self.served} | dict(lengths.crop or {})
        check_length_options(self.max_lengths, self.crop, self.served)
        self.crop_counts: dict[str, int] = {}
        self._splits: dict[str, SplitRecords] | None = None
        self._store: RecordStore | None = None
        self.padded_counts: dict[str, int] = {}  # genome windows padded with N past a contig end
        self._collate: MultiModalCollate | None = None
        self._validated: set[str] = set()
        self.absent_counts: dict[str, int] = {}
        self._split_by: str | None = None  # how setup split the records, for an empty split's message
        self._stats: dict[str, Any] = {}
        #: the records `predict` reads instead of its split, set by :meth:`select_records`
        self._selected: Dataset | None = None

    # subclass hooks -------------------------------------------------------------------------------
    #: the option that names the label columns, in messages
    _label_option = "label columns"
    #: whether label columns hold numbers (parsed in Arrow when a table stores them as text)
    _numeric_label_columns = False

    def _label_columns(self) -> list[str]:
        """Columns holding the labels (required for fit/validate/test, optional for predict)."""
        raise NotImplementedError

    def _labels(self, table: pd.DataFrame) -> tuple[pd.DataFrame, np.ndarray]:
        """Checks the labels, drops records by the subclass's policy, returns ``(table, labels)``."""
        raise NotImplementedError

    # the records store ----------------------------------------------------------------------------
    #: the file of a known hub data set, read instead of running its loading script (presets set it)
    _preset_file: str | None = None

    def _read(self) -> pd.DataFrame | None:
        """A table built in memory (the sample data), or ``None``: ``path`` is read into the records store."""
        if self.path == "sample":
            from mmfuse.data.samples.isoform import make_sample_table

            return make_sample_table(self.sample_genes, self.sample_seed)
        return None

    @property
    def _coordinate_columns(self) -> list[str]:
        return self.genome_windows.columns if self.genome_windows is not None else []

    def prepare_data(self) -> None:
        """Writes the records store once (Lightning calls this in one process per node, before setup)."""
        self.records()

    def records(self) -> RecordStore:
        """The records store of ``path``: opened, or written on first use (see :mod:`mmfuse.data.store.records`)."""
        if self._store is None:
            frame = self._read()
            if frame is not None:
                self._store = RecordStore.from_frame(frame, self.path)
            else:
                named = [self.id_column, self.gene_column, self.split_column, *self.modalities.values(),
                         *self._label_columns(), *self._coordinate_columns]  # fmt: skip
                kept = [c for c in dict.fromkeys(named) if c is not None and c != ROW_ID]
                self._store = open_records(self.path, kept, self.split_column, self.records_dir,
                                           self.options["source"].revision, self._preset_file,
                                           text_columns=[self.id_column])  # ids as written: NA is an id
        return self._store

    def _derived(self, store: RecordStore, table: pd.DataFrame) -> dict[str, DerivedSequences]:
        """Modalities made from a store row when it is read (a TF's protein, a cell's string; after the columns')."""
        return {}

    def _reader(self, store: RecordStore, table: pd.DataFrame, ids: Sequence[str]) -> RecordReader:
        """The reader of the store's rows (see :func:`~mmfuse.data.datasets.store.record_reader`)."""
        reader, self._stats, padded = record_reader(
            store, table, ids, id_column=self.id_column, modalities=self.modalities, served=self.served,
            derived=self._derived(store, table), genome=self.genome_windows, max_lengths=self.max_lengths,
            crop=self.crop, path=self.path, owner=type(self).__name__,
        )  # fmt: skip
        if self.genome_windows is not None:
            self.padded_counts = {self.genome_windows.modality: padded}
        return reader

    # records and splits ---------------------------------------------------------------------------
    def setup(self, stage: str | None = None) -> None:
        """Reads and checks the table, and splits it (once). Sequences stay in the records store."""
        if self._splits is not None:
            return
        store = self.records()
        checks = RecordChecks(type(self).__name__, self.path, self.id_column, self.modalities, self.served,
                              self.genome_windows, self.crop, self.missing_modalities)  # fmt: skip
        checks.columns(store.names, self._label_columns() if stage != "predict" else [], self._label_option)
        meta = [self.id_column, self.gene_column, self.split_column, *self._label_columns(), *self._coordinate_columns]
        table = store.frame(
            [c for c in meta if c is not None],
            numeric={**dict.fromkeys(self._label_columns() if self._numeric_label_columns else [], "float32"),
                     **dict.fromkeys(self._coordinate_columns[2:], "float64")},  # fmt: skip
            categorical=self._categorical_columns(),
        )
        table["__row__"] = np.arange(len(table))
        every_id = checks.ids(table, self._label_columns())
        reader = self._reader(store, table, every_id)
        labels = None
        # prediction needs no labels: every record is predicted, whatever its label holds
        if stage != "predict" and all(c in table.columns for c in self._label_columns()):
            table, labels = self._labels(table)
        rows = table["__row__"].to_numpy(dtype=np.int64)
        ids = every_id[rows]
        splits = self._assign_splits(table)
        checks.text(self._stats, store, rows, ids)
        self.crop_counts = checks.crops(reader, self._stats, rows)
        keep, self.absent_counts = checks.missing(ids, reader.present[rows])
        self._too_small = self._rule.too_small(table[keep], stage, validates(self.trainer))  # for fill_hint
        self._splits = _split_records(reader, rows, labels, np.where(keep, splits, "dropped"))
        counts = ", ".join(f"{k} {len(v)}" for k, v in self._splits.items())
        rank_zero_info(f"{type(self).__name__}: {int(keep.sum())} records from {self.path} ({counts})")

    def _categorical_columns(self) -> list[str]:
        """Few-valued text columns read as categoricals (one string per value): split, group, contig, strand."""
        return [c for c in (self.split_column, self.gene_column, *self._coordinate_columns[:2]) if c is not None]

    def _assign_splits(self, table: pd.DataFrame) -> np.ndarray:
        self._rule = SplitRule.of(self.options["split"], self.id_column, self.path, type(self).__name__)
        splits, self._split_by = self._rule.assign(table)
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
        return split_view(self._splits, splits, modality)

    def split_labels(self, split: str) -> np.ndarray | None:
        """Labels of one split, in record order (``None`` for a table without labels)."""
        self.setup()
        assert self._splits is not None
        return self._splits[split].labels

    # tokenizers and loaders -----------------------------------------------------------------------
    def attach_tokenizers(self, tokenizers: Mapping[str, Tokenizer]) -> None:
        """Uses ``tokenizers`` (one per modality) in the collate function (each modality's batch entry is its
        tokenizer's output, see :class:`~mmfuse.data.collate.MultiModalCollate`), after checking every sequence.

        Raises:
            DataError: a modality without a column, or a sequence some tokenizer rejects (the first
                few are listed with their record ids).
        """
        check_served(tokenizers, self.served, self.genome_windows)
        self.setup()
        for modality, tokenizer in tokenizers.items():
            key = f"{modality}:{tokenizer!r}"
            if key not in self._validated:
                self._validate(modality, tokenizer)
                self._validated.add(key)
        self._collate = MultiModalCollate(tokenizers)

    def _validate(self, modality: str, tokenizer: Tokenizer) -> None:
        check_tokenizer(self.split_sequences("all", modality), tokenizer, self.modalities, self.path,
                        self.genome_windows, lambda limit: crop_hint(modality, limit, self.crop[modality]))  # fmt: skip

    def _loaders(self) -> LoaderBuilder:
        if self._collate is None:
            raise RuntimeError(
                f"{type(self).__name__} has no tokenizers: a task attaches its backbones' tokenizers in its "
                f"setup(); outside a Trainer call `datamodule.attach_tokenizers(task.model.tokenizers())` first."
            )
        assert self._splits is not None
        loader = self.options["loader"]
        return LoaderBuilder(self._splits, self._collate, self.batch_size, self.eval_batch_size, loader.num_workers,
                             loader.bucketing, loader.bucket_pool, self.path,
                             lambda split: fill_hint(split, self._split_by, self.split_column, self._too_small))

    # each hook returns a Refused loader rather than raising (see mmfuse.data.datasets.loaders.Refused)
    def train_dataloader(self) -> DataLoader:
        trainer = getattr(self, "trainer", None)
        return deferred(lambda: self._loaders().loader("train", shuffle=True, trainer=trainer), self)

    def val_dataloader(self) -> DataLoader:
        return deferred(lambda: self._loaders().loader("val", shuffle=False), self)

    def test_dataloader(self) -> DataLoader:
        return deferred(lambda: self._loaders().loader("test", shuffle=False), self)

    def predict_dataloader(self) -> DataLoader:
        if self._selected is not None:
            return deferred(lambda: self._loaders().selected(self._selected), self)
        return deferred(lambda: self._loaders().loader(self.predict_split, shuffle=False), self)

    def select_records(self, ids: Sequence[str]) -> None:
        """``predict`` reads only the records ``ids`` (in this order, each once) from now on, with their sequences.

        Raises:
            DataError: ids the table does not have (a few listed, with ids it has).
        """
        self.setup("predict")
        assert self._splits is not None
        self._selected = select(self._splits, ids, self.path)
