"""Writing predictions to CSV or Parquet, streamed per batch and renamed into place at the end."""

from __future__ import annotations

import os
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import BasePredictionWriter

from mmfuse.data.store.records import ROW_ID
from mmfuse.errors import ConfigError, NonFiniteError
from mmfuse.io import atomic_path
from mmfuse.training.token_predictions import TRUE_LABEL, token_column_of, write_token_table

__all__ = ["ORDER_COLUMN", "PredictionWriter", "refuse_inputs"]

#: the column that restores the records' order when the files of several processes are joined
ORDER_COLUMN = "__mmfuse_index"


def refuse_inputs(output: Path, datamodule: Any, option: str = "--predictions.output") -> None:
    """Raises :class:`ConfigError` if ``output`` is (or would land among) the data module's input files."""
    inputs = [getattr(datamodule, "path", None)]
    windows = getattr(datamodule, "genome_windows", None)
    inputs.append(getattr(windows, "fasta", None))
    target = output.expanduser().resolve()
    for given in inputs:
        if not isinstance(given, str | Path) or not str(given):
            continue
        source = Path(given).expanduser()
        if not source.exists():
            continue  # a hub id, or the bundled sample
        source = source.resolve()
        if target == source or (source.is_dir() and source in target.parents):
            raise ConfigError(
                f"{option} {str(output)!r} would overwrite or join the data module's input "
                f"{str(given)!r}; write to another file (e.g. the default, in the run's directory)"
            )


