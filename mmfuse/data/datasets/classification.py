"""Classification tables: one record per row, sequences per modality, one class label per record."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import numpy as np
import pandas as pd
from lightning.pytorch.utilities import rank_zero_info

from mmfuse.data.datasets.table import Crop, TableDataModule
from mmfuse.data.errors import DataError
from mmfuse.errors import ConfigError

__all__ = ["SequenceClassification"]

_DEFAULT_MODALITIES = {"dna": "DNA", "rna": "RNA", "protein": "Protein"}


def _label_strings(column: pd.Series) -> list[str | None]:
    """Labels as strings; missing ones (NaN, None, empty or blank) become ``None``.

    A whole number stored as a float (``2.0``: a numeric column with gaps, or Parquet) reads ``2``.
    """
    labels: list[str | None] = []
    for value in column.tolist():
        if value is None or (not isinstance(value, str) and pd.isna(value)):
            labels.append(None)
        elif isinstance(value, float) and value.is_integer():
            labels.append(str(int(value)))
        else:
            text = str(value).strip()
            labels.append(text or None)
    return labels


def _sorted_classes(labels: Sequence[str]) -> list[str]:
    """Distinct labels, in numeric order when all are numbers (``2`` before ``10``), else sorted as text."""
    distinct = sorted(set(labels))
    try:
        values = {label: float(label) for label in distinct}
    except ValueError:
        return distinct
    if any(math.isnan(v) for v in values.values()):
        return distinct
    return sorted(distinct, key=lambda label: (values[label], label))


class SequenceClassification(TableDataModule):
    """Sequence table → batches of sequences per modality and a class index per record.

    The table is a local CSV/TSV/Parquet file, a Hugging Face data set (a hub id or a local
    ``datasets`` directory, as for :class:`~mmfuse.data.IsoformExpression`), or ``sample`` for the
    bundled synthetic data set, whose
    ``expression_level`` column classes transcripts as ``low``/``medium``/``high`` (see
    :mod:`mmfuse.data.samples.isoform`). Labels are read as text and mapped to class indices (int64) in the
    order of ``classes``; that order is the task's ``target_names`` (the CLI links them). Splits and
    missing modalities work as in :class:`~mmfuse.data.IsoformExpression`.

    Args:
        path: the table file, a local ``datasets`` directory, a hub data set id, or ``sample``.
        modalities: ``{modality: column}``; modalities must cover the task's backbones
            (default ``{dna: DNA, rna: RNA, protein: Protein}``).
        label_column: column holding each record's class.
        classes: the class names in class-index order (for two classes, the second is the positive
            one); default: the distinct labels of the table, sorted (numerically when all are
            numbers). Give them when predicting on a table without labels, in the order the model
            was trained with. Quote numeric names in YAML (``["0", "1"]``).
        id_column: unique record id, written next to predictions.
        gene_column: gene of each record, used for the split; ``null`` splits by record.
        split_column: column holding train/val/test; used when present in the table.
        val_fraction: share of genes in the validation split (when splitting by gene).
        test_fraction: share of genes in the test split (when splitting by gene).
        split_seed: seed of the split by gene.
        missing_labels: ``error`` on empty or NaN labels, or ``drop`` those records (counted and logged).
        missing_modalities: ``mask`` keeps records with an empty sequence, that modality marked
            absent (counted and logged); ``error`` refuses them.
        predict_split: records to predict: ``all`` or one split.
        batch_size: training batch size.
        eval_batch_size: batch size of validation/test/predict (default: ``batch_size``).
        num_workers: DataLoader worker processes (tokenization runs there).
        sample_genes: genes in the sample data set (with ``path: sample``).
        sample_seed: seed of the sample data set.
        max_lengths: ``{modality: letters}``; longer sequences are cropped by ``crop`` in setup
            (counted in ``crop_counts`` and logged). Default: no limit.
        crop: ``{modality: center | end | start | error}``; defaults dna ``center``, rna ``end``,
            protein ``start``, others ``error`` (left whole: the tokenizer rejects them by record id).
        dataset_revision: branch, tag or commit of a hub data set ``path``.
        bucketing: batch records of similar total length together, so each batch is padded only to
            its own longest sequence (as ``group_by_length`` of the Hugging Face Trainer).
        bucket_pool: with ``bucketing``, batches' worth of records sorted by length together; larger
            pools pad less but make batches less random.
        folds: cross-validation in this many folds of genes (isoforms of a gene never straddle folds; with
            ``gene_column: null``, of records): fold ``fold`` tests, ``val_fraction`` of the other genes
            validate, the split column is not used. ``mmfuse cv`` runs one ``fit`` per fold.
        fold: with ``folds``, the fold that tests (0 … folds - 1).

    Examples:
        >>> dm = SequenceClassification("sample", label_column="expression_level", sample_genes=12)
        >>> dm.target_names
        ['high', 'low', 'medium']
    """

    def __init__(
        self,
        path: str,
        modalities: dict[str, str] | None = None,
        label_column: str = "label",
        classes: list[str] | None = None,
        id_column: str = "transcript_id",
        gene_column: str | None = "gene_id",
        split_column: str = "split",
        val_fraction: float = 0.1,
        test_fraction: float = 0.1,
        split_seed: int = 0,
        missing_labels: Literal["error", "drop"] = "error",
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
        folds: int | None = None,
        fold: int = 0,
    ) -> None:
        super().__init__(
            path, dict(modalities or _DEFAULT_MODALITIES), id_column, gene_column, split_column, val_fraction,
            test_fraction, split_seed, missing_modalities, predict_split, batch_size, eval_batch_size, num_workers,
            sample_genes, sample_seed, max_lengths, crop, dataset_revision, bucketing, bucket_pool, folds=folds,
            fold=fold,
        )  # fmt: skip
        self.save_hyperparameters()
        self.label_column = label_column
        self.missing_labels = missing_labels
        self._classes: list[str] | None = None
        if classes is not None:
            names = [str(c) for c in classes]
            if len(names) < 2 or len(set(names)) != len(names):
                raise ConfigError(f"`classes` must list at least 2 distinct class names, not {names}")
            self._classes = names

    @property
    def target_names(self) -> list[str]:
        """The class names, in class-index order: ``classes``, or else read from the table (once)."""
        if self._classes is None:
            store = self.records()
            if self.label_column not in store.names:
                raise self._no_label_column(store.names)
            self._classes = self._infer_classes(store.frame([self.label_column]))
        return self._classes

    def _infer_classes(self, table: pd.DataFrame) -> list[str]:
        if self.label_column not in table.columns:
            raise self._no_label_column(list(table.columns))
        classes = _sorted_classes([s for s in _label_strings(table[self.label_column]) if s is not None])
        if len(classes) < 2:
            raise DataError(
                f"column {self.label_column!r} of {self.path} holds {len(classes)} distinct label(s) "
                f"({', '.join(map(repr, classes)) or 'none'}); a classifier needs at least 2 classes. "
                f"Check label_column."
            )
        return classes

    def _no_label_column(self, names: Sequence[str]) -> DataError:
        return DataError(
            f"{self.path} has no label column {self.label_column!r} to take the classes from. Set "
            f"label_column, or list the classes (in the order the model was trained with) in `classes`. "
            f"Its columns are: {', '.join(map(str, names[:40]))}."
        )

    _label_option = "label_column"

    def _label_columns(self) -> list[str]:
        return [self.label_column]

    def _labels(self, table: pd.DataFrame) -> tuple[pd.DataFrame, np.ndarray]:
        if self._classes is None:
            self._classes = self._infer_classes(table)
        labels = _label_strings(table[self.label_column])
        ids = table[self.id_column].astype(str).tolist()
        missing = [i for i, label in enumerate(labels) if label is None]
        if missing and self.missing_labels == "error":
            raise DataError(
                f"{len(missing)} record(s) of {self.path} have no label in column {self.label_column!r}, e.g. "
                f"{', '.join(repr(ids[i]) for i in missing[:3])}. Fill them, or set missing_labels: drop to "
                f"leave those records out."
            )
        index = {name: i for i, name in enumerate(self._classes)}
        unknown = [i for i, label in enumerate(labels) if label is not None and label not in index]
        if unknown:
            examples = ", ".join(f"{ids[i]!r} ({labels[i]!r})" for i in unknown[:3])
            raise DataError(
                f"{len(unknown)} record(s) of {self.path} have labels that are not among the classes "
                f"{self._classes}, e.g. {examples}. Add them to `classes`, or fix column {self.label_column!r}."
            )
        if missing:
            rank_zero_info(f"{type(self).__name__}: dropped {len(missing)} records without a label")
            keep = np.array([label is not None for label in labels])
            table = table[keep].reset_index(drop=True)
            labels = [label for label in labels if label is not None]
        return table, np.array([index[label] for label in labels], dtype=np.int64)  # type: ignore[index]

    def class_counts(self, split: str = "train") -> dict[str, int]:
        """Records per class in one split (after :meth:`setup`), e.g. to choose ``class_weights``."""
        labels = self.split_labels(split)
        counts = np.bincount(labels, minlength=len(self.target_names)) if labels is not None else None
        return {name: int(counts[i]) if counts is not None else 0 for i, name in enumerate(self.target_names)}
