"""Task metrics (torchmetrics): per-target regression metrics, classification metrics, and their tables."""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn
from torchmetrics import Metric, MetricCollection
from torchmetrics.classification import (
    AUROC,
    Accuracy,
    F1Score,
    MulticlassAUROC,
    MulticlassF1Score,
    MulticlassStatScores,
)
from torchmetrics.regression import MeanSquaredError, PearsonCorrCoef, R2Score, SpearmanCorrCoef
from torchmetrics.utilities import dim_zero_cat

__all__ = [
    "CLASS_METRICS",
    "REGRESSION_METRICS",
    "ClassificationMetrics",
    "MetricTable",
    "RegressionMetrics",
    "format_table",
]

#: metric name -> column title
REGRESSION_METRICS = {"mse": "MSE", "mse_std": "MSE(std)", "r2": "R²", "pearson": "Pearson", "spearman": "Spearman"}
#: per-class metric name -> column title
CLASS_METRICS = {"f1": "F1", "auroc": "AUROC", "support": "support"}


class RegressionMetrics(MetricCollection):
    """MSE, R², Pearson and Spearman for each of ``num_outputs`` targets.

    ``compute()`` returns ``{name: (num_outputs,) tensor}``. Correlations are computed across the
    records of the epoch, per target (per tissue), as IsoFormer reports them. Values are in the units
    of what ``update`` is given; ``mse_std`` is the MSE divided by ``target_std²`` (the MSE of
    targets standardised with that standard deviation). R², Pearson and Spearman are the same in
    either unit: a per-target affine map changes none of them.
    """

    def __init__(self, num_outputs: int) -> None:
        with warnings.catch_warnings():  # "will save all targets and predictions": that is what ranks need
            warnings.filterwarnings("ignore", message=".*will save all targets and predictions.*")
            metrics: dict[str, Metric] = {
                "mse": MeanSquaredError(num_outputs=num_outputs),
                "r2": R2Score(multioutput="raw_values"),
                "pearson": PearsonCorrCoef(num_outputs=num_outputs),
                "spearman": SpearmanCorrCoef(num_outputs=num_outputs),
            }
        super().__init__(metrics, compute_groups=False)
        self.num_outputs = num_outputs

    def update(self, preds: Tensor, target: Tensor) -> None:  # type: ignore[override]
        preds, target = preds.float(), target.float()
        if self.num_outputs == 1:
            preds, target = preds.reshape(-1), target.reshape(-1)
        super().update(preds, target)

    def compute(self, target_std: Tensor | None = None) -> dict[str, Tensor]:  # type: ignore[override]
        """``{mse, mse_std, r2, pearson, spearman}``, each ``(num_outputs,)``.

        Args:
            target_std: ``(num_outputs,)`` standard deviation of each target, for ``mse_std``
                (default: 1, so ``mse_std`` equals ``mse``).
        """
        values = {k: v.reshape(-1) for k, v in super().compute().items()}
        std = torch.ones_like(values["mse"]) if target_std is None else target_std.to(values["mse"]).reshape(-1)
        values["mse_std"] = values["mse"] / std**2
        return {k: values[k] for k in REGRESSION_METRICS}

    def records(self) -> tuple[Tensor, Tensor] | None:
        """Predictions and targets ``(N, num_outputs)`` of every record so far, from all processes.

        Spearman's rank correlation keeps them anyway; in distributed runs every process must call
        this (it gathers). None when no record was seen.
        """
        spearman: SpearmanCorrCoef = self["spearman"]  # type: ignore[assignment]
        if not spearman.preds:
            return None
        with spearman.sync_context(should_unsync=True):
            preds, target = dim_zero_cat(spearman.preds), dim_zero_cat(spearman.target)
        return preds.reshape(-1, self.num_outputs), target.reshape(-1, self.num_outputs)


class ClassificationMetrics(nn.Module):
    """Accuracy, F1 and AUROC of a classifier, overall and per class.

    Overall (what the task logs): with two classes, torchmetrics' ``binary`` metrics of the positive
    class (the second); with more, ``multiclass`` metrics with F1 and AUROC macro-averaged over the
    classes. Accuracy is always the share of records whose most probable class is right.
    Per class (the report): F1 and AUROC of each class against the rest, and its support (records of
    that class); their macro averages, as torchmetrics computes them (F1 leaves out classes with
    neither records nor predictions), equal the logged F1 and AUROC with more than two classes.

    AUROC is undefined for a class that is absent from the epoch's records (or for a split holding a
    single class): torchmetrics then warns and counts it as 0, and training goes on.

    Args:
        num_classes: number of classes (at least 2).
    """

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"classification needs at least 2 classes, not {num_classes}")
        self.num_classes = num_classes
        if num_classes == 2:
            options: dict = {"task": "binary"}
            accuracy = Accuracy(**options)
        else:
            options = {"task": "multiclass", "num_classes": num_classes, "average": "macro"}
            accuracy = Accuracy(task="multiclass", num_classes=num_classes, average="micro")
        self.overall = MetricCollection(
            {"accuracy": accuracy, "auroc": AUROC(**options), "f1": F1Score(**options)}, compute_groups=False
        )
        self.per_class = MetricCollection(
            {
                "f1": MulticlassF1Score(num_classes, average=None),
                "auroc": MulticlassAUROC(num_classes, average=None),
                "support": MulticlassStatScores(num_classes, average=None),
            },
            compute_groups=False,
        )

    def update(self, probs: Tensor, target: Tensor) -> None:
        """Adds a batch: class probabilities ``(B, C)`` and true class indices ``(B,)``."""
        probs, target = probs.float(), target.long()
        self.overall.update(probs[:, 1] if self.num_classes == 2 else probs, target)
        self.per_class.update(probs, target)

    def compute(self) -> tuple[dict[str, Tensor], dict[str, Tensor], dict[str, float]]:
        """The values over all processes.

        Returns:
            ``{accuracy, auroc, f1}`` scalars, ``{f1, auroc, support}`` per class ``(C,)``, and their
            macro averages ``{f1, auroc, support}`` (the support's is the number of records).
        """
        overall = {k: v.reshape(()) for k, v in self.overall.compute().items()}
        values = self.per_class.compute()
        tp, fp, _, fn, support = values["support"].unbind(dim=1)
        per_class = {"f1": values["f1"], "auroc": values["auroc"], "support": support}
        seen = (tp + fp + fn) > 0  # torchmetrics' macro F1 leaves out classes never seen nor predicted
        macro = {
            "f1": values["f1"][seen].mean().item() if seen.any() else 0.0,
            "auroc": torch.nanmean(values["auroc"]).item(),
            "support": int(support.sum().item()),
        }
        return overall, per_class, macro

    def reset(self) -> None:
        self.overall.reset()
        self.per_class.reset()


