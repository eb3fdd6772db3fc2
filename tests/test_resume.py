"""Crash-safe training: a run killed with SIGKILL mid-epoch and restarted with ``--ckpt_path last``
ends exactly where the uninterrupted run ends; checkpoint writes never leave a broken file behind."""

from __future__ import annotations

import argparse
import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from mmfuse.cli import MmfuseCLI
from mmfuse.errors import MmfuseError
from mmfuse.training import AtomicCheckpointIO

HELPERS = Path(__file__).resolve().parent / "helpers"
STEPS_PER_EPOCH = 8  # 58 training records of the 24-gene sample (RNA + protein), batches of 8

CONFIG = {
    "seed_everything": 0,
    "trainer": {
        "max_epochs": 2,
        "accelerator": "cpu",
        "deterministic": True,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "log_every_n_steps": 1,
        "logger": {"class_path": "lightning.pytorch.loggers.CSVLogger",
                   "init_args": {"save_dir": "runs", "name": "crash"}},
        "callbacks": [
            {"class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
             "init_args": {"every_n_train_steps": 1, "save_last": True}},
            {"class_path": "stall.StallAtStep"},
        ],
    },
    "model": {
        "class_path": "RegressionTask",
        "init_args": {
            "backbones": {
                "rna": {"class_path": "NucleotideTransformer", "init_args": {"preset": "tiny", "modality": "rna"}},
                "protein": {"class_path": "ESM2", "init_args": {"preset": "tiny"}},
            },
            "adapter": {"class_path": "ConcatFusion", "init_args": {"hidden_dim": 32}},
            # dropout and modality dropout: the resumed run must draw the same random numbers
            "head": {"class_path": "MLPHead", "init_args": {"hidden_dims": [32], "dropout": 0.2}},
            "modality_dropout": 0.2,
        },
    },
    "data": {
        "class_path": "IsoformExpression",
        "init_args": {"source": "sample", "sample": {"size": 24}, "loader": {"batch_size": 8},
                      "split": {"val_fraction": 0.2}, "modalities": {"rna": "RNA", "protein": "Protein"}},
    },
}  # fmt: skip


def _fit(workdir: Path, *extra: str, stall_at: int | None = None) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HELPERS), os.environ.get("PYTHONPATH", "")])}
    env.pop("MMFUSE_TEST_STALL_AT", None)
    if stall_at is not None:
        env["MMFUSE_TEST_STALL_AT"] = str(stall_at)
    command = [sys.executable, "-m", "mmfuse", "fit", "--config", "config.yaml", *extra]
    return subprocess.Popen(command, cwd=workdir, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _finish(process: subprocess.Popen) -> str:
    out, _ = process.communicate(timeout=240)
    assert process.returncode == 0, out[-3000:]
    return out


def _step_of(path: Path) -> int:
    return torch.load(path, map_location="cpu", weights_only=True)["global_step"]


def _last_epoch_row(metrics: Path) -> dict[str, str]:
    rows = [r for r in csv.DictReader(metrics.open()) if r.get("val/loss")]
    return rows[-1]


@pytest.fixture
def workdirs(tmp_path):
    dirs = []
    for name in ("straight", "killed"):
        d = tmp_path / name
        d.mkdir()
        (d / "config.yaml").write_text(yaml.safe_dump(CONFIG))
        dirs.append(d)
    return dirs


@pytest.mark.slow  # three processes (20 s): in `make test-slow`, which CI runs too
def test_run_killed_mid_epoch_resumes_to_the_same_weights_and_metrics(workdirs):
    straight, killed = workdirs
    reference = _fit(straight)  # runs alongside the killed one
    victim = _fit(killed, stall_at=STEPS_PER_EPOCH + 3)  # stalls 3 steps into the second epoch
    checkpoints = killed / "runs/crash/version_0/checkpoints"
    deadline = time.monotonic() + 180
    while True:
        last = checkpoints / "last.ckpt"
        if last.is_file() and _step_of(last) >= STEPS_PER_EPOCH + 3:
            break
        assert victim.poll() is None, victim.communicate()[0][-3000:]
        assert time.monotonic() < deadline, "the run never reached the step it stalls at"
        time.sleep(0.2)
    victim.send_signal(signal.SIGKILL)
    victim.wait(timeout=30)
    assert victim.returncode == -signal.SIGKILL
    killed_at = _step_of(checkpoints / "last.ckpt")
    assert killed_at % STEPS_PER_EPOCH != 0, "the kill should land mid-epoch"

    out = _finish(_fit(killed, "--ckpt_path", "last"))
    assert "Resuming from runs/crash/version_0/checkpoints/last.ckpt" in out
    _finish(reference)

    ends = [d / "runs/crash" / v / "checkpoints/last.ckpt" for d, v in ((straight, "version_0"), (killed, "version_1"))]
    a, b = (torch.load(p, map_location="cpu", weights_only=True) for p in ends)
    assert a["global_step"] == b["global_step"] == 2 * STEPS_PER_EPOCH  # no step lost, none repeated
    assert a["state_dict"].keys() == b["state_dict"].keys()
    for key, value in a["state_dict"].items():
        assert torch.equal(value, b["state_dict"][key]), key
    row_a = _last_epoch_row(straight / "runs/crash/version_0/metrics.csv")
    row_b = _last_epoch_row(killed / "runs/crash/version_1/metrics.csv")
    for metric in ("val/loss", "val/spearman", "val/r2", "train/loss_epoch"):
        assert row_a[metric] == row_b[metric], metric
    # the killed run's files are intact: its checkpoints load, its metrics stay beside them
    assert _step_of(checkpoints / "last.ckpt") == killed_at
    assert (killed / "runs/crash/version_0/metrics.csv").is_file()


def test_checkpoint_write_that_dies_midway_leaves_the_previous_file_whole(tmp_path, monkeypatch):
    io = AtomicCheckpointIO()
    path = tmp_path / "last.ckpt"
    io.save_checkpoint({"global_step": 1, "state_dict": {"w": torch.ones(3)}}, path)

    def dies_midway(obj, f, *args, **kwargs):
        Path(f).write_bytes(b"PK\x03\x04 half a zip")  # a partial write, then the crash
        raise OSError("No space left on device")

    monkeypatch.setattr(torch, "save", dies_midway)
    with pytest.raises(OSError, match="No space left"):
        io.save_checkpoint({"global_step": 2, "state_dict": {"w": torch.zeros(3)}}, path)
    monkeypatch.undo()
    saved = io.load_checkpoint(path)
    assert saved["global_step"] == 1 and torch.equal(saved["state_dict"]["w"], torch.ones(3))
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]  # no temporary file left


