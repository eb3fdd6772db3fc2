"""``mmfuse embed``: each record's embeddings (every backbone's, pooled, and the fused representation) to a file.

:class:`EmbeddingWriter` is a :class:`~mmfuse.training.writer.PredictionWriter` whose rows are embeddings:
streamed per batch into a temporary Parquet file, renamed into place at the end, one file per DDP
process joined by rank 0 in the records' order; ``.npy`` and ``.h5ad`` outputs are converted from it
when every row is in. :func:`embed` runs Lightning's predict loop on an
:class:`~mmfuse.analysis.module.AnalysisModule` whose ``predict_step`` gives embeddings.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from lightning.pytorch import LightningModule, Trainer
from torch import Tensor

from mmfuse.analysis.module import find_writer, run_analysis
from mmfuse.errors import ConfigError, NonFiniteError
from mmfuse.io import atomic_path
from mmfuse.training.writer import PredictionWriter

__all__ = ["POOLINGS", "EmbeddingWriter", "embed", "pool"]

Pooling = Literal["mean", "cls", "center", "tokens"]
#: what each pooling keeps of a backbone's per-token embeddings
POOLINGS = {
    "mean": "the mean over the record's tokens (padding and absent modalities excluded)",
    "cls": "the first token (a CLS token: ESM2, Nucleotide Transformer, BERT-like encoders)",
    "center": "the mean of the central `center_bins` bins (DNA track models: Enformer, Borzoi)",
    "tokens": "every token (Parquet only: records differ in length)",
}
_FORMATS = (".parquet", ".npy", ".h5ad")


def pool(embeddings: Tensor, mask: Tensor, pooling: str, center_bins: int = 8) -> list[np.ndarray | None]:
    """One array per record (``(D,)``, or ``(tokens, D)`` for ``tokens``); ``None`` where the record has no
    token (the modality is absent)."""
    embeddings, mask = embeddings.float().cpu(), mask.bool().cpu()
    rows: list[np.ndarray | None] = []
    for emb, keep in zip(embeddings, mask, strict=True):
        n = int(keep.sum())
        if n == 0:
            rows.append(None)
            continue
        valid = emb[keep]
        if pooling == "mean":
            rows.append(valid.mean(0).numpy())
        elif pooling == "cls":
            rows.append(valid[0].numpy())
        elif pooling == "center":
            k = min(center_bins, n)
            start = (n - k) // 2
            rows.append(valid[start : start + k].mean(0).numpy())
        else:
            rows.append(valid.numpy())
    return rows


def has_cls_token(backbone: Any) -> bool:
    """Whether the backbone's first token is a summary token (CLS) of the whole sequence."""
    given = getattr(backbone, "cls_token", None)
    if given is not None:
        return bool(given)
    tokenizer = getattr(getattr(backbone, "tokenizer", None), "tokenizer", None)  # Hugging Face's, if any
    first = getattr(tokenizer, "cls_token_id", None)
    if tokenizer is None or first is None:
        return False
    return bool(tokenizer("A")["input_ids"][:1] == [first])


