"""Cells in a records store: each cell's sparse expression row, its ``GENE:value;…`` string made when read.

:func:`open_cells` converts an ``.h5ad`` file (or a dense cells × genes table) once, a block of cells at a
time (:class:`~mmfuse.data.files.h5ad.CellMatrix`: the matrix read with h5py and anndata's
``sparse_dataset``, never densified whole), into an Arrow IPC records store under ``records_dir``. The
store holds the obs columns a data module needs and, per cell, the entries its string writes (non-zero,
finite, genes with an id, in column order, duplicates summed): their gene indices (``list<int32>``),
values (``list<float32>``; ``float64`` when float32 cannot hold a file's values exactly) and the
string's length (``int64``), with the gene ids once in the store's metadata. Values are checked as they
are converted: a negative, NaN or infinite value is an error naming the cell and the gene.

The store is named by a digest of the file's :func:`~mmfuse.data.store.records.content` (path, size, the
SHA-256 of its bytes), the layer, the gene id column, the id column, the columns kept and :data:`FORMAT`:
the next run, every DataLoader worker and DDP rank map the same file, and a file changed in any way is
converted again. It is written atomically, under the store lock (one process writes, others wait), and sealed
with checksums that every read checks (:mod:`~mmfuse.data.store.integrity`).

:class:`CellSequences` makes a cell's string from its row when the record is read, in the process that
reads it (a :class:`~mmfuse.data.store.rows.DerivedSequences`), byte for byte what
:func:`~mmfuse.data.files.h5ad.cell_strings` writes for the same matrix.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mmfuse.data.errors import DataError
from mmfuse.data.files.h5ad import CellMatrix, dense_cells, format_values, h5ad_cells, value_lengths
from mmfuse.data.store.integrity import seal
from mmfuse.data.store.mapped import ROW_ID, STORE_VERSION, RecordStore, normalise_columns
from mmfuse.data.store.records import content, default_records_dir, digest, ensure_store
from mmfuse.io import atomic_path

__all__ = ["FORMAT", "GENES", "LENGTH", "VALUES", "CellSequences", "open_cells", "sample_cells"]

#: the store's columns: a cell's gene indices (into the metadata's gene ids), their values, its string's length
GENES, VALUES, LENGTH = "__cell_genes__", "__cell_values__", "__cell_length__"
#: the layout of a cell store, part of its name (raise it when the layout changes)
FORMAT = 1
#: cells a tokenizer checks itself besides those a gene list flags (see :meth:`CellSequences.checked_rows`)
SAMPLE = 64


class _Wide(Exception):
    """float32 cannot hold the values exactly: convert again with float64."""


def _batches(obs: Any, matrix: CellMatrix, row_ids: Sequence[str], value_type: Any) -> Iterator[Any]:
    """The store's record batches, a block of cells at a time: ``obs`` (Arrow) rows with their entries."""
    import pyarrow as pa

    name_lengths = np.array([len(g) if g is not None else 0 for g in matrix.genes], dtype=np.int64)
    wide = pa.types.is_float64(value_type)
    for start, stop, (counts, indices, values) in matrix.blocks():
        if not wide and not np.array_equal(values.astype(np.float32).astype(np.float64), values):
            raise _Wide
        offsets = np.concatenate([[0], np.cumsum(counts)])
        letters = np.concatenate([[0], np.cumsum(name_lengths[indices] + 1 + value_lengths(values))])  # GENE:value
        length = letters[offsets[1:]] - letters[offsets[:-1]] + np.maximum(counts - 1, 0)  # and the ';' between
        part = obs.slice(start, stop - start)
        offsets = pa.array(offsets.astype(np.int32))
        part = part.append_column(GENES, pa.ListArray.from_arrays(offsets, pa.array(indices.astype(np.int32))))
        part = part.append_column(VALUES, pa.ListArray.from_arrays(offsets, pa.array(values, type=value_type)))
        part = part.append_column(LENGTH, pa.array(length.astype(np.int64)))
        yield part.append_column(ROW_ID, pa.array(list(row_ids[start:stop]), pa.string()))


def _arrow_obs(table: pd.DataFrame, kept: list[str]) -> Any:
    import pyarrow as pa

    return normalise_columns(pa.Table.from_pandas(table[kept].reset_index(drop=True), preserve_index=False), kept)


def _meta(names: Sequence[str], source: str, matrix: CellMatrix, value_type: Any) -> dict[str, Any]:
    cells = {"format": FORMAT, "genes": list(matrix.genes), "values": str(value_type),
             "unnamed_genes": int(sum(g is None for g in matrix.genes)), "where": matrix.where}  # fmt: skip
    return {"version": STORE_VERSION, "names": list(names), "source": source, "cells": cells}