def test_checkpoints_are_read_without_unpickling_code(tmp_path):
    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "callback": argparse.Namespace(x=1)}, path)  # a Python object, not data
    with pytest.raises(Exception, match="weights_only|Unsupported global"):
        AtomicCheckpointIO().load_checkpoint(path)


class _Parsed(Exception):
    """Stops the CLI once its config is parsed (and ``ckpt_path`` resolved), before anything runs."""


def _parsed_config(monkeypatch, *args: str):
    before = MmfuseCLI.before_instantiate_classes

    def stop(cli):
        before(cli)  # the config as the classes are built from it
        raise _Parsed(cli.config)

    monkeypatch.setattr(MmfuseCLI, "before_instantiate_classes", stop)
    monkeypatch.setattr("sys.argv", ["mmfuse"])
    with pytest.raises(_Parsed) as parsed:
        MmfuseCLI(list(args))
    return parsed.value.args[0]


def test_ckpt_path_last_picks_the_newest_last_checkpoint_of_the_configs_runs(workdirs, monkeypatch, capsys):
    workdir = workdirs[0]
    monkeypatch.chdir(workdir)
    monkeypatch.syspath_prepend(str(HELPERS))
    old, new = (workdir / f"runs/crash/version_{i}/checkpoints/last.ckpt" for i in (0, 1))
    for i, path in enumerate((old, new)):
        path.parent.mkdir(parents=True)
        torch.save({"state_dict": {}, "global_step": i}, path)
        os.utime(path, (1_000_000 + i, 1_000_000 + i))
    config = _parsed_config(monkeypatch, "fit", "--config", "config.yaml", "--ckpt_path", "last")
    assert config.fit.ckpt_path == str(Path("runs/crash/version_1/checkpoints/last.ckpt"))
    assert "Resuming from runs/crash/version_1/checkpoints/last.ckpt" in capsys.readouterr().err


def test_ckpt_path_last_without_checkpoints(workdirs, monkeypatch, capsys):
    monkeypatch.chdir(workdirs[0])
    monkeypatch.syspath_prepend(str(HELPERS))
    config = _parsed_config(monkeypatch, "fit", "--config", "config.yaml", "--ckpt_path", "last")
    assert config.fit.ckpt_path is None  # a job script may always pass it: the first run starts fresh
    assert "no checkpoint of an earlier run found; training from scratch" in capsys.readouterr().err
    with pytest.raises(MmfuseError, match="no last.ckpt found .* pass the checkpoint's path"):
        _parsed_config(monkeypatch, "test", "--config", "config.yaml", "--ckpt_path", "last")


