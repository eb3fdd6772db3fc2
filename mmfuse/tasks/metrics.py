"""Per-target regression metrics (torchmetrics) and their table."""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence

import torch
from torch import Tensor
from torchmetrics import Metric, MetricCollection
from torchmetrics.regression import MeanSquaredError, PearsonCorrCoef, R2Score, SpearmanCorrCoef

__all__ = ["REGRESSION_METRICS", "RegressionMetrics", "format_table"]

#: metric name -> column title
REGRESSION_METRICS = {"mse": "MSE", "r2": "R²", "pearson": "Pearson", "spearman": "Spearman"}


class RegressionMetrics(MetricCollection):
    """MSE, R², Pearson and Spearman for each of ``num_outputs`` targets.

    ``compute()`` returns ``{name: (num_outputs,) tensor}``. Correlations are computed across the
    records of the epoch, per target (per tissue), as IsoFormer reports them.
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

    def compute(self) -> dict[str, Tensor]:  # type: ignore[override]
        values = super().compute()
        return {k: values[k].reshape(-1) for k in REGRESSION_METRICS}


def format_table(target_names: Sequence[str], values: Mapping[str, Tensor], title: str = "") -> str:
    """A fixed-width table: one row per target, one column per metric, and a final row of means."""
    names = list(REGRESSION_METRICS)
    width = max([len("mean"), len("target"), *map(len, target_names)])
    header = f"{'target':<{width}}  " + "  ".join(f"{REGRESSION_METRICS[n]:>9}" for n in names)
    rule = "-" * len(header)
    rows = [title, rule, header, rule] if title else [rule, header, rule]
    for i, name in enumerate(target_names):
        rows.append(f"{name:<{width}}  " + "  ".join(f"{values[n][i].item():>9.4f}" for n in names))
    rows.append(rule)
    rows.append(f"{'mean':<{width}}  " + "  ".join(f"{torch.nanmean(values[n]).item():>9.4f}" for n in names))
    rows.append(rule)
    return "\n".join(rows)
