"""fit → test → predict through the ``mmfuse`` command, each in a fresh process, on the quickstart configs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from mmfuse.cli import MmfuseCLI
from mmfuse.data import GTEX_TISSUES

# small and quick: fewer genes, two short epochs
FAST = ["--data.init_args.sample.size=60", "--trainer.max_epochs=2", "--trainer.limit_train_batches=4",
        "--trainer.enable_progress_bar=false", "--trainer.accelerator=cpu"]  # fmt: skip


@pytest.fixture(scope="module")
def trained(tmp_path_factory, quickstart):
    """Runs `mmfuse fit` once; returns (workdir, checkpoint path, fit output)."""
    import subprocess
    import sys

    from mmfuse.cli import main  # noqa: F401  (the module must import)

    workdir = tmp_path_factory.mktemp("run")
    result = subprocess.run([sys.executable, "-m", "mmfuse", "fit", "--config", str(quickstart), *FAST],
                            cwd=workdir, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    best = next(line for line in result.stdout.splitlines() if line.startswith("Best checkpoint: "))
    checkpoint = workdir / best.removeprefix("Best checkpoint: ")
    assert checkpoint.is_file()
    return workdir, checkpoint, result


def test_fit_shows_progress_and_epoch_metrics(trained, quickstart):
    _, _, result = trained
    epochs = [line for line in result.stdout.splitlines() if line.startswith("epoch ")]
    assert len(epochs) == 2 and "val/spearman" in epochs[0] and "train/loss" in epochs[1]
    assert f"Test it with: mmfuse test --config {quickstart} --ckpt_path" in result.stdout


def test_fit_writes_its_summary_into_its_run_directory(trained):
    workdir, checkpoint, result = trained
    (path,) = workdir.rglob("summary_fit.json")
    summary = json.loads(path.read_text())
    assert summary["command"] == "fit" and summary["status"] == "completed"
    assert Path(summary["run_dir"]) == path.parent.relative_to(workdir)
    assert workdir / summary["best_checkpoint"] == checkpoint
    assert (workdir / summary["last_checkpoint"]).is_file() and summary["last_checkpoint"] != summary["best_checkpoint"]
    assert summary["monitor"] == "val/spearman" and summary["mode"] == "max"
    assert -1 <= summary["best_score"] <= 1 and summary["epochs"] == 2
    assert f"Best checkpoint: {summary['best_checkpoint']}" in result.stdout  # what it printed, as data


def test_checkpoint_is_plain_data(trained):
    _, checkpoint, _ = trained
    content = torch.load(checkpoint, weights_only=True, map_location="cpu")
    hparams = content["hyper_parameters"]
    assert hparams["_class_path"] == "mmfuse.training.RegressionTask"
    assert hparams["target_names"] == list(GTEX_TISSUES)
    assert "objective.target_mean" in content["state_dict"] and "optimizer_states" in content


def test_test_prints_the_table_per_tissue(trained, quickstart, run_mmfuse):
    workdir, checkpoint, _ = trained
    result = run_mmfuse("test", "--config", str(quickstart), "--ckpt_path", str(checkpoint), *FAST[:1], cwd=workdir)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("target "))
    assert lines[header].split()[1:] == ["MSE", "MSE(std)", "R²", "Pearson", "Spearman"]
    rows = [line for line in lines[header + 2 : header + 32]]
    assert [r[: len(t)] for r, t in zip(rows, GTEX_TISSUES, strict=True)] == list(GTEX_TISSUES)
    assert any(line.startswith("mean ") for line in lines[header + 32 :])
    written = next(line for line in lines if line.startswith("Per-target metrics written to "))
    table = pd.read_csv(workdir / written.removeprefix("Per-target metrics written to "), index_col="target")
    assert list(table.index) == list(GTEX_TISSUES)
    assert list(table.columns) == ["mse", "mse_std", "r2", "pearson", "spearman"]
    # the report folder; loss curves from the CSV log of the run the checkpoint came from
    report = next(line for line in lines if line.startswith("Report written to "))
    folder = workdir / report.removeprefix("Report written to ").split(": ")[0]
    assert {p.name for p in folder.iterdir()} == {"metrics.csv", "metrics.md", "r2_spearman_per_tissue.png",
                                                  "scatter_best_worst.png", "loss_curves.png",
                                                  "modality_contribution.csv", "modality_contribution.md",
                                                  "modality_contribution.png"}  # fmt: skip
    # three modalities: the six proper subsets are evaluated too; the full one is the table above
    contribution = pd.read_csv(folder / "modality_contribution.csv")
    assert list(contribution["shown"].unique()) == ["dna+rna+protein", "dna+rna", "dna+protein", "rna+protein",
                                                    "dna", "rna", "protein"]  # fmt: skip
    full = contribution[contribution["shown"] == "dna+rna+protein"].set_index("target")
    np.testing.assert_allclose(full.loc[list(table.index), "spearman"], table["spearman"], rtol=1e-5, atol=1e-6)
    assert contribution.groupby("shown")["target"].count().eq(30).all()
    assert "| modality | cost of hiding it alone (spearman) | Shapley value (spearman) |" in result.stdout
    # the same, as data: the summary the command wrote beside its report
    summary = json.loads((folder.parent / "summary_test.json").read_text())
    assert summary["command"] == "test" and summary["status"] == "completed"
    assert workdir / summary["metrics_table"] == workdir / written.removeprefix("Per-target metrics written to ")
    assert workdir / summary["report_dir"] == folder
    assert summary["metrics"]["test/spearman"] == pytest.approx(table["spearman"].mean(), abs=1e-4)


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_predictions_from_a_fresh_process_equal_the_model_in_memory(
    trained, quickstart, run_mmfuse, suffix, monkeypatch
):
    workdir, checkpoint, _ = trained
    output = workdir / f"preds{suffix}"
    result = run_mmfuse("predict", "--config", str(quickstart), "--ckpt_path", str(checkpoint),
                        f"--predictions.output={output}", *FAST[:1], cwd=workdir)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    written = pd.read_parquet(output) if suffix == ".parquet" else pd.read_csv(output)
    assert list(written.columns) == ["transcript_id", *GTEX_TISSUES]
    summaries = [json.loads(p.read_text()) for p in workdir.rglob("summary_predict.json")]
    assert str(output) in [s["predictions"] for s in summaries], summaries  # where a script finds them

    monkeypatch.setattr("sys.argv", ["mmfuse"])
    cli = MmfuseCLI(["--config", str(quickstart), *FAST[:1]], run=False)
    model, dm = cli.model, cli.datamodule
    state = torch.load(checkpoint, weights_only=True, map_location="cpu")["state_dict"]
    model.load_state_dict(state)
    model.eval()
    dm.setup("predict")
    dm.attach_tokenizers(model.model.tokenizers())
    ids, preds = [], []
    with torch.no_grad():
        for batch in dm.predict_dataloader():
            ids += batch["ids"]
            preds.append(model(batch["inputs"], batch["present"]))
    assert written["transcript_id"].tolist() == ids and len(ids) == written.shape[0]
    np.testing.assert_allclose(written[list(GTEX_TISSUES)].to_numpy(), torch.cat(preds).numpy(), rtol=1e-5, atol=1e-5)


# truncated, missing and pickled-object checkpoints: tests/test_bad_input.py (the checkpoint cases)


def test_checkpoint_of_another_model_is_refused(trained, quickstart, run_mmfuse, tmp_path):
    _, checkpoint, _ = trained
    content = torch.load(checkpoint, weights_only=True, map_location="cpu")
    content.pop("hyper_parameters")  # e.g. written from Python: the config decides the model
    stripped = tmp_path / "stripped.ckpt"
    torch.save(content, stripped)
    result = run_mmfuse("test", "--config", str(quickstart), "--ckpt_path", str(stripped), *FAST[:1],
                        "--model.init_args.adapter.init_args.hidden_dim=32")  # fmt: skip
    assert result.returncode == 1, result.stderr[-2000:]
    assert "the checkpoint does not fit the model built from this config" in result.stderr
    assert "adapter.projections" in result.stderr


@pytest.mark.slow  # two subprocess runs (fit, predict) of the classification quickstart; in-process tests stay fast
def test_classification_fit_then_predict_writes_class_probabilities(run_mmfuse, quickstart, tmp_path):
    config = quickstart.with_name("classification.yaml")
    fast = ["--data.init_args.sample.size=40", "--trainer.enable_progress_bar=false", "--trainer.accelerator=cpu"]
    result = run_mmfuse("fit", "--config", str(config), *fast, "--trainer.max_epochs=2",
                        "--trainer.limit_train_batches=2", "--trainer.limit_val_batches=1", cwd=tmp_path)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    epochs = [line for line in result.stdout.splitlines() if line.startswith("epoch ")]
    assert len(epochs) == 2 and all(f"val/{k} " in epochs[1] for k in ("loss", "accuracy", "auroc", "f1"))
    best = next(line for line in result.stdout.splitlines() if line.startswith("Best checkpoint: "))
    checkpoint = tmp_path / best.removeprefix("Best checkpoint: ")
    hparams = torch.load(checkpoint, weights_only=True, map_location="cpu")["hyper_parameters"]
    assert hparams["_class_path"] == "mmfuse.training.ClassificationTask"
    assert hparams["target_names"] == ["low", "medium", "high"]

    output = tmp_path / "preds.csv"
    result = run_mmfuse("predict", "--config", str(config), "--ckpt_path", str(checkpoint),
                        f"--predictions.output={output}", *fast, cwd=tmp_path)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    written = pd.read_csv(output)
    assert list(written.columns) == ["transcript_id", "low", "medium", "high", "predicted"]
    from mmfuse.data.samples.isoform import make_sample_table

    assert sorted(written["transcript_id"]) == sorted(make_sample_table(40)["transcript_id"])
    probs = written[["low", "medium", "high"]].to_numpy()
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-6)
    assert (written["predicted"] == np.array(["low", "medium", "high"])[probs.argmax(1)]).all()


@pytest.mark.slow  # three runs in their own processes (~25 s): the fast suite keeps the in-process cache tests
def test_frozen_cached_config_fills_the_cache_once_and_reuses_it(run_mmfuse, tmp_path):
    config = Path(__file__).resolve().parents[1] / "experiments" / "quickstart" / "frozen_cached.yaml"
    first = run_mmfuse("fit", "--config", str(config), *FAST, cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    summary = next(line for line in first.stdout.splitlines() if line.startswith("embedding cache: "))
    computed = {part.split(":")[0].strip(): int(part.split(":")[1].split()[0]) for part in
                summary.removeprefix("embedding cache: ").split(";")}  # fmt: skip
    assert set(computed) == {"dna", "rna", "protein"} and all(n > 0 for n in computed.values())
    stores = sorted(p.name.split("-")[0] for p in (tmp_path / "runs" / "embedding_cache").iterdir())
    assert stores == ["dna", "protein", "rna"]
    second = run_mmfuse("fit", "--config", str(config), *FAST, cwd=tmp_path)  # a later run reads everything
    assert second.returncode == 0, second.stderr[-3000:]
    assert "dna: 0 computed" in second.stdout and "rna: 0 computed" in second.stdout
    # `mmfuse embed` reads the cache too: only the test split's records (not seen by fit) are computed
    embed = run_mmfuse("embed", "--config", str(config), *FAST[:1], "--embeddings.output=e.parquet", cwd=tmp_path)
    assert embed.returncode == 0, embed.stderr[-3000:]
    summary = next(line for line in embed.stdout.splitlines() if line.startswith("embedding cache: "))
    embedded = {part.split(":")[0].strip(): int(part.split(":")[1].split()[0]) for part in
                summary.removeprefix("embedding cache: ").split(";")}  # fmt: skip
    total = len(pd.read_parquet(tmp_path / "e.parquet"))
    assert all(0 < n < total // 4 for n in embedded.values()), (embedded, total)
