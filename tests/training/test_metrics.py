from __future__ import annotations

import numpy as np
import pytest
import torch

from mmfuse.training import RegressionMetrics, format_table
from mmfuse.training.metrics import REGRESSION_METRICS


def _ranks(a: np.ndarray) -> np.ndarray:
    return a.argsort(axis=0).argsort(axis=0).astype(float)


def test_metrics_per_target_match_their_definitions():
    rng = np.random.default_rng(0)
    target = rng.normal(size=(50, 3))
    preds = target + rng.normal(scale=[0.1, 1.0, 3.0], size=(50, 3))
    metrics = RegressionMetrics(3)
    for chunk in np.array_split(np.arange(50), 4):  # accumulated over batches
        metrics.update(torch.tensor(preds[chunk]), torch.tensor(target[chunk]))
    values = {k: v.numpy() for k, v in metrics.compute().items()}

    mse = ((preds - target) ** 2).mean(0)
    r2 = 1 - ((preds - target) ** 2).sum(0) / ((target - target.mean(0)) ** 2).sum(0)
    pearson = np.array([np.corrcoef(preds[:, j], target[:, j])[0, 1] for j in range(3)])
    rp, rt = _ranks(preds), _ranks(target)
    spearman = np.array([np.corrcoef(rp[:, j], rt[:, j])[0, 1] for j in range(3)])
    np.testing.assert_allclose(values["mse"], mse, rtol=1e-5)
    np.testing.assert_allclose(values["r2"], r2, rtol=1e-5)
    np.testing.assert_allclose(values["pearson"], pearson, rtol=1e-4)
    np.testing.assert_allclose(values["spearman"], spearman, rtol=1e-4)
    assert values["spearman"][0] > values["spearman"][2]


def test_single_target():
    metrics = RegressionMetrics(1)
    metrics.update(torch.tensor([[1.0], [2.0], [3.0]]), torch.tensor([[1.0], [2.5], [2.9]]))
    values = metrics.compute()
    assert values["spearman"].shape == (1,) and values["spearman"].item() == pytest.approx(1.0, abs=1e-5)


def test_table_has_a_row_per_target_and_the_means():
    values = {k: torch.tensor([0.5, 1.5]) for k in REGRESSION_METRICS}
    table = format_table(["Liver", "Adipose Tissue"], values, title="Test")
    lines = table.splitlines()
    assert lines[0] == "Test"
    assert any(line.startswith("Adipose Tissue") and line.split()[-1] == "1.5000" for line in lines)
    mean_row = next(line for line in lines if line.startswith("mean"))
    assert mean_row.split()[1:] == ["1.0000"] * 5
    assert "Spearman" in table and "R²" in table and "MSE(std)" in table
