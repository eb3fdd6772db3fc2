"""Every registered adapter trains the quickstart (its config, the tiny backbones, the sample data) for two
steps through the ``mmfuse`` CLI, sized as benchmarks/adapters.py sizes it; the slow suite trains each for
ten epochs (tests/test_learning.py)."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import pytest
import torch

from mmfuse.registry import ADAPTERS

ROOT = Path(__file__).resolve().parents[2]


def _benchmark():
    spec = importlib.util.spec_from_file_location("adapters_benchmark", ROOT / "benchmarks" / "adapters.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("name", ADAPTERS.names())
def test_every_adapter_trains_the_quickstart_for_two_steps(name, tmp_path, monkeypatch):
    from mmfuse.cli import MmfuseCLI

    monkeypatch.setattr("sys.argv", ["mmfuse"])
    benchmark = _benchmark()
    cli = MmfuseCLI(
        ["--config", str(benchmark.QUICKSTART), benchmark.adapter_override(name), "--trainer.max_steps=2",
         "--trainer.limit_val_batches=0", "--data.init_args.sample.size=24", f"--trainer.default_root_dir={tmp_path}",
         f"--trainer.logger.init_args.save_dir={tmp_path}", "--trainer.enable_progress_bar=false",
         "--trainer.enable_model_summary=false", "--trainer.accelerator=cpu"],
        run=False,
    )  # fmt: skip
    adapter = cli.model.model.adapter
    assert type(adapter).__name__ == name
    before = {n: p.detach().clone() for n, p in adapter.named_parameters()}
    cli.trainer.fit(cli.model, cli.datamodule)
    assert cli.trainer.global_step == 2
    assert math.isfinite(cli.trainer.callback_metrics["train/loss_step"].item())
    moved = [n for n, p in adapter.named_parameters() if not torch.equal(before[n], p.detach())]
    assert moved, f"{name}: no adapter weight changed in two steps"
