"""Single-cell transcriptomes as table records, read from AnnData ``.h5ad`` files or dense tables.

:class:`CellClassification` writes each cell as one string of its non-zero genes,
``GENE:value;GENE:value;…`` in the matrix's gene order, the input of
:class:`~mmfuse.backbones.Geneformer` (whose tokenizer turns it into the rank value encoding, in the
DataLoader workers). Whole numbers are written as integers (counts stay counts), other values with
six significant digits (``%.6g``); the ranks Geneformer reads do not change.

Everything else (splits, labels, other modalities read from per-cell columns, tokenizer checks,
batching, bucketing, predictions) is :class:`~mmfuse.data.SequenceClassification`'s.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from lightning.pytorch.utilities import rank_zero_info

from mmfuse.data.classification import SequenceClassification
from mmfuse.data.errors import DataError
from mmfuse.data.table import Crop, read_table
from mmfuse.errors import ConfigError

__all__ = ["EXPRESSION", "RAW", "CellClassification", "cell_strings", "read_dense_cells", "read_h5ad_cells"]

#: the ``modalities`` value that stands for the expression matrix (of ``layer``), not for an obs column
EXPRESSION = "X"
#: the ``layer`` value that reads AnnData's ``raw.X`` (the raw counts of CELLxGENE files) and ``raw.var``
RAW = "raw.X"
#: matrix entries converted at once (a dense chunk of 2**22 float64 values takes 32 MiB)
_CHUNK_VALUES = 2**22
#: single-cell formats anndata converts to .h5ad, by suffix
_CONVERT = {".loom": "io.read_loom", ".zarr": "io.read_zarr"}


# ---------------------------------------------------------------------------------------------
# matrix → cell strings


def _gene_ids(values: Sequence[Any], where: str) -> np.ndarray:
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


def _format(values: np.ndarray) -> np.ndarray:
    """Values as text: whole numbers as integers, others ``%.6g``."""
    out = np.empty(len(values), dtype=object)
    whole = (values == np.round(values)) & (values < 1e15)
    out[whole] = values[whole].astype(np.int64).astype(str)
    if not whole.all():
        out[~whole] = np.char.mod("%.6g", values[~whole])
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


def _strings(matrix: Any, genes: np.ndarray, ids: Sequence[str], where: str) -> list[str]:
    values, indices, indptr = _sparse_parts(matrix)
    bad = ~np.isfinite(values) | (values < 0)
    if bad.any():
        raise _bad_value(values, bad, indices, indptr, genes, ids, where)
    keep = (values != 0) & np.array([g is not None for g in genes], dtype=bool)[indices]
    rows = np.repeat(np.arange(len(indptr) - 1), np.diff(indptr))[keep]
    pairs = (genes[indices[keep]] + ":" + _format(values[keep])).tolist()
    bounds = np.concatenate([[0], np.cumsum(np.bincount(rows, minlength=len(indptr) - 1))])
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
    return _strings(matrix, _gene_ids(genes, where), ids, where)


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


def read_h5ad_cells(path: Path, layer: str | None = None, gene_id_column: str | None = None,
                    id_column: str | None = None, with_matrix: bool = True
                    ) -> tuple[pd.DataFrame, list[str] | None]:  # fmt: skip
    """``(obs, cell strings)`` of an ``.h5ad`` file, converting the matrix in blocks of rows.

    The matrix stays on disk (as in AnnData's backed mode; ``anndata.read_h5ad(backed="r")`` would
    load every layer into memory) and is read a block of cells at a time, so a large sparse file is
    never densified. CSR and dense matrices read fast by rows; a CSC matrix works but reads slowly.

    Args:
        path: the ``.h5ad`` file.
        layer: ``None`` for X, a layer name, or ``raw.X``.
        gene_id_column: the ``var`` column with gene ids (``None``: the ``var`` index).
        id_column: the obs column of cell ids named in errors (``None`` or absent: the obs index).
        with_matrix: read the matrix too (``False``: obs only).
    """
    h5py, read_elem, sparse_dataset = _anndata_io()
    where = f"{path}" + (f" (layer {layer})" if layer else " (X)")
    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise DataError(f"cannot open {str(path)!r} as an HDF5 .h5ad file ({exc})") from exc
    with f:
        try:
            obs = read_elem(f["obs"])
        except Exception as exc:  # e.g. files of anndata < 0.7, without encoding metadata
            raise DataError(
                f"cannot read the obs table of {str(path)!r} ({type(exc).__name__}: {exc}). Re-save it with a "
                f"current anndata: anndata.read_h5ad(old).write_h5ad(new)."
            ) from exc
        if not with_matrix:
            return obs, None
        element, var_group = _h5ad_matrix(f, layer, where)
        var = read_elem(var_group)
        if gene_id_column is None:
            genes = _gene_ids(list(var.index), where)
        elif gene_id_column in var.columns:
            genes = _gene_ids(var[gene_id_column].tolist(), where)
        else:
            looks = str(var.index[0]).startswith("ENS") if len(var) else False
            hint = " Its var index holds Ensembl ids: set gene_id_column: null to use them." if looks else ""
            raise DataError(
                f"{str(path)!r} has no var column {gene_id_column!r} for gene ids; its var columns: "
                f"{', '.join(map(repr, map(str, var.columns[:30]))) or 'none'}.{hint}"
            )
        matrix = sparse_dataset(element) if isinstance(element, h5py.Group) else element
        if tuple(matrix.shape) != (len(obs), len(var)):
            raise DataError(f"{where} is {tuple(matrix.shape)} but the file has {len(obs)} cells and {len(var)} genes")
        ids = (obs[id_column] if id_column in obs.columns else obs.index).astype(str).tolist()
        strings: list[str] = []
        for start, stop in _chunks(len(obs), len(var)):
            strings += _strings(matrix[start:stop], genes, ids[start:stop], where)
    missing = int(sum(g is None for g in genes))
    if missing:
        rank_zero_info(f"CellClassification: {missing} genes of {where} without an id are left out")
    return obs, strings


def read_dense_cells(path: Path, metadata: Sequence[str], id_column: str) -> tuple[pd.DataFrame, list[str]]:
    """``(metadata columns, cell strings)`` of a cells × genes CSV/TSV/Parquet table.

    Args:
        path: the table.
        metadata: columns that are not genes (id, label, split, other modalities), where present.
        id_column: the cell id column, which must be present.
    """
    table = read_table(path, dtype=dict.fromkeys(metadata, str))
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
    gene_ids = _gene_ids([str(c) for c in genes], str(path))
    ids = table[id_column].astype(str).tolist()
    values = table[genes]
    strings: list[str] = []
    for start, stop in _chunks(len(table), len(genes)):
        strings += _strings(values.iloc[start:stop].to_numpy(dtype=np.float64), gene_ids, ids[start:stop], str(path))
    return table[meta].reset_index(drop=True), strings


# ---------------------------------------------------------------------------------------------
# data module


class CellClassification(SequenceClassification):
    """Single cells → batches of cell strings (and other per-cell sequences) with a class index per cell.

    Inputs (``path``):

    * an AnnData ``.h5ad`` file (needs the ``anndata`` package): the expression matrix is ``X``, a
      layer or ``raw.X`` (``layer``); gene ids are the ``var`` index or a ``var`` column
      (``gene_id_column``); ids, labels, splits and other modalities are ``obs`` columns (the id
      defaults to the ``obs`` index). The matrix is read a block of cells at a time, never densified.
    * a dense CSV/TSV/Parquet table, one row per cell: the id, label, split and group columns and the
      columns of other modalities are metadata; every other column is a gene, named by its header,
      and must hold numbers.
    * ``sample``: a synthetic CRISPR screen over the tiny Geneformer's genes ``G0000`` … ``G0099``
      (:mod:`mmfuse.data.cell_sample`; ``layer`` and ``gene_id_column`` are ignored).

    ``modalities`` maps each modality to a column; the value ``X`` stands for the expression matrix
    (of ``layer``), read into one ``GENE:value;…`` string per cell, so ``{cell: X}`` feeds the cell
    backbone (Geneformer) and ``{cell: X, protein: perturbed_protein}`` adds a per-cell protein from
    an obs column. The name ``X`` is therefore reserved: no obs or table column may use it.

    Policies:

    * a negative, NaN or infinite expression value is an error naming the cell, the gene and the fix;
    * a cell without any non-zero gene has an empty cell string and follows ``missing_modalities``
      like any missing sequence: with ``mask`` it is dropped when it has no other modality (counted and
      logged) or kept with the cell modality marked absent; with ``error`` the data is refused;
    * genes without an id are left out (counted and logged); a gene given twice is summed by
      Geneformer's tokenizer; genes it does not know are skipped by it, and a cell none of whose genes
      it knows is an error naming the cell (checked before training starts);
    * cells without a label follow ``missing_labels``.

    Memory: every cell's string is held in memory, about 20 bytes per non-zero value with Ensembl ids
    (``ENSG00000123456:12;``) and 50 per cell: 100,000 cells with 2,000 expressed genes each take
    about 4 GB (a CSR matrix takes 8-12 bytes per non-zero). Subsample or split larger atlases.

    Args:
        path: an ``.h5ad`` file, a CSV/TSV/Parquet table (optionally compressed), or ``sample``.
        modalities: ``{modality: column}``; ``X`` is the expression matrix, anything else an obs (or
            table) column holding a sequence per cell (default ``{cell: X}``).
        label_column: obs (or table) column holding each cell's class, e.g. ``cell_type``.
        classes: the class names in class-index order; default: the distinct labels, sorted.
        id_column: unique cell id column; for ``.h5ad`` files without such an obs column the ``obs``
            index is used, under this name.
        layer: for ``.h5ad`` files, the matrix to read instead of ``X``: a layer name (e.g. raw
            ``counts``) or ``raw.X``; a missing layer is an error listing the layers.
        gene_id_column: for ``.h5ad`` files, the ``var`` column with the gene ids the backbone's token
            dictionary uses (e.g. ``ensembl_id``); default: the ``var`` index.
        split_column: column holding train/val/test; used when present.
        group_column: column whose values keep cells together in one split (e.g. ``donor_id``, so no
            donor is in both training and test); ``null`` splits by cell.
        val_fraction: share of cells (or groups) in the validation split.
        test_fraction: share of cells (or groups) in the test split.
        split_seed: seed of the split.
        missing_labels: ``error`` on cells without a label, or ``drop`` them (counted and logged).
        missing_modalities: ``mask`` keeps cells lacking some modality (an empty cell string, an
            empty protein) with it marked absent and drops cells with none; ``error`` refuses them.
        predict_split: cells to predict: ``all`` or one split.
        batch_size: training batch size.
        eval_batch_size: batch size of validation/test/predict (default: ``batch_size``).
        num_workers: DataLoader worker processes (tokenization runs there).
        sample_cells: cells in the sample data set (with ``path: sample``).
        sample_seed: seed of the sample data set.
        max_lengths: ``{modality: letters}`` for sequence modalities (a protein); cells are cut to
            the backbone's ``max_genes`` by its tokenizer instead.
        crop: ``{modality: center | end | start | error}`` for ``max_lengths``.
        bucketing: batch cells of similar string length (about the number of expressed genes) together.
        bucket_pool: with ``bucketing``, batches' worth of cells sorted by length together.

    Examples:
        >>> dm = CellClassification("sample", sample_cells=30)
        >>> dm.target_names
        ['erythroid', 'lymphoid', 'myeloid']
    """

    def __init__(
        self,
        path: str,
        modalities: dict[str, str] | None = None,
        label_column: str = "cell_type",
        classes: list[str] | None = None,
        id_column: str = "cell_id",
        layer: str | None = None,
        gene_id_column: str | None = None,
        split_column: str = "split",
        group_column: str | None = None,
        val_fraction: float = 0.1,
        test_fraction: float = 0.1,
        split_seed: int = 0,
        missing_labels: Literal["error", "drop"] = "error",
        missing_modalities: Literal["mask", "error"] = "mask",
        predict_split: Literal["all", "train", "val", "test"] = "all",
        batch_size: int = 8,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        sample_cells: int = 600,
        sample_seed: int = 0,
        max_lengths: dict[str, int] | None = None,
        crop: dict[str, Crop] | None = None,
        bucketing: bool = False,
        bucket_pool: int = 100,
    ) -> None:
        super().__init__(
            path, dict(modalities or {"cell": EXPRESSION}), label_column, classes, id_column, group_column,
            split_column, val_fraction, test_fraction, split_seed, missing_labels, missing_modalities,
            predict_split, batch_size, eval_batch_size, num_workers, sample_seed=sample_seed,
            max_lengths=max_lengths, crop=crop, bucketing=bucketing, bucket_pool=bucket_pool,
        )  # fmt: skip
        if not isinstance(sample_cells, int) or sample_cells < 1:
            raise ConfigError(f"sample_cells must be a positive whole number, not {sample_cells!r}")
        cut = sorted(m for m in self.max_lengths if self.modalities[m] == EXPRESSION)
        if cut:
            raise ConfigError(
                f"`max_lengths` names {cut}, which read the expression matrix: a cell string cannot be cut "
                f"by letters. The backbone keeps each cell's top genes (Geneformer's `max_genes`)."
            )
        unused = [o for o, v in (("layer", layer), ("gene_id_column", gene_id_column)) if v is not None]
        if unused and path != "sample" and not path.lower().endswith(".h5ad"):
            raise ConfigError(
                f"{' and '.join(unused)} appl{'ies' if len(unused) == 1 else 'y'} to .h5ad files; {path} is read "
                f"as a table whose gene columns are named by their headers: set {' and '.join(unused)} to null."
            )
        self.layer, self.gene_id_column, self.group_column = layer, gene_id_column, group_column
        self.sample_cells = sample_cells
        #: what the last read found: ``{"cells": n, "empty_cells": cells without a non-zero gene}``
        self.read_counts: dict[str, int] = {}

    @property
    def _reads_matrix(self) -> bool:
        return EXPRESSION in self.modalities.values()

    def _metadata_columns(self) -> list[str]:
        named = [self.id_column, self.label_column, self.split_column, self.group_column]
        named += [c for c in self.modalities.values() if c != EXPRESSION]
        return list(dict.fromkeys(c for c in named if c is not None))

    def _read(self) -> pd.DataFrame:
        if self.path == "sample":
            from mmfuse.data.cell_sample import make_cell_sample

            counts, genes, obs = make_cell_sample(self.sample_cells, self.sample_seed)
            obs = obs.rename(columns={"cell_id": self.id_column, "cell_type": self.label_column})
            strings = cell_strings(counts, genes, obs[self.id_column].tolist(), "the sample")
            return self._with_cells(obs, strings)
        path = Path(self.path).expanduser()
        if path.suffix.lower() == ".h5ad":
            if not path.is_file():
                raise DataError(f"{str(path)!r} does not exist; check the data module's `path`")
            obs, strings = read_h5ad_cells(path, self.layer, self.gene_id_column, self.id_column, self._reads_matrix)
            obs = obs.copy()
            if self.id_column not in obs.columns:
                obs.insert(0, self.id_column, obs.index.astype(str))
            return self._with_cells(obs.reset_index(drop=True), strings)
        if path.suffix.lower() in _CONVERT:
            raise DataError(
                f"{self.path} is a {path.suffix} file; convert it to .h5ad first, e.g. "
                f"anndata.{_CONVERT[path.suffix.lower()]}(path).write_h5ad('cells.h5ad')"
            )
        table, strings = read_dense_cells(path, self._metadata_columns(), self.id_column)
        return self._with_cells(table, strings if self._reads_matrix else None)

    def _with_cells(self, table: pd.DataFrame, strings: list[str] | None) -> pd.DataFrame:
        """``table`` with the cell strings in column ``X``; counts and logs what was read."""
        if strings is None:
            return table
        if EXPRESSION in table.columns:
            raise DataError(
                f"{self.path} has a column named {EXPRESSION!r}, the name `modalities` uses for the expression "
                f"matrix; rename that column."
            )
        table = table.copy()
        table[EXPRESSION] = strings
        empty = sum(not s for s in strings)
        self.read_counts = {"cells": len(strings), "empty_cells": empty}
        layer = f" (layer {self.layer})" if self.layer and self.path != "sample" else ""
        note = f"; {empty} without a non-zero gene (missing_modalities: {self.missing_modalities})" if empty else ""
        rank_zero_info(f"{type(self).__name__}: read {len(strings)} cells from {self.path}{layer}{note}")
        return table

    def _assign_splits(self, table: pd.DataFrame) -> np.ndarray:
        if self.split_column not in table.columns and self.group_column not in (None, *table.columns):
            raise DataError(
                f"{self.path} has neither a {self.split_column!r} column nor the group column "
                f"{self.group_column!r} to split by; add one, or set group_column: null to split by cell."
            )
        return super()._assign_splits(table)
