"""The report folder of ``mmfuse validate``/``mmfuse test``: metric tables and plots people look at.

Functions take plain numpy/pandas data and a directory, so they run (and are tested) without
Lightning; :class:`~mmfuse.training.callbacks.EvaluationReport` calls them on rank zero. Every file is written
atomically (:func:`~mmfuse.io.atomic_path`). Plots use matplotlib's Agg canvas directly, imported on
first use: no pyplot, no global backend switch, nothing that needs a display.

Examples:
    >>> import tempfile
    >>> frame = pd.DataFrame({"r2": [0.5, 0.1], "spearman": [0.8, 0.3]},
    ...                      index=pd.Index(["Liver", "Lung"], name="target"))
    >>> print(metrics_markdown(frame, {"r2": "R²", "spearman": "Spearman"}))
    | target | R² | Spearman |
    | --- | ---: | ---: |
    | Liver | 0.5000 | 0.8000 |
    | Lung | 0.1000 | 0.3000 |
    >>> best_and_worst(frame["spearman"])
    ('Liver', 'Lung')
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from mmfuse.io import atomic_path

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = [
    "best_and_worst",
    "find_training_log",
    "history_losses",
    "metrics_markdown",
    "plot_best_worst",
    "plot_loss_curves",
    "plot_r2_spearman",
    "read_csv_losses",
    "write_metrics",
]

#: columns of a CSVLogger log holding the training loss per epoch, in order of preference
_TRAIN_LOSS = ("train/loss_epoch", "train/loss")
_VAL_LOSS = "val/loss"


# tables ---------------------------------------------------------------------------------------------
def _cell(value: object) -> str:
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        return "nan" if np.isnan(value) else f"{value:.4f}"
    return str(value)


def metrics_markdown(frame: pd.DataFrame, titles: Mapping[str, str] | None = None) -> str:
    """A Markdown table of ``frame``: its index as the first column, one column per metric.

    Args:
        frame: one row per target (class), and a summary row if wanted; columns are metric names.
        titles: ``{metric: column title}``; default: the metric names.
    """
    titles = titles or {}
    header = [str(frame.index.name or ""), *(titles.get(c, c) for c in frame.columns)]
    lines = ["| " + " | ".join(header) + " |", "| --- |" + " ---: |" * len(frame.columns)]
    for name, row in zip(frame.index, frame.itertuples(index=False), strict=True):
        lines.append("| " + " | ".join([str(name), *map(_cell, row)]) + " |")
    return "\n".join(lines)


def write_metrics(frame: pd.DataFrame, directory: str | Path, titles: Mapping[str, str] | None = None) -> list[Path]:
    """Writes ``metrics.csv`` and ``metrics.md`` (see :func:`metrics_markdown`) into ``directory``."""
    directory = Path(directory)
    csv, markdown = directory / "metrics.csv", directory / "metrics.md"
    with atomic_path(csv) as tmp:
        frame.to_csv(tmp)
    with atomic_path(markdown) as tmp:
        tmp.write_text(metrics_markdown(frame, titles) + "\n")
    return [csv, markdown]


# plots ----------------------------------------------------------------------------------------------
def _figure(width: float, height: float, ncols: int = 1) -> tuple[Figure, list]:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig, list(np.atleast_1d(fig.subplots(1, ncols)))


def _save(fig: Figure, path: str | Path) -> Path:
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    return path


def best_and_worst(spearman: pd.Series) -> tuple[str, str] | None:
    """The names (index) of the highest and lowest Spearman correlation, NaN left out; None if all NaN."""
    valid = spearman.dropna()
    if valid.empty:
        return None
    return str(valid.idxmax()), str(valid.idxmin())


def plot_r2_spearman(frame: pd.DataFrame, path: str | Path) -> Path:
    """Bars of R² and Spearman per target, targets sorted by Spearman (IsoFormer's Figure 3).

    Args:
        frame: one row per target (no summary row), with columns ``r2`` and ``spearman``.
        path: the PNG file to write.
    """
    data = frame.sort_values("spearman", ascending=False, na_position="last")
    x = np.arange(len(data))
    fig, (ax,) = _figure(max(6.0, 0.32 * len(data) + 2), 4.5)
    ax.bar(x - 0.2, data["r2"], width=0.4, label="R²")
    ax.bar(x + 0.2, data["spearman"], width=0.4, label="Spearman")
    ax.axhline(0.0, color="black", linewidth=0.8)
    ax.set_xticks(x, [str(n) for n in data.index], rotation=60, ha="right", fontsize=8)
    ax.set_xlim(-0.6, len(data) - 0.4)
    ax.set_ylabel("score")
    ax.set_title("R² and Spearman per target, sorted by Spearman")
    ax.legend()
    return _save(fig, path)


def plot_best_worst(
    preds: np.ndarray, targets: np.ndarray, names: Sequence[str], spearman: Sequence[float], path: str | Path
) -> Path | None:
    """Predicted against observed values of the targets with the best and worst Spearman correlation.

    Args:
        preds: predictions ``(N, n_targets)``.
        targets: observed values ``(N, n_targets)``.
        names: the targets' names.
        spearman: Spearman correlation of each target.
        path: the PNG file to write.

    Returns:
        ``path``, or None (nothing written) when every correlation is NaN.
    """
    spearman = np.asarray(spearman, dtype=float)
    picked = best_and_worst(pd.Series(spearman, index=list(names)))
    if picked is None:
        return None
    fig, axes = _figure(9.0, 4.5, ncols=2)
    index = {name: i for i, name in enumerate(names)}
    for ax, which, name in zip(axes, ("best", "worst"), picked, strict=True):
        j = index[name]
        observed, predicted = targets[:, j], preds[:, j]
        ax.scatter(observed, predicted, s=12, alpha=0.6)
        low = float(np.nanmin([observed.min(), predicted.min()]))
        high = float(np.nanmax([observed.max(), predicted.max()]))
        ax.plot([low, high], [low, high], color="black", linewidth=0.8, linestyle="--", label="y = x")
        ax.set_title(f"{name} ({which}): Spearman {spearman[j]:.3f}")
        ax.set_xlabel("observed")
        ax.set_ylabel("predicted")
        ax.legend(loc="upper left")
    return _save(fig, path)


# loss curves ----------------------------------------------------------------------------------------
def read_csv_losses(log: str | Path) -> pd.DataFrame | None:
    """``{train, val}`` loss per epoch from a CSVLogger ``metrics.csv``; None if it holds neither."""
    try:
        table = pd.read_csv(log)
    except (OSError, ValueError):  # unreadable, empty or not a CSV log
        return None
    train = next((c for c in _TRAIN_LOSS if c in table.columns), None)
    if "epoch" not in table.columns or (train is None and _VAL_LOSS not in table.columns):
        return None
    curves = {}
    for name, column in (("train", train), ("val", _VAL_LOSS)):
        if column in table.columns:
            curves[name] = table.dropna(subset=[column]).groupby("epoch")[column].last()
    losses = pd.DataFrame(curves)
    return None if losses.empty else losses


def history_losses(history: Sequence[Mapping[str, float]]) -> pd.DataFrame | None:
    """``{train, val}`` loss per epoch from a task's history (:attr:`~mmfuse.training.FusionTask.history`, which
    checkpoints carry whatever the run's logger); None if it holds no loss.

    Examples:
        >>> history_losses([{"epoch": 0, "train/loss": 1.0, "val/loss": 1.5}, {"epoch": 1, "train/loss": 0.5}])
               train  val
        epoch
        0        1.0  1.5
        1        0.5  NaN
    """
    rows = {int(e["epoch"]): {n: e.get(f"{n}/loss") for n in ("train", "val")} for e in history if "epoch" in e}
    losses = pd.DataFrame.from_dict(rows, orient="index", columns=["train", "val"], dtype=float)
    losses = losses.dropna(axis=1, how="all").dropna(axis=0, how="all").sort_index()
    losses.index.name = "epoch"
    return None if losses.empty else losses


def find_training_log(candidates: Iterable[str | Path | None]) -> Path | None:
    """The first of ``candidates`` that is a CSVLogger ``metrics.csv`` holding a training or validation loss."""
    for candidate in candidates:
        if candidate is not None and Path(candidate).is_file() and read_csv_losses(Path(candidate)) is not None:
            return Path(candidate)
    return None


def plot_loss_curves(losses: pd.DataFrame | str | Path, path: str | Path) -> Path | None:
    """Training and validation loss per epoch: ``losses`` as :func:`history_losses` or
    :func:`read_csv_losses` return them, or the path of a CSVLogger ``metrics.csv``.

    Returns:
        ``path``, or None (nothing written) when there is no loss.
    """
    if not isinstance(losses, pd.DataFrame):
        losses = read_csv_losses(Path(losses))
    if losses is None or losses.empty:
        return None
    fig, (ax,) = _figure(6.0, 4.0)
    for name in losses.columns:
        curve = losses[name].dropna()
        ax.plot(curve.index, curve.to_numpy(), marker="o", label=f"{name}/loss")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    ax.set_title("Loss per epoch")
    ax.legend()
    return _save(fig, path)


def plot_ranked(stats: pd.DataFrame, measure: str, top: int, path: str | Path, title: str) -> Path:
    """The ``top`` perturbations of ``mmfuse perturb``'s statistics: each one's mean ``measure`` with its
    standard error and, where there is one, the mean of its rank-matched null; ``*`` marks an FDR below 0.05.

    Args:
        stats: one row per perturbation, ranked (:func:`mmfuse.analysis.perturb.statistics`).
        measure: the column ranked by (``shift``, ``to_goal``, ``from_start``, …).
        top: how many rows to show.
        path: the PNG file to write.
        title: what was perturbed, for the title.
    """
    data = stats.dropna(subset=[measure]).head(top).iloc[::-1]
    y = np.arange(len(data))
    fig, (ax,) = _figure(7.0, max(3.0, 0.28 * len(data) + 1.5))
    error = data[f"{measure}_sem"].fillna(0) if f"{measure}_sem" in data else None
    ax.barh(y, data[measure], xerr=error, color="#4C72B0", label=f"mean {measure}")
    null = f"null_{measure}" if measure != "shift" else "null_shift"
    if null in data:
        ax.scatter(data[null], y, marker="|", s=120, color="black", zorder=3, label="rank-matched null")
    labels = [f"{p}{' *' if 'fdr' in data and f < 0.05 else ''}"
              for p, f in zip(data["perturbation"], data["fdr"] if "fdr" in data else [1.0] * len(data), strict=True)]
    ax.set_yticks(y, labels, fontsize=8)
    ax.axvline(0.0, color="black", linewidth=0.8)
    ax.set_xlabel(f"{measure} (mean over cells)")
    ax.set_title(f"in-silico {title}: top {len(data)} by {measure} (* FDR < 0.05)")
    ax.legend(loc="lower right", fontsize=8)
    return _save(fig, path)
