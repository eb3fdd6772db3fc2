"""The task's callbacks and checkpoint helpers, exercised without a Trainer where that makes sense."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from mmfuse.training import EpochSummary, StepReseeding
from mmfuse.training.slim import upgrade_state_dict


class _Module:
    device = torch.device("cpu")

    def __init__(self) -> None:
        self.printed: list[str] = []

    def print(self, line: str) -> None:
        self.printed.append(line)


def _trainer(**kwargs) -> SimpleNamespace:
    strategy = SimpleNamespace(reduce=lambda tensor, reduce_op: tensor)  # one process
    return SimpleNamespace(strategy=strategy, current_epoch=0, sanity_checking=False, global_rank=0,
                           state=SimpleNamespace(fn="fit"), callback_metrics={}, **kwargs)  # fmt: skip


def test_the_epoch_line_is_the_sample_weighted_mean_loss_and_survives_a_checkpoint():
    summary, module, trainer = EpochSummary(), _Module(), _trainer()
    summary.setup(trainer, module, "fit")
    for loss, size in ((1.0, 8), (4.0, 2)):
        summary.on_train_batch_end(trainer, module, {"batch_loss": torch.tensor(loss), "batch_size": size}, None, 0)
    state = summary.state_dict()
    assert state["samples"] == 10 and state["sum"].item() == 16.0
    resumed = EpochSummary()  # a run resumed mid-epoch from that checkpoint
    resumed.setup(trainer, module, "fit")
    resumed.load_state_dict(state)
    resumed.on_train_start(trainer, module)
    resumed.on_train_batch_end(trainer, module, {"batch_loss": torch.tensor(0.0), "batch_size": 6}, None, 2)
    trainer.callback_metrics["val/loss"] = torch.tensor(0.5)
    module.evaluation = SimpleNamespace(scalars={"spearman": torch.tensor(0.25)})
    resumed.on_validation_end(trainer, module)
    resumed.on_train_epoch_end(trainer, module)
    assert module.printed == ["epoch 0: train/loss 1.0000  val/loss 0.5000  val/spearman 0.2500"]


def test_reseeding_draws_from_seed_step_and_process(monkeypatch):
    monkeypatch.setenv("PL_GLOBAL_SEED", "7")
    draws = []
    for step, rank in ((3, 0), (3, 0), (3, 1), (4, 0)):
        StepReseeding().on_train_batch_start(SimpleNamespace(global_step=step, world_size=2, global_rank=rank),
                                             None, None, 0)  # fmt: skip
        draws.append(torch.rand(1).item())
    assert draws[0] == draws[1] and len(set(draws)) == 3
    torch.manual_seed((7 * 1_000_003 + 3 * 2 + 0) % 2**63)  # what the reseeding of step 3, rank 0 amounts to
    assert torch.rand(1).item() == draws[0]
    monkeypatch.delenv("PL_GLOBAL_SEED")
    torch.manual_seed(1)
    expected = torch.rand(1).item()
    torch.manual_seed(1)
    StepReseeding().on_train_batch_start(SimpleNamespace(global_step=0, world_size=1, global_rank=0), None, None, 0)
    assert torch.rand(1).item() == expected  # without a seed it leaves the generator alone


def test_checkpoints_of_the_earlier_layout_are_renamed_to_the_model_level():
    state = {"backbones.rna.model.w": 1, "adapter.p": 2, "head.net.0.weight": 3, "target_mean": 4, "target_std": 5}
    upgrade_state_dict(state)
    assert state == {"model.backbones.rna.model.w": 1, "model.adapter.p": 2, "model.head.net.0.weight": 3,
                     "objective.target_mean": 4, "objective.target_std": 5}  # fmt: skip
    current = {"model.head.w": 1, "objective.target_mean": 2}
    upgrade_state_dict(current)
    assert current == {"model.head.w": 1, "objective.target_mean": 2}


@pytest.mark.parametrize("trainer_class", ["lightning", "mmfuse"])
def test_last_checkpoint_is_the_last_epoch_even_when_the_metric_does_not_improve(trainer_class, tmp_path):
    from functools import partial

    from lightning.pytorch import Trainer
    from lightning.pytorch.callbacks import ModelCheckpoint

    from mmfuse.training.trainer import MmfuseTrainer
    from tests.training.test_regression import _datamodule, _task

    task = _task()
    task.optimizer_factory = partial(torch.optim.SGD, lr=1e-30)  # steps below float32 rounding: val/loss stays put
    checkpoint = ModelCheckpoint(dirpath=tmp_path, monitor="val/loss", mode="min", filename="best", save_last=True)
    kind = MmfuseTrainer if trainer_class == "mmfuse" else Trainer
    trainer = kind(max_epochs=3, limit_train_batches=2, limit_val_batches=1, logger=False, accelerator="cpu",
                   enable_progress_bar=False, enable_model_summary=False, callbacks=[checkpoint])  # fmt: skip
    trainer.fit(task, _datamodule())
    best = torch.load(tmp_path / "best.ckpt", weights_only=True)
    last = torch.load(tmp_path / "last.ckpt", weights_only=True)
    assert best["epoch"] == 0, "an equal loss is no improvement: the best is the first epoch"
    # Lightning 2.6 alone leaves last.ckpt at the best epoch; mmfuse's trainer writes it at every epoch
    assert last["epoch"] == (2 if trainer_class == "mmfuse" else 0)
    assert [e["epoch"] for e in last["mmfuse_history"]] == ([0, 1, 2] if trainer_class == "mmfuse" else [0])
