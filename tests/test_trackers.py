"""Runs with loggers other than CSV: a logger without a directory (as MLflow on a database), and the
report's loss curves from the checkpoint's history."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml
from lightning.pytorch.loggers import Logger

from mmfuse.cli import main

QUICKSTART = Path(__file__).resolve().parents[1] / "experiments" / "quickstart" / "config.yaml"


class DirectorylessLogger(Logger):
    """Logs into memory and has no directory (``save_dir`` None), as MLflow's logger on a database store."""

    logged: list[dict[str, float]] = []

    @property
    def name(self) -> str:
        return "directoryless"

    @property
    def version(self) -> str:
        return "0"

    @property
    def save_dir(self) -> None:
        return None

    def log_hyperparams(self, params, *args, **kwargs) -> None:
        pass

    def log_metrics(self, metrics, step=None) -> None:
        DirectorylessLogger.logged.append(dict(metrics))


@pytest.mark.slow  # a quickstart fit and test with 40 genes: about 20 s
def test_a_logger_without_a_directory_trains_tests_and_gets_its_loss_curves(tmp_path, capsys):
    config = yaml.safe_load(QUICKSTART.read_text())
    config["trainer"]["logger"] = {"class_path": "tests.test_trackers.DirectorylessLogger"}
    config["trainer"]["default_root_dir"] = str(tmp_path / "root")
    config["trainer"]["callbacks"][0]["init_args"]["dirpath"] = str(tmp_path / "ckpt")
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(config))
    tiny = ["--trainer.max_epochs", "2", "--trainer.limit_train_batches", "3", "--data.init_args.sample.size", "40"]
    assert main(["fit", "--config", str(path), *tiny]) == 0
    out = capsys.readouterr().out
    assert (tmp_path / "root" / "config.yaml").is_file(), "the run's config, with no log directory to hold it"
    assert any("train/loss_epoch" in m or "val/loss" in m for m in DirectorylessLogger.logged)
    history = torch.load(tmp_path / "ckpt" / "last.ckpt", weights_only=True)["mmfuse_history"]
    assert [e["epoch"] for e in history] == [0, 1]
    for entry in history:
        line = next(x for x in out.splitlines() if x.startswith(f"epoch {entry['epoch']}: "))
        assert f"val/loss {entry['val/loss']:.4f}" in line and f"train/loss {entry['train/loss']:.4f}" in line
    assert main(["test", "--config", str(path), *tiny, "--ckpt_path", str(tmp_path / "ckpt" / "last.ckpt")]) == 0
    out = capsys.readouterr().out
    assert "loss_curves.png" in next(x for x in out.splitlines() if x.startswith("Report written to"))
    assert (tmp_path / "root" / "report_test" / "loss_curves.png").is_file()
