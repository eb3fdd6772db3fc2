"""Every registered fusion adapter trained on the quickstart task: held-out Spearman, time, size.

Runs the quickstart config (tiny random-init backbones, bundled sample data) once per adapter, with
the adapter swapped in by a CLI override, the same seed and the same number of epochs, and prints
one table. Time is reported as a ratio to ConcatFusion measured in the same run (machines are noisy).

    python benchmarks/adapters.py                 # all adapters, 6 epochs
    python benchmarks/adapters.py --epochs 10 CrossAttentionFusion PerceiverResampler
    python benchmarks/adapters.py --epochs 10 --per-epoch   # also what a run of 3, 4, ... 10 epochs would test

``--per-epoch`` keeps the weights after every epoch: the learning rate is constant, so a run of N epochs is the
first N epochs of a longer one, and its best checkpoint is the epoch of the best validation Spearman among
them; each such epoch is tested. One run per adapter then gives the table of every shorter run.

The options below size each adapter like the quickstart's ConcatFusion (64 wide). The same table
is used by the slow learning test (tests/test_learning.py).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
QUICKSTART = REPO / "experiments" / "quickstart" / "config.yaml"

#: quickstart-sized options per built-in adapter (an adapter not listed runs with its defaults)
QUICKSTART_OPTIONS: dict[str, dict] = {
    "ConcatFusion": {"hidden_dim": 64},
    "TokenConcatFusion": {"hidden_dim": 64, "num_layers": 1, "num_heads": 4, "head_dim": 16},
    "CrossAttentionFusion": {"num_layers": 1, "num_heads": 4, "head_dim": 16},
    "PerceiverResampler": {"dim": 64, "num_latents": 16, "depth": 1, "num_heads": 4, "head_dim": 16},
    "CAbstractor": {"hidden_dim": 64, "num_queries": 8, "depth": 1},
    "InteractionFusion": {"hidden_dim": 64, "num_heads": 4, "head_dim": 16},
    "GatedFusion": {"hidden_dim": 64, "gate_dim": 32},
    "LowRankTensorFusion": {"hidden_dim": 64, "fused_dim": 128, "rank": 4},
    "MulTFusion": {"dim": 32, "num_layers": 1, "self_layers": 0, "num_heads": 4, "head_dim": 8},
    "QFormer": {"dim": 64, "num_queries": 8, "num_layers": 2, "num_heads": 4, "head_dim": 16},
    "BilinearFusion": {"hidden_dim": 64, "out_dim": 64, "factor": 5},
}


def adapter_override(name: str) -> str:
    """The ``--model.init_args.adapter`` CLI argument that selects ``name`` with quickstart sizes."""
    return "--model.init_args.adapter=" + json.dumps(
        {"class_path": name, "init_args": QUICKSTART_OPTIONS.get(name, {})}
    )


def train(name: str, epochs: int, root: Path, per_epoch: bool = False) -> dict[str, float]:
    """Fits the quickstart with adapter ``name``; returns test metrics of the best checkpoint and timings (and with
    ``per_epoch``, ``test/spearman@N``: the test Spearman of a run of N epochs, for N from 1 to ``epochs``)."""
    os.environ.setdefault("JSONARGPARSE_DEPRECATION_WARNINGS", "off")
    from mmfuse.cli import MmfuseCLI

    argv = sys.argv
    sys.argv = ["mmfuse"]
    try:
        cli = MmfuseCLI(
            ["--config", str(QUICKSTART), adapter_override(name), f"--trainer.max_epochs={epochs}",
             f"--trainer.default_root_dir={root}", f"--trainer.logger.init_args.save_dir={root}",
             "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false",
             "--trainer.accelerator=cpu"],
            run=False,
        )  # fmt: skip
    finally:
        sys.argv = argv
    adapter_params = sum(p.numel() for p in cli.model.model.adapter.parameters())
    kept = _every_epoch_callback()
    if per_epoch:
        cli.trainer.callbacks.append(kept)
    start = time.perf_counter()
    cli.trainer.fit(cli.model, cli.datamodule)
    fit_seconds = time.perf_counter() - start
    results = cli.trainer.test(cli.model, cli.datamodule, ckpt_path="best", verbose=False)[0]
    shorter = {}
    for n in range(1, len(kept.states) + 1):  # the best checkpoint of the first n epochs (the first of equals)
        best = max(range(n), key=lambda e: (kept.val[e], -e))
        cli.model.load_state_dict(kept.states[best])
        tested = cli.trainer.test(cli.model, cli.datamodule, verbose=False)[0]
        shorter[f"test/spearman@{n}"] = tested["test/spearman"]
    return {"adapter_params": adapter_params, "fit_seconds": fit_seconds, **results, **shorter}


def _every_epoch_callback():
    import lightning.pytorch as pl

    class EveryEpoch(pl.Callback):
        """Keeps a copy of the weights and the validation Spearman after every validation epoch."""

        def __init__(self) -> None:
            self.states: list[dict] = []
            self.val: list[float] = []

        def on_validation_end(self, trainer, module) -> None:
            if not trainer.sanity_checking:
                self.val.append(float(trainer.callback_metrics["val/spearman"]))
                self.states.append({k: v.detach().clone() for k, v in module.state_dict().items()})

    return EveryEpoch()


def main(args: list[str] | None = None) -> None:
    from mmfuse.registry import ADAPTERS

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("adapters", nargs="*", help="adapter names (default: every registered adapter)")
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--per-epoch", action="store_true", help="also test what each shorter run would (see above)")
    opts = parser.parse_args(args)
    names = opts.adapters or ADAPTERS.names()
    rows = {}
    with tempfile.TemporaryDirectory(prefix="mmfuse-bench-") as tmp:
        for name in names:
            rows[name] = train(name, opts.epochs, Path(tmp) / name, per_epoch=opts.per_epoch)
    base = rows.get("ConcatFusion", next(iter(rows.values())))["fit_seconds"]
    print(f"\nQuickstart, {opts.epochs} epochs, test split (held-out genes); time relative to "
          f"{'ConcatFusion' if 'ConcatFusion' in rows else names[0]}")  # fmt: skip
    header = f"{'adapter':<22} {'params':>9} {'time':>6} {'test R²':>8} {'Pearson':>8} {'Spearman':>9}"
    print(header + "\n" + "-" * len(header))
    for name, r in rows.items():
        print(f"{name:<22} {r['adapter_params']:>9,} {r['fit_seconds'] / base:>5.2f}x {r['test/r2']:>8.3f} "
              f"{r['test/pearson']:>8.3f} {r['test/spearman']:>9.3f}")  # fmt: skip
    if opts.per_epoch:
        print("\nTest Spearman of a run of N epochs (its best checkpoint by validation Spearman)")
        print(f"{'adapter':<22}" + "".join(f"{n:>7}" for n in range(1, opts.epochs + 1)))
        for name, r in rows.items():
            print(f"{name:<22}" + "".join(f"{r[f'test/spearman@{n}']:>7.3f}" for n in range(1, opts.epochs + 1)))


if __name__ == "__main__":
    main()
