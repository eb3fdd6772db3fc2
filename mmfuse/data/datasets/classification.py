"""Classification tables: one record per row, sequences per modality, one class label per record."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import numpy as np
import pandas as pd
from lightning.pytorch.utilities import rank_zero_info

from mmfuse.data.datasets.table import TableDataModule
from mmfuse.data.errors import DataError
from mmfuse.data.options import GeneSplit, LengthOptions, LoaderOptions, SampleOptions, TableSource, plain
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
        source: the table (:class:`~mmfuse.data.options.TableSource`: a file, a local ``datasets``
            directory, a hub data set id, or ``sample``; its id column), or just its path.
        modalities: ``{modality: column}``; modalities must cover the task's backbones
            (default ``{dna: DNA, rna: RNA, protein: Protein}``).
        label_column: column holding each record's class.
        classes: the class names in class-index order (for two classes, the second is the positive
            one); default: the distinct labels of the table, sorted (numerically when all are
            numbers). Give them when predicting on a table without labels, in the order the model
            was trained with. Quote numeric names in YAML (``["0", "1"]``).
        missing_labels: ``error`` on empty or NaN labels, or ``drop`` those records (counted and logged).
        missing_modalities: ``mask`` keeps records with an empty sequence, that modality marked
            absent (counted and logged); ``error`` refuses them.
        split: how records are split (:class:`~mmfuse.data.options.GeneSplit`: by ``gene_id``, the
            split column when the table has one; ``folds``/``fold`` for ``mmfuse cv``).
        loader: batch sizes, workers, bucketing (:class:`~mmfuse.data.options.LoaderOptions`).
        lengths: ``max`` letters per modality and ``crop`` policies
            (:class:`~mmfuse.data.options.LengthOptions`); crops are counted in ``crop_counts`` and logged.
        sample: genes (``size``, default 240) and ``seed`` of ``source: sample``.

    Examples:
        >>> dm = SequenceClassification("sample", label_column="expression_level", sample={"size": 12})
        >>> dm.target_names
        ['high', 'low', 'medium']
    """

    #: the modalities when ``modalities`` is not given
    _default_modalities = _DEFAULT_MODALITIES

    def __init__(
        self,
        source: TableSource | str = TableSource(),
        modalities: dict[str, str] | None = None,
        label_column: str = "label",
        classes: list[str] | None = None,
        missing_labels: Literal["error", "drop"] = "error",
        missing_modalities: Literal["mask", "error"] = "mask",
        split: GeneSplit = GeneSplit(),
        loader: LoaderOptions = LoaderOptions(),
        lengths: LengthOptions = LengthOptions(),
        sample: SampleOptions = SampleOptions(),
    ) -> None:
        super().__init__(source, dict(modalities or self._default_modalities), missing_modalities, split, loader,
                         lengths, sample)  # fmt: skip
        self.save_hyperparameters(plain({
            "source": self.options["source"], "modalities": modalities, "label_column": label_column,
            "classes": classes, "missing_labels": missing_labels, "missing_modalities": missing_modalities,
            **{name: self.options[name] for name in ("split", "loader", "lengths", "sample")},
        }))  # fmt: skip
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

    def _categorical_columns(self) -> list[str]:
        return [*super()._categorical_columns(), self.label_column]  # a few classes, many records

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
