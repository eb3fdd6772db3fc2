"""``mmfuse sweep`` (Optuna) and ``mmfuse cv``: the search space, pruning, a killed sweep resumed, folds."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
import torch
import yaml

from mmfuse.cli import main
from mmfuse.cli.runs import run_config, set_key
from mmfuse.cli.sweep import SweepTrial
from mmfuse.cli.sweep_space import Param, copy_with, load_space
from mmfuse.data import IsoformExpression

optuna = pytest.importorskip("optuna")

ROOT = Path(__file__).resolve().parents[1]
QUICKSTART = ROOT / "experiments" / "quickstart" / "config.yaml"
SPACE = ROOT / "experiments" / "quickstart" / "space.yaml"
# the quickstart made small: two short epochs on 40 genes
TINY = ["--trainer.max_epochs", "2", "--trainer.limit_train_batches", "3", "--data.init_args.sample.size", "40"]


def _space(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "space.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "model.init_args.optimizer.init_args.lr: {low: 0.1, high: 0.01}",
            "key 'model.init_args.optimizer.init_args.lr': low (0.1) is greater than high (0.01)",
        ),
        ("model.init_args.adapter: {choices: []}", "key 'model.init_args.adapter': choices must be a non-empty list"),
        ("model.init_args.optimizer.init_args.lr: {low: 0, high: 0.1, log: true}", "a log range needs low > 0, not 0"),
        ("model.init_args.optimizer.init_args.lr: {low: 0.1, hgh: 0.2}", "unknown field(s) ['hgh']"),
        ("model.init_args.optimizer.init_args.lr: {low: 0.1}", "a range needs both low and high"),
        ("learning_rate: {low: 0.1, high: 0.2}", "keys are dotted config keys under trainer, model, data"),
        ("model.init_args.head.init_args.dropout: 0.1", "give {low: …, high: …} or {choices: [...]}, not 0.1"),
        ("[1, 2]", "must map config keys to ranges or choices"),
    ],
)
def test_a_bad_search_space_is_refused_before_any_trial(text, message, tmp_path, capsys):
    space = _space(tmp_path, text)
    with pytest.raises(SystemExit) as info:
        main(
            ["sweep", "--config", str(QUICKSTART), "--space", str(space), "--trials", "2", "--dir", str(tmp_path / "s")]
        )
    err = capsys.readouterr().err.strip().splitlines()
    assert info.value.code == 1
    assert err[-1].startswith(f"mmfuse: error: search space {space}") and message in err[-1], err
    assert not (tmp_path / "s").exists(), "nothing is written before the space is checked"


def test_a_key_the_config_does_not_take_is_named_with_the_fix(tmp_path, capsys):
    space = _space(tmp_path, "model.init_args.adapter.init_args.hidden_dm: {low: 16, high: 64}\n")
    with pytest.raises(SystemExit) as info:
        main(
            ["sweep", "--config", str(QUICKSTART), "--space", str(space), "--trials", "2", "--dir", str(tmp_path / "s")]
        )
    (line,) = [x for x in capsys.readouterr().err.splitlines() if x.startswith("mmfuse: error:")]
    assert info.value.code == 1
    assert line.startswith("mmfuse: error: search space key 'model.init_args.adapter.init_args.hidden_dm' = 16: ")
    assert "'hidden_dm' is not an option of ConcatFusion; did you mean 'hidden_dim'?" in line
    # a choice the parser refuses is named too
    space = _space(tmp_path, "model.init_args.adapter: {choices: [ConcatFusion, ConcatFuson]}\n")
    with pytest.raises(SystemExit):
        main(
            ["sweep", "--config", str(QUICKSTART), "--space", str(space), "--trials", "2", "--dir", str(tmp_path / "s")]
        )
    err = capsys.readouterr().err
    assert "search space key 'model.init_args.adapter' = \"ConcatFuson\": Unknown adapter 'ConcatFuson'" in err
    assert "Did you mean 'ConcatFusion'?" in err
    assert not (tmp_path / "s").exists()


def test_the_bundled_space_parses_and_sets_components_before_their_options():
    params = load_space(SPACE)
    assert [p.key for p in params] == [
        "model.init_args.optimizer.init_args.lr",
        "model.init_args.head.init_args.dropout",
        "model.init_args.adapter",
    ]
    adapter = params[2]
    assert adapter.labels == ["ConcatFusion", "CrossAttentionFusion"]
    assert adapter.value_of({"model.init_args.adapter": "CrossAttentionFusion"})["init_args"] == {
        "num_heads": 2,
        "head_dim": 16,
    }
    assert Param("k", choices=({"class_path": "A"}, {"class_path": "A"}, 3)).labels == ["A", "A#1", 3]
    config = yaml.safe_load(QUICKSTART.read_text())
    out = copy_with(
        config,
        {"model.init_args.adapter.init_args.hidden_dim": 32, "model.init_args.adapter": {"class_path": "ConcatFusion"}},
    )
    assert out["model"]["init_args"]["adapter"] == {"class_path": "ConcatFusion", "init_args": {"hidden_dim": 32}}
    assert config["model"]["init_args"]["adapter"]["init_args"] == {"hidden_dim": 64}, "the config is not changed"
    named = {"a": {"b": "ConcatFusion"}}
    set_key(named, "a.b.init_args.hidden_dim", 8)
    assert named == {"a": {"b": {"class_path": "ConcatFusion", "init_args": {"hidden_dim": 8}}}}
    with pytest.raises(ValueError, match="keys into lists, such as trainer.callbacks, cannot be set one by one"):
        set_key(config, "trainer.callbacks.monitor", "x")


def test_a_run_writes_into_its_own_directory(tmp_path):
    config = yaml.safe_load(QUICKSTART.read_text())
    out = run_config(config, tmp_path / "run", ("val/loss", "min"), [{"class_path": "X"}])
    assert out["trainer"]["default_root_dir"] == str(tmp_path / "run")
    assert out["trainer"]["logger"]["init_args"] == {"save_dir": str(tmp_path / "run"), "name": "quickstart"}
    checkpoint, extra = out["trainer"]["callbacks"]
    assert checkpoint["init_args"]["dirpath"] == str(tmp_path / "run" / "checkpoints")
    assert checkpoint["init_args"]["monitor"] == "val/spearman", "the config's own checkpoint is kept"
    assert extra == {"class_path": "X"}
    del config["trainer"]["callbacks"]
    (added,) = run_config(config, tmp_path / "run", ("val/loss", "min"))["trainer"]["callbacks"]
    assert added["init_args"] == {
        "dirpath": str(tmp_path / "run" / "checkpoints"),
        "monitor": "val/loss",
        "mode": "min",
        "filename": "best",
        "save_last": True,
    }


def _trainer(epoch: int, value: float):
    strategy = SimpleNamespace(broadcast=lambda x: x)
    return SimpleNamespace(
        sanity_checking=False,
        state=SimpleNamespace(fn="fit"),
        is_global_zero=True,
        callback_metrics={"val/spearman": torch.tensor(value)},
        current_epoch=epoch,
        strategy=strategy,
        should_stop=False,
    )


def test_a_trial_below_the_median_is_stopped_and_recorded_pruned(tmp_path):
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    study = optuna.create_study(
        storage=storage,
        study_name="s",
        direction="maximize",
        pruner=optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=1),
    )
    for good in (0.5, 0.6):  # two finished trials that reached 0.5 and 0.6 at epoch 1
        trial = study.ask()
        trial.report(good - 0.1, 0)
        trial.report(good, 1)
        study.tell(trial, good)
    trial = study.ask()
    result = tmp_path / "result.json"
    callback = SweepTrial(storage, "s", trial.number, "val/spearman", "max", str(result))
    epoch0 = _trainer(0, 0.1)
    callback.on_validation_end(epoch0, None)
    assert not epoch0.should_stop, "no pruning in the warm-up epoch"
    epoch1 = _trainer(1, 0.2)
    callback.on_validation_end(epoch1, None)
    assert epoch1.should_stop and callback.pruned
    written = json.loads(result.read_text())
    assert written == {
        "best": pytest.approx(0.2),
        "values": [pytest.approx(0.1), pytest.approx(0.2)],
        "epochs": 2,
        "pruned": True,
        "finished": False,
    }
    assert optuna.load_study(study_name="s", storage=storage).trials[2].intermediate_values == {
        0: pytest.approx(0.1),
        1: pytest.approx(0.2),
    }
    better = study.ask()  # above the median: not stopped
    callback = SweepTrial(storage, "s", better.number, "val/spearman", "max", str(tmp_path / "b.json"))
    callback.on_validation_end(_trainer(0, 0.5), None)
    trainer = _trainer(1, 0.7)
    callback.on_validation_end(trainer, None)
    assert not trainer.should_stop
    with pytest.raises(
        ValueError,
        match=r"the sweep's metric 'val/spearman' is not logged by this run \(it logs: "
        r"val/loss\); pass --monitor with one of those",
    ):
        callback.on_validation_end(SimpleNamespace(**{**vars(trainer), "callback_metrics": {"val/loss": 1}}), None)


def _sweep(tmp_path: Path, trials: int) -> subprocess.Popen:
    args = [
        sys.executable,
        "-m",
        "mmfuse",
        "sweep",
        "--config",
        str(QUICKSTART),
        "--space",
        str(SPACE),
        "--trials",
        str(trials),
        "--dir",
        str(tmp_path / "sweep"),
        "--sampler",
        "random",
        *TINY,
    ]
    return subprocess.Popen(args, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _running_fits(directory: Path) -> list[int]:
    found = subprocess.run(["pgrep", "-f", f"{directory}/trial_.*/config.yaml"], capture_output=True, text=True)
    return [int(p) for p in found.stdout.split()]


@pytest.mark.slow  # three short trials, one killed and run again: about a minute
@pytest.mark.xdist_group("sweep-killed")  # `make test-slow` schedules each of these runs on its own
def test_a_killed_sweep_continues_its_study(tmp_path):
    sweep = _sweep(tmp_path, 3)
    deadline = time.time() + 240
    while not (tmp_path / "sweep" / "trial_1" / "fit.log").exists():  # trial 0 finished, trial 1 running
        assert sweep.poll() is None and time.time() < deadline, sweep.stdout.read() if sweep.stdout else ""
        time.sleep(0.5)
    time.sleep(3)
    os.kill(sweep.pid, signal.SIGKILL)
    sweep.wait()
    for _ in range(40):  # the trial's `mmfuse fit` ends with the sweep that started it
        if not _running_fits(tmp_path / "sweep"):
            break
        time.sleep(0.25)
    assert not _running_fits(tmp_path / "sweep")
    killed = yaml.safe_load((tmp_path / "sweep" / "trial_1" / "trial.yaml").read_text())
    again = _sweep(tmp_path, 3)
    out, _ = again.communicate(timeout=400)
    assert again.returncode == 0, out
    assert "1 of 3 trials finished, 1 interrupted trial(s) to run again" in out
    trials = pd.read_csv(tmp_path / "sweep" / "trials.csv")
    assert trials["state"].tolist() == ["complete", "fail", "complete", "complete"], trials
    assert trials["trial"].tolist() == [0, 1, 2, 3]
    assert trials["val/spearman"].notna().tolist() == [True, False, True, True]
    # the interrupted trial ran again with its parameters
    retried = yaml.safe_load((tmp_path / "sweep" / "trial_2" / "trial.yaml").read_text())
    assert retried == killed
    best = yaml.safe_load((tmp_path / "sweep" / "best.yaml").read_text())
    top = trials.loc[trials["val/spearman"].idxmax()]
    assert best["model"]["init_args"]["optimizer"]["init_args"]["lr"] == pytest.approx(
        top["model.init_args.optimizer.init_args.lr"]
    )
    assert f"Best: trial {int(top['trial'])}, val/spearman {top['val/spearman']:.4f}" in out
    assert (tmp_path / "sweep" / "trials.md").read_text().startswith("| trial | state | val/spearman |")
    done = _sweep(tmp_path, 3).communicate(timeout=120)[0]  # finished: nothing runs again
    assert "3 of 3 trials finished" in done and "trial 4" not in done


@pytest.mark.slow  # three folds, each trained, tested and predicted: about a minute
@pytest.mark.xdist_group("cv-quickstart")
def test_cross_validation_tests_every_gene_once_and_combines_the_folds(tmp_path, capsys):
    assert main(["cv", "--config", str(QUICKSTART), "--folds", "3", "--dir", str(tmp_path / "cv"), *TINY]) == 0
    out = capsys.readouterr().out
    root = tmp_path / "cv"
    predictions = pd.read_csv(root / "predictions.csv")
    sample = IsoformExpression("sample", sample={"size": 40})
    sample.setup("fit")
    assert predictions["transcript_id"].is_unique
    assert set(predictions["transcript_id"]) == {r for s in ("train", "val", "test") for r in sample.split_ids(s)}
    genes = predictions["transcript_id"].str.split(".").str[0]
    assert (predictions.groupby(genes)["fold"].nunique() == 1).all(), "a gene was tested in two folds"
    assert sorted(predictions["fold"].unique()) == [0, 1, 2]
    folds = pd.read_csv(root / "cv_folds.csv", index_col=[0, 1])
    combined = pd.read_csv(root / "cv_metrics.csv", index_col=0)
    spearman = folds["spearman"].unstack(0)  # targets × folds
    pd.testing.assert_series_equal(combined["spearman"], spearman.mean(axis=1), check_names=False, atol=1e-6)
    pd.testing.assert_series_equal(combined["spearman_sd"], spearman.std(axis=1, ddof=1), check_names=False, atol=1e-6)
    for fold in range(3):
        test = pd.read_csv(root / f"fold_{fold}" / "metrics_test.csv", index_col=0)
        assert test["spearman"].mean() == pytest.approx(folds.loc[(fold, "mean"), "spearman"])
    assert f"| mean ± sd | {combined.loc['mean', 'mse']:.4f} ± {combined.loc['mean', 'mse_sd']:.4f} |" in out
    assert main(["cv", "--config", str(QUICKSTART), "--folds", "3", "--dir", str(root), *TINY]) == 0
    assert capsys.readouterr().out.count("done before (kept)") == 3


@pytest.mark.slow  # two folds of each, trained two steps, tested and predicted: about a minute
@pytest.mark.parametrize(("experiment", "group"), [
    pytest.param("tf_bind/config.yaml", "contig", marks=pytest.mark.xdist_group("cv-tf_bind")),
    pytest.param("geneformer/config.yaml", "perturbation", marks=pytest.mark.xdist_group("cv-geneformer")),
])  # fmt: skip
def test_cross_validation_runs_on_tf_binding_and_cells(experiment, group, tmp_path, monkeypatch):
    from tests.test_experiments import tiny_overrides

    config = ROOT / "experiments" / experiment
    monkeypatch.chdir(tmp_path)
    overrides = tiny_overrides(config, tmp_path)
    root = tmp_path / "cv"
    assert main(["cv", "--config", str(config), "--folds", "2", "--dir", str(root), *overrides,
                 f"--data.init_args.split.group={group}"]) == 0  # fmt: skip
    predictions = pd.read_csv(root / "predictions.csv")
    assert sorted(predictions["fold"].unique()) == [0, 1] and predictions.iloc[:, 0].is_unique
