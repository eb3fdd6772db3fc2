"""Deterministic mode: ``seed_everything: N`` with ``trainer.deterministic: true`` gives identical runs
on CPU (weights and every logged metric), and another seed gives another run."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch

from mmfuse.cli import main

QUICKSTART = Path(__file__).resolve().parents[1] / "experiments/quickstart/config.yaml"


def _run(workdir: Path, seed: int) -> tuple[list[dict[str, str]], dict[str, torch.Tensor]]:
    main([
        "fit", "--config", str(QUICKSTART), f"--seed_everything={seed}", "--trainer.deterministic=true",
        "--trainer.max_epochs=2", "--data.init_args.sample.size=24", "--data.init_args.split.val_fraction=0.2",
        "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false", "--trainer.log_every_n_steps=1",
        f"--trainer.logger.init_args.save_dir={workdir}", "--model.init_args.modality_dropout=0.2",
    ])  # fmt: skip
    run = workdir / "quickstart/version_0"
    metrics = list(csv.DictReader((run / "metrics.csv").open()))
    weights = torch.load(run / "checkpoints/last.ckpt", map_location="cpu", weights_only=True)["state_dict"]
    return metrics, weights


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    return {name: _run(tmp_path_factory.mktemp(name), seed) for name, seed in (("a", 0), ("b", 0), ("c", 1))}


def test_two_runs_with_the_same_seed_are_identical(runs):
    (metrics_a, weights_a), (metrics_b, weights_b) = runs["a"], runs["b"]
    assert len(metrics_a) > 4 and metrics_a == metrics_b  # every step's loss and every epoch's metrics, as text
    assert weights_a.keys() == weights_b.keys()
    assert all(torch.equal(weights_a[k], weights_b[k]) for k in weights_a)


def test_another_seed_gives_another_run(runs):
    (metrics_a, weights_a), (metrics_c, weights_c) = runs["a"], runs["c"]
    assert metrics_a != metrics_c
    assert any(not torch.equal(weights_a[k], weights_c[k]) for k in weights_a)
