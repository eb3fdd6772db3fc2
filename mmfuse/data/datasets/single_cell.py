"""Single-cell transcriptomes as table records, read from AnnData ``.h5ad`` files or dense tables.

:class:`CellClassification` writes each cell as one string of its non-zero genes,
``GENE:value;GENE:value;…`` in the matrix's gene order, the input of
:class:`~mmfuse.backbones.Geneformer` (whose tokenizer turns it into the rank value encoding, in the
DataLoader workers); the matrix readers and the string format are in :mod:`mmfuse.data.files.h5ad`.

Everything else (splits, labels, other modalities read from per-cell columns, tokenizer checks,
batching, bucketing, predictions) is :class:`~mmfuse.data.SequenceClassification`'s.
"""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
from lightning.pytorch.utilities import rank_zero_info

from mmfuse.data.datasets.classification import SequenceClassification
from mmfuse.data.errors import DataError
from mmfuse.data.files.h5ad import RAW, cell_strings, dense_cells, read_dense_cells, read_h5ad_cells
from mmfuse.data.options import (
    CellSource,
    LengthOptions,
    LoaderOptions,
    SampleOptions,
    SplitOptions,
    TableSource,
    group,
    plain,
)  # fmt: skip
from mmfuse.data.store.cells import CellSequences, open_cells, sample_cells
from mmfuse.data.store.records import RecordStore
from mmfuse.data.store.rows import DerivedSequences
from mmfuse.errors import ConfigError
from mmfuse.tokenizers import Tokenizer

__all__ = ["EXPRESSION", "RAW", "CellClassification", "cell_strings", "read_dense_cells", "read_h5ad_cells"]

#: the ``modalities`` value that stands for the expression matrix (of ``layer``), not for an obs column
EXPRESSION = "X"
#: single-cell formats anndata converts to .h5ad, by suffix
_CONVERT = {".loom": "io.read_loom", ".zarr": "io.read_zarr"}


