"""Token classification: the objective (loss and metrics over labelled tokens), the per-token model, the task,
and the per-token table of predictions."""

from __future__ import annotations

import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from mmfuse.backbones import ESM2, Geneformer
from mmfuse.backbones.finetune import FineTuning
from mmfuse.errors import ConfigError
from mmfuse.model import FusionModel
from mmfuse.registry import OBJECTIVES
from mmfuse.training import TokenClassification, TokenClassificationTask
from mmfuse.training.token_objectives import IGNORE
from mmfuse.training.token_predictions import token_column_of, token_table_path, write_token_table

CELLS = ["G0001:5;G0002:1;G0003:2", "G0004:1"]


def test_registered():
    assert OBJECTIVES.get("TokenClassification") is TokenClassification


def test_binary_loss_counts_only_labelled_tokens():
    objective = TokenClassification(["background", "marker"])
    outputs = torch.randn(2, 4, 1)
    target = torch.tensor([[IGNORE, 1, 0, IGNORE], [0, IGNORE, IGNORE, 1]])
    keep = target != IGNORE
    expected = F.binary_cross_entropy_with_logits(outputs[keep].squeeze(1), target[keep].float())
    assert torch.allclose(objective.loss(outputs, target), expected)
    # what lies under IGNORE does not matter
    changed = outputs.clone()
    changed[~keep] = 1e6
    assert torch.allclose(objective.loss(changed, target), expected)


def test_multiclass_loss_with_weights_and_smoothing():
    objective = TokenClassification(["a", "b", "c"], label_smoothing=0.1, class_weights=[1.0, 2.0, 3.0])
    outputs = torch.randn(3, 5, 3)
    target = torch.full((3, 5), IGNORE)
    target[0, 1], target[1, 4], target[2, 0], target[2, 2] = 2, 0, 1, 2
    keep = target != IGNORE
    expected = F.cross_entropy(outputs[keep], target[keep], weight=torch.tensor([1.0, 2.0, 3.0]), label_smoothing=0.1)
    assert torch.allclose(objective.loss(outputs, target), expected)


def test_a_batch_without_labels_has_zero_loss_and_a_graph():
    objective = TokenClassification(["a", "b"])
    outputs = torch.randn(2, 3, 1, requires_grad=True)
    loss = objective.loss(outputs, torch.full((2, 3), IGNORE))
    loss.backward()
    assert loss.item() == 0.0 and outputs.grad is not None


def test_labels_must_line_up_with_the_tokens():
    with pytest.raises(ValueError, match="do not line up"):
        TokenClassification(["a", "b"]).loss(torch.randn(2, 3, 1), torch.zeros(2, 4, dtype=torch.long))


def test_metrics_per_class_over_flattened_labelled_tokens():
    objective = TokenClassification(["background", "marker"])
    # logits that rank every marker token above every background token: AUROC 1
    outputs = torch.tensor([[[-2.0], [3.0], [9.0]], [[1.0], [-1.0], [9.0]]])
    target = torch.tensor([[0, 1, IGNORE], [1, 0, IGNORE]])
    objective.update("test", outputs, target)
    objective.update("test", outputs, torch.full((2, 3), IGNORE))  # nothing to add
    scalars, table = objective.compute("test")
    assert scalars["auroc"].item() == pytest.approx(1.0)
    frame = table.frame()
    assert frame.loc["background", "support"] == 2 and frame.loc["marker", "support"] == 2
    assert frame.loc["macro", "auroc"] == pytest.approx(1.0)


def test_predict_gives_probabilities_per_token():
    probs = TokenClassification(["a", "b", "c"]).predict(torch.randn(2, 4, 3))
    assert probs.shape == (2, 4, 3) and torch.allclose(probs.sum(-1), torch.ones(2, 4))
    assert TokenClassification(["a", "b"]).predict(torch.randn(2, 4, 1)).shape == (2, 4, 2)


def test_batch_prediction_rows_per_named_token_and_per_labelled_token():
    objective = TokenClassification(["background", "marker"])
    outputs = torch.tensor([[[-5.0], [5.0], [1.0]], [[5.0], [0.0], [0.0]]])
    target = torch.tensor([[IGNORE, 1, IGNORE], [0, IGNORE, IGNORE]])
    named = {"ids": ["c1", "c2"], "target": target,
             "tokens": {"name": "gene", "position": torch.tensor([[0, 1], [0, 2], [1, 0]]),
                        "values": ["G1", "G2", "G3"]}}  # fmt: skip
    out = objective.batch_prediction(outputs, named)
    assert out["ids"] == ["c1", "c1", "c2"] and out["tokens"] == ["G1", "G2", "G3"] and out["token_column"] == "gene"
    assert out["true"] == ["marker", "", "background"] and out["labels"] == ["marker", "marker", "marker"]
    assert torch.allclose(out["preds"][:, 1], torch.sigmoid(torch.tensor([5.0, 1.0, 5.0])))
    plain = objective.batch_prediction(outputs, {"ids": ["c1", "c2"], "target": target})
    assert plain["ids"] == ["c1", "c2"] and plain["tokens"] == ["1", "0"] and plain["token_column"] == "token"


