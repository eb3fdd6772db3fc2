"""Which modality a trained model uses: its metrics with every subset of its modalities hidden.

Hiding a modality masks all of its tokens for every record: what the model sees for a record that lacks
it, so the adapters ignore it exactly. The backbones run once per batch; only the adapter and the
head run again per subset. The report gives each subset's metrics per target, the cost of hiding each
modality alone (``drop-one``: the full model's metric minus the metric without it) and each
modality's Shapley value of the summary metric (the mean over subsets of its marginal gain, weighted
as Shapley values are; a model that sees nothing is taken to score 0).

It measures what the model *uses*, not what the data holds: a model trained without
``modality_dropout`` never saw a modality missing and may degrade for other reasons when one is
hidden. Train with ``modality_dropout`` (e.g. 0.2) for contributions that mean what they say.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from itertools import combinations
from math import factorial
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import pandas as pd
import torch

from mmfuse.io import atomic_path

__all__ = ["ModalityContribution", "contribution_callback", "shapley_values", "subsets"]


def subsets(modalities: Sequence[str]) -> list[tuple[str, ...]]:
    """Every non-empty subset of ``modalities``, largest first, each in the given order.

    Examples:
        >>> subsets(["dna", "rna"])
        [('dna', 'rna'), ('dna',), ('rna',)]
    """
    return [s for r in range(len(modalities), 0, -1) for s in combinations(modalities, r)]


def shapley_values(values: Mapping[frozenset[str], float], modalities: Sequence[str]) -> dict[str, float]:
    """Each modality's Shapley value of ``values`` (one per subset; the empty subset scores 0).

    Examples:
        >>> v = {frozenset({"a"}): 0.4, frozenset({"b"}): 0.2, frozenset({"a", "b"}): 0.6}
        >>> {m: round(x, 3) for m, x in shapley_values(v, ["a", "b"]).items()}
        {'a': 0.4, 'b': 0.2}
    """
    n = len(modalities)
    score = {frozenset(): 0.0, **{k: (0.0 if np.isnan(v) else float(v)) for k, v in values.items()}}
    out = {}
    for m in modalities:
        others = [x for x in modalities if x != m]
        total = 0.0
        for r in range(len(others) + 1):
            weight = factorial(r) * factorial(n - r - 1) / factorial(n)
            for s in combinations(others, r):
                total += weight * (score[frozenset(s) | {m}] - score[frozenset(s)])
        out[m] = total
    return out


class ModalityContribution(L.Callback):
    """During ``mmfuse test`` (and ``validate``), evaluates the model with each proper subset of its modalities
    and writes ``modality_contribution.{csv,md,png}`` into the run's ``report_<stage>/`` (rank zero)."""

    def __init__(self, modalities: Sequence[str]) -> None:
        self.modalities = list(modalities)
        self.subsets = subsets(self.modalities)[1:]  # the full set is the evaluation itself
        self._tables: dict[tuple[str, ...], pd.DataFrame] = {}
        self._stage: str | None = None

    @staticmethod
    def _key(stage: str, subset: tuple[str, ...]) -> str:
        return f"{stage}|{'+'.join(subset)}"

    # the loop's hooks
    def on_test_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start("test", pl_module)

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.state.fn == "validate" and not trainer.sanity_checking:  # not the validation inside fit
            self._start("val", pl_module)

    def _start(self, stage: str, pl_module: L.LightningModule) -> None:
        self._stage, self._tables = stage, {}
        for subset in self.subsets:
            pl_module.objective.add_stage(self._key(stage, subset))

    def on_test_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                          batch_idx: int, dataloader_idx: int = 0) -> None:  # fmt: skip
        self._batch("test", pl_module, batch)

    def on_validation_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                                batch_idx: int, dataloader_idx: int = 0) -> None:  # fmt: skip
        if self._stage == "val":
            self._batch("val", pl_module, batch)

    def _batch(self, stage: str, pl_module: Any, batch: Mapping[str, Any]) -> None:
        model = pl_module.model
        with torch.no_grad():
            features = model.encode(batch["inputs"], batch.get("present"))
            for subset in self.subsets:
                shown = {m: (e, k if m in subset else torch.zeros_like(k)) for m, (e, k) in features.items()}
                outputs = model.outputs(shown).float()  # in evaluation: no modality dropout
                pl_module.objective.update(self._key(stage, subset), outputs, batch["target"])

    def on_test_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._compute("test", pl_module)

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._stage == "val":
            self._compute("val", pl_module)

    def _compute(self, stage: str, pl_module: Any) -> None:
        for subset in self.subsets:  # every process: torchmetrics synchronises the states
            _, table = pl_module.objective.compute(self._key(stage, subset))
            self._tables[subset] = table.frame(summary_row=False) if table is not None else pd.DataFrame()

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._report(trainer, pl_module, "test")

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._stage == "val":
            self._report(trainer, pl_module, "val")

    # the report
    def _report(self, trainer: L.Trainer, pl_module: Any, stage: str) -> None:
        self._stage = None
        evaluation = getattr(pl_module, "evaluation", None)
        if evaluation is None or evaluation.table is None or not trainer.is_global_zero or not self._tables:
            return
        tables = {tuple(self.modalities): evaluation.table.frame(summary_row=False), **self._tables}
        metric = pl_module.objective.progress_metric
        long = contribution_table(tables, self.modalities)
        directory = Path(trainer.log_dir or trainer.default_root_dir) / f"report_{stage}"
        directory.mkdir(parents=True, exist_ok=True)
        with atomic_path(directory / "modality_contribution.csv") as tmp:
            long.to_csv(tmp, index=False)
        summary, drop_one, shapley = summarise(tables, self.modalities, metric)
        text = summary_markdown(summary, drop_one, shapley, metric)
        with atomic_path(directory / "modality_contribution.md") as tmp:
            Path(tmp).write_text(text)
        written = [directory / "modality_contribution.csv", directory / "modality_contribution.md"]
        written += [plot_contribution(summary, drop_one, metric, directory / "modality_contribution.png")]
        rows = evaluation.table.index_title
        print(f"\nModality contribution ({metric}, mean over {rows}{'es' if rows.endswith('s') else 's'}):\n{text}")
        print(f"Written to {directory}: {', '.join(p.name for p in written)}")


