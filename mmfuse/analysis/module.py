"""The LightningModule an analysis runs: a trained FusionModel whose ``predict_step`` gives the analysis' rows.

The training task (:class:`~mmfuse.training.FusionTask`) has no mode for analyses. An analysis
(``mmfuse embed``, ``explain``, ``score-variants``) loads the checkpoint's weights into the task the config
builds, takes its :class:`~mmfuse.model.FusionModel`, objective (predictions in the table's units) and target
names, and runs Lightning's predict loop on an :class:`AnalysisModule` around them: devices, precision and
DDP sharding as the trainer is configured, and the analysis' writer (a
:class:`~mmfuse.training.writer.PredictionWriter` among the trainer's callbacks) streams the rows to a file.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import lightning as L
import torch

from mmfuse.cache import CachedBackbone, EmbeddingCacheCallback
from mmfuse.data.protocols import TakesTokenizers
from mmfuse.errors import ConfigError
from mmfuse.model import FusionModel
from mmfuse.training.checkpoints import checkpoint_file, load_trained_weights
from mmfuse.training.task import move_batch

__all__ = ["Analysis", "AnalysisModule", "find_writer", "run_analysis"]


class Analysis(Protocol):
    """What an analysis' writer gives its module: the rows of one batch."""

    def step(self, module: AnalysisModule, batch: Any) -> Any: ...


class AnalysisModule(L.LightningModule):
    """A trained model driven by one analysis.

    Args:
        model: the FusionModel (its weights already loaded).
        objective: the task's objective: turns head outputs into predictions in the data's terms.
        target_names: the names of the model's outputs (targets or classes).
        analysis: the analysis' writer; ``predict_step`` returns ``analysis.step(self, batch)``.
    """

    def __init__(self, model: FusionModel, objective: Any, target_names: Sequence[str], analysis: Analysis) -> None:
        super().__init__()
        self.model = model
        self.objective = objective
        self.target_names = list(target_names)
        self.analysis = analysis
        # a streamed analysis deals its records out by key, so a process may get none (score-variants' transcripts)
        self.allow_zero_length_dataloader_with_multiple_devices = True

    @classmethod
    def of(cls, task: Any, analysis: Analysis) -> AnalysisModule:
        """The module of ``task``'s model, objective and target names."""
        return cls(task.model, task.objective, task.target_names, analysis)

    def configure_callbacks(self) -> list[L.Callback]:
        cached = any(isinstance(b, CachedBackbone) for b in self.model.backbones.values())
        return [EmbeddingCacheCallback()] if cached else []

    def setup(self, stage: str) -> None:
        datamodule = self.trainer.datamodule
        if isinstance(datamodule, TakesTokenizers):
            datamodule.attach_tokenizers(self.model.tokenizers())

    def transfer_batch_to_device(self, batch: Any, device: torch.device, dataloader_idx: int) -> Any:
        return move_batch(batch, device)

    def predict_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> Any:
        return self.analysis.step(self, batch)


def find_writer(trainer: L.Trainer, task: Any, kind: type, section: str, command: str) -> Any:
    """The command's one writer among ``trainer``'s callbacks; refuses a run without it or without the task."""
    found = [c for c in trainer.callbacks if isinstance(c, kind)]
    if len(found) != 1 or task is None:
        raise ConfigError(f"mmfuse {command} needs the task (the `model` section) and one {kind.__name__} (the "
                          f"`{section}` options)")  # fmt: skip
    return found[0]


def run_analysis(trainer: L.Trainer, task: Any, analysis: Analysis, ckpt_path: str | None, **predict: Any) -> None:
    """Loads ``ckpt_path``'s weights into ``task`` (none: its pretrained backbones) and runs ``analysis`` over
    the records of ``predict`` (``datamodule=`` or ``dataloaders=``) in ``trainer``'s predict loop."""
    if ckpt_path is not None:
        load_trained_weights(task, checkpoint_file(trainer, ckpt_path))
    trainer.predict(AnalysisModule.of(task, analysis), return_predictions=False, **predict)