def test_the_labelled_modality_is_the_only_backbone_or_named():
    assert TokenClassification(["a", "b"]).token_head(["cell"]) == ("cell", True)
    with pytest.raises(ConfigError, match="objective.init_args.modality"):
        TokenClassification(["a", "b"]).token_head(["cell", "protein"])
    with pytest.raises(ConfigError, match="'rna' has no backbone"):
        TokenClassification(["a", "b"], modality="rna").token_head(["cell", "protein"])
    assert TokenClassification(["a", "b"], modality="cell", context=False).token_head(["cell", "x"]) == ("cell", False)


@pytest.mark.parametrize("context", [True, False])
def test_the_model_gives_one_output_row_per_token(context):
    backbone = Geneformer("tiny")
    model = FusionModel({"cell": backbone}, num_outputs=3, token_modality="cell", token_context=context).eval()
    width = backbone.embed_dim + (model.adapter.output_dim if context else 0)
    assert model.head.in_features == width
    inputs = {"cell": model.tokenizers()["cell"](CELLS)}
    out = model(inputs)
    assert out.shape == (2, inputs["cell"]["input_ids"].shape[1], 3)


def test_context_carries_the_other_modalities():
    model = FusionModel({"cell": Geneformer("tiny"), "protein": ESM2("tiny")}, num_outputs=1,
                        token_modality="cell").eval()  # fmt: skip
    tok = model.tokenizers()
    cells = tok["cell"](CELLS)
    one = model({"cell": cells, "protein": tok["protein"](["MKV", "MKV"])})
    other = model({"cell": cells, "protein": tok["protein"](["WWWWCC", "WWWWCC"])})
    assert one.shape == other.shape and not torch.allclose(one, other)


def test_a_token_modality_needs_a_backbone():
    with pytest.raises(ConfigError, match="token modality 'rna'"):
        FusionModel({"cell": Geneformer("tiny")}, 2, token_modality="rna")


def test_records_models_are_unchanged():
    model = FusionModel({"cell": Geneformer("tiny")}, num_outputs=3).eval()
    assert model({"cell": model.tokenizers()["cell"](CELLS)}).shape == (2, 3)


def test_task_trains_on_labelled_tokens():
    task = TokenClassificationTask({"cell": Geneformer("tiny")}, target_names=["background", "marker"])
    inputs = {"cell": task.model.tokenizers()["cell"](CELLS)}
    target = torch.full(inputs["cell"]["input_ids"].shape, IGNORE)
    target[0, 1], target[1, 1] = 1, 0
    batch = {"ids": ["a", "b"], "inputs": inputs, "present": {"cell": torch.tensor([True, True])}, "target": target}
    loss, _ = task._loss(batch, "train")
    loss.backward()
    assert torch.isfinite(loss) and task.model.head.net[1].weight.grad is not None
    prediction = task.eval().predict_step(batch, 0)
    assert prediction["ids"] == ["a", "b"] and prediction["true"] == ["marker", "background"]


def test_a_cached_token_modality_is_refused(tmp_path):
    backbone = Geneformer("tiny", finetune=FineTuning(freeze=True))
    with pytest.raises(ConfigError, match="leave 'cell' out of embedding_cache"):
        TokenClassificationTask({"cell": backbone}, target_names=["a", "b"],
                                embedding_cache={"directory": str(tmp_path)})  # fmt: skip


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".parquet"])
def test_the_table_per_token_averages_over_records(tmp_path, suffix):
    rows = pd.DataFrame({
        "cell_id": ["c1", "c1", "c2", "c2", "c3"], "gene": ["NA", "G2", "NA", "G2", "G3"],
        "neg": [0.2, 0.9, 0.4, 0.7, 0.5], "pos": [0.8, 0.1, 0.6, 0.3, 0.5],
        "predicted": ["pos", "neg", "pos", "neg", "neg"], "true_label": ["pos", "", "pos", "", ""],
    })  # fmt: skip
    path = tmp_path / f"predictions{suffix}"
    if suffix == ".parquet":
        rows.to_parquet(path, index=False)
    else:
        rows.to_csv(path, index=False, sep="\t" if suffix == ".tsv" else ",")
    assert token_column_of(path) == "gene"
    written = write_token_table(path, "gene", ["neg", "pos"])
    assert written == token_table_path(path, "gene") == tmp_path / f"predictions_genes{suffix}"
    if suffix == ".parquet":
        table = pd.read_parquet(written)
    else:
        table = pd.read_csv(written, sep="\t" if suffix == ".tsv" else ",", keep_default_na=False)
    table = table.set_index("gene")
    assert list(table.index) == ["G2", "G3", "NA"]  # the gene "NA" is a gene
    assert table.loc["NA", "records"] == 2 and table.loc["NA", "pos"] == pytest.approx(0.7)
    assert table.loc["NA", "predicted"] == "pos" and table.loc["NA", "true_label"] == "pos"
    assert table.loc["G2", "neg"] == pytest.approx(0.8) and table.loc["G2", "true_label"] == ""
