"""Expression matrices → cell strings: AnnData ``.h5ad`` files and dense cells × genes tables.

Each cell becomes one string of its non-zero genes, ``GENE:value;GENE:value;…`` in the matrix's gene
order, the input of :class:`~mmfuse.backbones.Geneformer` (whose tokenizer turns it into the rank
value encoding, in the DataLoader workers). Whole numbers are written as integers (counts stay
counts), other values with six significant digits (``%.6g``); the ranks Geneformer reads do not
change. Matrices are converted a block of cells at a time, never densified whole.
:class:`~mmfuse.data.CellClassification` reads its data through these functions.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from lightning.pytorch.utilities import rank_zero_info

from mmfuse.data.errors import DataError
from mmfuse.data.files.tables import read_table

__all__ = [
    "RAW",
    "CellMatrix",
    "cell_entries",
    "cell_strings",
    "dense_cells",
    "format_values",
    "h5ad_cells",
    "read_dense_cells",
    "read_h5ad_cells",
    "value_lengths",
]

#: the ``layer`` value that reads AnnData's ``raw.X`` (the raw counts of CELLxGENE files) and ``raw.var``
RAW = "raw.X"
#: matrix entries converted at once (a dense chunk of 2**22 float64 values takes 32 MiB)
_CHUNK_VALUES = 2**22


# ---------------------------------------------------------------------------------------------
# matrix → cell strings


def gene_ids(values: Sequence[Any], where: str) -> np.ndarray:
    """Gene ids as an object array, ``None`` for missing or empty ones; ids with ``:`` or ``;`` are refused."""
    genes = np.array([None if v is None or (not isinstance(v, str) and pd.isna(v)) else str(v).strip() or None
                      for v in values], dtype=object)  # fmt: skip
    bad = [g for g in genes if g is not None and (":" in g or ";" in g)]
    if bad:
        raise DataError(
            f"gene id(s) {', '.join(map(repr, bad[:3]))} of {where} contain ':' or ';', which separate genes "
            f"and values in a cell string; use ids without them (e.g. Ensembl ids, via gene_id_column)."
        )
    return genes


def _sparse_parts(matrix: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(values, column indices, row pointers)`` of a scipy sparse matrix or a dense array, CSR style."""
    if hasattr(matrix, "tocsr"):  # scipy sparse (scipy comes with anndata; the dense paths do without it)
        csr = matrix.tocsr()
        csr.sum_duplicates()
        return np.asarray(csr.data, dtype=np.float64), np.asarray(csr.indices), np.asarray(csr.indptr)
    dense = np.asarray(matrix, dtype=np.float64)
    rows, cols = np.nonzero(dense)  # NaN counts as non-zero, so the checks below see it
    indptr = np.concatenate([[0], np.cumsum(np.bincount(rows, minlength=dense.shape[0]))])
    return dense[rows, cols], cols, indptr


def format_values(values: np.ndarray) -> np.ndarray:
    """Values as text: whole numbers as integers, others ``%.6g``."""
    out = np.empty(len(values), dtype=object)
    whole = (values == np.round(values)) & (values < 1e15)
    out[whole] = values[whole].astype(np.int64).astype(str)
    if not whole.all():
        out[~whole] = np.char.mod("%.6g", values[~whole])
    return out


_POWERS = 10.0 ** np.arange(1, 16)


def value_lengths(values: np.ndarray) -> np.ndarray:
    """The length of each of ``values`` (≥ 0) as :func:`format_values` writes it, without writing the whole numbers."""
    whole = (values == np.round(values)) & (values < 1e15)
    out = np.zeros(len(values), dtype=np.int64)
    out[whole] = np.searchsorted(_POWERS, values[whole], side="right") + 1  # 9 -> 1, 10 -> 2 (exact: powers of 10)
    if not whole.all():
        out[~whole] = np.char.str_len(np.char.mod("%.6g", values[~whole]))
    return out


