"""Lightning's DDP strategy on CPU (two gloo processes) through the ``mmfuse`` command, on the flagship's
data path: IsoFormer's ``GTEx_final.csv`` layout with DNA windows cut from a genome, read from a records
store that rank 0 writes in ``prepare_data`` and both ranks memory-map.

The training order is the permutation a ``DistributedSampler`` shares out (see
:class:`~mmfuse.data.sampler.EpochRandomSampler`), so two processes with batches of 8 see, step by
step, exactly the records one process sees with batches of 16; DDP averages their gradients, so
without dropout the two runs follow the same path up to floating-point summation order. The stated
tolerance: weights within 1e-4, validation metrics within 1e-4 (they are reduced over both
processes by torchmetrics). Predictions from two processes are joined into one file in record order.
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from mmfuse.cli import main
from mmfuse.data.samples.layouts import write_isoformer_layout

# two-process runs (half a minute): with the learning runs in `make test-slow`, which CI runs too
pytestmark = pytest.mark.slow

CONFIG = {
    "seed_everything": 0,
    "trainer": {
        "max_epochs": 2,
        "accelerator": "cpu",
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "log_every_n_steps": 1,
        "num_sanity_val_steps": 0,
        "logger": {"class_path": "lightning.pytorch.loggers.CSVLogger", "init_args": {"save_dir": "runs", "name": "r"}},
        "callbacks": [{"class_path": "lightning.pytorch.callbacks.ModelCheckpoint", "init_args": {"save_last": True}}],
    },
    "model": {
        "class_path": "RegressionTask",
        "init_args": {
            "backbones": {
                # frozen (eval mode): its batch norm does not see the batch, which differs between the runs
                "dna": {"class_path": "Enformer", "init_args": {"preset": "tiny", "finetune": {"freeze": True}}},
                "rna": {"class_path": "NucleotideTransformer", "init_args": {"preset": "tiny", "modality": "rna"}},
                "protein": {"class_path": "ESM2", "init_args": {"preset": "tiny"}},
            },
            "adapter": {"class_path": "ConcatFusion", "init_args": {"hidden_dim": 32}},
            "head": {"class_path": "MLPHead", "init_args": {"hidden_dims": [32], "dropout": 0.0}},
        },
    },
    "data": {  # path and genome: the sample written in the published layout (the fixture)
        "class_path": "IsoformExpression",
        "init_args": {"columns": "isoformer", "split": {"val_fraction": 0.2}, "lengths": {"max": {"rna": 2000}}},
    },
}  # fmt: skip


def _mmfuse(workdir: Path, *args: str, in_process: bool = False) -> None:
    """Runs the ``mmfuse`` command in ``workdir``: in a new process (DDP launches its own), or in this one."""
    if in_process:
        cwd = os.getcwd()
        os.chdir(workdir)
        try:
            main(list(args))
        finally:
            os.chdir(cwd)
        return
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    result = subprocess.run([sys.executable, "-m", "mmfuse", *args], cwd=workdir, env=env, capture_output=True,
                            text=True, timeout=280)  # fmt: skip
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]


def _val_rows(workdir: Path) -> list[dict[str, str]]:
    metrics = workdir / "runs/r/version_0/metrics.csv"
    return [r for r in csv.DictReader(metrics.open()) if r.get("val/loss")]


# records `mmfuse explain` is asked for, out of the table's order (the output follows --ids)
EXPLAINED = ["SYNT00005.1", "SYNT00001.1", "SYNT00002.3"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """``(single, ddp)`` work directories, each trained for two epochs and then predicting."""
    csv, genome = write_isoformer_layout(tmp_path_factory.mktemp("data"), num_genes=24)
    source = {"path": str(csv), "genome": {"fasta": str(genome), "window": 1024}}
    data = {**CONFIG["data"]["init_args"], "source": source}
    config = {**CONFIG, "data": {**CONFIG["data"], "init_args": data}}
    dirs = {}
    for name, batch, extra in (("single", 16, []), ("ddp", 8, ["--trainer.strategy=ddp", "--trainer.devices=2"])):
        workdir = tmp_path_factory.mktemp(name)
        (workdir / "config.yaml").write_text(yaml.safe_dump(config))
        single = not extra  # the one-process run needs no process of its own
        _mmfuse(workdir, "fit", "--config", "config.yaml", f"--data.init_args.loader.batch_size={batch}", *extra,
                in_process=single)  # fmt: skip
        ckpt = "runs/r/version_0/checkpoints/last.ckpt"
        _mmfuse(workdir, "predict", "--config", "config.yaml", f"--data.init_args.loader.batch_size={batch}",
                "--ckpt_path", ckpt, "--predictions.output", "preds.csv", *extra, in_process=single)  # fmt: skip
        _mmfuse(workdir, "embed", "--config", "config.yaml", f"--data.init_args.loader.batch_size={batch}",
                "--ckpt_path", ckpt, "--embeddings.output", "emb.parquet", "--embeddings.fused=true", *extra,
                in_process=single)  # fmt: skip
        _mmfuse(workdir, "explain", "--config", "config.yaml", "--ckpt_path", ckpt, "--ids", ",".join(EXPLAINED),
                "--attributions.output", "attr.csv", "--attributions.methods=[ig]", "--attributions.steps=4",
                "--attributions.plots=false", *extra, in_process=single)  # fmt: skip
        dirs[name] = workdir
    return dirs["single"], dirs["ddp"]


def test_two_ddp_processes_train_as_one_process_with_twice_the_batch(runs):
    single, ddp = runs
    a, b = (torch.load(d / "runs/r/version_0/checkpoints/last.ckpt", weights_only=True) for d in runs)
    assert a["global_step"] == b["global_step"] == 2 * 4  # 54 records: batches 16,16,16,6 and 2×(8,8,8,3)
    for key, value in a["state_dict"].items():
        torch.testing.assert_close(b["state_dict"][key], value, atol=1e-4, rtol=1e-4, msg=key)
    rows_a, rows_b = _val_rows(single), _val_rows(ddp)
    assert len(rows_a) == len(rows_b) == 2
    for row_a, row_b in zip(rows_a, rows_b, strict=True):
        for metric in ("val/loss", "val/r2", "val/pearson", "val/spearman"):
            assert float(row_b[metric]) == pytest.approx(float(row_a[metric]), abs=1e-4), metric
    assert float(rows_a[0]["val/loss"]) != pytest.approx(float(rows_a[1]["val/loss"]), abs=1e-4)  # it trains


def test_ddp_predictions_are_joined_into_one_file_in_record_order(runs):
    single, ddp = runs
    a, b = (pd.read_csv(d / "preds.csv") for d in runs)
    assert list(b["transcript_id_gtex"]) == list(a["transcript_id_gtex"]) and len(a) > 50
    numeric = a.columns.drop("transcript_id_gtex")
    assert (b[numeric] - a[numeric]).abs().to_numpy().max() < 1e-3
    assert not list(ddp.glob("preds.rank*")) and not list(ddp.glob(".preds*"))  # parts joined and removed


def test_ddp_embeddings_are_joined_into_one_file_in_record_order(runs):
    single, ddp = runs
    a, b = (pd.read_parquet(d / "emb.parquet") for d in runs)
    assert list(b.columns) == list(a.columns) and "fused" in a.columns
    assert list(b["transcript_id_gtex"]) == list(a["transcript_id_gtex"]) and len(a) > 50
    for name in a.columns[1:]:
        present = a[name].notna()
        assert (b[name].notna() == present).all()
        np.testing.assert_allclose(np.stack(b[name][present]), np.stack(a[name][present]), atol=1e-3)
    assert not list(ddp.glob("emb.rank*")) and not list(ddp.glob(".emb*"))


def test_ddp_attributions_are_joined_into_one_file_in_the_order_of_ids(runs):
    single, ddp = runs
    a, b = (pd.read_csv(d / "attr.csv", dtype={"letter": str}, keep_default_na=False) for d in runs)
    assert list(dict.fromkeys(a["record"])) == EXPLAINED and len(a) > 1000
    assert (b.drop(columns="score") == a.drop(columns="score")).all().all()
    np.testing.assert_allclose(b["score"], a["score"], atol=1e-4)
    assert not list(ddp.glob("attr.rank*")) and not list(ddp.glob(".attr*"))
