from __future__ import annotations

import warnings
from functools import partial

import lightning as L
import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from mmfuse.adapters import ConcatFusion
from mmfuse.backbones import ESM2, NucleotideTransformer
from mmfuse.data import SequenceClassification
from mmfuse.errors import CheckpointMismatchError, ConfigError
from mmfuse.training import Classification, ClassificationMetrics, ClassificationTask, MLPHead, PredictionWriter

LEVELS = ["low", "medium", "high"]


def _task(classes=LEVELS, **objective) -> ClassificationTask:
    return ClassificationTask(
        {"rna": NucleotideTransformer("tiny"), "protein": ESM2("tiny")},
        adapter=partial(ConcatFusion, hidden_dim=16),
        head=partial(MLPHead, hidden_dims=[16], dropout=0.0),
        target_names=list(classes),
        objective=partial(Classification, **objective) if objective else None,
        optimizer=partial(torch.optim.AdamW, lr=3e-3),
    )


def _datamodule(path: str = "sample", label_column: str = "expression_level", classes=LEVELS, **kwargs):
    options = dict(sample={"size": 24, "seed": 1}, loader={"batch_size": 8},
                   split={"val_fraction": 0.25, "test_fraction": 0.25},
                   modalities={"rna": "RNA", "protein": "Protein"})  # fmt: skip
    return SequenceClassification(path, label_column=label_column, classes=list(classes), **{**options, **kwargs})


def _binary_datamodule(small_table, tmp_path) -> SequenceClassification:
    table = small_table.assign(label=np.where(small_table.expression_level == "high", "high", "rest"))
    table.to_csv(tmp_path / "binary.csv", index=False)
    return _datamodule(str(tmp_path / "binary.csv"), "label", ["rest", "high"])


def _trainer(tmp_path, **kwargs) -> L.Trainer:
    defaults = dict(max_epochs=1, limit_train_batches=2, limit_val_batches=1, logger=False, accelerator="cpu",
                    enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path)  # fmt: skip
    return L.Trainer(**{**defaults, **kwargs})


def _fixed_batch(task: ClassificationTask, dm: SequenceClassification) -> dict:
    dm.attach_tokenizers(task.model.tokenizers())
    return next(iter(dm.val_dataloader()))


def _logits(task: ClassificationTask, batch: dict) -> torch.Tensor:
    return task.model(batch["inputs"], batch["present"])


def _auroc(scores: np.ndarray, positive: np.ndarray) -> float:
    """Probability that a random positive outscores a random negative (ties count half)."""
    pos, neg = scores[positive], scores[~positive]
    return float(((pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])).mean())


def _f1(predicted: np.ndarray, target: np.ndarray, c: int) -> float:
    tp = np.sum((predicted == c) & (target == c))
    fp = np.sum((predicted == c) & (target != c))
    fn = np.sum((predicted != c) & (target == c))
    return 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0


def test_binary_task_has_one_logit_and_binary_cross_entropy(small_table, tmp_path):
    task = _task(["rest", "high"]).eval()
    assert task.model.head.out_dim == 1
    batch = _fixed_batch(task, _binary_datamodule(small_table, tmp_path))
    logits = _logits(task, batch)
    labels = batch["target"]
    assert logits.shape == (len(labels), 1) and labels.dtype == torch.int64
    expected = F.binary_cross_entropy_with_logits(logits[:, 0], labels.float())
    torch.testing.assert_close(task.objective.loss(logits, labels), expected)
    probs = task(batch["inputs"], batch["present"])
    torch.testing.assert_close(probs[:, 1], torch.sigmoid(logits[:, 0]))  # the positive class is the second
    torch.testing.assert_close(probs.sum(1), torch.ones(len(labels)))


def test_multiclass_task_has_a_logit_per_class_and_cross_entropy():
    task = _task().eval()
    assert task.model.head.out_dim == 3
    batch = _fixed_batch(task, _datamodule())
    logits = _logits(task, batch)
    assert logits.shape == (len(batch["ids"]), 3)
    torch.testing.assert_close(task.objective.loss(logits, batch["target"]), F.cross_entropy(logits, batch["target"]))
    torch.testing.assert_close(task(batch["inputs"], batch["present"]), torch.softmax(logits, dim=1))


def test_label_smoothing_and_class_weights_change_the_multiclass_loss_as_defined():
    logits = torch.tensor([[2.0, 0.5, -1.0], [0.1, 0.2, 0.3], [-1.0, 3.0, 0.0], [0.0, 0.0, 4.0]])
    labels = torch.tensor([0, 2, 1, 0])
    log_p = torch.log_softmax(logits, dim=1)
    nll = -log_p[torch.arange(4), labels]
    smoothed = _task(label_smoothing=0.3).objective.loss(logits, labels)
    # the target puts 1 - 0.3 on the label and 0.3 / 3 on every class
    torch.testing.assert_close(smoothed, (0.7 * nll + 0.3 * -log_p.mean(dim=1)).mean())
    weights = torch.tensor([5.0, 1.0, 2.0])
    weighted = _task(class_weights=weights.tolist()).objective.loss(logits, labels)
    torch.testing.assert_close(weighted, (weights[labels] * nll).sum() / weights[labels].sum())
    # class 0, with the worst-predicted record, counts five times
    assert weighted > _task().objective.loss(logits, labels)


