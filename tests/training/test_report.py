from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from lightning.pytorch.loggers import CSVLogger

from mmfuse.analysis.contribution import contribution_callback
from mmfuse.training import RegressionMetrics, report
from tests.training.test_regression import _datamodule, _task, _trainer

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
REPORT_FILES = {"metrics.csv", "metrics.md", "r2_spearman_per_tissue.png", "scatter_best_worst.png"}
# the analysis `mmfuse validate`/`test` add beside the task (a Python caller adds the callback itself)
CONTRIBUTION_FILES = {"modality_contribution.csv", "modality_contribution.md", "modality_contribution.png"}


def _is_png(path) -> bool:
    data = path.read_bytes()
    return len(data) > len(PNG_MAGIC) and data.startswith(PNG_MAGIC)


def _synthetic(n: int = 40, names=("Liver", "Lung", "Brain")):
    """Predictions with noise growing from the first target to the last: best first, worst last."""
    rng = np.random.default_rng(0)
    target = rng.normal(size=(n, len(names)))
    preds = target + rng.normal(scale=[0.1, 1.0, 5.0], size=target.shape)
    metrics = RegressionMetrics(len(names))
    metrics.update(torch.tensor(preds), torch.tensor(target))
    values = {k: v.numpy() for k, v in metrics.compute().items()}
    frame = pd.DataFrame(values, index=pd.Index(list(names), name="target"))
    return preds, target, list(names), frame


def test_mse_std_is_mse_over_the_variance():
    metrics = RegressionMetrics(2)
    metrics.update(torch.tensor([[1.0, 10.0], [3.0, 30.0]]), torch.tensor([[2.0, 10.0], [1.0, 34.0]]))
    values = metrics.compute(target_std=torch.tensor([2.0, 4.0]))
    # errors: (-1, 2) in the first target, (0, -4) in the second
    torch.testing.assert_close(values["mse"], torch.tensor([2.5, 8.0]))
    torch.testing.assert_close(values["mse_std"], torch.tensor([2.5 / 4, 8.0 / 16]))
    torch.testing.assert_close(metrics.compute()["mse_std"], values["mse"])  # no std: original units


def test_best_and_worst_ignore_nan():
    spearman = pd.Series([0.2, np.nan, 0.9, -0.1], index=["a", "b", "c", "d"])
    assert report.best_and_worst(spearman) == ("c", "d")
    assert report.best_and_worst(pd.Series([np.nan], index=["a"])) is None


def test_report_functions_write_tables_and_plots(tmp_path):
    preds, target, names, frame = _synthetic()
    assert report.best_and_worst(frame["spearman"]) == ("Liver", "Brain")
    summary = pd.concat([frame, frame.mean().to_frame("mean").T.rename_axis("target")])
    written = report.write_metrics(summary, tmp_path, {"mse": "MSE", "spearman": "Spearman"})
    written.append(report.plot_r2_spearman(frame, tmp_path / "r2_spearman_per_tissue.png"))
    written.append(report.plot_best_worst(preds, target, names, frame["spearman"], tmp_path / "scatter.png"))
    assert {p.name for p in written} == {"metrics.csv", "metrics.md", "r2_spearman_per_tissue.png", "scatter.png"}
    assert all(_is_png(p) for p in written if p.suffix == ".png")
    lines = (tmp_path / "metrics.md").read_text().splitlines()
    assert lines[0] == "| target | MSE | mse_std | r2 | pearson | Spearman |"  # titles where given
    assert [line.split(" | ")[0].removeprefix("| ") for line in lines[2:]] == [*names, "mean"]
    assert list(pd.read_csv(tmp_path / "metrics.csv", index_col="target").index) == [*names, "mean"]
    assert not list(tmp_path.glob(".*.tmp")), "no temporary file is left behind"


def test_loss_curves_need_a_csv_log_with_losses(tmp_path):
    log = tmp_path / "metrics.csv"
    pd.DataFrame({"epoch": [0, 0, 1, 1], "step": [1, 1, 3, 3], "train/loss_epoch": [1.0, None, 0.5, None],
                  "val/loss": [None, 1.2, None, 0.8]}).to_csv(log, index=False)  # fmt: skip
    other = tmp_path / "other.csv"
    pd.DataFrame({"epoch": [0], "test/loss": [1.0]}).to_csv(other, index=False)
    assert report.find_training_log([None, tmp_path / "missing.csv", other, log]) == log
    assert report.find_training_log([other]) is None
    assert _is_png(report.plot_loss_curves(log, tmp_path / "loss_curves.png"))
    assert report.plot_loss_curves(other, tmp_path / "none.png") is None and not (tmp_path / "none.png").exists()