class EmbeddingWriter(PredictionWriter):
    """Writes one row per record: its id and one column per embedding (each modality's, ``fused``).

    Args:
        output: ``.parquet`` (a list column per embedding; absent modalities null), ``.npy`` (one
            embedding: its ``(records, width)`` matrix, the ids beside it in ``<output>.ids.txt``) or
            ``.h5ad`` (``obs_names`` the ids, one ``obsm`` entry per embedding); default
            ``embeddings.parquet`` in the run's log directory. Absent modalities are NaN rows in
            ``.npy`` and ``.h5ad``.
        pooling: ``mean``, ``cls``, ``center`` or ``tokens`` (see :data:`POOLINGS`).
        center_bins: bins averaged by ``center`` pooling.
        modalities: the backbones to embed (default: all).
        fused: also write the adapter's fused representation (needs a trained checkpoint).
    """

    option = "--embeddings.output"

    def __init__(
        self,
        output: str | None = None,
        pooling: Pooling = "mean",
        center_bins: int = 8,
        modalities: list[str] | None = None,
        fused: bool = False,
    ) -> None:
        super().__init__(output)
        if pooling not in POOLINGS:
            raise ConfigError(f"embeddings.pooling is one of {', '.join(POOLINGS)}, not {pooling!r}")
        if center_bins < 1:
            raise ConfigError(f"embeddings.center_bins must be at least 1, not {center_bins}")
        self.pooling, self.center_bins = pooling, center_bins
        self.modalities, self.fused = modalities, fused
        self.chosen: list[str] = []  # the modalities embedded, set by :meth:`check`
        self._target = Path()

    # which embeddings, checked before anything runs
    def check(self, model: Any, ckpt_path: str | None) -> list[str]:
        """The modalities to embed; refuses what the model cannot give (the option named, and the fix)."""
        backbones = model.backbones
        chosen = list(self.modalities) if self.modalities is not None else list(backbones)
        unknown = [m for m in chosen if m not in backbones]
        if unknown:
            raise ConfigError(f"embeddings.modalities names {unknown}; the model's backbones are {sorted(backbones)}")
        for m in chosen:
            backbone = getattr(backbones[m], "backbone", backbones[m])  # a cached backbone: the one it wraps
            name = type(backbone).__name__
            if self.pooling == "cls" and not has_cls_token(backbone):
                raise ConfigError(
                    f"embeddings.pooling cls: {name} ({m}) has no CLS token; use mean (or center for DNA)"
                )
            if self.pooling == "center" and getattr(backbone, "modality", m) != "dna":
                raise ConfigError(
                    f"embeddings.pooling center takes the central bins of a DNA model; {name} ({m}) reads "
                    f"{backbone.modality}: use mean (or cls)"
                )
        if self.fused and ckpt_path is None:
            raise ConfigError(
                "embeddings.fused: the adapter of a model that was not trained gives a random fused "
                "representation; pass --ckpt_path of a trained model (or leave embeddings.fused false)"
            )
        if not chosen and not self.fused:
            raise ConfigError("nothing to embed: embeddings.modalities is empty and embeddings.fused is false")
        return chosen

    def step(self, task: Any, batch: Mapping[str, Any]) -> dict[str, Any]:
        """``predict_step``'s output in an embedding run: ``{"ids", "embeddings": {name: rows}}``."""
        model = task.model
        features = model.encode(batch["inputs"], batch.get("present"))
        rows = {m: pool(*features[m], self.pooling, self.center_bins) for m in self.chosen}
        if self.fused:
            rows["fused"] = list(model.adapter(features).float().cpu().numpy())
        return {"ids": batch["ids"], "embeddings": rows}

    # the writer's hooks
    def _active(self, pl_module: LightningModule) -> bool:
        return getattr(pl_module, "analysis", None) is self

    def _resolve(self, trainer: Trainer) -> Path:
        default = Path(trainer.log_dir or trainer.default_root_dir) / "embeddings.parquet"
        target = Path(self.output) if self.output else default
        if target.suffix.lower() not in _FORMATS:
            raise ConfigError(f"embeddings.output {str(target)!r} must end in {', '.join(_FORMATS)}")
        if self.pooling == "tokens" and target.suffix.lower() != ".parquet":
            raise ConfigError(
                "embeddings.pooling tokens gives each record as many rows as it has tokens: write it to a "
                ".parquet file (a .npy or .h5ad matrix holds one row per record)"
            )
        names = [*self.chosen, *(["fused"] if self.fused else [])]
        if target.suffix.lower() == ".npy" and len(names) != 1:
            raise ConfigError(
                f"a .npy file holds one matrix and {names} are {len(names)} embeddings: choose one with "
                f"embeddings.modalities (and embeddings.fused), or write .parquet or .h5ad"
            )
        self._target = target
        return target if target.suffix.lower() == ".parquet" else target.with_name(f".{target.name}.staging.parquet")

    def _frame(self, pl_module: LightningModule, prediction: Any) -> pd.DataFrame:
        columns: dict[str, list[Any]] = {}
        ids = prediction["ids"]
        for name, rows in prediction["embeddings"].items():
            bad = [str(i) for i, r in zip(ids, rows, strict=True) if r is not None and not np.isfinite(r).all()]
            if bad:
                raise NonFiniteError(
                    f"the {name} embeddings of {len(bad)} record(s) ({', '.join(bad[:3])}) are NaN or infinite: "
                    f"check the checkpoint's weights; nothing was written"
                )
            columns[name] = [None if r is None else r.astype(np.float32).tolist() for r in rows]
        return pd.DataFrame(columns)

    def _done(self, path: Path, rows: int, how: str) -> None:
        target = self._target
        if path != target:
            _convert(path, target)
            path.unlink()
        print(f"Wrote the {self.pooling} embeddings of {rows} records to {target}{how}")


def _convert(staging: Path, target: Path) -> None:
    """The staging Parquet file as ``target`` (``.npy`` or ``.h5ad``), written atomically."""
    frame = pd.read_parquet(staging)
    ids, names = frame.iloc[:, 0].astype(str).tolist(), list(frame.columns[1:])
    matrices = {name: _matrix(frame[name]) for name in names}
    if target.suffix.lower() == ".npy":
        with atomic_path(target) as tmp, open(tmp, "wb") as handle:
            np.save(handle, matrices[names[0]])
        with atomic_path(target.with_name(target.name + ".ids.txt")) as tmp:
            Path(tmp).write_text("\n".join(ids) + "\n")
        return
    import anndata

    adata = anndata.AnnData(obs=pd.DataFrame(index=pd.Index(ids, name=str(frame.columns[0]))),
                            obsm={name: m for name, m in matrices.items()})  # fmt: skip
    with atomic_path(target) as tmp:
        adata.write_h5ad(tmp)


def _matrix(column: pd.Series) -> np.ndarray:
    width = next((len(v) for v in column if v is not None), 0)
    out = np.full((len(column), width), np.nan, dtype=np.float32)
    for i, value in enumerate(column):
        if value is not None:
            out[i] = np.asarray(value, dtype=np.float32)
    return out


def embed(trainer: Trainer, task: Any, datamodule: Any = None, ckpt_path: str | None = None) -> None:
    """Writes each record's embeddings (``mmfuse embed``): every backbone's (pooled) and, from a trained
    checkpoint, the fused one, through the :class:`EmbeddingWriter` among ``trainer``'s callbacks.

    Args:
        trainer: runs the predict loop (devices, precision, DDP as configured).
        task: the config's task (its backbones: zero-shot without ``ckpt_path``).
        datamodule: the records to embed (its ``predict_split``: all records by default).
        ckpt_path: a trained checkpoint, or ``None`` for the config's pretrained backbones.
    """
    writer = find_writer(trainer, task, EmbeddingWriter, "embeddings", "embed")
    writer.chosen = writer.check(task.model, ckpt_path)
    run_analysis(trainer, task, writer, ckpt_path, datamodule=datamodule)
