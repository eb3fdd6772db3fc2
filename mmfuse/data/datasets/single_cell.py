"""Single-cell transcriptomes as table records, read from AnnData ``.h5ad`` files or dense tables.

:class:`CellClassification` writes each cell as one string of its non-zero genes,
``GENE:value;GENE:value;…`` in the matrix's gene order, the input of
:class:`~mmfuse.backbones.Geneformer` (whose tokenizer turns it into the rank value encoding, in the
DataLoader workers); the matrix readers and the string format are in :mod:`mmfuse.data.files.h5ad`.

Everything else (splits, labels, other modalities read from per-cell columns, tokenizer checks,
batching, bucketing, predictions) is :class:`~mmfuse.data.SequenceClassification`'s.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
from lightning.pytorch.utilities import rank_zero_info

from mmfuse.data.datasets.classification import SequenceClassification
from mmfuse.data.errors import DataError
from mmfuse.data.files.h5ad import RAW, cell_strings, read_dense_cells, read_h5ad_cells
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
from mmfuse.errors import ConfigError

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

    Memory: every cell's string is held in memory, about 20 bytes per non-zero value with Ensembl ids
    (``ENSG00000123456:12;``) and 50 per cell: 100,000 cells with 2,000 expressed genes each take
    about 4 GB (a CSR matrix takes 8-12 bytes per non-zero). Subsample or split larger atlases.

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
        cut = sorted(m for m in self.max_lengths if self.modalities[m] == EXPRESSION)
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
            from mmfuse.data.samples.cells import make_cell_sample

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
                f"{self.group_column!r} to split by; add one, or set split: {{group: null}} to split by cell."
            )
        return super()._assign_splits(table)
