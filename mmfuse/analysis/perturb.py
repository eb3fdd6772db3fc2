"""``mmfuse perturb``: in-silico perturbation of genes in cells, zero-shot or through a trained model.

Geneformer's analysis (Theodoris et al., Nature 2023; its ``InSilicoPerturber`` and ``InSilicoPerturberStats``)
for any modality whose tokens are genes (a tokenizer that ranks genes, :class:`RanksGenes`). A cell's input is
its rank value encoding: the genes it expresses, ordered by expression over each gene's median. A
perturbation edits that order and the cell is embedded again:

* ``delete``: the gene leaves the encoding (the genes after it move up one place, and one more gene enters
  at the end when the cell has more than ``max_genes``); the same input as the cell without that gene;
* ``overexpress``: the gene moves to the front (added there when the cell does not express it);
* ``activate`` / ``inhibit``: the gene moves ``rank_shift`` quartiles of the encoding up or down (to the
  middle of that quartile; past the first, to the front; past the last, to the end).

Genes are perturbed one at a time (``genes: all`` or a list), all of a list together (``together``), or each
with an ``anchor`` gene (the anchor alone is reported too). The measures of each (cell, perturbation) are
written to ``<output stem>_cells<suffix>``, one row each (a cell where a listed gene is not expressed has a
row saying so), and the statistics per perturbation across cells to ``output``, ranked, with a plot.
The formulas are in docs/perturbation.md.

Embeddings: without a checkpoint the backbone's (``mean`` of its gene tokens, or ``cls``); with one the fused
representation its adapter gives (``fused``), and every output of its head (a classifier's class
probabilities) before and after. The cell's other modalities (a perturbed protein) are embedded once per
cell and reused for its perturbed copies; the copies of one cell run through the backbone in batches.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from lightning.pytorch import LightningModule, Trainer
from torch import Tensor

from mmfuse.analysis.attribution import unwrap
from mmfuse.analysis.module import AnalysisModule, find_writer
from mmfuse.analysis.perturb_cells import CellPerturbation, StateEmbeddings
from mmfuse.analysis.perturb_options import (
    TYPES,
    CellSelection,
    CellStates,
    Embedding,
    PerturbationType,
    RanksGenes,
    perturb_ranked,
    statistics,
    write_table,
)  # fmt: skip
from mmfuse.data.options import group
from mmfuse.data.protocols import SelectsRecords
from mmfuse.errors import ConfigError
from mmfuse.io import atomic_path
from mmfuse.training.checkpoints import checkpoint_file, load_trained_weights
from mmfuse.training.writer import ORDER_COLUMN, PredictionWriter, refuse_inputs

__all__ = ["CellSelection", "CellStates", "PerturbationWriter", "RanksGenes", "perturb", "perturb_ranked", "statistics"]


class PerturbationWriter(CellPerturbation, PredictionWriter):
    """Writes ``mmfuse perturb``'s results: a row per (cell, perturbation), the statistics per perturbation, a plot.

    Args:
        output: the statistics per perturbation (``.csv``, ``.tsv`` or ``.parquet``; default
            ``perturbation.csv`` in the run's log directory); beside it ``<stem>_cells<suffix>`` (a row per cell
            and perturbation), ``<stem>_gene_shifts<suffix>`` (with ``gene_shifts``) and ``<stem>.png``.
        type: ``delete``, ``overexpress``, ``activate`` or ``inhibit`` (see the module's description).
        genes: ``all`` (every gene each cell's encoding holds, one at a time) or a list of gene ids.
        together: perturb the listed genes together, as one perturbation (Geneformer's behaviour for a list).
        anchor: a gene perturbed together with each of ``genes`` (and alone, for comparison).
        rank_shift: quartiles ``activate``/``inhibit`` move a gene by (1, 2 or 3).
        modality: the modality whose tokens are genes (default: the model's one such backbone).
        cells: which cells are perturbed (:class:`CellSelection`).
        cell_states: the start, goal and alternative states (:class:`CellStates`); adds ``to_goal``,
            ``from_start`` and ``to_<state>`` shifts.
        embedding: ``auto`` (``fused`` with a checkpoint, else ``mean``), ``mean`` (of the backbone's gene
            tokens), ``cls`` (its first token), ``fused`` (the adapter's representation; needs a checkpoint).
        gene_shifts: also the shift of every other gene's embedding, averaged per (perturbation, gene).
        null_test: compare each perturbation with a rank-matched random gene of the same cell (a paired Wilcoxon
            test, Benjamini-Hochberg FDR over perturbations).
        null_window: the random gene lies within this many ranks of the perturbed one.
        rank_by: the measure the statistics are ranked by (default: ``to_goal`` with a goal, ``from_start``
            with a start, else ``shift``).
        batch_size: perturbed copies of a cell embedded together.
        plots: write ``<stem>.png``: the ``top`` perturbations with their mean shift and the null's.
        top: perturbations in the plot.
    """

    option = "--perturbation.output"

    def __init__(
        self,
        output: str | None = None,
        type: PerturbationType = "delete",  # noqa: A002 - Geneformer's name for it
        genes: list[str] | str = "all",
        together: bool = False,
        anchor: str | None = None,
        rank_shift: int = 1,
        modality: str | None = None,
        cells: CellSelection | None = None,
        cell_states: CellStates | None = None,
        embedding: Embedding = "auto",
        gene_shifts: bool = False,
        null_test: bool = True,
        null_window: int = 5,
        rank_by: str | None = None,
        batch_size: int = 64,
        plots: bool = True,
        top: int = 20,
    ) -> None:
        super().__init__(output)
        if type not in TYPES:
            raise ConfigError(f"perturbation.type is one of {', '.join(TYPES)}, not {type!r}")
        if type in ("activate", "inhibit") and rank_shift not in (1, 2, 3):
            raise ConfigError(f"perturbation.rank_shift is 1, 2 or 3 quartiles, not {rank_shift!r}")
        for name, value in (("batch_size", batch_size), ("null_window", null_window), ("top", top)):
            if value < 1:
                raise ConfigError(f"perturbation.{name} must be at least 1, not {value}")
        if isinstance(genes, str) and genes != "all":
            genes = [g.strip() for g in genes.split(",") if g.strip()]
        if not isinstance(genes, str) and not genes:
            raise ConfigError("perturbation.genes is empty: give gene ids, or `all`")
        if together and (genes == "all" or anchor is not None):
            raise ConfigError("perturbation.together perturbs a list of genes as one; it takes neither "
                              "`genes: all` nor an anchor")  # fmt: skip
        self.type, self.genes, self.together, self.anchor = type, genes, together, anchor
        self.rank_shift, self.modality = rank_shift, modality
        self.cells = group(cells, CellSelection) if cells is not None else CellSelection()
        self.cell_states = group(cell_states, CellStates) if cell_states is not None else None
        self.embedding, self.gene_shifts, self.null, self.null_window = embedding, gene_shifts, null_test, null_window
        self.rank_by, self.batch_size, self.plots, self.top = rank_by, batch_size, plots, top
        # set by prepare()
        self.chosen = ""
        self.mode = "mean"
        self.tokenizer: Any = None
        self.outputs: list[str] = []  # the head's outputs reported (with a checkpoint)
        self.state_means: dict[str, Tensor] = {}
        self.total_cells = 0
        self._listed: list[int] = []
        self._anchor_token: int | None = None
        self._gene_of: dict[int, str] = {}
        self._token_of: dict[str, int] = {}
        self._state_of: dict[str, str] = {}
        self._gene_sums: dict[tuple[str, int], list[float]] = {}
        self._rng = np.random.default_rng(0)
        self._stats_path = Path()

    # checked before anything runs ------------------------------------------------------------------
    def prepare(self, task: Any, datamodule: Any, ckpt_path: str | None) -> tuple[list[str], dict[str, list[str]]]:
        """Checks the options against the model and the data; returns the cells to perturb (ids) and the cells
        of each state whose mean embedding is the state's."""
        backbones = task.model.backbones
        ranking = {m: unwrap(b).tokenizer for m, b in backbones.items() if isinstance(unwrap(b).tokenizer, RanksGenes)}
        if self.modality is not None:
            if self.modality not in backbones:
                raise ConfigError(f"perturbation.modality {self.modality!r} is not a modality of the model "
                                  f"({', '.join(sorted(backbones))})")  # fmt: skip
            if self.modality not in ranking:
                raise ConfigError(f"perturbation.modality {self.modality!r}: its backbone's tokens are not genes in "
                                  f"rank order (Geneformer's are)")  # fmt: skip
            self.chosen = self.modality
        elif len(ranking) == 1:
            self.chosen = next(iter(ranking))
        else:
            found = ", ".join(sorted(ranking)) or "none"
            raise ConfigError(f"mmfuse perturb perturbs the genes of a cell: the model needs one backbone whose "
                              f"tokens are genes (Geneformer); it has {found}. Name it with perturbation.modality")
        self.tokenizer = ranking[self.chosen]
        self._token_of = {g: t for g, (t, _) in self.tokenizer.genes.items()}
        self._gene_of = {t: g for g, t in self._token_of.items()}
        listed = [] if self.genes == "all" else list(self.genes)
        data_genes = datamodule.gene_ids() if hasattr(datamodule, "gene_ids") else []
        self._listed = [self._token(g, "genes", data_genes) for g in listed]
        self._anchor_token = self._token(self.anchor, "anchor", data_genes) if self.anchor is not None else None
        self.mode = ("fused" if ckpt_path is not None else "mean") if self.embedding == "auto" else self.embedding
        if self.mode == "fused" and ckpt_path is None:
            raise ConfigError("perturbation.embedding fused: an adapter that was not trained gives a random fused "
                              "representation; pass --ckpt_path of a trained model (or embedding: mean)")
        if self.mode == "cls" and not self.tokenizer.special_tokens:
            raise ConfigError("perturbation.embedding cls: this Geneformer has no <cls> token (V1); use mean")
        self.outputs = list(task.target_names) if ckpt_path is not None else []
        if not isinstance(datamodule, SelectsRecords) or not hasattr(datamodule, "cell_annotations"):
            raise ConfigError(f"mmfuse perturb reads cells by id and their obs columns, which "
                              f"{type(datamodule).__name__} cannot do (CellClassification can)")  # fmt: skip
        return self._cells(datamodule)

    def _cells(self, datamodule: Any) -> tuple[list[str], dict[str, list[str]]]:
        states, selection = self.cell_states, self.cells
        filters = {k: [str(v) for v in (vs if isinstance(vs, list | tuple) else [vs])]
                   for k, vs in (selection.filter or {}).items()}  # fmt: skip
        columns = [*filters, *([states.column] if states is not None else [])]
        obs = datamodule.cell_annotations(columns, "perturbation.cells.filter / perturbation.cell_states.column")
        ids = obs.iloc[:, 0].astype(str).to_numpy()
        rng = np.random.default_rng(selection.seed)
        by_state: dict[str, list[str]] = {}
        if states is not None:
            values = obs[states.column].astype(str)
            have = sorted(values.unique())
            unknown = [s for s in states.states if s not in set(have)]
            if unknown:
                shown = ", ".join(have[:12]) + (", …" if len(have) > 12 else "")
                raise ConfigError(f"perturbation.cell_states names {unknown}, not values of the column "
                                  f"{states.column!r} ({shown})")  # fmt: skip
            for state in states.states:
                members = ids[(values == state).to_numpy()]
                if len(members) > states.max_cells:
                    members = rng.choice(members, states.max_cells, replace=False)
                by_state[state] = sorted(members.tolist())
            self._state_of = dict(zip(ids, values, strict=True))
            if states.start is not None and states.column not in filters:
                filters[states.column] = [states.start]
        keep = np.ones(len(obs), dtype=bool)
        for column, values in filters.items():
            keep &= obs[column].astype(str).isin(values).to_numpy()
        chosen = ids[keep]
        if len(chosen) == 0:
            said = "; ".join(f"{c} in {v}" for c, v in filters.items())
            raise ConfigError(f"no cell is left to perturb: none has {said} (perturbation.cells.filter, "
                              f"perturbation.cell_states.start)")  # fmt: skip
        if selection.max_cells is not None and len(chosen) > selection.max_cells:
            chosen = np.sort(rng.choice(chosen, selection.max_cells, replace=False))
        self.total_cells = len(chosen)
        return chosen.tolist(), by_state

    # the writer's hooks --------------------------------------------------------------------------------
    def _active(self, pl_module: LightningModule) -> bool:
        return getattr(pl_module, "analysis", None) is self

    def _resolve(self, trainer: Trainer) -> Path:
        default = Path(trainer.log_dir or trainer.default_root_dir) / "perturbation.csv"
        path = Path(self.output) if self.output else default
        if path.suffix.lower() not in (".csv", ".tsv", ".parquet"):
            raise ConfigError(f"perturbation.output {str(path)!r} must end in .csv, .tsv or .parquet")
        refuse_inputs(path, trainer.datamodule, self.option)
        self._stats_path = path
        return path.with_name(f"{path.stem}_cells{path.suffix}")

    def write_on_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, prediction: Any, batch_indices: Sequence[int] | None,
        batch: Any, batch_idx: int, dataloader_idx: int,
    ) -> None:  # fmt: skip
        if not self._active(pl_module):
            return
        frames = []
        for k, frame in enumerate(prediction["frames"]):
            if len(frame):
                if trainer.world_size > 1 and batch_indices is not None:
                    frame = frame.assign(**{ORDER_COLUMN: batch_indices[k]})
                frames.append(frame)
        if frames:
            self._append(pd.concat(frames, ignore_index=True))

    def on_predict_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self._active(pl_module) and self.gene_shifts:  # each rank's sums, joined by rank 0 in _done
            part = self._gene_shift_path(trainer.global_rank if trainer.world_size > 1 else None)
            sums = [(label, self._gene_of[t], s, n) for (label, t), (s, n) in self._gene_sums.items()]
            with atomic_path(part) as tmp:
                pd.DataFrame(sums, columns=["perturbation", "gene", "sum", "cells"]).to_parquet(tmp, index=False)
            self._world = trainer.world_size
        super().on_predict_end(trainer, pl_module)

    def _gene_shift_path(self, rank: int | None) -> Path:
        path = self._stats_path
        return path.with_name(f".{path.stem}_gene_shifts{'' if rank is None else f'.rank{rank}'}.parts.parquet")

    def _done(self, path: Path, rows: int, how: str) -> None:
        self.written = path
        suffix = path.suffix.lower()
        read = pd.read_parquet if suffix == ".parquet" else (lambda f: pd.read_csv(
            f, sep="\t" if suffix == ".tsv" else ",", keep_default_na=False, na_values=[""]))  # fmt: skip
        cells = read(path)
        stats = statistics(cells, self.measures, self.ranked_by, self.total_cells, self.null)
        write_table(stats, self._stats_path)
        print(f"Wrote the {self.type} statistics of {len(stats)} perturbation{'s' if len(stats) != 1 else ''} over "
              f"{self.total_cells} cells to {self._stats_path} (ranked by {self.ranked_by}); a row per cell and "
              f"perturbation in {path}{how}")  # fmt: skip
        absent = int((cells["status"] == "not_expressed").sum())
        if absent:
            print(f"  note: {absent} (cell, perturbation) pairs where the cell does not express the gene (counted in "
                  f"cells_not_expressed, not perturbed)")  # fmt: skip
        if self.gene_shifts:
            self._join_gene_shifts()
        if self.plots and len(stats):
            from mmfuse.training.report import plot_ranked

            figure = self._stats_path.with_suffix(".png")
            plot_ranked(stats, self.ranked_by, self.top, figure, f"{self.type} ({self.mode} embedding)")
            print(f"  plot: {figure}")

    def _join_gene_shifts(self) -> None:
        world = getattr(self, "_world", 1)
        parts = [self._gene_shift_path(r if world > 1 else None) for r in range(world)]
        frame = pd.concat([pd.read_parquet(p) for p in parts if p.is_file()], ignore_index=True)
        joined = frame.groupby(["perturbation", "gene"], sort=False, as_index=False)[["sum", "cells"]].sum()
        joined.insert(2, "mean_shift", joined["sum"] / joined["cells"])
        joined = joined.drop(columns="sum").sort_values(["perturbation", "mean_shift"], ascending=[True, False])
        target = self._stats_path.with_name(f"{self._stats_path.stem}_gene_shifts{self._stats_path.suffix}")
        write_table(joined, target)
        for p in parts:
            p.unlink(missing_ok=True)
        print(f"  the shift of every other gene's embedding, per perturbation and gene: {target}")


def perturb(trainer: Trainer, task: Any, datamodule: Any, ckpt_path: str | None = None) -> None:
    """In-silico perturbation of the cells of ``datamodule`` (``mmfuse perturb``), through the
    :class:`PerturbationWriter` among ``trainer``'s callbacks.

    Args:
        trainer: runs the predict loops (devices, precision, DDP: each process a share of the cells).
        task: the config's task; its pretrained backbones (zero-shot) or, with ``ckpt_path``, the trained model.
        datamodule: the cells (:class:`~mmfuse.data.CellClassification`).
        ckpt_path: a trained checkpoint (the fused embedding and the head's outputs), or ``None``.
    """
    writer = find_writer(trainer, task, PerturbationWriter, "perturbation", "perturb")
    cells, by_state = writer.prepare(task, datamodule, ckpt_path)
    writer.ranked_by  # noqa: B018 - checks rank_by before anything runs
    if ckpt_path is not None:
        load_trained_weights(task, checkpoint_file(trainer, ckpt_path))
    if by_state:
        states = StateEmbeddings(writer)
        datamodule.select_records(sorted({c for members in by_state.values() for c in members}))
        trainer.predict(AnalysisModule.of(task, states), datamodule=datamodule, return_predictions=False)
        width = task.model.adapter.output_dim if writer.mode == "fused" else unwrap(
            task.model.backbones[writer.chosen]).embed_dim  # fmt: skip
        writer.state_means = states.means(trainer, list(by_state), width)
    datamodule.select_records(cells)
    trainer.predict(AnalysisModule.of(task, writer), datamodule=datamodule, return_predictions=False)
