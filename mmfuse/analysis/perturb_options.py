"""The pieces of ``mmfuse perturb`` that are data: its option groups, the perturbations of a ranked list of
genes, and the statistics across cells (:mod:`mmfuse.analysis.perturb`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np
import pandas as pd
from torch import Tensor

from mmfuse.errors import ConfigError
from mmfuse.io import atomic_path

__all__ = [
    "CELL_COLUMNS",
    "TYPES",
    "Embedding",
    "PerturbationType",
    "CellSelection",
    "CellStates",
    "RanksGenes",
    "Unit",
    "perturb_ranked",
    "statistics",
]

PerturbationType = Literal["delete", "overexpress", "inhibit", "activate"]
Embedding = Literal["auto", "mean", "cls", "fused"]
TYPES = ("delete", "overexpress", "inhibit", "activate")
#: the columns of the per-cell file that every run has
CELL_COLUMNS = ["cell", "perturbation", "status", "rank", "shift"]


@runtime_checkable
class RanksGenes(Protocol):
    """A tokenizer whose tokens are a cell's genes in rank order (Geneformer's
    :class:`~mmfuse.backbones.geneformer_inputs.RankValueTokenizer`)."""

    genes: Mapping[str, tuple[int, float]]
    max_genes: int
    special_tokens: bool
    pad_id: int

    def ranked(self, sequence: Any, index: int | None = None) -> np.ndarray: ...

    def frame(self, ranked: np.ndarray) -> np.ndarray: ...

    def pad(self, encoded: Sequence[np.ndarray]) -> dict[str, Tensor]: ...


@dataclass(frozen=True)
class CellSelection:
    """The cells that are perturbed.

    Attributes:
        filter: ``{column: [values]}``: cells whose obs columns hold one of the values, for every column
            named (``{cell_type: [cardiomyocyte]}``); default: every cell (with ``cell_states.start``: the
            start state's cells).
        max_cells: at most this many of them, a random choice with ``seed`` (``null``: all).
        seed: seed of that choice, of the null's genes and of the cells of each state's embedding.
    """

    filter: dict[str, list[str]] | None = None
    max_cells: int | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        if self.max_cells is not None and self.max_cells < 1:
            raise ConfigError(f"perturbation.cells.max_cells must be at least 1 (or null: all), not {self.max_cells}")


@dataclass(frozen=True)
class CellStates:
    """The cell states a perturbation should move cells between (Geneformer's ``cell_states_to_model``).

    A state's embedding is the mean embedding of (up to ``max_cells`` of) its unperturbed cells.

    Attributes:
        column: the obs column holding each cell's state (``disease``, ``cell_type``).
        start: the state the perturbed cells are in (the cells perturbed, unless ``cells.filter`` says else).
        goal: the state a perturbation should move them towards.
        alternatives: other states whose shift is reported too.
        max_cells: cells of each state averaged into its embedding.
    """

    column: str
    start: str | None = None
    goal: str | None = None
    alternatives: list[str] = field(default_factory=list)
    max_cells: int = 1000

    def __post_init__(self) -> None:
        if self.start is None and self.goal is None:
            raise ConfigError("perturbation.cell_states needs a start or a goal state (values of its column)")
        if self.max_cells < 1:
            raise ConfigError(f"perturbation.cell_states.max_cells must be at least 1, not {self.max_cells}")

    @property
    def states(self) -> list[str]:
        return list(dict.fromkeys(s for s in (self.start, self.goal, *self.alternatives) if s is not None))


def perturb_ranked(ranked: np.ndarray, tokens: Sequence[int], kind: str, framed: int, rank_shift: int = 1
                   ) -> np.ndarray:  # fmt: skip
    """A cell's genes in rank order (token ids) after perturbing ``tokens``.

    Args:
        ranked: every expressed gene's token in rank order (:meth:`RanksGenes.ranked`).
        tokens: the genes perturbed, in order.
        kind: ``delete``, ``overexpress``, ``activate`` or ``inhibit``.
        framed: how many genes the model reads (``min(len(ranked), max_genes)``): the quartiles of
            ``activate``/``inhibit`` are of this encoding.
        rank_shift: quartiles ``activate``/``inhibit`` move a gene by.

    Examples:
        >>> r = np.array([10, 11, 12, 13, 14, 15, 16, 17])
        >>> perturb_ranked(r, [12], "delete", 8).tolist(), perturb_ranked(r, [12], "overexpress", 8).tolist()
        ([10, 11, 13, 14, 15, 16, 17], [12, 10, 11, 13, 14, 15, 16, 17])
        >>> perturb_ranked(r, [16], "activate", 8).tolist()  # 4th quartile -> the middle of the 3rd
        [10, 11, 12, 13, 14, 16, 15, 17]
    """
    out = [int(t) for t in ranked]
    if kind == "delete":
        drop = {int(t) for t in tokens}
        return np.array([t for t in out if t not in drop], dtype=np.int64)
    if kind == "overexpress":
        front = [int(t) for t in tokens]
        return np.array(front + [t for t in out if t not in set(front)], dtype=np.int64)
    n = max(framed, 1)
    for token in tokens:
        position = out.index(int(token))
        quartile = min(4 * position // n, 3)
        target = quartile - rank_shift if kind == "activate" else quartile + rank_shift
        if target < 0:
            place = 0
        elif target > 3:
            place = n - 1
        else:
            place = int((target + 0.5) * n / 4)
        out.pop(position)
        out.insert(min(place, len(out)), int(token))
    return np.array(out, dtype=np.int64)


@dataclass
class Unit:
    """One perturbation of one cell: its label, its genes' tokens, and how the cell holds them."""

    label: str
    tokens: tuple[int, ...]
    status: str  # perturbed | added | not_expressed
    rank: float  # 0-based rank of the (last non-anchor) gene in the cell's encoding; NaN if not in it


def other_features(model: Any, batch: Mapping[str, Any], chosen: str) -> dict[str, tuple[Tensor, Tensor]]:
    """The features of a batch's modalities other than the perturbed one (embedded once per cell)."""
    inputs = {m: v for m, v in batch["inputs"].items() if m != chosen}
    if not inputs:
        return {}
    features = model.encode(inputs, batch.get("present"))
    return {m: f for m, f in features.items() if m != chosen}


def write_table(frame: pd.DataFrame, target: Path) -> None:
    suffix = target.suffix.lower()
    with atomic_path(target) as tmp:
        if suffix == ".parquet":
            frame.to_parquet(tmp, index=False)
        else:
            frame.to_csv(tmp, index=False, sep="\t" if suffix == ".tsv" else ",")


def statistics(cells: pd.DataFrame, measures: Sequence[str], ranked_by: str, total_cells: int, null: bool
               ) -> pd.DataFrame:  # fmt: skip
    """One row per perturbation: cells perturbed (and not), each measure's mean, its standard error, the
    null's mean, a paired Wilcoxon signed-rank test against the null and its Benjamini-Hochberg FDR, ranked by
    ``ranked_by`` (largest first)."""
    from scipy import stats as sps

    done = cells[cells["status"] != "not_expressed"]
    grouped = done.groupby("perturbation", sort=False)
    table = pd.DataFrame({"cells": grouped.size()})
    table["cells_added"] = done[done["status"] == "added"].groupby("perturbation", sort=False).size()
    absent = cells[cells["status"] == "not_expressed"].groupby("perturbation", sort=False).size()
    table = table.reindex(table.index.union(absent.index, sort=False)).fillna({"cells": 0, "cells_added": 0})
    table["cells_not_expressed"] = total_cells - table["cells"]
    table["mean_rank"] = grouped["rank"].mean()
    for m in measures:
        table[m] = grouped[m].mean()
        if m == ranked_by:
            table[f"{m}_sem"] = grouped[m].sem()
    null_column = f"null_{ranked_by}" if ranked_by != "shift" else "null_shift"
    if null and null_column in done.columns:
        table[null_column] = grouped[null_column].mean()
        pvalues = {}
        for name, rows in grouped:
            diff = (rows[ranked_by] - rows[null_column]).dropna().to_numpy()
            if len(diff) < 2 or not np.any(diff):
                pvalues[name] = np.nan if len(diff) < 2 else 1.0
            else:
                pvalues[name] = float(sps.wilcoxon(diff).pvalue)
        table["p_value"] = pd.Series(pvalues)
        tested = table["p_value"].notna()
        table["fdr"] = np.nan
        if tested.any():
            table.loc[tested, "fdr"] = sps.false_discovery_control(table.loc[tested, "p_value"].to_numpy())
    table = table.astype({"cells": "int64", "cells_added": "int64", "cells_not_expressed": "int64"})
    table = table.sort_values(ranked_by, ascending=False, na_position="last")
    table.insert(0, "rank", np.arange(1, len(table) + 1))
    return table.rename_axis("perturbation").reset_index()