def test_prediction_that_dies_midway_leaves_the_earlier_predictions_whole(tmp_path):
    import lightning as L

    from mmfuse.backbones import ESM2
    from mmfuse.data import IsoformExpression
    from mmfuse.training import PredictionWriter, RegressionTask

    output = tmp_path / "preds.csv"
    output.write_text("transcript_id,Brain\nearlier,1.0\n")
    dm = IsoformExpression("sample", modalities={"protein": "Protein"}, loader={"batch_size": 4}, sample={"size": 12})
    task = RegressionTask({"protein": ESM2("tiny")}, target_names=dm.target_names)
    calls = []
    step = task.predict_step

    def dies_on_the_third_batch(batch, batch_idx, *args):
        calls.append(batch_idx)
        if batch_idx == 2:
            raise MemoryError("out of memory")  # after two batches were written to the partial file
        return step(batch, batch_idx, *args)

    task.predict_step = dies_on_the_third_batch
    trainer = L.Trainer(
        accelerator="cpu", logger=False, enable_progress_bar=False, callbacks=[PredictionWriter(str(output))]
    )
    with pytest.raises(MemoryError):
        trainer.predict(task, dm, return_predictions=False)
    assert calls == [0, 1, 2]
    assert output.read_text() == "transcript_id,Brain\nearlier,1.0\n"
    assert [p.name for p in tmp_path.iterdir()] == ["preds.csv"]  # the partial file is removed


def _stop_at_stall(process: subprocess.Popen, signum: int) -> str:
    """Reads ``process``'s output until it stalls, sends it ``signum``, returns all it printed."""
    lines = []
    deadline = time.monotonic() + 180
    for line in process.stdout:
        lines.append(line)
        if line.startswith("stalling at step"):
            process.send_signal(signum)
            break
        assert time.monotonic() < deadline, "the run never reached the step it stalls at"
    out, _ = process.communicate(timeout=120)
    return "".join(lines) + out


def _epoch_checkpoints(workdir: Path) -> None:
    """Checkpoints at the end of each epoch only: what a stop mid-epoch has is the one it writes itself."""
    config = yaml.safe_load((workdir / "config.yaml").read_text())
    config["trainer"]["callbacks"][0]["init_args"] = {"save_last": True}
    (workdir / "config.yaml").write_text(yaml.safe_dump(config))


@pytest.mark.slow  # three processes (20 s): in `make test-slow`, which CI runs too
def test_run_stopped_by_sigterm_saves_where_it_stopped_exits_143_and_resumes_to_the_same_weights(workdirs):
    straight, stopped = workdirs
    for workdir in workdirs:
        _epoch_checkpoints(workdir)
    reference = _fit(straight)
    out = _stop_at_stall(_fit(stopped, stall_at=STEPS_PER_EPOCH + 3), signal.SIGTERM)  # 3 steps into epoch 2
    run = stopped / "runs/crash/version_0"
    stop_step = STEPS_PER_EPOCH + 4  # the stalled step runs to its end
    line = f"mmfuse: stopped by SIGTERM at step {stop_step}; resume with --ckpt_path last (saved "
    assert line in out, out[-3000:]
    assert [ln for ln in out.splitlines() if ln.startswith("mmfuse:")] == [
        f"{line}{Path('runs/crash/version_0/checkpoints/last.ckpt')})"]  # fmt: skip
    assert "Traceback" not in out
    assert _step_of(run / "checkpoints/last.ckpt") == stop_step
    summary = yaml.safe_load((run / "summary_fit.json").read_text())
    assert summary["status"] == "stopped" and summary["signal"] == "SIGTERM" and summary["global_step"] == stop_step
    assert summary["last_checkpoint"] == str(Path("runs/crash/version_0/checkpoints/last.ckpt"))

    resumed = _finish(_fit(stopped, "--ckpt_path", "last"))
    assert "Resuming from runs/crash/version_0/checkpoints/last.ckpt" in resumed
    _finish(reference)
    runs = ((straight, "version_0"), (stopped, "version_1"))
    ends = [d / "runs/crash" / v / "checkpoints/last.ckpt" for d, v in runs]
    a, b = (torch.load(p, map_location="cpu", weights_only=True) for p in ends)
    assert a["global_step"] == b["global_step"] == 2 * STEPS_PER_EPOCH  # no step lost, none repeated
    for key, value in a["state_dict"].items():
        assert torch.equal(value, b["state_dict"][key]), key
    row_a = _last_epoch_row(straight / "runs/crash/version_0/metrics.csv")
    row_b = _last_epoch_row(stopped / "runs/crash/version_1/metrics.csv")
    for metric in ("val/loss", "val/spearman", "train/loss_epoch"):
        assert row_a[metric] == row_b[metric], metric


def test_ctrl_c_stops_at_the_end_of_the_step_saves_and_exits_130(workdirs):
    workdir = workdirs[0]
    _epoch_checkpoints(workdir)
    process = _fit(workdir, "--trainer.max_epochs=1", stall_at=3)
    out = _stop_at_stall(process, signal.SIGINT)
    assert process.returncode == 130, out[-3000:]
    assert "mmfuse: stopped by SIGINT at step 4; resume with --ckpt_path last" in out
    assert "Traceback" not in out and "KeyboardInterrupt" not in out
    assert _step_of(workdir / "runs/crash/version_0/checkpoints/last.ckpt") == 4
