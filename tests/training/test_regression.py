from __future__ import annotations

from functools import partial

import lightning as L
import pytest
import torch

from mmfuse.adapters import ConcatFusion
from mmfuse.backbones import ESM2, FineTuning, NucleotideTransformer
from mmfuse.data import IsoformExpression
from mmfuse.errors import CheckpointMismatchError, ConfigError
from mmfuse.training import ClassificationTask, MLPHead, RegressionTask


def _task(hidden_dim: int = 16, **kwargs) -> RegressionTask:
    return RegressionTask(
        {"rna": NucleotideTransformer("tiny"), "protein": ESM2("tiny")},
        adapter=partial(ConcatFusion, hidden_dim=hidden_dim),
        head=partial(MLPHead, hidden_dims=[16]),
        target_names=[f"t{i}" for i in range(30)],
        optimizer=partial(torch.optim.AdamW, lr=3e-3),
        **kwargs,
    )


def _datamodule() -> IsoformExpression:
    return IsoformExpression(
        "sample", modalities={"rna": "RNA", "protein": "Protein"},
        split={"val_fraction": 0.25, "test_fraction": 0.25}, loader={"batch_size": 8},
        sample={"size": 24, "seed": 1},
    )  # fmt: skip


def _trainer(tmp_path, **kwargs) -> L.Trainer:
    defaults = dict(max_epochs=1, limit_train_batches=3, limit_val_batches=1, logger=False, accelerator="cpu",
                    enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path)  # fmt: skip
    return L.Trainer(**{**defaults, **kwargs})


def test_widths_come_from_the_backbones():
    task = _task(hidden_dim=12)
    assert task.model.adapter.input_dims == {"rna": 32, "protein": 32}
    assert task.model.head.in_dim == 24 and task.model.head.out_dim == 30


def test_python_api_checkpoint_holds_only_plain_hyperparameters(tmp_path):
    task, dm = _task(), _datamodule()
    trainer = _trainer(tmp_path, enable_checkpointing=False)
    trainer.fit(task, dm)
    trainer.save_checkpoint(tmp_path / "model.ckpt")
    checkpoint = torch.load(tmp_path / "model.ckpt", weights_only=True)  # no object to unpickle
    hparams = checkpoint["hyper_parameters"]
    assert hparams["adapter"] == {"class_path": "mmfuse.adapters.concat.ConcatFusion", "init_args": {"hidden_dim": 16}}
    assert hparams["objective"] is None  # RegressionTask's default, Regression()
    assert set(hparams) == {
        "target_names",
        "adapter",
        "head",
        "objective",
        "optimizer",
        "lr_scheduler",
        "modality_dropout",
        "embedding_cache",
        "compile_backbones",
        "modality_contribution",
        "alignment",
    }
    assert checkpoint["datamodule_hyper_parameters"]["source"]["path"] == "sample"


def test_targets_are_standardised_with_training_statistics(tmp_path):
    task, dm = _task(), _datamodule()
    _trainer(tmp_path, max_steps=1).fit(task, dm)
    mean, std = dm.target_stats()
    torch.testing.assert_close(task.objective.target_mean, torch.as_tensor(mean))
    torch.testing.assert_close(task.objective.target_std, torch.as_tensor(std))
    batch = next(iter(dm.val_dataloader()))
    task.eval()
    raw = task.model(batch["inputs"])
    torch.testing.assert_close(task(batch["inputs"]), raw * task.objective.target_std + task.objective.target_mean)


