"""Modality contribution: hiding a modality is exactly the model without it; the report's numbers add up."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from mmfuse.adapters import CrossAttentionFusion
from mmfuse.analysis.contribution import ModalityContribution, shapley_values, summarise
from mmfuse.backbones import ESM2, NucleotideTransformer
from mmfuse.training import RegressionTask


def test_hiding_a_modality_is_the_model_evaluated_without_it():
    torch.manual_seed(0)
    task = RegressionTask({"rna": NucleotideTransformer("tiny", modality="rna"), "protein": ESM2("tiny")},
                          adapter=CrossAttentionFusion, target_names=["a", "b"]).eval()  # fmt: skip
    tok = task.model.tokenizers()
    inputs = {"rna": tok["rna"](["ACGUACGUAA", "AUGGC", "GGGA"]), "protein": tok["protein"](["MKV", "MA", "MK"])}
    batch = {"inputs": inputs,
             "present": {"protein": torch.tensor([True, False, True])}, "target": torch.randn(3, 2)}  # fmt: skip
    callback = ModalityContribution(["rna", "protein"])
    assert callback.subsets == [("rna",), ("protein",)]
    callback._start("test", task)
    callback._batch("test", task, batch)
    _, table = task.objective.compute("test|rna")
    expected = task.model(batch["inputs"], {"protein": torch.zeros(3, dtype=torch.bool)})
    reference = RegressionTask({"rna": NucleotideTransformer("tiny", modality="rna"), "protein": ESM2("tiny")},
                               adapter=CrossAttentionFusion, target_names=["a", "b"])  # fmt: skip
    reference.load_state_dict(task.state_dict())
    reference.objective.update("test", expected, batch["target"])
    _, want = reference.objective.compute("test")
    pd.testing.assert_frame_equal(table.frame(), want.frame())


def test_the_summary_is_drop_one_costs_and_shapley_values():
    tables = {
        ("a", "b"): pd.DataFrame({"spearman": [0.6, 0.4], "support": [5, 7]}, index=["t1", "t2"]),
        ("a",): pd.DataFrame({"spearman": [0.5, 0.1]}, index=["t1", "t2"]),
        ("b",): pd.DataFrame({"spearman": [0.2, 0.2]}, index=["t1", "t2"]),
    }
    summary, drop_one, shapley = summarise(tables, ["a", "b"], "spearman")
    assert summary["spearman"].to_dict() == pytest.approx({"a+b": 0.5, "a": 0.3, "b": 0.2})
    assert "support" not in summary.columns  # a count per class is not averaged as a metric
    assert drop_one.loc["t2"].to_dict() == pytest.approx({"a": 0.2, "b": 0.3})  # full minus without it
    assert shapley == pytest.approx({"a": 0.3, "b": 0.2})  # (0.3 + (0.5 - 0.2)) / 2, (0.2 + (0.5 - 0.3)) / 2
    assert sum(shapley.values()) == pytest.approx(summary.loc["a+b", "spearman"])  # efficiency
    assert shapley_values({frozenset({"a"}): float("nan")}, ["a"]) == {"a": 0.0}
