"""Crash-safe checkpoint writing and safe reading, as a Lightning ``CheckpointIO`` plugin."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins import TorchCheckpointIO

from mmfuse.io import atomic_path

__all__ = ["AtomicCheckpointIO"]


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint writer, made crash-safe on local disks, and safe to read.

    A checkpoint is written to a temporary file in its own directory, flushed to disk, and renamed
    over the old one: a process killed mid-write (preemption, out-of-memory) leaves the previous
    ``last.ckpt`` whole. (Lightning's own writer stages the file in the system's temporary directory,
    and moving it onto another file system, e.g. a cluster's shared disk, is a copy that a kill can
    cut short.) Remote paths (``s3://``…) go through Lightning's writer. Checkpoints are read with
    ``torch.load(weights_only=True)`` unless the caller asks otherwise; a directory ``mmfuse export`` wrote is read
    as the checkpoint it holds (:func:`mmfuse.hub.load.as_checkpoint`). ``mmfuse`` commands use it
    unless the trainer is given another ``CheckpointIO``; from Python pass
    ``Trainer(plugins=[AtomicCheckpointIO()])``.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        if storage_options is not None or "://" in str(path):
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        with atomic_path(Path(path), durable=True) as tmp:
            torch.save(checkpoint, tmp)

    def load_checkpoint(
        self, path: Any, map_location: Callable | None = lambda storage, loc: storage, weights_only: bool | None = None
    ) -> dict[str, Any]:
        from mmfuse.hub.layout import is_exported

        if "://" not in str(path) and is_exported(path):  # a directory `mmfuse export` wrote (safetensors)
            from mmfuse.hub.load import as_checkpoint

            return as_checkpoint(path)
        return super().load_checkpoint(path, map_location, True if weights_only is None else weights_only)