def _write(target: Path, obs: Any, matrix: CellMatrix, row_ids: Sequence[str], names: Sequence[str],
           source: str) -> None:  # fmt: skip
    import pyarrow as pa

    for value_type in (pa.float32(), pa.float64()):
        meta = {"mmfuse": json.dumps(_meta(names, source, matrix, value_type))}
        try:
            with atomic_path(target) as tmp:
                writer = None
                try:
                    for part in _batches(obs, matrix, row_ids, value_type):
                        if writer is None:
                            writer = pa.ipc.new_file(str(tmp), part.schema.with_metadata(meta))
                        writer.write_table(part)
                    if writer is None:
                        raise DataError(f"{source} holds no cells")
                finally:
                    if writer is not None:
                        writer.close()
                seal(tmp)
            return
        except _Wide:
            continue


def _reserved(columns: Sequence[Any], reserved: str, source: str) -> None:
    if reserved in columns:
        raise DataError(
            f"{source} has a column named {reserved!r}, the name `modalities` uses for the expression "
            f"matrix; rename that column."
        )


def open_cells(path: str, columns: Sequence[str], id_column: str, layer: str | None = None,
               gene_id_column: str | None = None, records_dir: str | Path | None = None,
               reserved: str = "X") -> RecordStore:  # fmt: skip
    """The cell store of an ``.h5ad`` file or a dense cells × genes table: opened, or converted first.

    Args:
        path: the ``.h5ad`` file or the CSV/TSV/Parquet table (see :func:`~mmfuse.data.files.h5ad.dense_cells`).
        columns: the obs (or table) columns to keep, where present: id, label, split, group, other modalities
            (in a table, every other column is a gene).
        id_column: the cell id column (an ``.h5ad`` file without it: the obs index, written to it).
        layer: ``None`` for X, a layer name, or ``raw.X`` (``.h5ad`` only).
        gene_id_column: the ``var`` column with gene ids (``None``: the ``var`` index; ``.h5ad`` only).
        records_dir: where stores are written (default :func:`~mmfuse.data.store.records.default_records_dir`).
        reserved: the column name no obs column may have (``modalities``' name of the matrix).
    """
    file = Path(path).expanduser()
    h5ad = file.suffix.lower() == ".h5ad"
    if h5ad and not file.is_file():
        raise DataError(f"{str(file)!r} does not exist; check the data module's `path`")
    kept = [c for c in dict.fromkeys(columns) if c != ROW_ID]

    def write(target: Path) -> None:
        if not h5ad:
            table, matrix = dense_cells(file, kept, id_column)
            obs = _arrow_obs(table, [c for c in kept if c in table.columns])
            row_ids = [f"{file.name}:{i}" for i in range(len(table))]
            _write(target, obs, matrix, row_ids, [*map(str, table.columns), reserved], path)
            return
        with h5ad_cells(file, layer, gene_id_column, id_column) as (obs, matrix):
            assert matrix is not None
            _reserved(obs.columns, reserved, path)
            table = obs.reset_index(drop=True)
            names = [*map(str, obs.columns)]
            if id_column not in table.columns and id_column != ROW_ID:
                table.insert(0, id_column, matrix.ids)
                names.insert(0, id_column)
            present = [c for c in kept if c in table.columns]
            _write(target, _arrow_obs(table, present), matrix, obs.index.astype(str).tolist(), [*names, reserved], path)
        matrix.log_unnamed()

    if not file.is_file():  # a table's reader says what is wrong with the path
        dense_cells(file, kept, id_column)
        raise DataError(f"{str(file)!r} is not a file of cells; give an .h5ad file or a cells x genes table")
    described = content(file)

    def unchanged() -> None:  # the file converted is the one the store's name digests
        if content(file) != described:
            raise DataError(f"{path} changed while its cell store was being written; run again once it stays unchanged")

    key = digest({"v": STORE_VERSION, "cells": FORMAT, "file": described, "layer": layer,
                   "genes": gene_id_column, "id": id_column, "columns": kept})  # fmt: skip
    directory = Path(records_dir).expanduser() if records_dir is not None else default_records_dir()
    return ensure_store(directory / f"cells-{key}.arrow", write, path, unchanged)


def sample_cells(counts: Any, genes: Sequence[str], obs: pd.DataFrame, columns: Sequence[str],
                 id_column: str, source: str = "sample") -> RecordStore:  # fmt: skip
    """A cell store held in memory, in the layout of :func:`open_cells`, of a matrix some code made (the sample)."""
    import pyarrow as pa

    from mmfuse.data.files.h5ad import gene_ids

    ids = obs[id_column].astype(str).tolist()
    matrix = CellMatrix(lambda a, b: counts[a:b], gene_ids(genes, "the sample"), ids, "the sample",
                        len(genes), np.dtype(counts.dtype))  # fmt: skip
    table = _arrow_obs(obs.reset_index(drop=True), [c for c in dict.fromkeys(columns) if c in obs.columns])
    row_ids = [f"row:{i}" for i in range(len(obs))]
    for value_type in (pa.float32(), pa.float64()):
        try:
            parts = list(_batches(table, matrix, row_ids, value_type))
        except _Wide:
            continue
        meta = _meta([*map(str, obs.columns), "X"], source, matrix, value_type)
        whole = pa.concat_tables(parts).replace_schema_metadata({"mmfuse": json.dumps(meta)})
        return RecordStore(whole, meta["names"], source, meta=meta)
    raise AssertionError("float64 holds every value")


