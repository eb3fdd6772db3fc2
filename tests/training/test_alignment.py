"""The contrastive alignment objective: its value, absent modalities, a task training with it, and DDP
gathering (two gloo processes give the loss and gradients of one process with the joined batch)."""

from __future__ import annotations

import math
import socket
from functools import partial
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from mmfuse.errors import ConfigError
from mmfuse.training.alignment import AlignmentOptions, ContrastiveAlignment

DIMS = {"rna": 6, "protein": 5}


def _features(seed: int = 0, batch: int = 8) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    features = {}
    for m, d in DIMS.items():
        x = torch.randn(batch, 4, d, generator=g)
        mask = torch.ones(batch, 4, dtype=torch.bool)
        mask[1, 2:] = False
        features[m] = (x, mask)
    features["protein"][1][5] = False  # sample 5 has no protein
    return features


def _module(**options) -> ContrastiveAlignment:
    torch.manual_seed(0)
    return ContrastiveAlignment(AlignmentOptions(modalities=["rna", "protein"], dim=3, **options), DIMS)


def test_the_loss_is_symmetric_infonce_over_the_samples_with_both_modalities():
    module = _module(temperature=0.5)
    features = _features()
    loss = module(features)
    keep = torch.tensor([i != 5 for i in range(8)])
    u, v = [], []
    for m, out in (("rna", u), ("protein", v)):
        x, mask = features[m]
        pooled = (x * mask.unsqueeze(-1)).sum(1) / mask.sum(1, keepdim=True).clamp(min=1)
        out.append(F.normalize(module.projections[m](pooled), dim=-1)[keep])
    logits = u[0] @ v[0].T / 0.5
    target = torch.arange(7)
    expected = (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2
    torch.testing.assert_close(loss, expected)
    # what stands in the absent protein slot changes nothing
    changed = dict(features)
    x, mask = features["protein"]
    changed["protein"] = (x.clone().index_fill_(0, torch.tensor([5]), 1e4), mask)
    torch.testing.assert_close(module(changed), loss)


def test_training_aligns_paired_modalities_and_too_few_samples_give_zero():
    module = _module(temperature=0.1)
    g = torch.Generator().manual_seed(3)
    rna = torch.randn(16, 3, 6, generator=g)
    protein = rna[..., :5] @ torch.randn(5, 5, generator=g)  # the protein is a function of its RNA
    mask = torch.ones(16, 3, dtype=torch.bool)
    features = {"rna": (rna, mask), "protein": (protein, mask)}
    shuffled = {"rna": (rna, mask), "protein": (protein[torch.randperm(16, generator=g)], mask)}
    start = module(features).item()
    optimizer = torch.optim.Adam(module.parameters(), lr=0.05)
    for _ in range(60):
        optimizer.zero_grad()
        module(features).backward()
        optimizer.step()
    with torch.no_grad():
        aligned, unaligned = module(features).item(), module(shuffled).item()
    assert aligned < 0.3 * start and aligned < math.log(16) / 4 < unaligned, (start, aligned, unaligned)
    one = {m: (x[:1], m_[:1]) for m, (x, m_) in features.items()}
    zero = module(one)
    assert zero.item() == 0.0 and zero.requires_grad, "one sample has no negatives"
    fixed = _module(learn_temperature=False)
    assert "log_scale" in dict(fixed.named_buffers()) and "log_scale" not in dict(fixed.named_parameters())


@pytest.mark.parametrize(("options", "message"), [
    ({"modalities": ["rna", "rna"]}, "alignment.modalities must name two different modalities"),
    ({"modalities": ["rna", "dna"]}, r"alignment.modalities names \['dna'\], which have no backbone"),
    ({"modalities": ["rna", "protein"], "temperature": 0.0}, "alignment needs temperature > 0"),
])  # fmt: skip
def test_bad_alignment_options_are_refused(options, message):
    with pytest.raises(ConfigError, match=message):
        ContrastiveAlignment(AlignmentOptions(**options), DIMS)


def test_a_task_trains_with_the_alignment_and_logs_it(tmp_path):
    import lightning as L

    from mmfuse.adapters import ConcatFusion
    from mmfuse.backbones import ESM2, NucleotideTransformer
    from mmfuse.training import MLPHead, RegressionTask
    from tests.training.test_regression import _datamodule

    task = RegressionTask({"rna": NucleotideTransformer("tiny"), "protein": ESM2("tiny")},
                          adapter=partial(ConcatFusion, hidden_dim=8), head=partial(MLPHead, hidden_dims=[8]),
                          target_names=[f"t{i}" for i in range(30)],
                          alignment=AlignmentOptions(modalities=["rna", "protein"], weight=0.5, dim=8))  # fmt: skip
    before = task.alignment.projections["protein"][1].weight.detach().clone()
    trainer = L.Trainer(max_epochs=1, limit_train_batches=3, limit_val_batches=1, logger=False, accelerator="cpu",
                        enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False)  # fmt: skip
    trainer.fit(task, _datamodule())
    logged = trainer.callback_metrics
    assert {"train/alignment_loss_epoch", "val/alignment_loss", "train/loss_epoch"} <= set(logged)
    assert math.isfinite(logged["val/alignment_loss"].item()) and logged["val/alignment_loss"].item() > 0
    assert not torch.equal(before, task.alignment.projections["protein"][1].weight), "the alignment trains"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank(rank: int, port: int, out: str) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    module = _module(temperature=0.3)
    features = {m: (x[rank * 4 : rank * 4 + 4], mask[rank * 4 : rank * 4 + 4]) for m, (x, mask) in _features().items()}
    loss = module(features)
    loss.backward()
    for p in module.parameters():  # what DistributedDataParallel does: the mean of the processes' gradients
        dist.all_reduce(p.grad)
        p.grad /= 2
    if rank == 0:
        torch.save({"loss": loss.detach(), "grads": {n: p.grad for n, p in module.named_parameters()}}, out)
    dist.destroy_process_group()


@pytest.mark.slow  # two processes: a few seconds
def test_two_gloo_processes_give_the_loss_and_gradients_of_the_joined_batch(tmp_path):
    out = tmp_path / "rank0.pt"
    torch.multiprocessing.spawn(_rank, args=(_free_port(), str(out)), nprocs=2, join=True)
    module = _module(temperature=0.3)
    loss = module(_features())
    loss.backward()
    ddp = torch.load(out, weights_only=True)
    torch.testing.assert_close(ddp["loss"], loss.detach())
    for name, p in module.named_parameters():
        torch.testing.assert_close(ddp["grads"][name], p.grad, msg=name)
    assert Path(out).is_file()
