"""``mmfuse cv``: k-fold cross-validation grouped by gene, one ``mmfuse fit`` per fold.

    mmfuse cv --config x.yaml --folds 5

Fold ``i`` is an ordinary run in ``<dir>/fold_i/`` of the config with ``data.init_args.split.folds: k`` and
``data.init_args.split.fold: i`` (the table data modules split the genes into k folds of equal size, so the
isoforms of a gene never straddle folds; fold i tests, a share of the other genes validates). Each fold is
trained (``mmfuse fit``), its best checkpoint tested on its held-out fold (``mmfuse test``: the fold's
report) and its held-out records predicted (``mmfuse predict``). The combined report in ``<dir>/``:

- ``cv_metrics.csv``/``.md``: every metric per target (and the mean over targets) as the mean and the
  standard deviation over the folds, and ``cv_folds.csv``, each fold's table;
- ``predictions.csv``: every record's prediction by the model that did not train on it, with its fold;
  for a gene classifier (:class:`~mmfuse.data.GeneClassification`) also ``predictions_genes.csv``, each
  gene's mean prediction over its cells by the fold that held it out.

A fold already done is not run again, so a killed ``mmfuse cv`` continues with the same command.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from mmfuse.cli.runs import (
    config_error,
    failure,
    load_config,
    resolve_monitor,
    run_command,
    run_config,
    run_name,
    run_parser,
    set_key,
    write_config,
    write_json,
)
from mmfuse.errors import ConfigError, MmfuseError
from mmfuse.io import atomic_path

__all__ = ["combine", "main"]

#: where a cv's folds go by default: ``cv/<config name>`` (the help text says the same)
_DIR = "cv"


def _parser() -> argparse.ArgumentParser:
    parser = run_parser(
        "mmfuse cv",
        "k-fold cross-validation grouped by gene: one `mmfuse fit`, `test` and `predict` per fold, then the folds' "
        "metrics as mean ± sd and every record's held-out prediction. Options after the known ones go to every run "
        "(e.g. --trainer.max_epochs 5).",
        "cv",
        _DIR,
    )
    parser.add_argument("--folds", type=int, default=5, help="number of folds (default 5)")
    return parser


def _mean_sd(folds: list[pd.DataFrame]) -> pd.DataFrame:
    """Per row (target, and the ``mean`` row) and metric: ``<metric>`` (mean over folds) and ``<metric>_sd``."""
    stacked = pd.concat(folds, keys=range(len(folds)), names=["fold"])
    numeric = stacked.select_dtypes("number")
    grouped = numeric.groupby(level=1, sort=False)
    mean, sd = grouped.mean(), grouped.std(ddof=1)
    columns = {}
    for metric in numeric.columns:
        columns[metric], columns[f"{metric}_sd"] = mean[metric], sd[metric]
    out = pd.DataFrame(columns)
    out.index.name = folds[0].index.name
    return out


def combine(root: Path, folds: int) -> tuple[str, Path]:
    """Writes the combined report of the folds' outputs in ``root`` (see the module); returns its summary (each
    fold's mean over targets and their mean ± sd, Markdown) and the joined predictions' path."""
    tables, predictions, genes = [], [], []
    for fold in range(folds):
        directory = root / f"fold_{fold}"
        table = pd.read_csv(directory / "metrics_test.csv", index_col=0)
        summary = table.select_dtypes("number").mean().to_frame("mean").T
        tables.append(pd.concat([table, summary]).rename_axis(table.index.name))
        predictions.append(pd.read_csv(directory / "predictions_test.csv").assign(fold=fold))
        per_gene = directory / "predictions_test_genes.csv"  # a gene classifier's: each fold tests its own genes
        if per_gene.is_file():
            genes.append(pd.read_csv(per_gene, dtype={"gene": str}, keep_default_na=False).assign(fold=fold))
    combined = _mean_sd(tables)
    folds_table = pd.concat(tables, keys=range(folds), names=["fold"])
    per_fold = pd.DataFrame([t.loc["mean"] for t in tables], index=pd.Index(range(folds), name="fold"))
    joined = pd.concat(predictions, ignore_index=True)
    with atomic_path(root / "cv_metrics.csv") as tmp:
        combined.to_csv(tmp)
    with atomic_path(root / "cv_folds.csv") as tmp:
        folds_table.to_csv(tmp)
    with atomic_path(root / "cv_metrics.md") as tmp:
        tmp.write_text(summary_markdown(per_fold, combined) + "\n\n" + _markdown(combined, folds) + "\n")
    path = root / "predictions.csv"
    with atomic_path(path) as tmp:
        joined.to_csv(tmp, index=False)
    if genes:
        with atomic_path(root / "predictions_genes.csv") as tmp:
            pd.concat(genes, ignore_index=True).to_csv(tmp, index=False)
    return summary_markdown(per_fold, combined), path


def summary_markdown(per_fold: pd.DataFrame, combined: pd.DataFrame) -> str:
    """Each fold's metrics averaged over targets, then their mean ± sd over the folds."""
    metrics = list(per_fold.columns)
    lines = ["| fold | " + " | ".join(metrics) + " |", "| --- |" + " ---: |" * len(metrics)]
    for fold, row in per_fold.iterrows():
        lines.append(f"| {fold} | " + " | ".join(f"{row[m]:.4f}" for m in metrics) + " |")
    mean = combined.loc["mean"]
    lines.append("| mean ± sd | " + " | ".join(f"{mean[m]:.4f} ± {mean[m + '_sd']:.4f}" for m in metrics) + " |")
    return "Averaged over targets, per fold\n\n" + "\n".join(lines)