def _bad_value(values: np.ndarray, bad: np.ndarray, indices: np.ndarray, indptr: np.ndarray, genes: np.ndarray,
               ids: Sequence[str], where: str) -> DataError:  # fmt: skip
    first = int(np.flatnonzero(bad)[0])
    row = int(np.searchsorted(indptr, first, side="right")) - 1
    gene = genes[indices[first]] or f"column {int(indices[first])}"
    value = float(values[first])
    fix = ("fill missing values with 0" if np.isnan(value) else
           "give raw counts (a counts layer with `layer:`, or `layer: raw.X`), not log-scaled, centred or "
           "z-scored values")  # fmt: skip
    return DataError(
        f"cell {str(ids[row])!r} has the expression value {value!r} for gene {gene!r} in {where} "
        f"({int(bad.sum())} negative, NaN or infinite value(s) in this block of cells). Geneformer ranks "
        f"expression counts, which must be finite and ≥ 0: {fix}."
    )


def cell_entries(matrix: Any, genes: np.ndarray, ids: Sequence[str], where: str
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:  # fmt: skip
    """``(entries per row, column indices, values)`` of what the cell strings of ``matrix`` write: its non-zero
    entries of genes with an id, in column order (duplicates summed), checked (finite, ≥ 0; else a DataError
    naming the cell and the gene)."""
    values, indices, indptr = _sparse_parts(matrix)
    bad = ~np.isfinite(values) | (values < 0)
    if bad.any():
        raise _bad_value(values, bad, indices, indptr, genes, ids, where)
    keep = (values != 0) & np.array([g is not None for g in genes], dtype=bool)[indices]
    rows = np.repeat(np.arange(len(indptr) - 1), np.diff(indptr))[keep]
    return np.bincount(rows, minlength=len(indptr) - 1), indices[keep], values[keep]


def _strings(matrix: Any, genes: np.ndarray, ids: Sequence[str], where: str) -> list[str]:
    counts, indices, values = cell_entries(matrix, genes, ids, where)
    pairs = (genes[indices] + ":" + format_values(values)).tolist()
    bounds = np.concatenate([[0], np.cumsum(counts)])
    return [";".join(pairs[a:b]) for a, b in zip(bounds[:-1].tolist(), bounds[1:].tolist(), strict=True)]


def cell_strings(matrix: Any, genes: Sequence[Any], ids: Sequence[str], where: str = "the matrix") -> list[str]:
    """One ``GENE:value;…`` string per row of ``matrix``: its non-zero entries, in column order.

    A row without a non-zero value gives ``""``; columns whose gene id is missing (``None``, NaN,
    empty) are left out.

    Args:
        matrix: ``(cells, genes)`` expression: a dense array or a scipy sparse matrix.
        genes: the gene id of each column.
        ids: the id of each row, named in errors.
        where: what the matrix is, for errors (the file and layer).

    Raises:
        DataError: a negative, NaN or infinite value (the message names the cell, the gene and the
            fix), or a gene id containing ``:`` or ``;``.

    Examples:
        >>> cell_strings(np.array([[3, 0, 1.5], [0, 0, 0], [0.1, 2e6, 0]]), ["A", "B", "C"], ["c1", "c2", "c3"])
        ['A:3;C:1.5', '', 'A:0.1;B:2000000']
    """
    return _strings(matrix, gene_ids(genes, where), ids, where)


def _chunks(n_rows: int, n_cols: int) -> list[tuple[int, int]]:
    step = max(1, _CHUNK_VALUES // max(1, n_cols))
    return [(start, min(start + step, n_rows)) for start in range(0, n_rows, step)]


# ---------------------------------------------------------------------------------------------
# readers


def _anndata_io() -> tuple[Any, Any, Any]:
    """``(h5py, read_elem, sparse_dataset)``; anndata's functions from ``anndata.io`` (0.11+) or ``experimental``."""
    try:
        import h5py

        try:
            from anndata.io import read_elem, sparse_dataset
        except ImportError:
            from anndata.experimental import read_elem, sparse_dataset
    except ImportError as exc:
        raise DataError(f"reading .h5ad files needs anndata ({exc}): pip install 'anndata>=0.10'") from exc
    return h5py, read_elem, sparse_dataset


def _h5ad_matrix(f: Any, layer: str | None, where: str) -> tuple[Any, Any]:
    """``(matrix element, var group)`` of ``X``, a layer or ``raw.X``, left on disk."""
    if layer is None:
        if "X" not in f:
            raise DataError(f"{where} has no X matrix; name the matrix to read in `layer` (a layer or raw.X)")
        return f["X"], f["var"]
    if layer == RAW:
        if "raw" not in f or "X" not in f["raw"]:
            raise DataError(f"{where} has no raw.X; set `layer` to one of its layers or null for X")
        return f["raw"]["X"], f["raw"]["var"]
    layers = sorted(f["layers"].keys()) if "layers" in f else []
    if layer not in layers:
        options = ", ".join(map(repr, [*layers, *([RAW] if "raw" in f else [])])) or "none"
        raise DataError(
            f"{where} has no layer {layer!r}; its layers: {options}. Set `layer` to one of them, or null for X."
        )
    return f["layers"][layer], f["var"]


@dataclass
class CellMatrix:
    """An expression matrix read a block of cells at a time (:meth:`blocks`), never whole.

    Args:
        read: ``read(start, stop)``: the rows ``start:stop`` (a dense array or a scipy sparse matrix).
        genes: the gene id of each column (``None``: no id, left out).
        ids: the id of each row, named in errors.
        where: what the matrix is, for errors (the file and layer).
        width: values per row, for the block size (the genes; the mean non-zeros per row of a sparse matrix).
        dtype: how the file stores the values.
    """

    read: Callable[[int, int], Any]
    genes: np.ndarray
    ids: list[str]
    where: str
    width: int
    dtype: np.dtype

    def blocks(self) -> Iterator[tuple[int, int, tuple[np.ndarray, np.ndarray, np.ndarray]]]:
        """``(start, stop, (entries per row, column indices, values))`` per block (:func:`cell_entries`)."""
        for start, stop in _chunks(len(self.ids), self.width):
            yield start, stop, cell_entries(self.read(start, stop), self.genes, self.ids[start:stop], self.where)

    def strings(self) -> list[str]:
        """Every row's cell string."""
        strings: list[str] = []
        for start, stop in _chunks(len(self.ids), self.width):
            strings += _strings(self.read(start, stop), self.genes, self.ids[start:stop], self.where)
        return strings

    def log_unnamed(self) -> None:
        missing = int(sum(g is None for g in self.genes))
        if missing:
            rank_zero_info(f"CellClassification: {missing} genes of {self.where} without an id are left out")


def _read_obs(f: Any, read_elem: Any, path: Path) -> pd.DataFrame:
    try:
        return read_elem(f["obs"])
    except Exception as exc:  # e.g. files of anndata < 0.7, without encoding metadata
        raise DataError(
            f"cannot read the obs table of {str(path)!r} ({type(exc).__name__}: {exc}). Re-save it with a "
            f"current anndata: anndata.read_h5ad(old).write_h5ad(new)."
        ) from exc


def _var_genes(var: pd.DataFrame, gene_id_column: str | None, path: Path, where: str) -> np.ndarray:
    if gene_id_column is None:
        return gene_ids(list(var.index), where)
    if gene_id_column in var.columns:
        return gene_ids(var[gene_id_column].tolist(), where)
    looks = str(var.index[0]).startswith("ENS") if len(var) else False
    hint = " Its var index holds Ensembl ids: set gene_id_column: null to use them." if looks else ""
    raise DataError(
        f"{str(path)!r} has no var column {gene_id_column!r} for gene ids; its var columns: "
        f"{', '.join(map(repr, map(str, var.columns[:30]))) or 'none'}.{hint}"
    )


@contextmanager
def h5ad_cells(path: Path, layer: str | None = None, gene_id_column: str | None = None,
               id_column: str | None = None, with_matrix: bool = True
               ) -> Iterator[tuple[pd.DataFrame, CellMatrix | None]]:  # fmt: skip
    """``(obs, matrix)`` of an ``.h5ad`` file, the matrix left on disk while the block is open.

    The matrix is read a block of cells at a time (as in AnnData's backed mode;
    ``anndata.read_h5ad(backed="r")`` would load every layer into memory), so a large sparse file is
    never densified. CSR and dense matrices read fast by rows; a CSC matrix works but reads slowly.

    Args:
        path: the ``.h5ad`` file.
        layer: ``None`` for X, a layer name, or ``raw.X``.
        gene_id_column: the ``var`` column with gene ids (``None``: the ``var`` index).
        id_column: the obs column of cell ids named in errors (``None`` or absent: the obs index).
        with_matrix: open the matrix too (``False``: obs only, the matrix ``None``).
    """
    h5py, read_elem, sparse_dataset = _anndata_io()
    where = f"{path}" + (f" (layer {layer})" if layer else " (X)")
    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise DataError(f"cannot open {str(path)!r} as an HDF5 .h5ad file ({exc})") from exc
    with f:
        obs = _read_obs(f, read_elem, path)
        if not with_matrix:
            yield obs, None
            return
        element, var_group = _h5ad_matrix(f, layer, where)
        var = read_elem(var_group)
        genes = _var_genes(var, gene_id_column, path, where)
        sparse = isinstance(element, h5py.Group)
        matrix = sparse_dataset(element) if sparse else element
        if tuple(matrix.shape) != (len(obs), len(var)):
            raise DataError(f"{where} is {tuple(matrix.shape)} but the file has {len(obs)} cells and {len(var)} genes")
        ids = (obs[id_column] if id_column in obs.columns else obs.index).astype(str).tolist()
        width = -(-int(element["data"].shape[0]) // max(1, len(obs))) if sparse else len(var)
        dtype = np.dtype(element["data"].dtype if sparse else element.dtype)
        yield obs, CellMatrix(lambda a, b: matrix[a:b], genes, ids, where, width, dtype)


def read_h5ad_cells(path: Path, layer: str | None = None, gene_id_column: str | None = None,
                    id_column: str | None = None, with_matrix: bool = True
                    ) -> tuple[pd.DataFrame, list[str] | None]:  # fmt: skip
    """``(obs, cell strings)`` of an ``.h5ad`` file, converting the matrix in blocks of rows (:func:`h5ad_cells`)."""
    with h5ad_cells(path, layer, gene_id_column, id_column, with_matrix) as (obs, matrix):
        if matrix is None:
            return obs, None
        strings = matrix.strings()
    matrix.log_unnamed()
    return obs, strings


def dense_cells(path: Path, metadata: Sequence[str], id_column: str) -> tuple[pd.DataFrame, CellMatrix]:
    """``(metadata columns, matrix)`` of a cells × genes CSV/TSV/Parquet table (read whole, converted in blocks).

    Args:
        path: the table.
        metadata: columns that are not genes (id, label, split, other modalities), where present.
        id_column: the cell id column, which must be present.
    """
    table = read_table(path, dtype=dict.fromkeys(metadata, str), text_columns=[id_column])  # ids as written
    if id_column not in table.columns:
        raise DataError(
            f"{str(path)!r} has no cell id column {id_column!r}; its first columns: "
            f"{', '.join(map(repr, map(str, table.columns[:10])))}. Set id_column."
        )
    meta = [c for c in table.columns if c in set(metadata)]
    genes = [c for c in table.columns if c not in set(metadata)]
    odd = [str(c) for c in genes if not pd.api.types.is_numeric_dtype(table[c]) or pd.api.types.is_bool_dtype(table[c])]
    if odd:
        raise DataError(
            f"column(s) {', '.join(map(repr, odd[:5]))} of {str(path)!r} hold values that are not numbers, but "
            f"every column besides the id, label, split, group and modality columns ({', '.join(meta)}) is read "
            f"as a gene's expression. Name metadata columns in those options, drop them, or fix the values."
        )
    values = table[genes]
    dtype = np.result_type(*values.dtypes) if genes else np.dtype(np.float64)
    matrix = CellMatrix(lambda a, b: values.iloc[a:b].to_numpy(dtype=np.float64), gene_ids([str(c) for c in genes],
                        str(path)), table[id_column].astype(str).tolist(), str(path), len(genes), dtype)  # fmt: skip
    return table[meta].reset_index(drop=True), matrix


def read_dense_cells(path: Path, metadata: Sequence[str], id_column: str) -> tuple[pd.DataFrame, list[str]]:
    """``(metadata columns, cell strings)`` of a cells × genes CSV/TSV/Parquet table (:func:`dense_cells`)."""
    table, matrix = dense_cells(path, metadata, id_column)
    return table, matrix.strings()
