"""Writing predictions to CSV or Parquet, streamed per batch and renamed into place at the end."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import BasePredictionWriter

from mmfuse.errors import ConfigError

__all__ = ["PredictionWriter"]


class PredictionWriter(BasePredictionWriter):
    """Writes one row per record: its id and one column per target.

    For a classifier (a prediction with ``labels``) the columns are the id, one probability column
    per class (named by the class) and ``predicted``, the most probable class.

    Rows are appended to a temporary file beside ``output`` batch by batch (memory stays flat), and
    the file is renamed to ``output`` only when prediction finishes: a crash leaves any earlier file
    intact. With several processes each rank writes ``<output stem>.rank<N><suffix>``.

    Args:
        output: ``.csv``/``.tsv`` or ``.parquet`` file; default ``predictions.csv`` in the run's log
            directory.
    """

    def __init__(self, output: str | None = None) -> None:
        super().__init__(write_interval="batch")
        self.output = output
        self._path: Path | None = None
        self._tmp: Path | None = None
        self._parquet: Any = None
        self._rows = 0

    def _resolve(self, trainer: Trainer) -> Path:
        default = Path(trainer.log_dir or trainer.default_root_dir) / "predictions.csv"
        path = Path(self.output) if self.output else default
        if path.suffix.lower() not in (".csv", ".tsv", ".parquet"):
            raise ConfigError(f"predictions output {str(path)!r} must end in .csv, .tsv or .parquet")
        if trainer.world_size > 1:
            path = path.with_name(f"{path.stem}.rank{trainer.global_rank}{path.suffix}")
        return path

    def on_predict_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._path = self._resolve(trainer)
        self._path.parent.mkdir(parents=True, exist_ok=True)
        self._tmp = self._path.with_name(f".{self._path.name}.partial")
        self._tmp.unlink(missing_ok=True)
        self._parquet, self._rows = None, 0

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
        assert self._tmp is not None and self._path is not None
        id_column = getattr(trainer.datamodule, "id_column", "id") if trainer.datamodule is not None else "id"
        names = list(getattr(pl_module, "target_names", []))
        preds = prediction["preds"].numpy()
        if len(names) != preds.shape[1]:
            names = [f"output_{i}" for i in range(preds.shape[1])]
        frame = pd.DataFrame(preds, columns=names)
        if "labels" in prediction:
            frame.insert(frame.shape[1], "predicted", list(prediction["labels"]), allow_duplicates=True)
        frame.insert(0, id_column, list(prediction["ids"]), allow_duplicates=True)
        if frame.columns.duplicated().any():
            raise ConfigError(
                f"prediction columns {list(frame.columns)} repeat a name (a target or class named like the "
                f"id column {id_column!r} or 'predicted'); rename it in the data."
            )
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
        assert self._tmp is not None and self._path is not None
        if self._parquet is not None:
            self._parquet.close()
        if self._rows == 0:
            return
        self._tmp.replace(self._path)
        print(f"Wrote {self._rows} predictions to {self._path}")

    def on_exception(self, trainer: Trainer, pl_module: LightningModule, exception: BaseException) -> None:
        if self._parquet is not None:
            self._parquet.close()
        if self._tmp is not None:
            self._tmp.unlink(missing_ok=True)