def test_label_smoothing_and_class_weights_change_the_binary_loss_as_defined():
    logits = torch.tensor([[2.0], [-1.0], [0.5], [-3.0]])
    labels = torch.tensor([1, 0, 0, 1])
    log_p, log_q = F.logsigmoid(logits[:, 0]), F.logsigmoid(-logits[:, 0])  # log P(positive), log P(negative)
    y = labels.float()
    plain = _task(["neg", "pos"]).objective.loss(logits, labels)
    torch.testing.assert_close(plain, -(y * log_p + (1 - y) * log_q).mean())
    smoothed = _task(["neg", "pos"], label_smoothing=0.2).objective.loss(logits, labels)
    t = y * 0.8 + 0.1
    torch.testing.assert_close(smoothed, -(t * log_p + (1 - t) * log_q).mean())
    weighted = _task(["neg", "pos"], class_weights=[0.5, 2.0]).objective.loss(logits, labels)
    torch.testing.assert_close(weighted, -(4.0 * y * log_p + (1 - y) * log_q).mean())  # pos_weight 2 / 0.5


def test_configuration_errors():
    with pytest.raises(ConfigError, match="at least 2 classes"):
        _task(["only"])
    with pytest.raises(ConfigError, match="distinct"):
        _task(["a", "a"])
    with pytest.raises(ConfigError, match=r"one positive weight per class \(3"):
        _task(class_weights=[1.0, 2.0])
    with pytest.raises(ConfigError, match=r"label_smoothing must be in \[0, 1\)"):
        _task(label_smoothing=1.0)


def test_multiclass_metrics_match_hand_computation():
    rng = np.random.default_rng(0)
    target = np.array([0, 0, 0, 1, 1, 2, 2, 2, 2, 1, 0, 2])
    probs = rng.dirichlet([1, 1, 1], size=len(target)).astype(np.float32)
    probs[target == 2, 2] += 0.5  # some signal
    probs /= probs.sum(1, keepdims=True)
    metrics = ClassificationMetrics(3)
    for chunk in np.array_split(np.arange(len(target)), 3):  # accumulated over batches
        metrics.update(torch.tensor(probs[chunk]), torch.tensor(target[chunk]))
    overall, per_class, macro = metrics.compute()

    predicted = probs.argmax(1)
    f1 = np.array([_f1(predicted, target, c) for c in range(3)])
    auroc = np.array([_auroc(probs[:, c], target == c) for c in range(3)])
    assert overall["accuracy"].item() == pytest.approx(np.mean(predicted == target))  # not the class-balanced one
    np.testing.assert_allclose(per_class["f1"].numpy(), f1, rtol=1e-5)
    np.testing.assert_allclose(per_class["auroc"].numpy(), auroc, rtol=1e-5)
    assert per_class["support"].tolist() == [4, 3, 5]
    assert overall["f1"].item() == pytest.approx(f1.mean(), rel=1e-5) == macro["f1"]
    assert overall["auroc"].item() == pytest.approx(auroc.mean(), rel=1e-5) == macro["auroc"]
    assert macro["support"] == 12


def test_binary_metrics_are_those_of_the_positive_class():
    target = np.array([1, 0, 1, 1, 0, 0, 1, 0])
    positive = np.array([0.9, 0.2, 0.4, 0.7, 0.6, 0.1, 0.8, 0.3], dtype=np.float32)
    metrics = ClassificationMetrics(2)
    metrics.update(torch.tensor(np.stack([1 - positive, positive], axis=1)), torch.tensor(target))
    overall, per_class, macro = metrics.compute()
    predicted = (positive > 0.5).astype(int)
    assert overall["accuracy"].item() == pytest.approx(np.mean(predicted == target))
    assert overall["f1"].item() == pytest.approx(_f1(predicted, target, 1))
    assert overall["auroc"].item() == pytest.approx(_auroc(positive, target == 1))
    np.testing.assert_allclose(per_class["f1"].numpy(), [_f1(predicted, target, 0), _f1(predicted, target, 1)])
    assert macro["f1"] == pytest.approx((_f1(predicted, target, 0) + _f1(predicted, target, 1)) / 2)


