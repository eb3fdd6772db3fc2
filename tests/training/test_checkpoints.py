"""Checkpoints of runs with fixed pretrained weights store only what trains, and load back exactly."""

from __future__ import annotations

from functools import partial

import lightning as L
import pytest
import torch

from mmfuse.adapters import ConcatFusion
from mmfuse.backbones import ESM2, NucleotideTransformer
from mmfuse.backbones.finetune import FineTuning, LoraOptions
from mmfuse.data import IsoformExpression
from mmfuse.errors import CheckpointMismatchError
from mmfuse.training import MLPHead, RegressionTask


@pytest.fixture(scope="module")
def esm_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("esm2-tiny")
    torch.manual_seed(3)
    ESM2("tiny").model.save_pretrained(directory)  # stands in for a downloaded checkpoint
    return str(directory)


def _task(esm_dir: str, **protein) -> RegressionTask:
    torch.manual_seed(0)
    return RegressionTask(
        {"rna": NucleotideTransformer("tiny"), "protein": ESM2("tiny", source=esm_dir, finetune=FineTuning(**protein))},
        adapter=partial(ConcatFusion, hidden_dim=8),
        head=partial(MLPHead, hidden_dims=[8]),
        target_names=[f"t{i}" for i in range(30)],
    )


def _datamodule() -> IsoformExpression:
    return IsoformExpression(
        "sample", modalities={"rna": "RNA", "protein": "Protein"},
        split={"val_fraction": 0.25, "test_fraction": 0.25}, loader={"batch_size": 8},
        sample={"size": 12, "seed": 1},
    )  # fmt: skip


def _trainer(tmp_path) -> L.Trainer:
    return L.Trainer(max_steps=2, limit_val_batches=1, logger=False, accelerator="cpu", enable_progress_bar=False,
                     enable_model_summary=False, enable_checkpointing=False, default_root_dir=tmp_path)  # fmt: skip


@pytest.mark.parametrize("options", [{"lora": LoraOptions(r=2)}, {"freeze": True}, {"train_last_layers": 1}],
                         ids=["lora", "freeze", "last-layer"])  # fmt: skip
def test_only_trained_weights_are_stored_and_predictions_come_back_identical(esm_dir, tmp_path, options):
    task, dm = _task(esm_dir, **options), _datamodule()
    trainer = _trainer(tmp_path)
    trainer.fit(task, dm)
    trainer.save_checkpoint(tmp_path / "run.ckpt")
    saved = torch.load(tmp_path / "run.ckpt", weights_only=True)
    stored = {k for k in saved["state_dict"] if k.startswith("model.backbones.protein.")}
    protein = task.model.backbones["protein"]
    trainable = {f"model.backbones.protein.{n}" for n, p in protein.named_parameters() if p.requires_grad}
    position_ids = "model.backbones.protein.model.embeddings.position_ids"
    assert trainable <= stored and stored - trainable <= {position_ids}, sorted(stored - trainable)[:5]
    assert saved["mmfuse_reloaded_weights"] == {"protein": esm_dir}
    assert any(k.startswith("model.backbones.rna.") for k in saved["state_dict"]), "random backbones are stored whole"

    expected = torch.cat([p["preds"] for p in trainer.predict(task, dm)])
    fresh = _task(esm_dir, **options)
    fresh_preds = _trainer(tmp_path).predict(fresh, dm, ckpt_path=tmp_path / "run.ckpt")
    torch.testing.assert_close(torch.cat([p["preds"] for p in fresh_preds]), expected)


def test_a_pruned_checkpoint_still_refuses_a_model_it_does_not_fit(esm_dir, tmp_path):
    task, dm = _task(esm_dir, lora=LoraOptions(r=2)), _datamodule()
    trainer = _trainer(tmp_path)
    trainer.fit(task, dm)
    trainer.save_checkpoint(tmp_path / "run.ckpt")
    other = _task(esm_dir, lora=LoraOptions(r=4))
    with pytest.raises(CheckpointMismatchError, match=r"fixed backbone weights come from .*mis-shaped"):
        _trainer(tmp_path).predict(other, dm, ckpt_path=tmp_path / "run.ckpt")
