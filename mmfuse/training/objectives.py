"""Objectives: what a task learns from the head's outputs — their number, the loss, predictions, metrics.

A new kind of task is a new :class:`Objective` (one class, registered in ``OBJECTIVES``), not a new
LightningModule. An objective is an ``nn.Module`` so its statistics (buffers) and metrics move with
the model and its buffers go into checkpoints.
"""

from __future__ import annotations

import copy
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mmfuse.data.protocols import TargetStatistics
from mmfuse.errors import ConfigError
from mmfuse.registry import OBJECTIVES
from mmfuse.training import report
from mmfuse.training.metrics import (
    CLASS_METRICS,
    REGRESSION_METRICS,
    ClassificationMetrics,
    MetricTable,
    RegressionMetrics,
)

__all__ = ["Classification", "Objective", "ObjectiveFactory", "Regression"]

_STAGES = ("val", "test")
_LOSSES = {"mse": F.mse_loss, "huber": F.huber_loss, "l1": F.l1_loss}


class Objective(nn.Module, ABC):
    """Base class of objectives. The task gives ``target_names`` (linked from the data module); YAML the rest.

    Args:
        target_names: names of the targets (regression) or classes (classification), in order.
    """

    #: the epoch metric shown in the progress bar (besides the loss)
    progress_metric: ClassVar[str] = ""
    #: the batch's ``target``: float ``(B, n_targets)`` values, or int64 ``(B,)`` class indices
    target_dtype: ClassVar[torch.dtype] = torch.float32

    def __init__(self, target_names: Sequence[str]) -> None:
        super().__init__()
        if not target_names:
            raise ConfigError(
                "target_names is empty: the CLI links it from the data module; from Python pass "
                "target_names=datamodule.target_names"
            )
        self.target_names = list(target_names)

    @property
    def num_outputs(self) -> int:
        """Width of the head's output: one per target."""
        return len(self.target_names)

    def prepare(self, datamodule: Any) -> None:
        """Takes what the objective learns from the training data before fitting (e.g. target statistics)."""

    @abstractmethod
    def loss(self, outputs: Tensor, target: Tensor) -> Tensor:
        """The loss of head outputs ``(B, num_outputs)`` (float32) against the batch's ``target``."""

    @abstractmethod
    def predict(self, outputs: Tensor) -> Tensor:
        """Predictions in the data's terms (original units, class probabilities) from head outputs."""

    def prediction(self, outputs: Tensor, ids: Sequence[str]) -> dict[str, Any]:
        """What ``predict_step`` returns for a batch (read by :class:`~mmfuse.training.writer.PredictionWriter`)."""
        return {"ids": ids, "preds": self.predict(outputs).float().cpu()}

    def batch_prediction(self, outputs: Tensor, batch: Mapping[str, Any]) -> dict[str, Any]:
        """What ``predict_step`` returns for head outputs of ``batch``: :meth:`prediction` of its ids, unless
        an objective needs more of the batch (the token positions of token classification)."""
        return self.prediction(outputs, batch["ids"])

    def token_head(self, modalities: Sequence[str]) -> tuple[str, bool] | None:
        """``(modality, context)`` when the head reads each token of one modality (see
        :class:`~mmfuse.model.FusionModel`'s ``token_modality``/``token_context``), given the backbones'
        modalities; ``None``: one output row per record (every objective but token classification)."""
        return None

    @abstractmethod
    def update(self, stage: str, outputs: Tensor, target: Tensor) -> None:
        """Adds a batch to the metrics of ``stage`` (``val`` or ``test``)."""

    @abstractmethod
    def compute(self, stage: str) -> tuple[dict[str, Tensor], MetricTable | None]:
        """Computes (over all processes) and resets the metrics of ``stage``.

        Returns:
            ``{name: scalar}`` logged as ``{stage}/{name}``, and the table per target (per class) that
            ``mmfuse validate``/``mmfuse test`` print and write, if any.
        """

    def add_stage(self, stage: str) -> None:
        """Metrics for one more evaluation named ``stage`` (``test|rna+protein``: the test with the DNA hidden),
        as fresh copies of the test metrics; objectives keeping them elsewhere than ``self.metrics`` override it."""
        metrics = getattr(self, "metrics", None)
        if not isinstance(metrics, nn.ModuleDict) or "test" not in metrics:
            raise NotImplementedError(f"{type(self).__name__} keeps no `metrics` ModuleDict: override add_stage")
        if stage not in metrics:
            fresh = copy.deepcopy(metrics["test"])
            fresh.reset()
            metrics[stage] = fresh

    def records(self, stage: str) -> Any:
        """What :meth:`plots` needs of the epoch's records, taken before :meth:`compute` resets them (every
        process calls it: it may gather)."""
        return None

    def plots(self, directory: Path, table: MetricTable, records: Any) -> list[Path]:
        """Writes the objective's plots into the report folder (rank zero); returns the files written."""
        return []