class CellClassification(SequenceClassification):
    """Single cells → batches of cell strings (and other per-cell sequences) with a class index per cell.

    Inputs (``source``):

    * an AnnData ``.h5ad`` file (needs the ``anndata`` package): the expression matrix is ``X``, a
      layer or ``raw.X`` (``source.layer``); gene ids are the ``var`` index or a ``var`` column
      (``source.gene_id_column``); ids, labels, splits and other modalities are ``obs`` columns (the id
      defaults to the ``obs`` index). The matrix is read a block of cells at a time, never densified.
    * a dense CSV/TSV/Parquet table, one row per cell: the id, label, split and group columns and the
      columns of other modalities are metadata; every other column is a gene, named by its header,
      and must hold numbers.
    * ``sample``: a synthetic CRISPR screen over the tiny Geneformer's genes ``G0000`` … ``G0099``
      (:mod:`mmfuse.data.samples.cells`; ``layer`` and ``gene_id_column`` are ignored).

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

    Memory: the matrix is converted once into a memory-mapped cell store (:mod:`mmfuse.data.store.cells`:
    8 bytes per non-zero value, 12 where float32 cannot hold the values) under ``source.records_dir``,
    found again by later runs; a cell's string is made from its sparse row when the record is read, in
    the DataLoader workers, so no process holds the strings (500,000 cells take about as much memory to
    train on as 2,000).

    Args:
        source: the cells (:class:`~mmfuse.data.options.CellSource`: an ``.h5ad`` file, a CSV/TSV/Parquet
            table, or ``sample``; the id column; for ``.h5ad`` files the ``layer`` to read instead of
            ``X`` (a layer name such as raw ``counts``, or ``raw.X``) and the ``var`` column of gene ids
            the backbone's token dictionary uses, ``gene_id_column``), or just the path.
        modalities: ``{modality: column}``; ``X`` is the expression matrix, anything else an obs (or
            table) column holding a sequence per cell (default ``{cell: X}``).
        label_column: obs (or table) column holding each cell's class, e.g. ``cell_type``.
        classes: the class names in class-index order; default: the distinct labels, sorted.
        missing_labels: ``error`` on cells without a label, or ``drop`` them (counted and logged).
        missing_modalities: ``mask`` keeps cells lacking some modality (an empty cell string, an
            empty protein) with it marked absent and drops cells with none; ``error`` refuses them.
        split: how cells are split (:class:`~mmfuse.data.options.SplitOptions`): the split column when
            present, else by cell, or by ``group`` (e.g. ``donor_id`` or a perturbation, so no donor is
            in both training and test); ``folds``/``fold`` for ``mmfuse cv`` (groups never straddle folds).
        loader: batch sizes, workers, bucketing (cells of similar numbers of expressed genes together).
        lengths: ``max`` letters for sequence modalities (a protein); cells are cut to the backbone's
            ``max_genes`` by its tokenizer instead.
        sample: cells (``size``, default 600) and ``seed`` of ``source: sample``.

    Examples:
        >>> dm = CellClassification("sample", sample={"size": 30})
        >>> dm.target_names
        ['erythroid', 'lymphoid', 'myeloid']
    """

    _sample_size = 600

    def __init__(
        self,
        source: CellSource | str = CellSource(),
        modalities: dict[str, str] | None = None,
        label_column: str = "cell_type",
        classes: list[str] | None = None,
        missing_labels: Literal["error", "drop"] = "error",
        missing_modalities: Literal["mask", "error"] = "mask",
        split: SplitOptions = SplitOptions(),
        loader: LoaderOptions = LoaderOptions(),
        lengths: LengthOptions = LengthOptions(),
        sample: SampleOptions = SampleOptions(),
    ) -> None:
        cells, split = group(source, CellSource, "path"), group(split, SplitOptions)
        table = TableSource(cells.path, cells.id_column, records_dir=cells.records_dir)
        super().__init__(table, dict(modalities or {"cell": EXPRESSION}), label_column, classes, missing_labels,
                         missing_modalities, split, loader, lengths, sample)  # fmt: skip
        self.save_hyperparameters(plain({
            "source": cells, "modalities": modalities, "label_column": label_column, "classes": classes,
            "missing_labels": missing_labels, "missing_modalities": missing_modalities,
            **{name: self.options[name] for name in ("split", "loader", "lengths", "sample")},
        }))  # fmt: skip
        path, layer, gene_id_column, group_column = cells.path, cells.layer, cells.gene_id_column, split.group
        sample_cells = self.sample_genes
        cut = sorted(m for m in self.max_lengths if self.modalities.get(m) == EXPRESSION)
        if cut:
            raise ConfigError(
                f"`lengths.max` names {cut}, which read the expression matrix: a cell string cannot be cut "
                f"by letters. The backbone keeps each cell's top genes (Geneformer's `max_genes`)."
            )
        unused = [o for o, v in (("layer", layer), ("gene_id_column", gene_id_column)) if v is not None]
        if unused and path != "sample" and not path.lower().endswith(".h5ad"):
            raise ConfigError(
                f"source.{' and source.'.join(unused)} appl{'ies' if len(unused) == 1 else 'y'} to .h5ad files; "
                f"{path} is read as a table whose gene columns are named by their headers: set "
                f"{' and '.join(unused)} to null."
            )
        self.layer, self.gene_id_column, self.group_column = layer, gene_id_column, group_column
        self.sample_cells = sample_cells
        #: the modalities read from the matrix: produced from the cell store's rows (after the column modalities)
        self._cell_modalities = [m for m, c in self.modalities.items() if c == EXPRESSION]
        self.modalities = {m: c for m, c in self.modalities.items() if c != EXPRESSION}
        self.served = [*self.modalities, *self._cell_modalities]
        self._cells: CellSequences | None = None
        #: what the last read found: ``{"cells": n, "empty_cells": cells without a non-zero gene}``
        self.read_counts: dict[str, int] = {}

    @property
    def _reads_matrix(self) -> bool:
        return bool(self._cell_modalities)

    def _metadata_columns(self) -> list[str]:
        named = [self.id_column, self.label_column, self.split_column, self.group_column]
        named += [c for c in self.modalities.values() if c != EXPRESSION]
        return list(dict.fromkeys(c for c in named if c is not None))

    def records(self) -> RecordStore:
        """The records store; with the matrix read, the cell store (see :mod:`mmfuse.data.store.cells`)."""
        if self._store is not None or not self._reads_matrix:
            return super().records()
        layer = f" (layer {self.layer})" if self.layer and self.path != "sample" else ""
        if self.path == "sample":
            from mmfuse.data.samples.cells import make_cell_sample

            counts, genes, obs = make_cell_sample(self.sample_cells, self.sample_seed)
            obs = obs.rename(columns={"cell_id": self.id_column, "cell_type": self.label_column})
            store = sample_cells(counts, genes, obs, self._metadata_columns(), self.id_column)
        else:
            self._convertible()
            store = open_cells(self.path, self._metadata_columns(), self.id_column, self.layer, self.gene_id_column,
                               self.records_dir, EXPRESSION)  # fmt: skip
        self._store, self._cells = store, CellSequences(store, f"the expression matrix of {self.path}{layer}")
        self.read_counts = self._cells.counts
        empty = self.read_counts["empty_cells"]
        note = f"; {empty} without a non-zero gene (missing_modalities: {self.missing_modalities})" if empty else ""
        rank_zero_info(f"{type(self).__name__}: read {len(store)} cells from {self.path}{layer}{note}")
        return store

    def _derived(self, store: RecordStore, table: pd.DataFrame) -> dict[str, DerivedSequences]:
        """Each cell's string, made from its sparse row when read."""
        return dict.fromkeys(self._cell_modalities, self._cells) if self._cells is not None else {}

    def _validate(self, modality: str, tokenizer: Tokenizer) -> None:
        """A tokenizer that lists its genes (Geneformer's ``genes``) has the cells none of whose genes it reads
        found over the stored gene indices; the rest is checked on a sample (:meth:`CellSequences.checked_rows`)."""
        if self._cells is not None and modality in self._cell_modalities:
            genes = getattr(tokenizer, "genes", None)
            self._cells.expect_genes(genes if isinstance(genes, Collection) else None)
        super()._validate(modality, tokenizer)

    def _convertible(self) -> None:
        suffix = Path(self.path).suffix.lower()
        if suffix in _CONVERT:
            raise DataError(
                f"{self.path} is a {suffix} file; convert it to .h5ad first, e.g. "
                f"anndata.{_CONVERT[suffix]}(path).write_h5ad('cells.h5ad')"
            )

    def _read(self) -> pd.DataFrame:
        """The metadata without the matrix (no modality reads it): obs columns, or a table's non-gene columns."""
        if self.path == "sample":
            from mmfuse.data.samples.cells import make_cell_sample

            obs = make_cell_sample(self.sample_cells, self.sample_seed)[2]
            return obs.rename(columns={"cell_id": self.id_column, "cell_type": self.label_column})
        path = Path(self.path).expanduser()
        if path.suffix.lower() == ".h5ad":
            if not path.is_file():
                raise DataError(f"{str(path)!r} does not exist; check the data module's `path`")
            obs = read_h5ad_cells(path, self.layer, self.gene_id_column, self.id_column, with_matrix=False)[0].copy()
            if self.id_column not in obs.columns:
                obs.insert(0, self.id_column, obs.index.astype(str))
            return obs.reset_index(drop=True)
        self._convertible()
        return dense_cells(path, self._metadata_columns(), self.id_column)[0]

    def gene_ids(self) -> list[str]:
        """The genes of the expression matrix (named ones, in its order)."""
        self.records()
        return [g for g in self._cells.genes if g is not None] if self._cells is not None else []

    def cell_annotations(self, columns: Collection[str], option: str = "columns") -> pd.DataFrame:
        """The id column and ``columns`` of every cell, read from the source's ``obs`` (or the table's
        metadata) without its matrix: what an analysis selects cells by (``mmfuse perturb``'s states).

        Raises:
            DataError: a column the data lacks, named with ``option`` and the columns it has.
        """
        wanted = [c for c in dict.fromkeys(columns) if c != self.id_column]
        if self.path == "sample":
            from mmfuse.data.samples.cells import make_cell_sample

            obs = make_cell_sample(self.sample_cells, self.sample_seed)[2]
            obs = obs.rename(columns={"cell_id": self.id_column, "cell_type": self.label_column})
        else:
            path = Path(self.path).expanduser()
            if path.suffix.lower() == ".h5ad":
                if not path.is_file():
                    raise DataError(f"{str(path)!r} does not exist; check the data module's `path`")
                obs = read_h5ad_cells(path, self.layer, self.gene_id_column, self.id_column, with_matrix=False)[0]
                if self.id_column not in obs.columns:
                    obs = obs.assign(**{self.id_column: obs.index.astype(str)})
            else:
                self._convertible()
                obs = dense_cells(path, [*self._metadata_columns(), *wanted], self.id_column)[0]
        missing = [c for c in wanted if c not in obs.columns]
        if missing:
            have = ", ".join(map(repr, [str(c) for c in obs.columns if c != self.id_column][:12]))
            raise DataError(f"{option} names the column{'s' if len(missing) > 1 else ''} "
                            f"{', '.join(map(repr, missing))}, which {self.path} does not have (its cell columns: "
                            f"{have})")  # fmt: skip
        frame = obs[[self.id_column, *wanted]].reset_index(drop=True)
        return frame.astype({c: str for c in wanted}).assign(**{self.id_column: frame[self.id_column].astype(str)})

    def _assign_splits(self, table: pd.DataFrame) -> np.ndarray:
        if self.split_column not in table.columns and self.group_column not in (None, *table.columns):
            raise DataError(
                f"{self.path} has neither a {self.split_column!r} column nor the group column "
                f"{self.group_column!r} to split by; add one, or set split: {{group: null}} to split by cell."
            )
        return super()._assign_splits(table)
