"""The record reader of table data modules: which modalities each store row has, and their lengths.

:func:`record_reader` builds the :class:`~mmfuse.data.store.rows.RecordReader` a
:class:`~mmfuse.data.datasets.table.TableDataModule` composes with its records store
(:mod:`mmfuse.data.store.records`): per row and modality, whether it is present and its length after
cropping (computed in blocks over the store, never holding the sequences), the DNA windows cut from a
genome (:class:`~mmfuse.data.genomics.windows.WindowReader`), and the modalities derived from a row
when it is read (a TF's protein, a cell's string).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from lightning.pytorch.utilities import rank_zero_info

from mmfuse.data.genomics.windows import GenomeWindows, WindowReader
from mmfuse.data.store.records import RecordStore
from mmfuse.data.store.rows import ColumnStats, Crop, DerivedSequences, RecordReader

__all__ = ["record_reader"]


def record_reader(
    store: RecordStore,
    table: pd.DataFrame,
    ids: Sequence[str],
    *,
    id_column: str,
    modalities: Mapping[str, str],
    served: Sequence[str],
    derived: Mapping[str, DerivedSequences],
    genome: GenomeWindows | None,
    max_lengths: Mapping[str, int],
    crop: Mapping[str, Crop],
    path: str,
    owner: str,
) -> tuple[RecordReader, dict[str, Any], int]:
    """The reader of ``store``'s rows, each modality's statistics (``ColumnStats`` of a column, or the derived
    sequences), and how many genome windows run past a contig end (padded with N; logged, by ``owner``).

    ``table`` holds the genome's coordinate columns when ``genome`` is given; ``served`` orders the
    modalities: the columns', the derived ones, then the genome's.
    """
    stats = {m: ColumnStats(store, c) for m, c in modalities.items()} | dict(derived)
    present = np.ones((len(store), len(served)), dtype=bool)
    lengths = np.zeros((len(store), len(served)), dtype=np.int64)
    for j, column_stats in enumerate(stats.values()):
        present[:, j], lengths[:, j] = column_stats.present, column_stats.lengths
    windows, padded = None, 0
    if genome is not None:
        reader = WindowReader(genome, table, ids, path)
        lengths[:, -1] = genome.window
        padded = reader.padded
        if padded:
            rank_zero_info(f"{owner}: {padded} {genome.modality} windows padded with N past a contig end")
        windows = (genome.modality, reader)
    crops = {m: (n, crop[m]) for m, n in max_lengths.items() if crop[m] != "error"}
    for j, modality in enumerate(served):
        if modality in crops:
            lengths[:, j] = np.minimum(lengths[:, j], crops[modality][0])
    reader = RecordReader(store, id_column, dict(modalities), windows, present, lengths, crops, dict(derived))
    return reader, stats, padded