def test_fit_then_test_writes_the_report_folder(tmp_path, capsys):
    task, dm = _task(), _datamodule()
    logger = CSVLogger(tmp_path, name="run")
    trainer = _trainer(tmp_path, max_epochs=2, logger=logger, enable_checkpointing=False, log_every_n_steps=1,
                       callbacks=[contribution_callback(task)])
    trainer.fit(task, dm)
    trainer.test(task, dm)
    folder = tmp_path / "run" / "version_0" / "report_test"
    assert {p.name for p in folder.iterdir()} == REPORT_FILES | CONTRIBUTION_FILES | {"loss_curves.png"}
    assert all(_is_png(p) for p in folder.glob("*.png"))
    table = pd.read_csv(folder / "metrics.csv", index_col="target")
    assert list(table.index) == [*task.target_names, "mean"]
    assert list(table.columns) == ["mse", "mse_std", "r2", "pearson", "spearman"]
    std = task.objective.target_std.numpy()
    np.testing.assert_allclose(table["mse_std"].iloc[:-1], table["mse"].iloc[:-1] / std**2, rtol=1e-5)
    logged = trainer.callback_metrics
    assert "test/mse_std" in logged
    assert logged["test/mse_std"].item() == pytest.approx(table.loc["mean", "mse_std"], rel=1e-5)
    assert f"Report written to {folder}" in capsys.readouterr().out


def test_a_checkpoint_without_history_or_csv_log_skips_the_loss_curves(tmp_path, capsys):
    task, dm = _task(), _datamodule()
    trainer = _trainer(tmp_path, enable_checkpointing=False)  # logger=False: no CSV log anywhere
    trainer.fit(task, dm)
    trainer.save_checkpoint(tmp_path / "elsewhere" / "model.ckpt")
    checkpoint = torch.load(tmp_path / "elsewhere" / "model.ckpt", weights_only=True)
    assert [e["epoch"] for e in checkpoint["mmfuse_history"]] == [0]
    del checkpoint["mmfuse_history"]  # as a checkpoint of an older mmfuse
    torch.save(checkpoint, tmp_path / "elsewhere" / "old.ckpt")
    trainer.validate(task, dm, ckpt_path=tmp_path / "elsewhere" / "old.ckpt")
    assert task.history == []
    folder = tmp_path / "report_val"
    assert {p.name for p in folder.iterdir()} == REPORT_FILES
    assert "no loss_curves.png: this model has no training history" in capsys.readouterr().out


@pytest.mark.parametrize("logger", ["tensorboard", "none"])
def test_the_loss_curves_come_from_the_checkpoint_whatever_the_logger(logger, tmp_path, monkeypatch, capsys):
    from lightning.pytorch.callbacks import ModelCheckpoint
    from lightning.pytorch.loggers import TensorBoardLogger

    plotted = []
    monkeypatch.setattr(report, "plot_loss_curves", lambda losses, path: plotted.append(losses) or None)
    task, dm = _task(), _datamodule()
    run_logger = TensorBoardLogger(tmp_path, name="tb") if logger == "tensorboard" else False
    trainer = _trainer(tmp_path, max_epochs=3, logger=run_logger, log_every_n_steps=1,
                       callbacks=[ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)])  # fmt: skip
    trainer.fit(task, dm)
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("epoch ")]
    words = [line.split() for line in lines]  # epoch N: key value key value …
    printed = {int(w[1].rstrip(":")): dict(zip(w[2::2], map(float, w[3::2]), strict=True)) for w in words}
    assert sorted(printed) == [0, 1, 2]
    # the history is what the epoch lines said, epoch by epoch
    for entry in task.history:
        for key in ("train/loss", "val/loss", "val/spearman"):
            assert entry[key] == pytest.approx(printed[entry["epoch"]][key], abs=5e-5), (entry, printed)
    assert not list(tmp_path.rglob("metrics.csv")), "no CSV log anywhere"
    tester = _task()
    assert tester.history == []
    tester_trainer = _trainer(tmp_path, logger=False, enable_checkpointing=False)
    tester_trainer.test(tester, dm, ckpt_path=tmp_path / "ckpt" / "last.ckpt")
    assert tester.history == task.history
    (losses,) = plotted
    assert list(losses.index) == [0, 1, 2] and list(losses.columns) == ["train", "val"]
    np.testing.assert_allclose(losses["val"], [printed[e]["val/loss"] for e in range(3)], atol=5e-5)
    if logger == "tensorboard":
        assert list((tmp_path / "tb" / "version_0").glob("events.out.tfevents.*"))


def test_test_of_a_checkpoint_finds_the_log_of_its_run(tmp_path):
    task, dm = _task(), _datamodule()
    logger = CSVLogger(tmp_path, name="run")
    trainer = _trainer(tmp_path, logger=logger, enable_checkpointing=False, log_every_n_steps=1)
    trainer.fit(task, dm)
    checkpoint = tmp_path / "run" / "version_0" / "checkpoints" / "best.ckpt"
    trainer.save_checkpoint(checkpoint)
    # a new run (new version directory) that only tests: its own CSV log holds no training yet
    tester = _trainer(tmp_path, logger=CSVLogger(tmp_path, name="run"))
    tester.test(_task(), dm, ckpt_path=checkpoint)
    folder = tmp_path / "run" / "version_1" / "report_test"
    assert {p.name for p in folder.iterdir()} == REPORT_FILES | {"loss_curves.png"}
