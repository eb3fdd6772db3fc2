"""The records store and genome windows of table data modules.

:class:`TableStore` is mixed into :class:`~mmfuse.data.datasets.table.TableDataModule`: it writes the table
into a memory-mapped records store once (:mod:`mmfuse.data.store.records`; a table built in memory, as the
sample data, is stored the same way), names the columns kept there, and builds the
:class:`~mmfuse.data.store.rows.RecordReader` that reads a record by row in the workers: which modalities
each row has, their lengths after cropping, and the DNA windows cut from a genome
(:class:`~mmfuse.data.genomics.windows.WindowReader`).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from lightning.pytorch.utilities import rank_zero_info

from mmfuse.data.genomics.windows import GenomeWindows, WindowReader
from mmfuse.data.store.records import ROW_ID, RecordStore, open_records
from mmfuse.data.store.rows import ColumnStats, Crop, DerivedSequences, RecordReader

__all__ = ["TableStore"]


class TableStore:
    """Records store and record reader of table data modules.

    Mixed into :class:`~mmfuse.data.datasets.table.TableDataModule`, which provides the attributes below and the
    ``_label_columns`` hook.
    """

    path: str
    modalities: dict[str, str]
    id_column: str
    gene_column: str | None
    split_column: str
    served: list[str]
    genome_windows: GenomeWindows | None
    records_dir: str | None
    dataset_revision: str | None
    sample_genes: int
    sample_seed: int
    max_lengths: dict[str, int]
    crop: dict[str, Crop]
    padded_counts: dict[str, int]
    _store: RecordStore | None
    _stats: dict[str, ColumnStats]

    #: the file of a known hub data set, read instead of running its loading script (presets set it)
    _preset_file: str | None = None

    def _read(self) -> pd.DataFrame | None:
        """A table built in memory (the sample data; subclasses that assemble their records), or
        ``None``: ``path`` is read into the records store."""
        if self.path == "sample":
            from mmfuse.data.samples.isoform import make_sample_table

            return make_sample_table(self.sample_genes, self.sample_seed)
        return None

    def _stored_columns(self) -> list[str]:
        """The columns the records store keeps: ids, gene, split, sequences, labels, coordinates."""
        named = [self.id_column, self.gene_column, self.split_column, *self.modalities.values(),
                 *self._label_columns(), *self._coordinate_columns]  # fmt: skip
        return [c for c in dict.fromkeys(named) if c is not None and c != ROW_ID]

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
                self._store = open_records(self.path, self._stored_columns(), self.split_column, self.records_dir,
                                           self.dataset_revision, self._preset_file)  # fmt: skip
        return self._store

    def _derived(self, store: RecordStore, table: pd.DataFrame) -> dict[str, DerivedSequences]:
        """Modalities produced from a store row when it is read (a TF's protein, a cell's string); their
        names follow :attr:`modalities` in :attr:`served`. None by default."""
        return {}

    def _reader(self, store: RecordStore, table: pd.DataFrame, ids: list[str]) -> RecordReader:
        """Which modalities each store row has and their lengths (computed in blocks), and the genome windows."""
        derived = self._derived(store, table)
        self._stats = {m: ColumnStats(store, c) for m, c in self.modalities.items()} | derived
        present = np.ones((len(store), len(self.served)), dtype=bool)  # by `served`: columns, then the genome's
        lengths = np.zeros((len(store), len(self.served)), dtype=np.int64)
        for j, stats in enumerate(self._stats.values()):
            present[:, j], lengths[:, j] = stats.present, stats.lengths
        windows = None
        if self.genome_windows is not None:
            reader = WindowReader(self.genome_windows, table, ids, self.path)
            lengths[:, -1] = self.genome_windows.window
            self.padded_counts = {self.genome_windows.modality: reader.padded}
            if reader.padded:
                rank_zero_info(f"{type(self).__name__}: {reader.padded} {self.genome_windows.modality} windows padded "
                               f"with N past a contig end")  # fmt: skip
            windows = (self.genome_windows.modality, reader)
        crops = {m: (n, self.crop[m]) for m, n in self.max_lengths.items() if self.crop[m] != "error"}
        for j, modality in enumerate(self.served):
            if modality in crops:
                lengths[:, j] = np.minimum(lengths[:, j], crops[modality][0])
        return RecordReader(store, self.id_column, self.modalities, windows, present, lengths, crops, derived)
