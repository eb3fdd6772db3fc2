"""Non-finite numbers stop the run with a message saying where they came from; nothing exits 0 after them."""

from __future__ import annotations

from functools import partial
from types import SimpleNamespace

import lightning as L
import numpy as np
import pytest
import torch

from mmfuse.adapters import ConcatFusion
from mmfuse.backbones import ESM2
from mmfuse.data import IsoformExpression
from mmfuse.data.errors import DataError
from mmfuse.data.samples.isoform import make_sample_table
from mmfuse.errors import NonFiniteError
from mmfuse.training import EpochSummary, MLPHead, PredictionWriter, RegressionTask


def _datamodule(path="sample", batch_size=8) -> IsoformExpression:
    return IsoformExpression(
        str(path), modalities={"protein": "Protein"}, split={"val_fraction": 0.25, "test_fraction": 0.25},
        loader={"batch_size": batch_size}, sample={"size": 12, "seed": 1},
    )  # fmt: skip


def _task(dm, lr=1e-3) -> RegressionTask:
    torch.manual_seed(0)
    return RegressionTask({"protein": ESM2("tiny")}, adapter=partial(ConcatFusion, hidden_dim=8),
                          head=partial(MLPHead, hidden_dims=[8]), target_names=dm.target_names,
                          optimizer=partial(torch.optim.SGD, lr=lr))  # fmt: skip


def _trainer(tmp_path, **kwargs) -> L.Trainer:
    options = dict(max_epochs=2, limit_val_batches=1, logger=False, accelerator="cpu", enable_progress_bar=False,
                   enable_model_summary=False, enable_checkpointing=False, default_root_dir=tmp_path)  # fmt: skip
    return L.Trainer(**{**options, **kwargs})


def test_targets_near_float32s_limit_are_refused_before_training(tmp_path):
    table = make_sample_table(12, seed=1)
    table.loc[:5, "Adipose Tissue"] = 3.0e38  # finite in float32; its mean and spread are not
    table.loc[6:, "Adipose Tissue"] = -3.0e38
    table.to_csv(tmp_path / "big.csv", index=False)
    dm = _datamodule(tmp_path / "big.csv")
    dm.setup("fit")
    with pytest.raises(DataError, match=r"big.csv \(Adipose Tissue\) reach 3e\+38.*overflows.*rescale"):
        dm.target_stats()


def test_a_diverging_run_stops_at_the_step_naming_its_records(tmp_path):
    dm = _datamodule(batch_size=2)  # several steps before the first validation
    with pytest.raises(NonFiniteError, match=r"the training loss is (nan|inf) at step \d+ \(records .+\): check"):
        _trainer(tmp_path).fit(_task(dm, lr=1e32), dm)


def test_a_checkpoint_with_nan_weights_is_refused_and_nan_predictions_are_never_written(tmp_path):
    dm = _datamodule()
    task = _task(dm)
    trainer = _trainer(tmp_path, max_steps=1)
    trainer.fit(task, dm)
    trainer.save_checkpoint(tmp_path / "run.ckpt")
    checkpoint = torch.load(tmp_path / "run.ckpt", weights_only=True)
    key = next(k for k in checkpoint["state_dict"] if k.startswith("model.head."))
    checkpoint["state_dict"][key] = torch.full_like(checkpoint["state_dict"][key], float("nan"))
    torch.save(checkpoint, tmp_path / "nan.ckpt")
    with pytest.raises(NonFiniteError, match=rf"NaN or infinite weights \(1 tensors, e.g. {key}\).*earlier checkpoint"):
        _trainer(tmp_path).predict(_task(dm), dm, ckpt_path=tmp_path / "nan.ckpt")

    with torch.no_grad():
        task.model.head.net[-1].bias.fill_(float("nan"))  # a model that predicts NaN, loaded another way
    output = tmp_path / "preds.csv"
    with pytest.raises(NonFiniteError, match=r"predictions of \d+ record\(s\) \(.+\) are NaN.*nothing was written"):
        _trainer(tmp_path, callbacks=[PredictionWriter(str(output))]).predict(task, dm, return_predictions=False)
    assert not output.exists() and not list(tmp_path.glob(".preds.csv*"))


def test_a_non_finite_validation_loss_stops_before_a_checkpoint_is_chosen():
    metrics = {"val/loss": torch.tensor(np.nan)}
    trainer = SimpleNamespace(sanity_checking=False, state=SimpleNamespace(fn="fit"), current_epoch=3,
                              callback_metrics=metrics)  # fmt: skip
    summary = EpochSummary()
    with pytest.raises(NonFiniteError, match="the validation loss is nan after epoch 3"):
        summary.on_validation_end(trainer, SimpleNamespace(evaluation=None))
