"""``mmfuse sweep``: hyper-parameter search with Optuna, each trial an ordinary ``mmfuse fit`` run.

    mmfuse sweep --config x.yaml --space space.yaml --trials 20

The search space names config keys (dotted, as on the command line) with a range or choices::

    model.init_args.optimizer.init_args.lr: {low: 1.0e-4, high: 1.0e-2, log: true}
    model.init_args.head.init_args.dropout: {low: 0.0, high: 0.3}
    model.init_args.adapter.init_args.hidden_dim: {low: 32, high: 128, step: 32}   # whole numbers
    model.init_args.adapter:
      choices:
        - {class_path: ConcatFusion, init_args: {hidden_dim: 64}}
        - {class_path: CrossAttentionFusion, init_args: {num_heads: 2, head_dim: 16}}

The space is checked before any trial runs: every key, range and choice is parsed against the config by
``mmfuse fit``'s own parser. The study lives in a database (default SQLite in the sweep's directory; any
SQLAlchemy URL, e.g. PostgreSQL, lets many machines work on one study at once). Trial ``N`` runs in
``<dir>/trial_N/`` with its ``config.yaml`` and ``fit.log``; its validation metric is reported to Optuna
after every epoch and unpromising trials are stopped (pruned, recorded as such) by the pruner. Killing a
sweep and starting it again with the same command continues the study: the trials it had finished are
kept, the one it was running is run again, and ``--trials`` counts finished trials of the whole study. At
the end, the table of trials is printed and written (``trials.csv``, ``trials.md``) with the best trial's
config as ``best.yaml``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import socket
import time
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import lightning as L

from mmfuse.cli.runs import (
    config_error,
    failure,
    load_config,
    resolve_monitor,
    run_command,
    run_config,
    run_name,
    run_parser,
    write_config,
    write_json,
)
from mmfuse.cli.sweep_space import check_space, copy_with, load_space
from mmfuse.errors import ConfigError, MmfuseError
from mmfuse.io import atomic_path

__all__ = ["SweepTrial", "main"]


def _pruner(name: str) -> Any:
    """The pruner named on the command line (built the same way in the sweep and in each trial)."""
    import optuna

    if name == "median":  # after 2 trials, from the second epoch on
        return optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=1)
    return optuna.pruners.NopPruner()


class SweepTrial(L.Callback):
    """Reports a trial's validation metric to its Optuna study after every epoch, stops the run when the
    pruner says so, and writes the trial's result (``mmfuse sweep`` adds it to each trial's config).

    Pruning stops the trainer (``trainer.should_stop``) instead of raising inside Lightning's loop, so a
    pruned trial ends as a normal run (checkpoints and logs written, every DDP process stopping together).

    Args:
        storage: the study's database URL.
        study_name: the study.
        trial_number: the trial's number in the study.
        monitor: the metric reported, as logged (``val/spearman``).
        mode: ``max`` or ``min``: which is better.
        result: the JSON file written with the best value, the epochs run and whether it was pruned.
        pruner: ``median`` or ``none``, as ``mmfuse sweep --pruner`` (a study's database does not keep it).
    """

    def __init__(self, storage: str, study_name: str, trial_number: int, monitor: str, mode: str, result: str,
                 pruner: str = "median") -> None:  # fmt: skip
        self.storage, self.study_name, self.trial_number, self.pruner = storage, study_name, trial_number, pruner
        self.monitor, self.mode, self.result = monitor, mode, Path(result)
        self.values: list[float] = []
        self.pruned = False
        self._trial: Any = None

    def _optuna_trial(self) -> Any:
        if self._trial is None:
            import optuna

            storage = optuna.storages.RDBStorage(self.storage)
            study_id = storage.get_study_id_from_name(self.study_name)
            trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, self.trial_number)
            study = optuna.load_study(study_name=self.study_name, storage=storage, pruner=_pruner(self.pruner))
            self._trial = optuna.trial.Trial(study, trial_id)
        return self._trial

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or trainer.state.fn != "fit":
            return
        value = trainer.callback_metrics.get(self.monitor)
        if value is None:
            logged = ", ".join(sorted(k for k in trainer.callback_metrics if not k.startswith("train"))) or "none"
            raise ConfigError(
                f"the sweep's metric {self.monitor!r} is not logged by this run (it logs: {logged}); "
                f"pass --monitor with one of those"
            )
        value = float(value)
        self.values.append(value)
        prune = False
        if trainer.is_global_zero:
            trial = self._optuna_trial()
            trial.report(value if math.isfinite(value) else float("nan"), step=trainer.current_epoch)
            prune = bool(trial.should_prune())
        prune = bool(trainer.strategy.broadcast(prune))
        if prune:
            trainer.should_stop = True
            self.pruned = True
        if trainer.is_global_zero:
            self._write(trainer)

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.is_global_zero:
            self._write(trainer, finished=True)

    def _write(self, trainer: L.Trainer, finished: bool = False) -> None:
        finite = [v for v in self.values if math.isfinite(v)]
        best = (max if self.mode == "max" else min)(finite) if finite else None
        write_json(
            self.result,
            {
                "best": best,
                "values": self.values,
                "epochs": len(self.values),
                "pruned": self.pruned,
                "finished": finished,
            },
        )


def _parser() -> argparse.ArgumentParser:
    parser = run_parser(
        "mmfuse sweep",
        "Hyper-parameter search with Optuna: each trial is `mmfuse fit` on the config with the space's values, in its "
        "own directory. Options after the known ones go to every `mmfuse fit` (e.g. --trainer.max_epochs 5).",
        "sweep",
    )
    parser.add_argument("--space", required=True, help="YAML: config keys with {low, high[, log, step]} or {choices}")
    parser.add_argument("--trials", type=int, required=True, help="finished (complete or pruned) trials wanted")
    parser.add_argument("--storage", help="Optuna storage URL (default: sqlite:///<dir>/study.db)")
    parser.add_argument("--study-name", help="the study's name (default: the directory's name)")
    parser.add_argument("--sampler", choices=("tpe", "random"), default="tpe", help="Optuna sampler (default tpe)")
    parser.add_argument(
        "--pruner",
        choices=("median", "none"),
        default="median",
        help="median: stop a trial whose metric is below the median of earlier trials at the same "
        "epoch (after 2 trials and 1 epoch); none: never prune",
    )
    parser.add_argument("--seed", type=int, default=0, help="the sampler's seed (default 0)")
    return parser


def _owner(directory: Path) -> dict[str, Any]:
    try:
        return json.loads((directory / "owner.json").read_text())
    except (OSError, ValueError):
        return {}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _retry_interrupted(study: Any, root: Path) -> int:
    """Trials of this sweep that a killed or interrupted ``mmfuse sweep`` on this machine left unfinished:
    marked failed, and their parameters queued to run again. Returns how many."""
    from optuna.trial import TrialState

    retried = 0
    host = socket.gethostname()
    again = {t.user_attrs.get("retry_of") for t in study.get_trials(deepcopy=False)}  # run again already
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING, TrialState.FAIL)):
        directory = root / f"trial_{trial.number}"
        owner = _owner(directory)
        if trial.number in again or owner.get("host") != host:
            continue  # another machine's trial: Optuna's heartbeat fails it when it goes quiet
        if trial.state == TrialState.RUNNING and _alive(int(owner.get("pid", -1))):
            continue
        if trial.state == TrialState.FAIL and not trial.user_attrs.get("interrupted"):
            continue  # a run that failed on its own: not run again
        if trial.state == TrialState.RUNNING:
            study.tell(trial.number, state=TrialState.FAIL)
        study.enqueue_trial(dict(trial.params), user_attrs={"retry_of": trial.number}, skip_if_exists=False)
        retried += 1
    return retried


def _describe(params: Mapping[str, Any]) -> str:
    def short(value: Any) -> str:
        if isinstance(value, float):
            return f"{value:.4g}"
        return str(value).rsplit(".", 1)[-1] if isinstance(value, str) and "." in value else str(value)

    return ", ".join(f"{key.rsplit('.', 1)[-1] if key.count('.') else key}={short(v)}" for key, v in params.items())


def _table(study: Any, monitor: str) -> tuple[Any, str]:
    import pandas as pd

    rows = []
    for trial in study.get_trials(deepcopy=False):
        seconds = (trial.datetime_complete - trial.datetime_start).total_seconds() if trial.datetime_complete else None
        rows.append(
            {
                "trial": trial.number,
                "state": trial.state.name.lower(),
                monitor: trial.value,
                "epochs": trial.user_attrs.get("epochs"),
                "seconds": seconds,
                **trial.params,
            }
        )
    frame = pd.DataFrame(rows)
    lines = ["| " + " | ".join(map(str, frame.columns)) + " |", "|" + " --- |" * len(frame.columns)]
    for row in frame.itertuples(index=False):
        cells = [
            ""
            if (isinstance(v, float) and math.isnan(v)) or v is None
            else f"{v:.4g}"
            if isinstance(v, float)
            else str(v)
            for v in row
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return frame, "\n".join(lines)


def main(argv: Sequence[str], cli: Any = None) -> int:
    """Entry point of ``mmfuse sweep``; ``cli``: the ``mmfuse`` command's LightningCLI class (it checks configs;
    default :class:`~mmfuse.cli.lightning.MmfuseCLI`)."""
    import optuna

    with warnings.catch_warnings():
        # Optuna marks the heartbeat and the stale-trial retry the sweep relies on as experimental
        warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
        return _sweep(argv, cli)


def _sweep(argv: Sequence[str], cli: Any) -> int:
    if cli is None:
        from mmfuse.cli.lightning import MmfuseCLI as cli
    options, extra = _parser().parse_known_args(argv)
    if options.trials < 1:
        raise ConfigError(f"--trials must be at least 1, not {options.trials}")
    config_file = Path(options.config)
    config = load_config(config_file)
    params = load_space(options.space)
    error = config_error(cli, config_file, extra)
    if error is not None:
        raise ConfigError(f"{config_file}{' with ' + ' '.join(extra) if extra else ''}: {error}")
    check_space(cli, config_file, params, extra)
    monitor, mode = resolve_monitor(config, options.monitor, options.mode)
    root = Path(options.dir or Path("sweeps") / run_name(config_file))
    root.mkdir(parents=True, exist_ok=True)
    storage_url = options.storage or f"sqlite:///{(root / 'study.db').resolve()}"
    study_name = options.study_name or root.resolve().name

    import optuna
    from optuna.trial import TrialState

    optuna.logging.set_verbosity(optuna.logging.ERROR)  # mmfuse prints one line per trial
    # a trial whose process went quiet (another machine's, sharing the study) is failed and run again
    retry = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=1)
    storage = optuna.storages.RDBStorage(
        storage_url, heartbeat_interval=30, grace_period=120, heartbeat_stale_trial_callback=retry
    )
    sampler = (
        optuna.samplers.TPESampler(seed=options.seed, n_startup_trials=min(10, max(2, options.trials // 2)))
        if options.sampler == "tpe"
        else optuna.samplers.RandomSampler(seed=options.seed)
    )
    pruner = _pruner(options.pruner)
    direction = "maximize" if mode == "max" else "minimize"
    study = optuna.create_study(
        storage=storage, study_name=study_name, direction=direction, sampler=sampler, pruner=pruner, load_if_exists=True
    )
    if study.direction.name.lower() != direction:
        raise ConfigError(
            f"study {study_name!r} in {storage_url} was made to {study.direction.name.lower()} "
            f"{study.user_attrs.get('monitor', 'its metric')}; pass the same --monitor/--mode, or "
            f"another --dir or --study-name for a new study"
        )
    if study.user_attrs.get("monitor", monitor) != monitor:
        raise ConfigError(
            f"study {study_name!r} optimises {study.user_attrs['monitor']}, not {monitor}; pass "
            f"--monitor {study.user_attrs['monitor']}, or another --dir or --study-name"
        )
    study.set_user_attr("monitor", monitor)
    retried = _retry_interrupted(study, root)
    finished = (TrialState.COMPLETE, TrialState.PRUNED)
    done = len(study.get_trials(deepcopy=False, states=finished))
    print(
        f"mmfuse sweep: study {study_name!r} in {storage_url}: {done} of {options.trials} trials finished"
        f"{f', {retried} interrupted trial(s) to run again' if retried else ''}; {direction} {monitor}"
    )

    def objective(trial: Any) -> float:
        directory = root / f"trial_{trial.number}"
        values = {p.key: p.suggest(trial) for p in params}
        trial_config = copy_with(config, values)
        result = directory / "result.json"
        callback = {
            "class_path": "mmfuse.cli.sweep.SweepTrial",
            "init_args": {
                "storage": storage_url,
                "study_name": study_name,
                "trial_number": trial.number,
                "monitor": monitor,
                "mode": mode,
                "result": str(result),
                "pruner": options.pruner,
            },
        }
        path = write_config(run_config(trial_config, directory, (monitor, mode), [callback]), directory / "config.yaml")
        write_config(trial_config, directory / "trial.yaml")  # the config alone, to train it again
        write_json(directory / "owner.json", {"host": socket.gethostname(), "pid": os.getpid()})
        start = time.perf_counter()
        try:
            code, fitted = run_command("fit", path, directory / "fit.log", extra)
        except BaseException:
            trial.set_user_attr("interrupted", True)
            raise
        seconds = time.perf_counter() - start
        outcome = json.loads(result.read_text()) if result.is_file() else {}
        trial.set_user_attr("epochs", outcome.get("epochs"))
        label = f"trial {trial.number} ({_describe(trial.params)})"
        if code != 0 or outcome.get("best") is None:
            why = failure(code, fitted) if code != 0 else f"no finite {monitor} was logged"
            print(f"{label}: failed after {seconds:.0f} s: {why} (see {directory / 'fit.log'})")
            raise _TrialFailed(why)
        if outcome.get("pruned"):
            print(
                f"{label}: pruned after epoch {outcome['epochs'] - 1} ({monitor} {outcome['values'][-1]:.4f}, "
                f"{seconds:.0f} s)"
            )
            raise optuna.TrialPruned()
        print(f"{label}: {monitor} {outcome['best']:.4f} in {outcome['epochs']} epochs ({seconds:.0f} s)")
        return float(outcome["best"])

    failures = 0
    while done < options.trials and failures < options.trials:
        try:
            study.optimize(objective, n_trials=1, catch=(_TrialFailed,))
        except KeyboardInterrupt:
            print(f"mmfuse sweep: interrupted; the same command continues the study ({done} trials finished)")
            return 130
        last = study.get_trials(deepcopy=False)[-1]
        failures += last.state == TrialState.FAIL
        done = len(study.get_trials(deepcopy=False, states=finished))
    frame, markdown = _table(study, monitor)
    with atomic_path(root / "trials.csv") as tmp:
        frame.to_csv(tmp, index=False)
    with atomic_path(root / "trials.md") as tmp:
        tmp.write_text(markdown + "\n")
    print("\n" + markdown + "\n")
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not complete:
        raise MmfuseError(f"no trial of study {study_name!r} completed; see the fit.log of each trial in {root}")
    best = study.best_trial
    best_config = copy_with(config, {p.key: p.value_of(best.params) for p in params if p.key in best.params})
    write_config(best_config, root / "best.yaml")
    print(
        f"Best: trial {best.number}, {monitor} {best.value:.4f} ({_describe(best.params)}). Tables: "
        f"{root / 'trials.csv'}, {root / 'trials.md'}. Train it: mmfuse fit --config {root / 'best.yaml'}"
    )
    return 1 if failures >= options.trials and done < options.trials else 0


class _TrialFailed(Exception):
    """A trial's run failed (its error line is printed; the study records the trial as failed)."""