def contribution_table(tables: Mapping[tuple[str, ...], pd.DataFrame], modalities: Sequence[str]) -> pd.DataFrame:
    """One row per (subset, target): the modalities shown and hidden, and the metrics."""
    rows = []
    for subset, frame in tables.items():
        hidden = [m for m in modalities if m not in subset]
        part = frame.reset_index().rename(columns={frame.index.name or "index": "target"})
        part.insert(0, "hidden", "+".join(hidden) or "none")
        part.insert(0, "shown", "+".join(subset))
        rows.append(part)
    return pd.concat(rows, ignore_index=True)


def summarise(tables: Mapping[tuple[str, ...], pd.DataFrame], modalities: Sequence[str],
              metric: str) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, float]]:  # fmt: skip
    """``(subset × metrics means, target × modality drop-one costs of metric, Shapley values of its mean)``."""
    full = tuple(modalities)
    counts = ("support",)  # a class's number of records: not a metric to average
    summary = pd.DataFrame({"+".join(s): f.drop(columns=[c for c in counts if c in f]).mean(numeric_only=True)
                            for s, f in tables.items()}).T  # fmt: skip
    summary.index.name = "shown"
    drop_one = pd.DataFrame({
        m: tables[full][metric] - tables[tuple(x for x in full if x != m)][metric] for m in modalities
        if len(full) > 1
    })  # fmt: skip
    means = {frozenset(s): float(summary.loc["+".join(s), metric]) for s in tables}
    return summary, drop_one, shapley_values(means, modalities)


def summary_markdown(summary: pd.DataFrame, drop_one: pd.DataFrame, shapley: Mapping[str, float], metric: str) -> str:
    lines = ["| shown | " + " | ".join(summary.columns) + " |", "|---" * (len(summary.columns) + 1) + "|"]
    lines += [f"| {name} | " + " | ".join(f"{v:.4f}" for v in row) + " |" for name, row in summary.iterrows()]
    lines += ["", f"| modality | cost of hiding it alone ({metric}) | Shapley value ({metric}) |", "|---|---|---|"]
    lines += [f"| {m} | {drop_one[m].mean():.4f} | {shapley[m]:.4f} |" for m in shapley]
    return "\n".join(lines) + "\n"


def plot_contribution(summary: pd.DataFrame, drop_one: pd.DataFrame, metric: str, path: Path) -> Path:
    """The summary metric per subset, and the drop-one cost per target and modality."""
    from mmfuse.training.report import _figure, _save

    fig, (left, right) = _figure(11, max(3.0, 0.22 * len(drop_one) + 1.5), ncols=2)
    values = summary[metric].to_numpy(dtype=float)
    left.barh(range(len(values)), values, color="#4C72B0")
    left.set_yticks(range(len(values)), list(summary.index))
    left.invert_yaxis()
    left.set_xlabel(f"{metric} (mean over targets)")
    left.set_title("modalities shown")
    costs = drop_one.to_numpy(dtype=float)
    bound = float(np.nanmax(np.abs(costs))) if np.isfinite(costs).any() else 1.0
    image = right.imshow(costs, aspect="auto", cmap="RdBu_r", vmin=-bound, vmax=bound)  # red: hiding it costs
    right.set_xticks(range(drop_one.shape[1]), list(drop_one.columns))
    right.set_yticks(range(drop_one.shape[0]), list(drop_one.index), fontsize=7)
    right.set_title(f"cost of hiding it alone ({metric})")
    fig.colorbar(image, ax=right)
    return _save(fig, path)


def contribution_callback(task: Any) -> ModalityContribution | None:
    """The callback ``mmfuse validate``/``test`` add for ``task``: its ``modality_contribution`` option (``None``:
    on for two or three modalities), for a model of more than one modality."""
    modalities = list(task.model.backbones)
    wanted = getattr(task, "modality_contribution", None)
    wanted = len(modalities) <= 3 if wanted is None else wanted
    return ModalityContribution(modalities) if wanted and len(modalities) > 1 else None