@pytest.mark.parametrize("num_classes", [2, 3])
def test_a_split_of_one_class_warns_but_does_not_crash(num_classes):
    metrics = ClassificationMetrics(num_classes)
    metrics.update(torch.softmax(torch.randn(5, num_classes), dim=1), torch.zeros(5, dtype=torch.long))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        overall, per_class, _ = metrics.compute()
    assert any("samples in targets" in str(w.message) for w in caught)
    assert torch.isfinite(overall["auroc"]) and per_class["support"].tolist() == [5] + [0] * (num_classes - 1)


def test_training_reduces_the_loss_on_a_fixed_batch():
    task = _task()
    batch = _fixed_batch(task, _datamodule())
    optimizer = task.configure_optimizers()
    losses = []
    for _ in range(30):
        loss = task.objective.loss(_logits(task, batch), batch["target"])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


def test_checkpoint_is_plain_data_and_validate_writes_the_table_per_class(tmp_path, capsys):
    task, dm = _task(class_weights=[1.0, 1.0, 2.0], label_smoothing=0.1), _datamodule()
    trainer = _trainer(tmp_path, enable_checkpointing=False)
    trainer.fit(task, dm)
    epoch_line = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("epoch 0:"))
    assert all(f"val/{k} " in epoch_line for k in ("loss", "accuracy", "auroc", "f1"))
    trainer.save_checkpoint(tmp_path / "model.ckpt")
    checkpoint = torch.load(tmp_path / "model.ckpt", weights_only=True)  # no object to unpickle
    objective = {"label_smoothing": 0.1, "class_weights": [1.0, 1.0, 2.0]}  # partials are written as the CLI does
    assert checkpoint["hyper_parameters"] == {
        "target_names": LEVELS,
        "objective": {"class_path": "mmfuse.training.objectives.Classification", "init_args": objective},
        "adapter": {"class_path": "mmfuse.adapters.concat.ConcatFusion", "init_args": {"hidden_dim": 16}},
        "head": {"class_path": "mmfuse.training.heads.MLPHead", "init_args": {"hidden_dims": [16], "dropout": 0.0}},
        "optimizer": {"class_path": "torch.optim.adamw.AdamW", "init_args": {"lr": 3e-3}},
        "lr_scheduler": None,
        "modality_dropout": 0.0,
        "embedding_cache": None,
        "compile_backbones": False,
        "modality_contribution": None,
        "alignment": None,
    }
    assert checkpoint["datamodule_hyper_parameters"]["classes"] == LEVELS

    (logged,) = _trainer(tmp_path, limit_val_batches=None).validate(task, dm)  # all of the split
    lines = capsys.readouterr().out.splitlines()
    header = lines.index(next(line for line in lines if line.startswith("class ")))
    assert lines[header - 2] == "Validation metrics per class"
    assert lines[header].split() == ["class", "F1", "AUROC", "support"]
    assert [line.split()[0] for line in lines[header + 2 : header + 5]] == LEVELS
    table = pd.read_csv(tmp_path / "metrics_val.csv", index_col="class")
    assert list(table.index) == [*LEVELS, "macro"] and list(table.columns) == ["f1", "auroc", "support"]
    assert table.loc["macro", "f1"] == pytest.approx(logged["val/f1"], abs=1e-6)
    assert table.loc["macro", "auroc"] == pytest.approx(logged["val/auroc"], abs=1e-6)
    assert table["support"].iloc[:3].sum() == table.loc["macro", "support"] == len(dm.split_ids("val"))

    other = _task(["medium", "low", "high"])
    with pytest.raises(CheckpointMismatchError, match=r"target_names low, medium, high; target 0 is 'low'"):
        _trainer(tmp_path).validate(other, dm, ckpt_path=tmp_path / "model.ckpt")


@pytest.mark.parametrize("binary", [False, True], ids=["multiclass", "binary"])
def test_predictions_are_probabilities_per_class_and_the_predicted_class(binary, small_table, tmp_path):
    classes = ["rest", "high"] if binary else LEVELS
    task = _task(classes).eval()
    dm = _binary_datamodule(small_table, tmp_path) if binary else _datamodule()
    output = tmp_path / "preds.csv"
    _trainer(tmp_path, callbacks=[PredictionWriter(str(output))]).predict(task, dm, return_predictions=False)
    written = pd.read_csv(output)
    assert list(written.columns) == ["transcript_id", *classes, "predicted"]
    assert len(written) == sum(len(dm.split_ids(s)) for s in ("train", "val", "test"))
    probs = written[classes].to_numpy()
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-6)
    assert (written["predicted"] == np.array(classes)[probs.argmax(1)]).all()
    batch = next(iter(dm.predict_dataloader()))
    with torch.no_grad():
        expected = task(batch["inputs"], batch["present"]).numpy()
    np.testing.assert_allclose(probs[: len(expected)], expected, rtol=1e-5, atol=1e-6)
