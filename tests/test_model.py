"""FusionModel is a plain nn.Module: usable without Lightning, and trained by a hand-written loop exactly as
the Lightning task trains it."""

from __future__ import annotations

import subprocess
import sys
from functools import partial

import lightning as L
import numpy as np
import pytest
import torch

from mmfuse.adapters import ConcatFusion
from mmfuse.backbones import ESM2, NucleotideTransformer
from mmfuse.data import IsoformExpression
from mmfuse.errors import ConfigError
from mmfuse.model import FusionModel
from mmfuse.training import MLPHead, Regression, RegressionTask

STEPS = 4  # within the first epoch (5 batches)


def _backbones() -> dict:
    torch.manual_seed(0)
    return {"rna": NucleotideTransformer("tiny"), "protein": ESM2("tiny")}


def _datamodule() -> IsoformExpression:
    return IsoformExpression(
        "sample", modalities={"rna": "RNA", "protein": "Protein"},
        split={"val_fraction": 0.25, "test_fraction": 0.25}, loader={"batch_size": 8},
        sample={"size": 24, "seed": 1},
    )  # fmt: skip


ADAPTER = partial(ConcatFusion, hidden_dim=16)
HEAD = partial(MLPHead, hidden_dims=[16], dropout=0.0)


def test_importing_the_model_imports_no_lightning():
    code = ("import sys, mmfuse.model; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('lightning', 'pytorch_lightning')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_a_hand_written_loop_follows_the_lightning_task(tmp_path):
    dm = _datamodule()
    task = RegressionTask(_backbones(), adapter=ADAPTER, head=HEAD, target_names=dm.target_names,
                          optimizer=partial(torch.optim.AdamW, lr=3e-3))  # fmt: skip
    initial = {k: v.clone() for k, v in task.model.state_dict().items()}
    lightning_losses = []

    class Record(L.Callback):
        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
            lightning_losses.append(outputs["loss"].item())

    trainer = L.Trainer(max_steps=STEPS, limit_val_batches=0, logger=False, accelerator="cpu",
                        enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False,
                        callbacks=[Record()], default_root_dir=tmp_path)  # fmt: skip
    trainer.fit(task, dm)

    # the same model in plain PyTorch: same weights, same batches, same objective
    dm = _datamodule()
    dm.setup("fit")
    objective = Regression(dm.target_names)
    objective.prepare(dm)
    model = FusionModel(_backbones(), objective.num_outputs, ADAPTER, HEAD)
    model.load_state_dict(initial)
    dm.attach_tokenizers(model.tokenizers())
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    losses = []
    for batch in dm.train_dataloader():
        loss = objective.loss(model(batch["inputs"], batch["present"]), batch["target"])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        if len(losses) == STEPS:
            break
    assert len(lightning_losses) == STEPS
    np.testing.assert_allclose(losses, lightning_losses, rtol=1e-5, atol=1e-6)
    trained = task.model.state_dict()
    assert any(not torch.equal(trained[k], initial[k]) for k in initial)
    for key, value in model.state_dict().items():  # and the same weights at the end
        torch.testing.assert_close(value, trained[key], rtol=1e-4, atol=1e-6)


def test_the_model_refuses_what_it_cannot_build_or_run():
    with pytest.raises(ConfigError, match="at least one backbone"):
        FusionModel({}, 3)
    with pytest.raises(ConfigError, match=r"modality_dropout must be in \[0, 1\)"):
        FusionModel(_backbones(), 3, modality_dropout=1.0)
    model = FusionModel(_backbones(), 3)
    assert isinstance(model.head, torch.nn.Linear) and model.head.out_features == 3
    with pytest.raises(ValueError, match=r"holds none of the modalities \['protein', 'rna'\]"):
        model({"dna": {"input_ids": torch.zeros(1, 4, dtype=torch.long)}})
