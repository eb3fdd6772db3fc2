"""Fills the embedding stores before the loop starts, and keeps every process's view of them current."""

from __future__ import annotations

from collections.abc import Sequence

import lightning as L

from mmfuse.cache.backbone import CachedBackbone
from mmfuse.data.protocols import ListsSequences

__all__ = ["EmbeddingCacheCallback"]


def cached_backbones(module: L.LightningModule) -> list[CachedBackbone]:
    """The :class:`CachedBackbone` modules of ``module``."""
    return [m for m in module.modules() if isinstance(m, CachedBackbone)]


class EmbeddingCacheCallback(L.Callback):
    """The embedding cache's life cycle in a Lightning run (a task with ``embedding_cache`` adds it itself).

    Before the loop of ``fit`` (train and val splits), ``validate``, ``test`` and ``predict``, every
    sequence the stores lack is embedded, each by one process, when the data module can list them
    (:class:`~mmfuse.data.protocols.ListsSequences`); the loop then only reads. At the start of every
    epoch each process reads what the others stored, after a barrier under DDP, so no rank starts an
    epoch before the others have written what they embedded in the last one.
    """

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        for cached in cached_backbones(pl_module):
            cached.precision, cached.rank = str(trainer.precision), trainer.global_rank

    def _refresh(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.world_size > 1:
            trainer.strategy.barrier("mmfuse-embedding-cache")
        for cached in cached_backbones(pl_module):
            cached.refresh()

    def _precompute(self, trainer: L.Trainer, pl_module: L.LightningModule, splits: Sequence[str]) -> None:
        datamodule = getattr(trainer, "datamodule", None)
        cached = cached_backbones(pl_module)
        if not cached or not isinstance(datamodule, ListsSequences):
            return
        self._refresh(trainer, pl_module)
        total = sum(
            c.precompute(datamodule.split_sequences(list(splits), c.modality), datamodule.eval_batch_size,
                         trainer.world_size)  # fmt: skip
            for c in cached
        )
        self._refresh(trainer, pl_module)
        if total:
            pl_module.print(summary(pl_module))

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._precompute(trainer, pl_module, ["train", "val"])

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.state.fn == "validate":
            self._precompute(trainer, pl_module, ["val"])

    def on_test_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._precompute(trainer, pl_module, ["test"])

    def on_predict_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        datamodule = getattr(trainer, "datamodule", None)
        if isinstance(datamodule, ListsSequences):
            self._precompute(trainer, pl_module, [datamodule.predict_split])

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._refresh(trainer, pl_module)

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._refresh(trainer, pl_module)

    def on_test_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._refresh(trainer, pl_module)

    def on_predict_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._refresh(trainer, pl_module)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.current_epoch == 0:
            pl_module.print(summary(pl_module))


def summary(module: L.LightningModule) -> str:
    """``embedding cache: rna: 120 computed, 360 read, 0.1 MiB in DIR; protein: …``."""
    return "embedding cache: " + "; ".join(c.summary() for c in cached_backbones(module))