#: builds the objective once the target names are known: ``target_names -> objective``
ObjectiveFactory = Callable[[list[str]], Objective]


@OBJECTIVES.register()
class Regression(Objective):
    """Regression of one or more continuous targets (IsoFormer: expression in 30 tissues).

    Targets are standardised per target with the mean and standard deviation of the training split
    (from the data module when fitting, then kept in the checkpoint as buffers): the loss is computed
    on standardised values, so no target dominates and the head need not learn offsets; predictions
    are in the original units.

    Metrics per validation/test epoch, the mean over targets of MSE, R², Pearson and Spearman
    (``val/spearman`` …). R², Pearson and Spearman are the same in the original and the standardised
    units; MSE is not, so it comes in both: ``mse`` in the original units (log TPM for IsoFormer) and
    ``mse_std`` = ``mse / std²``, comparable across targets and with the loss. The report adds
    ``r2_spearman_per_tissue.png`` and ``scatter_best_worst.png``.

    Args:
        target_names: names of the targets (given by the task).
        loss: ``mse`` (IsoFormer), ``huber`` or ``l1``.
        standardize_targets: standardise targets with training-split statistics (see above).
    """

    progress_metric = "spearman"

    def __init__(
        self, target_names: Sequence[str], loss: Literal["mse", "huber", "l1"] = "mse", standardize_targets: bool = True
    ) -> None:
        super().__init__(target_names)
        self.loss_fn = _LOSSES[loss]
        self.standardize_targets = standardize_targets
        n = len(self.target_names)
        self.register_buffer("target_mean", torch.zeros(n))
        self.register_buffer("target_std", torch.ones(n))
        self.metrics = nn.ModuleDict({stage: RegressionMetrics(n) for stage in _STAGES})

    def prepare(self, datamodule: Any) -> None:
        # when resuming, the checkpoint's buffers (loaded after this) take precedence
        if self.standardize_targets and isinstance(datamodule, TargetStatistics):
            mean, std = datamodule.target_stats()
            self.target_mean.copy_(torch.as_tensor(mean, dtype=self.target_mean.dtype))
            self.target_std.copy_(torch.as_tensor(std, dtype=self.target_std.dtype).clamp(min=1e-6))

    def loss(self, outputs: Tensor, target: Tensor) -> Tensor:
        return self.loss_fn(outputs, (target.float() - self.target_mean) / self.target_std)

    def predict(self, outputs: Tensor) -> Tensor:
        """Predictions ``(B, n_targets)`` in the targets' original units."""
        return outputs * self.target_std + self.target_mean

    def update(self, stage: str, outputs: Tensor, target: Tensor) -> None:
        self.metrics[stage].update(self.predict(outputs.detach()), target.float())

    def compute(self, stage: str) -> tuple[dict[str, Tensor], MetricTable]:
        metrics = self.metrics[stage]
        values = metrics.compute(self.target_std)  # synchronised across processes by torchmetrics
        metrics.reset()
        scalars = {name: torch.nanmean(per_target) for name, per_target in values.items()}
        return scalars, MetricTable(self.target_names, values, REGRESSION_METRICS)

    def records(self, stage: str) -> tuple[Tensor, Tensor] | None:
        return self.metrics[stage].records()

    def plots(self, directory: Path, table: MetricTable, records: Any) -> list[Path]:
        frame = table.frame(summary_row=False)
        written = [report.plot_r2_spearman(frame, directory / "r2_spearman_per_tissue.png")]
        if records is not None:
            preds, target = (t.float().cpu().numpy() for t in records)
            scatter = report.plot_best_worst(preds, target, self.target_names, frame["spearman"].to_numpy(),
                                             directory / "scatter_best_worst.png")  # fmt: skip
            written += [scatter] if scatter else []
        return written


