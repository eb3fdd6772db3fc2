"""Single-label classification of records into named classes (binary or multiclass)."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from mmfuse.backbones import Backbone
from mmfuse.embedding_cache import CacheOptions
from mmfuse.errors import ConfigError
from mmfuse.tasks.base import AdapterFactory, HeadFactory, MultiModalTask, OptimizerFactory, SchedulerFactory
from mmfuse.tasks.metrics import CLASS_METRICS, ClassificationMetrics, MetricTable

__all__ = ["ClassificationTask"]


class ClassificationTask(MultiModalTask):
    """Classification of each record into one of ``target_names`` (the classes, in order).

    With two classes the head has one output, the logit of the second class (the positive one), and
    the loss is binary cross-entropy with logits; with more, the head has one logit per class and
    the loss is cross-entropy. Labels from the data module are class indices ``(B,)`` (int64).

    Logs ``{stage}/loss`` and, per validation/test epoch, ``{stage}/accuracy`` (share of records whose
    most probable class is right), ``{stage}/f1`` and ``{stage}/auroc`` (of the positive class with
    two classes, macro-averaged over the classes with more), computed and synchronised across
    processes by torchmetrics. An AUROC that is undefined (a split holding records of one class
    only, or a class absent from it) makes torchmetrics warn and count it as 0; the run goes on.
    ``mmfuse validate`` and ``mmfuse test`` also print F1, AUROC and support per class, with a
    ``macro`` row (see :class:`~mmfuse.tasks.metrics.ClassificationMetrics`), and write them to
    ``metrics_<stage>.csv`` in the run's log directory.

    Predictions are ``{"ids": [...], "preds": (B, n_classes) class probabilities, "labels": [...]}``,
    ``labels`` being the most probable class of each record; the prediction writer turns them into
    one probability column per class and a ``predicted`` column.

    Args:
        backbones: one encoder per modality, keyed by the modality names of the data.
        adapter: fusion adapter, built with the backbones' widths (default: ``ConcatFusion``).
        head: prediction head, built with the fused width and the number of logits
            (default: ``MLPHead``).
        target_names: the class names, in class-index order; linked from the data module by the CLI.
        label_smoothing: share of each label's probability mass spread evenly over all classes
            (cross-entropy's ``label_smoothing``; with two classes the BCE target becomes
            ``y (1 - s) + s / 2``).
        class_weights: one loss weight per class, e.g. to up-weight rare classes; with two classes
            ``class_weights[1] / class_weights[0]`` is BCE's ``pos_weight``.
        optimizer: optimizer over the trainable parameters (default: AdamW, lr 1e-3).
        lr_scheduler: optional learning-rate scheduler, stepped every epoch
            (``ReduceLROnPlateau`` watches ``val/loss``).
        modality_dropout: during training, hide each present modality of each sample with this
            probability (always keeping one).
        embedding_cache: keep the embeddings of frozen backbones on disk, computed once
            (:class:`~mmfuse.embedding_cache.CacheOptions`; see docs/performance.md).
        compile_backbones: compile these backbones (``true``: all; or modalities) with ``torch.compile``.

    Examples:
        >>> from mmfuse.backbones import ESM2
        >>> task = ClassificationTask({"protein": ESM2("tiny")}, target_names=["cytosol", "membrane", "nucleus"])
        >>> inputs = {"protein": task.tokenizers()["protein"](["MKTAYIAKQR", "MVLSPADK"])}
        >>> probs = task.eval()(inputs)  # class probabilities
        >>> probs.shape, torch.allclose(probs.sum(dim=1), torch.ones(2))
        (torch.Size([2, 3]), True)
    """

    _progress_metric = "f1"

    def __init__(
        self,
        backbones: dict[str, Backbone],
        adapter: AdapterFactory | None = None,
        head: HeadFactory | None = None,
        target_names: list[str] | None = None,
        label_smoothing: float = 0.0,
        class_weights: list[float] | None = None,
        optimizer: OptimizerFactory = torch.optim.AdamW,
        lr_scheduler: SchedulerFactory | None = None,
        modality_dropout: float = 0.0,
        embedding_cache: CacheOptions | None = None,
        compile_backbones: bool | list[str] = False,
    ) -> None:
        names = list(target_names or [])
        if target_names and len(names) < 2:
            raise ConfigError(f"a classifier needs at least 2 classes; target_names is {names}")
        if len(set(names)) != len(names):
            raise ConfigError(f"class names must be distinct; target_names is {names}")
        super().__init__(
            backbones,
            adapter,
            head,
            target_names,
            optimizer,
            lr_scheduler,
            modality_dropout,
            embedding_cache,
            compile_backbones,
        )
        if not 0.0 <= label_smoothing < 1.0:
            raise ConfigError(f"label_smoothing must be in [0, 1), not {label_smoothing}")
        self.label_smoothing = label_smoothing
        n = len(self.target_names)
        if class_weights is not None and (len(class_weights) != n or min(class_weights) <= 0):
            raise ConfigError(
                f"class_weights needs one positive weight per class ({n}: {self.target_names}), not {class_weights}"
            )
        weights = torch.tensor(class_weights, dtype=torch.float32) if class_weights is not None else None
        self.register_buffer("class_weights", weights, persistent=False)  # part of the config, not the state
        self.val_metrics = ClassificationMetrics(n)
        self.test_metrics = ClassificationMetrics(n)

    def _num_outputs(self) -> int:
        n = len(self.target_names)
        return 1 if n == 2 else n

    @property
    def binary(self) -> bool:
        """Whether there are two classes (one logit, binary cross-entropy)."""
        return len(self.target_names) == 2

    def forward(self, inputs: Any, present: Any = None, cached: Any = None) -> Tensor:
        """Class probabilities ``(B, n_classes)``; see :meth:`MultiModalTask.forward` for the arguments."""
        return self.probabilities(super().forward(inputs, present, cached))

    def probabilities(self, logits: Tensor) -> Tensor:
        """Class probabilities ``(B, n_classes)`` from the head's logits ``(B, 1)`` or ``(B, n_classes)``."""
        if self.binary:
            positive = torch.sigmoid(logits.float())
            return torch.cat([1 - positive, positive], dim=1)
        return torch.softmax(logits.float(), dim=1)

    def loss(self, logits: Tensor, labels: Tensor) -> Tensor:
        """The training loss of logits ``(B, 1)`` or ``(B, n_classes)`` and class indices ``(B,)``."""
        weights = self.class_weights.to(logits) if self.class_weights is not None else None
        if self.binary:
            target = labels.to(logits.dtype)
            if self.label_smoothing:
                target = target * (1 - self.label_smoothing) + self.label_smoothing / 2
            pos_weight = weights[1:] / weights[0] if weights is not None else None
            return F.binary_cross_entropy_with_logits(logits.squeeze(1), target, pos_weight=pos_weight)
        return F.cross_entropy(logits, labels, weight=weights, label_smoothing=self.label_smoothing)

    def _step(self, batch: dict[str, Any], stage: str) -> Tensor:
        logits = self._outputs(batch)
        labels = batch["target"].to(logits.device).long()
        loss = self.loss(logits, labels)
        self._log_loss(loss, stage, len(batch["ids"]))
        if stage in ("val", "test"):
            getattr(self, f"{stage}_metrics").update(self.probabilities(logits.detach()), labels)
        return loss

    def predict_step(self, batch: dict[str, Any], batch_idx: int, dataloader_idx: int = 0) -> dict[str, Any]:
        probs = self(batch["inputs"], batch.get("present"), batch.get("cached")).float().cpu()
        labels = [self.target_names[i] for i in probs.argmax(dim=1).tolist()]
        return {"ids": batch["ids"], "preds": probs, "labels": labels}

    def _epoch_metrics(self, stage: str) -> tuple[dict[str, Tensor], MetricTable]:
        metrics: ClassificationMetrics = getattr(self, f"{stage}_metrics")
        overall, per_class, macro = metrics.compute()  # synchronised across processes by torchmetrics
        metrics.reset()
        return overall, MetricTable(self.target_names, per_class, CLASS_METRICS, "class", "macro", macro)