def test_training_reduces_the_loss_on_a_fixed_batch():
    task, dm = _task(), _datamodule()
    dm.attach_tokenizers(task.model.tokenizers())
    batch = next(iter(dm.train_dataloader()))
    optimizer = task.configure_optimizers()
    losses = []
    target = (batch["target"] - batch["target"].mean(0)) / batch["target"].std(0)
    for _ in range(30):
        loss = torch.nn.functional.mse_loss(task.model(batch["inputs"]), target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


def test_loading_a_checkpoint_of_another_architecture_names_the_difference(tmp_path):
    task, dm = _task(hidden_dim=16), _datamodule()
    trainer = _trainer(tmp_path, enable_checkpointing=False)
    trainer.fit(task, dm)
    trainer.save_checkpoint(tmp_path / "model.ckpt")
    other = _task(hidden_dim=8)
    expected = r"mis-shaped \(e.g. model.adapter.projections.protein.1.bias: saved \(16,\) vs model \(8,\).*config.yaml"
    with pytest.raises(CheckpointMismatchError, match=expected):
        _trainer(tmp_path).test(other, dm, ckpt_path=tmp_path / "model.ckpt")


def test_target_names_are_required():
    with pytest.raises(ConfigError, match="target_names is empty.*target_names=datamodule.target_names"):
        RegressionTask({"protein": ESM2("tiny")})


def test_optimizer_sees_only_trainable_parameters_and_schedulers_are_configured():
    task = RegressionTask(
        {"protein": ESM2("tiny", finetune=FineTuning(freeze=True))},
        target_names=["a", "b"],
        optimizer=partial(torch.optim.SGD, lr=0.1),
        lr_scheduler=partial(torch.optim.lr_scheduler.ReduceLROnPlateau, patience=2),
    )
    config = task.configure_optimizers()
    optimized = {id(p) for group in config["optimizer"].param_groups for p in group["params"]}
    assert optimized == {id(p) for p in task.parameters() if p.requires_grad}
    assert not optimized & {id(p) for p in task.model.backbones.parameters()}
    assert config["lr_scheduler"]["monitor"] == "val/loss"


def test_absent_modality_does_not_depend_on_its_stand_in():
    task = _task().eval()
    tok = task.model.tokenizers()
    rna = tok["rna"](["ACGTACGTAAGG", "TTGACCA"])
    present = {"rna": torch.tensor([True, True]), "protein": torch.tensor([True, False])}
    outputs = [task(
        {"rna": rna, "protein": tok["protein"](["MKTAYIAKQR", stand_in])}, present
    ) for stand_in in ("MV", "WWWWWWWWWWWWWWWWWWW")]  # fmt: skip
    torch.testing.assert_close(outputs[0], outputs[1])
    # a batch where no sample has protein: the protein backbone is skipped
    alone = task({"rna": rna}, {"rna": present["rna"], "protein": torch.tensor([False, False])})
    torch.testing.assert_close(alone[1], outputs[0][1])
    assert not torch.allclose(alone[0], outputs[0][0])


def test_modality_dropout_hides_modalities_in_training_only():
    task = _task(modality_dropout=0.99)
    tok = task.model.tokenizers()
    inputs = {"rna": tok["rna"](["ACGTACGTAAGG"] * 64), "protein": tok["protein"](["MKTAYIAKQR"] * 64)}
    task.train()
    torch.manual_seed(0)
    out = task.model.fuse(inputs)  # ConcatFusion: [rna part, protein part], zeros where hidden
    hidden = {m: (part.abs().sum(1) == 0) for m, part in zip(("protein", "rna"), out.split(16, dim=1), strict=True)}
    assert (hidden["rna"] ^ hidden["protein"]).all(), "exactly one of the two is hidden, never both"
    task.eval()
    assert (task.model.fuse(inputs).abs().sum(1) > 0).all()
    with pytest.raises(ConfigError, match=r"modality_dropout must be in \[0, 1\)"):
        _task(modality_dropout=1.0)


@pytest.mark.parametrize("task_class", [RegressionTask, ClassificationTask])
def test_the_task_moves_its_batches_itself_leaving_strings_unwalked(task_class):
    # Lightning calls this hook by name: a renamed override would silently fall back to Lightning's walk
    assert task_class.transfer_batch_to_device is not L.LightningModule.transfer_batch_to_device
    batch = {"inputs": {"rna": {"input_ids": torch.ones(2, 3)}}, "ids": ["a", "b"], "target": torch.zeros(2)}
    moved = task_class.transfer_batch_to_device(None, batch, torch.device("meta"), 0)
    assert moved["inputs"]["rna"]["input_ids"].device.type == "meta" and moved["target"].device.type == "meta"
    assert moved["ids"] == ["a", "b"]
