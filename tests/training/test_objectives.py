"""Every registered objective keeps the contract the task relies on (parametrised over the registry)."""

from __future__ import annotations

import pytest
import torch

from mmfuse.registry import OBJECTIVES
from mmfuse.training import Objective

NAMES = ["a", "b", "c"]


def _target(objective: Objective, batch: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(1)  # not the outputs' numbers
    if objective.target_dtype == torch.int64:
        return torch.arange(batch) % len(objective.target_names)  # every class present
    return torch.randn(batch, len(objective.target_names), generator=generator)


@pytest.fixture(params=OBJECTIVES.names())
def objective(request) -> Objective:
    return OBJECTIVES.get(request.param)(NAMES)


def test_loss_predictions_and_metrics_keep_the_contract(objective):
    torch.manual_seed(0)
    assert objective.num_outputs >= 1 and objective.target_names == NAMES
    outputs = torch.randn(12, objective.num_outputs, requires_grad=True)
    target = _target(objective, 12)
    loss = objective.loss(outputs, target)
    assert loss.shape == () and torch.isfinite(loss)
    loss.backward()
    assert outputs.grad is not None and outputs.grad.abs().sum() > 0
    predicted = objective.prediction(outputs.detach(), [f"r{i}" for i in range(12)])
    assert predicted["ids"][0] == "r0" and predicted["preds"].shape == (12, len(NAMES))
    objective.update("val", outputs.detach(), target)
    scalars, table = objective.compute("val")
    assert objective.progress_metric in scalars and all(v.shape == () for v in scalars.values())
    assert table is None or list(table.frame(summary_row=False).index) == NAMES


def test_an_objective_needs_target_names(objective):
    with pytest.raises(Exception, match="target_names is empty"):
        type(objective)([])