class CellSequences:
    """Cell strings made from a cell store's rows when read (a :class:`~mmfuse.data.store.rows.DerivedSequences`).

    ``lengths`` (each string's length) was computed when the store was written, so nothing builds the
    strings before training; ``present``: the cell has a non-zero gene.

    Args:
        store: a store of :func:`open_cells` or :func:`sample_cells`.
        source: where the cells come from, for messages.
    """

    def __init__(self, store: RecordStore, source: str) -> None:
        self.store, self.source = store, source
        self.genes: list[str | None] = list(store.meta["cells"]["genes"])
        self.lengths = store.column(LENGTH).to_numpy().astype(np.int64)
        self.present = self.lengths > 0
        self.not_text = np.zeros(len(self.lengths), dtype=bool)
        self._known: np.ndarray | None = None  # store rows with a gene the tokenizer reads (expect_genes)
        self._columns: np.ndarray | None = None  # each gene's "GENE:" prefix, made on the first read
        self._reads = 0
        store.release()

    @property
    def counts(self) -> dict[str, int]:
        """``{"cells": n, "empty_cells": cells without a non-zero gene}``."""
        return {"cells": len(self.lengths), "empty_cells": int((~self.present).sum())}

    def __call__(self, row: int) -> str:
        if self._columns is None:  # per process (a spawned worker unpickles the store, and maps it again)
            self._columns = np.array([None if g is None else f"{g}:" for g in self.genes], dtype=object)
        prefixes = self._columns
        indices = self.store.scalar(GENES, row).values.to_numpy(zero_copy_only=False)
        numbers = self.store.scalar(VALUES, row).values.to_numpy(zero_copy_only=False).astype(np.float64)
        self._reads += 1
        if self._reads % 16 == 0:  # let the pages read so far leave this process's resident memory
            self.store.release()
        return ";".join((prefixes[indices] + format_values(numbers)).tolist())

    def expect_genes(self, known: Collection[str] | None) -> None:
        """Flags the cells none of whose genes is in ``known`` (the genes a tokenizer reads, e.g. Geneformer's);
        ``None`` forgets the flags.

        Only a cell with no more expressed genes than there are stored genes ``known`` lacks can have none
        of them: those cells' gene indices are read (in blocks, from the store), the others' are not.
        """
        if known is None:
            self._known = None
            return
        import pyarrow as pa

        hit = np.array([g is not None and g in known for g in self.genes], dtype=bool)
        unknown = sum(g is not None and g not in known for g in self.genes)
        self._known = self.present.copy()
        for row, chunk in self.store.chunks(GENES):
            counts = np.diff(chunk.offsets.to_numpy())
            doubt = np.flatnonzero((counts > 0) & (counts <= unknown))
            for start in range(0, len(doubt), 1024):
                picked = doubt[start : start + 1024]
                part = chunk.take(pa.array(picked))
                offsets = part.offsets.to_numpy()
                found = hit[part.flatten().to_numpy(zero_copy_only=False)]
                self._known[row + picked] = np.logical_or.reduceat(found, offsets[:-1] - offsets[0])  # none empty
                self.store.release()

    def checked_rows(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The positions in ``rows`` the tokenizer checks, and how many cells each stands for.

        Running the tokenizer over every cell (500k cells: minutes) would check little that conversion
        did not: the store holds only finite, positive values of genes with ids, each string written by
        one function. What is left is what the tokenizer reads: a bounded sample (the longest cell and
        up to :data:`SAMPLE` others, evenly spaced) checks the format and the length; and when a
        tokenizer lists its genes (:meth:`expect_genes`, called for Geneformer's tokenizer), every cell
        none of whose genes it reads is found over the gene indices, and up to :data:`SAMPLE` of them are
        checked, standing for all of them (so the count is exact and the first ones are named).
        """
        n = len(rows)
        if n == 0:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
        sample = np.linspace(0, n - 1, min(n, SAMPLE)).round().astype(np.int64)
        sample = np.union1d(sample, [int(np.argmax(self.lengths[rows]))])
        if self._known is None:
            return sample, np.ones(len(sample), dtype=np.int64)
        suspects = np.flatnonzero(~self._known[rows])
        picked = suspects[:SAMPLE]
        weights = np.ones(len(picked), dtype=np.int64)
        if len(picked):
            weights[-1] += len(suspects) - len(picked)  # the unchecked ones fail as the checked ones do
        sample = np.setdiff1d(sample, suspects)
        positions = np.concatenate([sample, picked])
        order = np.argsort(positions, kind="stable")
        return positions[order], np.concatenate([np.ones(len(sample), dtype=np.int64), weights])[order]

    def __getstate__(self) -> dict[str, Any]:
        return self.__dict__ | {"_columns": None}