class PredictionWriter(BasePredictionWriter):
    """Writes one row per record: its id and one column per target.

    For a classifier (a prediction with ``labels``) the columns are the id, one probability column
    per class (named by the class) and ``predicted``, the most probable class. For a token classifier
    (:class:`~mmfuse.training.TokenClassification`) a row is one (record, token): the id, the token (``gene``),
    the probabilities, ``predicted`` and ``true_label`` (empty where unknown); when prediction finishes, a
    table per token averaged over the records it appears in is written beside the output
    (``predictions_genes.csv``, :func:`~mmfuse.training.token_predictions.write_token_table`).

    Rows are appended to a temporary file beside ``output`` batch by batch (memory stays flat), and
    the file is renamed to ``output`` only when prediction finishes: a crash leaves any earlier file
    intact. With several processes (DDP) each rank writes its own ``<output stem>.rank<N><suffix>``
    the same way; when all have finished, rank 0 joins them into ``output`` in the records' order and
    removes them (if joining fails, they stay for you to join).

    Args:
        output: ``.csv``/``.tsv`` or ``.parquet`` file; default ``predictions.csv`` in the run's log
            directory.
        modality_weights: also write each record's weight of each modality, ``weight_<modality>``, for an
            adapter that weighs modalities per sample (:class:`~mmfuse.adapters.GatedFusion`): which
            modality the prediction leaned on (0 for a modality the record lacks; they sum to 1).
    """

    def __init__(self, output: str | None = None, modality_weights: bool = False) -> None:
        super().__init__(write_interval="batch")
        self.output = output
        self.modality_weights = modality_weights
        self._path: Path | None = None
        self._final = Path()
        self._tmp: Path | None = None
        self._parquet: Any = None
        self._rows = 0
        #: the file holding every row of the last ``predict`` (rank 0; ``None`` before one has finished)
        self.written: Path | None = None

    def _resolve(self, trainer: Trainer) -> Path:
        """The output file (every rank calls it: ``trainer.log_dir`` is a collective under DDP)."""
        default = Path(trainer.log_dir or trainer.default_root_dir) / "predictions.csv"
        path = Path(self.output) if self.output else default
        if path.suffix.lower() not in (".csv", ".tsv", ".parquet"):
            raise ConfigError(f"predictions output {str(path)!r} must end in .csv, .tsv or .parquet")
        return path

    #: the option naming the output, in messages
    option = "--predictions.output"

    def _active(self, pl_module: LightningModule) -> bool:
        """Whether this writer writes this run's outputs: a writer of an analysis (``mmfuse embed``, ``explain``,
        ``score-variants``) writes those of the module running that analysis (its ``analysis``), this one those
        of the task's own predict loop."""
        return getattr(pl_module, "analysis", None) is None

    def on_predict_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not self._active(pl_module):
            return
        self._final = self._resolve(trainer)
        refuse_inputs(self._final, trainer.datamodule, self.option)
        self._path = self._final
        if trainer.world_size > 1:
            self._path = self._final.with_name(f"{self._final.stem}.rank{trainer.global_rank}{self._final.suffix}")
        self._path.parent.mkdir(parents=True, exist_ok=True)
        # one temporary file per process: two runs writing one output never append to each other's rows
        self._tmp = self._path.with_name(f".{self._path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.partial")
        if trainer.world_size > 1:  # a rank's file of an earlier run must not be joined into this one
            self._path.unlink(missing_ok=True)
        self._parquet, self._rows = None, 0
        self._token_column: str | None = None

    def write_on_batch_end(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        prediction: Any,
        batch_indices: Sequence[int] | None,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int,
    ) -> None:
        if not self._active(pl_module):
            return
        assert self._tmp is not None and self._path is not None
        id_column = getattr(trainer.datamodule, "id_column", "id") if trainer.datamodule is not None else "id"
        id_column = "id" if id_column == ROW_ID else id_column  # ids the data module made (FILE:ROW)
        frame = self._frame(pl_module, prediction)
        frame.insert(0, id_column, list(prediction["ids"]), allow_duplicates=True)
        if trainer.world_size > 1 and batch_indices is not None:  # restores the records' order when joining
            frame[ORDER_COLUMN] = list(batch_indices)
        if frame.columns.duplicated().any():
            raise ConfigError(
                f"output columns {list(frame.columns)} repeat a name (a target, class or modality named like "
                f"the id column {id_column!r} or 'predicted'); rename it in the data."
            )
        self._append(frame)

    def _frame(self, pl_module: LightningModule, prediction: Any) -> pd.DataFrame:
        """One batch's rows, without their ids."""
        names = list(getattr(pl_module, "target_names", []))
        preds = prediction["preds"].numpy()
        if not np.isfinite(preds).all():
            finite = np.isfinite(preds).all(axis=1)
            bad = [str(i) for i, ok in zip(prediction["ids"], finite, strict=True) if not ok]
            raise NonFiniteError(
                f"the predictions of {len(bad)} record(s) ({', '.join(bad[:3])}{', …' if len(bad) > 3 else ''}) are "
                f"NaN or infinite: the checkpoint's weights (or these records' inputs) are not finite; nothing was "
                f"written"
            )
        if len(names) != preds.shape[1]:
            names = [f"output_{i}" for i in range(preds.shape[1])]
        frame = pd.DataFrame(preds, columns=names)
        if "tokens" in prediction:  # a token classifier's: one row per (record, token)
            self._token_column = str(prediction["token_column"])
            frame.insert(0, self._token_column, list(prediction["tokens"]), allow_duplicates=True)
        if "labels" in prediction:
            frame.insert(frame.shape[1], "predicted", list(prediction["labels"]), allow_duplicates=True)
        if "true" in prediction:
            frame.insert(frame.shape[1], TRUE_LABEL, list(prediction["true"]), allow_duplicates=True)
        if self.modality_weights:
            weights = prediction.get("modality_weights")
            if weights is None:
                adapter = type(getattr(getattr(pl_module, "model", None), "adapter", None)).__name__
                raise ConfigError(
                    f"--predictions.modality_weights: the adapter {adapter} does not weigh modalities per sample; "
                    f"GatedFusion does (or leave modality_weights off)"
                )
            for modality, values in weights.items():
                frame.insert(frame.shape[1], f"weight_{modality}", values.numpy(), allow_duplicates=True)
        return frame

    def _append(self, frame: pd.DataFrame) -> None:
        assert self._tmp is not None and self._path is not None
        suffix = self._path.suffix.lower()
        if suffix == ".parquet":
            import pyarrow as pa
            import pyarrow.parquet as pq

            table = pa.Table.from_pandas(frame, preserve_index=False)
            if self._parquet is None:
                self._parquet = pq.ParquetWriter(str(self._tmp), table.schema)
            self._parquet.write_table(table)
        else:
            frame.to_csv(self._tmp, mode="a", header=self._rows == 0, index=False,
                         sep="\t" if suffix == ".tsv" else ",")  # fmt: skip
        self._rows += len(frame)

    def on_predict_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not self._active(pl_module):
            return
        assert self._tmp is not None and self._path is not None
        if self._parquet is not None:
            self._parquet.close()
        if self._rows:
            self._tmp.replace(self._path)
        if trainer.world_size == 1:
            if self._rows:
                self._done(self._path, self._rows, "")
                self._per_token(pl_module)
            return
        trainer.strategy.barrier("predictions written")  # every rank's file is in place
        if trainer.is_global_zero:
            self._join(trainer)
            self._per_token(pl_module)

    def _per_token(self, pl_module: LightningModule) -> None:
        """Rank 0, for a token classifier's rows: the table per token beside them (``predictions_genes.csv``)."""
        if self.written is None:
            return
        column = self._token_column
        if column is None:  # rank 0 wrote no row itself (DDP): the joined file says whether they are per token
            column = token_column_of(self.written)
        if column is None:
            return
        table = write_token_table(self.written, column, list(getattr(pl_module, "target_names", [])))
        print(f"Wrote the predictions per {column} to {table}")

    def _join(self, trainer: Trainer) -> None:
        """Rank 0 joins the ranks' files into the output, in the records' order."""
        final = self._final
        parts = [final.with_name(f"{final.stem}.rank{r}{final.suffix}") for r in range(trainer.world_size)]
        parts = [p for p in parts if p.is_file()]
        if not parts:
            return
        suffix = final.suffix.lower()
        # a CSV's parts are joined as text, so every value reads as it was written: ids such as 00003, and
        # text such as an allele or letter "NA" or an empty protein change, which pandas would read as NaN
        read = (
            pd.read_parquet
            if suffix == ".parquet"
            else lambda f: pd.read_csv(f, sep="\t" if suffix == ".tsv" else ",", dtype=str, keep_default_na=False)
        )
        frame = pd.concat([read(p) for p in parts], ignore_index=True)
        if ORDER_COLUMN in frame.columns:
            order = frame[ORDER_COLUMN].astype("int64").to_numpy().argsort(kind="stable")
            frame = frame.iloc[order].drop(columns=ORDER_COLUMN)
        with atomic_path(final) as tmp:
            if suffix == ".parquet":
                frame.to_parquet(tmp, index=False)
            else:
                frame.to_csv(tmp, index=False, sep="\t" if suffix == ".tsv" else ",")
        for part in parts:
            part.unlink()
        self._done(final, len(frame), f" (joined from {len(parts)} processes)")

    def _done(self, path: Path, rows: int, how: str) -> None:
        """Rank 0, when ``path`` holds every row."""
        self.written = path
        print(f"Wrote {rows} predictions to {path}{how}")

    def on_exception(self, trainer: Trainer, pl_module: LightningModule, exception: BaseException) -> None:
        if not self._active(pl_module):
            return
        if self._parquet is not None:
            self._parquet.close()
        if self._tmp is not None:
            self._tmp.unlink(missing_ok=True)