def _markdown(combined: pd.DataFrame, folds: int) -> str:
    metrics = [c for c in combined.columns if not c.endswith("_sd")]
    lines = [
        f"| {combined.index.name or 'target'} | " + " | ".join(metrics) + " |",
        "| --- |" + " ---: |" * len(metrics),
    ]
    for name, row in combined.iterrows():
        cells = [f"{row[m]:.4f} ± {row[m + '_sd']:.4f}" for m in metrics]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return f"Mean ± sd over {folds} folds\n\n" + "\n".join(lines)


def main(argv: Sequence[str], cli: Any = None) -> int:
    """Entry point of ``mmfuse cv``; ``cli``: the ``mmfuse`` command's LightningCLI class (it checks configs;
    default :class:`~mmfuse.cli.lightning.MmfuseCLI`)."""
    if cli is None:
        from mmfuse.cli.lightning import MmfuseCLI as cli
    options, extra = _parser().parse_known_args(argv)
    if options.folds < 2:
        raise ConfigError(f"--folds must be at least 2, not {options.folds}")
    config_file = Path(options.config)
    config = load_config(config_file)
    fold_args = ["--data.init_args.split.folds", str(options.folds), "--data.init_args.split.fold", "0"]
    error = config_error(cli, config_file, [*extra, *fold_args])
    if error is not None:
        if "folds" in error:
            data = config.get("data") or {}
            name = data.get("class_path", data) if isinstance(data, dict) else data
            raise ConfigError(
                f"the data module of {config_file} ({name}) takes no cross-validation folds (the table "
                f"data modules do: IsoformExpression, SequenceClassification, CellClassification, "
                f"GeneClassification): "
                f"{error}"
            )
        raise ConfigError(f"{config_file}: {error}")
    monitor = resolve_monitor(config, options.monitor, options.mode)
    root = Path(options.dir or Path(_DIR) / run_name(config_file))
    root.mkdir(parents=True, exist_ok=True)
    print(f"mmfuse cv: {options.folds} folds of {config_file} in {root}")
    for fold in range(options.folds):
        directory = root / f"fold_{fold}"
        done = directory / "done.json"
        if done.is_file():
            print(f"fold {fold}: done before (kept)")
            continue
        fold_config = run_config(config, directory, monitor)
        set_key(fold_config, "data.init_args.split.folds", options.folds)
        set_key(fold_config, "data.init_args.split.fold", fold)
        path = write_config(fold_config, directory / "config.yaml")
        print(f"fold {fold}: training (log: {directory / 'fit.log'})")
        log = directory / "fit.log"
        code, fitted = run_command("fit", path, log, extra)
        if code != 0:
            raise MmfuseError(f"fold {fold}: mmfuse fit failed: {failure(code, fitted)} (see {log})")
        checkpoint = fitted.get("best_checkpoint") or fitted.get("last_checkpoint")
        if checkpoint is None:
            raise MmfuseError(
                f"fold {fold}: mmfuse fit saved no checkpoint to test (see {log}); keep the config's "
                f"ModelCheckpoint, or leave trainer.enable_checkpointing on"
            )
        test_log = directory / "test.log"
        code, tested = run_command("test", path, test_log, [*extra, "--ckpt_path", str(checkpoint)])
        if code != 0:
            raise MmfuseError(f"fold {fold}: mmfuse test failed: {failure(code, tested)} (see {test_log})")
        if not tested.get("metrics_table"):
            raise MmfuseError(f"fold {fold}: mmfuse test wrote no metrics table (see {test_log})")
        metrics = Path(tested["metrics_table"])
        predict_log = directory / "predict.log"
        predictions = directory / "predictions_test.csv"
        predict_args = [
            *extra,
            "--ckpt_path",
            str(checkpoint),
            "--data.init_args.split.predict",
            "test",
            "--predictions.output",
            str(predictions),
        ]
        code, predicted = run_command("predict", path, predict_log, predict_args)
        if code != 0:
            why = failure(code, predicted)
            raise MmfuseError(f"fold {fold}: mmfuse predict failed: {why} (see {predict_log})")
        with atomic_path(directory / "metrics_test.csv") as tmp:
            tmp.write_bytes(metrics.read_bytes())
        write_json(done, {"checkpoint": str(checkpoint), "metrics": str(metrics), "predictions": str(predictions)})
        means = pd.read_csv(metrics, index_col=0).select_dtypes("number").mean()
        shown = [m for m in ("spearman", "pearson", "r2", "accuracy", "auroc", "f1") if m in means][:2] or list(means)[
            :2
        ]
        scores = ", ".join(f"{m} {means[m]:.4f}" for m in shown)
        print(f"fold {fold}: tested: {scores} (mean over targets; report: {metrics.parent / 'report_test'})")
    summary, joined = combine(root, options.folds)
    print("\n" + summary + "\n")
    print(
        f"Cross-validation report: {root / 'cv_metrics.md'} (and .csv; each fold's table in cv_folds.csv); "
        f"held-out predictions of every record: {joined}"
    )
    return 0