@OBJECTIVES.register()
class Classification(Objective):
    """Classification of each record into one of ``target_names`` (the classes, in order).

    With two classes the head has one output, the logit of the second class (the positive one), and
    the loss is binary cross-entropy with logits; with more, one logit per class and cross-entropy.
    Labels are class indices ``(B,)``. Metrics: ``accuracy``, ``f1`` and ``auroc`` (of the positive
    class with two classes, macro-averaged over the classes with more), and per class F1, AUROC and
    support with a ``macro`` row (:class:`~mmfuse.training.metrics.ClassificationMetrics`). An undefined
    AUROC (a split holding one class only) makes torchmetrics warn and count it as 0. Predictions are
    class probabilities ``(B, n_classes)`` with ``labels``, the most probable class of each record.

    Args:
        target_names: the class names, in class-index order (given by the task).
        label_smoothing: share of each label's probability mass spread evenly over all classes
            (cross-entropy's ``label_smoothing``; with two classes the BCE target becomes
            ``y (1 - s) + s / 2``).
        class_weights: one loss weight per class, e.g. to up-weight rare classes; with two classes
            ``class_weights[1] / class_weights[0]`` is BCE's ``pos_weight``.
    """

    progress_metric = "f1"
    target_dtype = torch.int64

    def __init__(
        self, target_names: Sequence[str], label_smoothing: float = 0.0, class_weights: list[float] | None = None
    ) -> None:
        names = list(target_names or [])
        if target_names and len(names) < 2:
            raise ConfigError(f"a classifier needs at least 2 classes; target_names is {names}")
        if len(set(names)) != len(names):
            raise ConfigError(f"class names must be distinct; target_names is {names}")
        super().__init__(names)
        if not 0.0 <= label_smoothing < 1.0:
            raise ConfigError(f"label_smoothing must be in [0, 1), not {label_smoothing}")
        self.label_smoothing = label_smoothing
        n = len(names)
        if class_weights is not None and (len(class_weights) != n or min(class_weights) <= 0):
            raise ConfigError(f"class_weights needs one positive weight per class ({n}: {names}), not {class_weights}")
        weights = torch.tensor(class_weights, dtype=torch.float32) if class_weights is not None else None
        self.register_buffer("class_weights", weights, persistent=False)  # part of the config, not the state
        self.metrics = nn.ModuleDict({stage: ClassificationMetrics(n) for stage in _STAGES})

    @property
    def binary(self) -> bool:
        """Whether there are two classes (one logit, binary cross-entropy)."""
        return len(self.target_names) == 2

    @property
    def num_outputs(self) -> int:
        return 1 if self.binary else len(self.target_names)

    def predict(self, outputs: Tensor) -> Tensor:
        """Class probabilities ``(B, n_classes)`` from the head's logits ``(B, 1)`` or ``(B, n_classes)``."""
        if self.binary:
            positive = torch.sigmoid(outputs.float())
            return torch.cat([1 - positive, positive], dim=1)
        return torch.softmax(outputs.float(), dim=1)

    def loss(self, outputs: Tensor, target: Tensor) -> Tensor:
        labels = target.to(outputs.device).long()
        weights = self.class_weights.to(outputs) if self.class_weights is not None else None
        if self.binary:
            smoothed = labels.to(outputs.dtype)
            if self.label_smoothing:
                smoothed = smoothed * (1 - self.label_smoothing) + self.label_smoothing / 2
            pos_weight = weights[1:] / weights[0] if weights is not None else None
            return F.binary_cross_entropy_with_logits(outputs.squeeze(1), smoothed, pos_weight=pos_weight)
        return F.cross_entropy(outputs, labels, weight=weights, label_smoothing=self.label_smoothing)

    def prediction(self, outputs: Tensor, ids: Sequence[str]) -> dict[str, Any]:
        probs = self.predict(outputs).float().cpu()
        return {"ids": ids, "preds": probs, "labels": [self.target_names[i] for i in probs.argmax(dim=1).tolist()]}

    def update(self, stage: str, outputs: Tensor, target: Tensor) -> None:
        self.metrics[stage].update(self.predict(outputs.detach()), target.to(outputs.device).long())

    def compute(self, stage: str) -> tuple[dict[str, Tensor], MetricTable]:
        metrics = self.metrics[stage]
        overall, per_class, macro = metrics.compute()  # synchronised across processes by torchmetrics
        metrics.reset()
        return overall, MetricTable(self.target_names, per_class, CLASS_METRICS, "class", "macro", macro)