@dataclass
class MetricTable:
    """One epoch's metrics per row (per target, per class), as printed and as written to CSV.

    Args:
        rows: the row names (targets or classes).
        values: ``{metric: (len(rows),) tensor}``.
        columns: ``{metric: column title}``, in column order.
        index_title: what a row is (``target``, ``class``): the first column's title.
        summary_name: name of the last row.
        summary: ``{metric: value}`` of the last row, also written to the CSV; ``None``: the mean of
            each column over the rows, ignoring NaN, printed only.
    """

    rows: Sequence[str]
    values: Mapping[str, Tensor]
    columns: Mapping[str, str]
    index_title: str = "target"
    summary_name: str = "mean"
    summary: Mapping[str, float] | None = None

    def text(self, title: str = "") -> str:
        """The fixed-width table (see :func:`format_table`)."""
        return format_table(self.rows, self.values, title, columns=self.columns, index_title=self.index_title,
                            summary_name=self.summary_name, summary=self.summary)  # fmt: skip

    def frame(self, summary_row: bool | None = None) -> pd.DataFrame:
        """One row per name, one column per metric, and the summary row.

        Args:
            summary_row: whether to end with the summary row; default: when ``summary`` is given
                (``metrics_<stage>.csv``); with ``True`` and no ``summary``, the row of NaN-ignoring
                means (the report's ``metrics.csv``).
        """
        data = {k: self.values[k].cpu().numpy() for k in self.columns}
        index = list(self.rows)
        if summary_row or (summary_row is None and self.summary is not None):
            summary = self.summary if self.summary is not None else {k: np.nanmean(v) for k, v in data.items()}
            data = {k: np.append(v, _same_kind(summary[k], v.dtype)) for k, v in data.items()}
            index.append(self.summary_name)
        return pd.DataFrame(data, index=pd.Index(index, name=self.index_title))


def _same_kind(value: float, dtype: np.dtype) -> np.ndarray:
    """``value`` in ``dtype``, unless that would truncate a fraction (a mean of integer counts)."""
    value = np.asarray(value)
    return value if dtype.kind in "iu" and not float(value).is_integer() else value.astype(dtype)


def _cell(value: float | int | Tensor) -> str:
    value = value.item() if isinstance(value, Tensor) else value
    return f"{value:>9d}" if isinstance(value, int) else f"{value:>9.4f}"


def format_table(
    row_names: Sequence[str],
    values: Mapping[str, Tensor],
    title: str = "",
    *,
    columns: Mapping[str, str] = REGRESSION_METRICS,
    index_title: str = "target",
    summary_name: str = "mean",
    summary: Mapping[str, float] | None = None,
) -> str:
    """A fixed-width table: one row per name, one column per metric, and a final summary row.

    Args:
        row_names: one name per row (targets, classes).
        values: ``{metric: (len(row_names),) tensor}``; integer tensors are printed without decimals.
        title: a line above the table.
        columns: ``{metric: column title}``, in column order.
        index_title: the first column's title.
        summary_name: the last row's name.
        summary: the last row's ``{metric: value}``; default: the mean of each column, ignoring NaN.
    """
    names = list(columns)
    if summary is None:
        summary = {n: torch.nanmean(values[n] if values[n].is_floating_point() else values[n].double()).item()
                   for n in names}  # fmt: skip
    width = max([len(summary_name), len(index_title), *map(len, row_names)])
    header = f"{index_title:<{width}}  " + "  ".join(f"{columns[n]:>9}" for n in names)
    rule = "-" * len(header)
    rows = [title, rule, header, rule] if title else [rule, header, rule]
    for i, name in enumerate(row_names):
        rows.append(f"{name:<{width}}  " + "  ".join(_cell(values[n][i]) for n in names))
    rows.append(rule)
    rows.append(f"{summary_name:<{width}}  " + "  ".join(_cell(summary[n]) for n in names))
    rows.append(rule)
    return "\n".join(rows)
