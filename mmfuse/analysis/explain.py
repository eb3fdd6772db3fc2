"""``mmfuse explain``: which letters of each modality's input a trained model's prediction rests on.

For each chosen record (``--ids``) and target, two per-position attributions:

* **Integrated gradients** (Sundararajan et al., 2017; Captum's ``LayerIntegratedGradients``) over each
  backbone's input representation (:meth:`~mmfuse.backbones.base.Backbone.input_layer`: token embeddings,
  or Enformer/Borzoi's one-hot), all modalities along one path from a baseline in which every letter token
  is replaced by its tokenizer's ``reference_id`` (the mask token, ``N``, ``X``; special tokens kept) to the
  record. A token's attribution (summed over its embedding) is shared equally by the letters it reads
  (a 6-mer's six nucleotides), so the scores of a record sum to the prediction minus the baseline's
  (completeness; Captum's convergence delta is checked and reported).
* **In-silico mutagenesis** for sequences up to ``ism_max_length`` letters (for longer DNA, the central
  ``ism_max_length`` letters around the window's centre, the TSS): each position is mutated to every
  other letter of its alphabet, and its score is the prediction minus the mean prediction of the mutants
  (positive: the letter raises the prediction), in the target's units. The other modalities' backbones
  run once per record, not once per mutant.

Rows ``(record, modality, position, letter, target, method, score)`` are streamed to ``attributions.output``
as ``predict`` streams predictions (renamed into place at the end, DDP parts joined), and one PNG per
record shows a track per modality and method: the DNA around the window's centre, the transcript with its
coding sequence shaded, the protein.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch
from lightning.pytorch import LightningModule, Trainer

from mmfuse.analysis.attribution import (
    encode_all,
    integrated_gradients,
    mutagenesis,
    plot_record,
    predict_units,
    unwrap,
)
from mmfuse.analysis.module import find_writer, run_analysis
from mmfuse.data.protocols import SelectsRecords
from mmfuse.errors import ConfigError, NonFiniteError
from mmfuse.tokenizers import LocatesLetters
from mmfuse.training.writer import ORDER_COLUMN, PredictionWriter

__all__ = ["ExplanationWriter", "explain"]

Method = Literal["ig", "ism"]
COLUMNS = ["record", "modality", "position", "letter", "target", "method", "score"]


class ExplanationWriter(PredictionWriter):
    """Writes per-position attributions of the records ``mmfuse explain --ids`` names, and a PNG per record.

    Args:
        output: ``.parquet``, ``.csv`` or ``.tsv``; default ``attributions.parquet`` in the run's log
            directory. Columns: ``record``, ``modality``, ``position`` (0-based, in the sequence the model
            read, after the data module's cropping), ``letter``, ``target``, ``method`` (``ig``, ``ism``),
            ``score`` (in the target's units: a regression target's, a class probability).
        methods: ``ig`` (integrated gradients), ``ism`` (in-silico mutagenesis), or both (a list; one
            method may be given alone, ``methods: ism``).
        targets: the targets (regression) or classes to explain, each with its own rows; default: the mean
            over the targets (``mean``) for a regression, and for a classifier the probability of the class
            it predicts for the record (``predicted``).
        modalities: the modalities to attribute (default: every one the model reads whose backbone can be
            explained); the others still feed the model.
        steps: integration steps of integrated gradients (more: a smaller convergence delta).
        ism_max_length: in-silico mutagenesis covers sequences up to this many letters, and the central
            this-many letters of longer DNA windows (their TSS); longer RNA and protein are left to
            integrated gradients (counted in the summary).
        batch_size: forward passes run together (integration steps, mutants).
        plots: write one PNG per record (``<output stem>_plots/<record>.png``).
        dna_flank: the DNA track shows the window's centre ± this many bp (``null``: all of it).
    """

    option = "--attributions.output"

    def __init__(
        self,
        output: str | None = None,
        methods: list[Method] | Method | None = None,
        targets: list[str] | None = None,
        modalities: list[str] | None = None,
        steps: int = 32,
        ism_max_length: int = 2048,
        batch_size: int = 32,
        plots: bool = True,
        dna_flank: int | None = 500,
    ) -> None:
        super().__init__(output)
        if isinstance(methods, str):  # one method, given alone
            methods = [methods]
        self.methods: list[str] = list(methods) if methods is not None else ["ig", "ism"]
        unknown = [m for m in self.methods if m not in ("ig", "ism")]
        if unknown or not self.methods:
            raise ConfigError(f"attributions.methods takes ig and/or ism, not {self.methods}")
        for name, value in (("steps", steps), ("ism_max_length", ism_max_length), ("batch_size", batch_size)):
            if value < 1:
                raise ConfigError(f"attributions.{name} must be at least 1, not {value}")
        if dna_flank is not None and dna_flank < 1:
            raise ConfigError(f"attributions.dna_flank must be at least 1 (or null: the whole window), not {dna_flank}")
        self.targets, self.modalities = targets, modalities
        self.steps, self.ism_max_length, self.batch_size = steps, ism_max_length, batch_size
        self.plots, self.dna_flank = plots, dna_flank
        self.chosen: list[str] = []
        self._targets: list[tuple[str, int | None]] = []  # (name, column; None: mean / predicted class)
        self._classifier = False
        self._plot_dir = Path()
        self._notes: dict[str, int] = {}
        self._deltas: list[float] = []

    # checked before anything runs ------------------------------------------------------------------
    def prepare(self, task: Any, datamodule: Any, ckpt_path: str | None, ids: Sequence[str] | str | None) -> None:
        """Checks the options against the model and data, and restricts the data module to the records."""
        from mmfuse.training.objectives import Classification

        if ids is None or (isinstance(ids, str) and not ids.strip()):
            raise ConfigError("mmfuse explain needs the records to explain: --ids T1,T2 (ids of the data's records)")
        wanted = [i.strip() for i in ids.split(",")] if isinstance(ids, str) else [str(i) for i in ids]
        if ckpt_path is None:
            raise ConfigError(
                "mmfuse explain explains a trained model: pass --ckpt_path (the checkpoint `mmfuse fit` printed)"
            )
        if not isinstance(datamodule, SelectsRecords):
            raise ConfigError(f"mmfuse explain reads records by id, which {type(datamodule).__name__} cannot do")
        backbones = task.model.backbones
        explainable = {m: self._why_not(m, b) for m, b in backbones.items()}
        if self.modalities is not None:
            unknown = [m for m in self.modalities if m not in backbones]
            if unknown:
                raise ConfigError(f"attributions.modalities names {unknown}; the model reads {sorted(backbones)}")
            refused = [f"{m}: {explainable[m]}" for m in self.modalities if explainable[m]]
            if refused:
                raise ConfigError("attributions.modalities: " + "; ".join(refused))
            self.chosen = list(self.modalities)
        else:
            self.chosen = [m for m, why in explainable.items() if not why]
            if not self.chosen:
                raise ConfigError("no backbone of this model can be explained: " + "; ".join(
                    f"{m}: {why}" for m, why in explainable.items()))  # fmt: skip
        self._classifier = isinstance(task.objective, Classification)
        names = list(task.target_names)
        if self.targets is None:
            self._targets = [("predicted" if self._classifier else "mean", None)]
        else:
            summary = "predicted" if self._classifier else "mean"
            unknown = [t for t in self.targets if t not in names and t != summary]
            if unknown:
                shown = ", ".join(names[:6]) + (", …" if len(names) > 6 else "")
                kinds = "classes" if self._classifier else "targets"
                raise ConfigError(f"attributions.targets names {unknown}, not {kinds} of this model ({shown})")
            self._targets = [(t, None if t == summary else names.index(t)) for t in self.targets]
        datamodule.select_records(wanted)
        self._notes, self._deltas = {}, []

    @staticmethod
    def _why_not(modality: str, backbone: Any) -> str:
        inner = unwrap(backbone)
        name = type(inner).__name__
        if inner.input_layer() is None:
            return f"{name} has no input layer to attribute to"
        if not isinstance(inner.tokenizer, LocatesLetters):
            return f"{name}'s tokenizer does not say which letters its tokens read"
        return ""

    # the step -----------------------------------------------------------------------------------------
    def step(self, task: Any, batch: Mapping[str, Any]) -> dict[str, Any]:
        """``predict_step``'s output in an explain run: ``{"ids", "frames": [rows of each record]}``.

        Gradients are needed, so the step leaves the predict loop's inference mode (its tensors are made here)."""
        with torch.inference_mode(False):
            return self._step(task, batch)

    def _step(self, task: Any, batch: Mapping[str, Any]) -> dict[str, Any]:
        frames = []
        for b, record in enumerate(batch["ids"]):
            sequences = {m: batch["sequences"][m][b] for m in task.model.backbones
                         if bool(batch["present"][m][b]) and batch["sequences"][m][b]}  # fmt: skip
            frames.append(self._explain(task, str(record), sequences))
        return {"ids": list(batch["ids"]), "frames": frames}

    def _explain(self, task: Any, record: str, sequences: dict[str, str]) -> pd.DataFrame:
        model = task.model
        device = next(model.parameters()).device
        tokens = {m: {k: v.to(device) for k, v in unwrap(model.backbones[m]).tokenizer([s]).items()}
                  for m, s in sequences.items()}  # fmt: skip
        with torch.no_grad():
            features = encode_all(model, tokens, 1)
            reference = predict_units(task, features)[0]
        if not torch.isfinite(reference).all():
            raise NonFiniteError(f"the prediction of record {record!r} is NaN or infinite: check the checkpoint")
        targets = [(name, column if column is not None else (int(reference.argmax()) if self._classifier else None))
                   for name, column in self._targets]  # fmt: skip
        rows: list[pd.DataFrame] = []
        present = [m for m in self.chosen if m in sequences]
        missing = [m for m in self.chosen if m not in sequences]
        for m in missing:
            self._count(f"{m} absent from the record (nothing to attribute)")
        for name, column in targets:
            if "ig" in self.methods and present:
                scores, delta = integrated_gradients(task, tokens, sequences, present, column, self.steps,
                                                     self.batch_size)  # fmt: skip
                self._deltas.append(delta)
                rows += [self._scores_frame(record, m, sequences[m], name, "ig", scores[m]) for m in present]
        if "ism" in self.methods:
            for m in present:
                scores_per_target = mutagenesis(task, features, sequences[m], m, reference, [c for _, c in targets],
                                                self.ism_max_length, self.batch_size)  # fmt: skip
                if isinstance(scores_per_target, str):
                    self._count(scores_per_target)
                else:
                    rows += [self._scores_frame(record, m, sequences[m], name, "ism", s)
                             for (name, _), s in zip(targets, scores_per_target, strict=True)]  # fmt: skip
        frame = pd.concat(rows, ignore_index=True) if rows else pd.DataFrame(columns=COLUMNS)
        if self.plots and len(frame):
            kinds = {m: getattr(unwrap(model.backbones[m]), "modality", m) for m in self.chosen}
            path = self._plot_dir / (re.sub(r"[^A-Za-z0-9._-]", "_", record) + ".png")
            plot_record(path, record, sequences, frame, targets[0][0], kinds, self.dna_flank)
        return frame

    @staticmethod
    def _scores_frame(
        record: str, modality: str, sequence: str, target: str, method: str, scores: np.ndarray
    ) -> pd.DataFrame:
        keep = np.flatnonzero(np.isfinite(scores))
        return pd.DataFrame({
            "record": record, "modality": modality, "position": keep.astype(np.int64),
            "letter": [sequence[i] for i in keep], "target": target, "method": method,
            "score": scores[keep].astype(np.float64),
        })  # fmt: skip

    def _count(self, note: str) -> None:
        self._notes[note] = self._notes.get(note, 0) + 1

    # the writer's hooks --------------------------------------------------------------------------------
    def _active(self, pl_module: LightningModule) -> bool:
        return getattr(pl_module, "analysis", None) is self

    def _resolve(self, trainer: Trainer) -> Path:
        default = Path(trainer.log_dir or trainer.default_root_dir) / "attributions.parquet"
        path = Path(self.output) if self.output else default
        if path.suffix.lower() not in (".csv", ".tsv", ".parquet"):
            raise ConfigError(f"attributions.output {str(path)!r} must end in .csv, .tsv or .parquet")
        self._plot_dir = path.with_name(f"{path.stem}_plots")
        return path

    def write_on_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, prediction: Any, batch_indices: Sequence[int] | None,
        batch: Any, batch_idx: int, dataloader_idx: int,
    ) -> None:  # fmt: skip
        if not self._active(pl_module):
            return
        frames = []
        for k, frame in enumerate(prediction["frames"]):
            if not len(frame):
                continue
            frame = frame.copy()
            if trainer.world_size > 1 and batch_indices is not None:
                frame[ORDER_COLUMN] = batch_indices[k]
            frames.append(frame)
        if frames:
            self._append(pd.concat(frames, ignore_index=True))

    def _done(self, path: Path, rows: int, how: str) -> None:
        records = pd.read_parquet(path, columns=["record"]) if path.suffix.lower() == ".parquet" else None
        count = records["record"].nunique() if records is not None else None
        plots = f"; a plot per record in {self._plot_dir}" if self.plots else ""
        of = f" of {count} record{'s' if count != 1 else ''}" if count is not None else ""
        print(f"Wrote {rows} attributions{of} to {path}{how}{plots}")
        for note, n in self._notes.items():
            print(f"  note: {note}: {n} record(s)")
        if self._deltas:
            worst = max(self._deltas)
            print(f"  integrated gradients: largest convergence delta {worst:.3g} (the scores' sum minus the "
                  f"prediction's change from the baseline; raise attributions.steps if it is large)")  # fmt: skip


def explain(
    trainer: Trainer, task: Any, datamodule: Any, ckpt_path: str | None, ids: Sequence[str] | str | None
) -> None:
    """Writes per-position attributions of chosen records (``mmfuse explain``): integrated gradients and in-silico
    mutagenesis, through the :class:`ExplanationWriter` among ``trainer``'s callbacks.

    Args:
        trainer: runs the predict loop.
        task: the config's task.
        datamodule: the records.
        ckpt_path: the trained checkpoint to explain.
        ids: the records to explain (``--ids T1,T2`` or a YAML list), in this order.
    """
    writer = find_writer(trainer, task, ExplanationWriter, "attributions", "explain")
    writer.prepare(task, datamodule, ckpt_path, ids)
    run_analysis(trainer, task, writer, ckpt_path, datamodule=datamodule)
