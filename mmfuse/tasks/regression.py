"""Multi-output regression, e.g. isoform expression in 30 tissues (IsoFormer)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from mmfuse.backbones import Backbone
from mmfuse.embedding_cache import CacheOptions
from mmfuse.tasks import report
from mmfuse.tasks.base import AdapterFactory, HeadFactory, MultiModalTask, OptimizerFactory, SchedulerFactory
from mmfuse.tasks.metrics import REGRESSION_METRICS, MetricTable, RegressionMetrics

__all__ = ["RegressionTask"]

_LOSSES = {"mse": F.mse_loss, "huber": F.huber_loss, "l1": F.l1_loss}


class RegressionTask(MultiModalTask):
    """Regression of one or more continuous targets from fused modalities.

    Targets are standardised per target with the mean and standard deviation of the training split
    (given by the data module when fitting, then saved in the checkpoint as buffers): the loss is
    computed on standardised values, so no target dominates and the head need not learn offsets;
    predictions are in the original units.

    Logs ``{stage}/loss`` (standardised units) and, per validation/test epoch, the mean over targets of
    MSE, R², Pearson and Spearman (``val/spearman`` …). R², Pearson and Spearman are the same in the
    original and the standardised units (a per-target affine map changes none of them); MSE is not, so
    it comes in both: ``mse`` in the original units (log TPM for IsoFormer's expression) and
    ``mse_std`` = ``mse / std²`` in standardised units, comparable across targets and with the loss
    (``std``: the training split's standard deviation of each target; 1 without standardisation).
    ``mmfuse validate`` and ``mmfuse test`` also print a table per target, write it to
    ``metrics_<stage>.csv`` in the run's log directory, and write the folder ``report_<stage>/`` there:
    ``metrics.csv`` and ``metrics.md`` (per target and the mean), ``r2_spearman_per_tissue.png``,
    ``scatter_best_worst.png`` and, when a CSV log of the training is found, ``loss_curves.png``
    (see :mod:`mmfuse.tasks.report`). Predictions are ``{"ids": [...], "preds": (B, n_targets)}``.

    Args:
        backbones: one encoder per modality, keyed by the modality names of the data.
        adapter: fusion adapter, built with the backbones' widths (default: ``ConcatFusion``).
        head: prediction head, built with the fused width and the number of targets (default: ``MLPHead``).
        target_names: names of the targets; linked from the data module by the CLI.
        loss: ``mse`` (IsoFormer), ``huber`` or ``l1``.
        standardize_targets: standardise targets with training-split statistics (see above).
        optimizer: optimizer over the trainable parameters (default: AdamW, lr 1e-3).
        lr_scheduler: optional learning-rate scheduler, stepped every epoch
            (``ReduceLROnPlateau`` watches ``val/loss``).
        modality_dropout: during training, hide each present modality of each sample with this
            probability (always keeping one).
        embedding_cache: keep the embeddings of frozen backbones on disk, computed once
            (:class:`~mmfuse.embedding_cache.CacheOptions`; see docs/performance.md).
        compile_backbones: compile these backbones (``true``: all; or modalities) with ``torch.compile``.
    """

    _progress_metric = "spearman"

    def __init__(
        self,
        backbones: dict[str, Backbone],
        adapter: AdapterFactory | None = None,
        head: HeadFactory | None = None,
        target_names: list[str] | None = None,
        loss: Literal["mse", "huber", "l1"] = "mse",
        standardize_targets: bool = True,
        optimizer: OptimizerFactory = torch.optim.AdamW,
        lr_scheduler: SchedulerFactory | None = None,
        modality_dropout: float = 0.0,
        embedding_cache: CacheOptions | None = None,
        compile_backbones: bool | list[str] = False,
    ) -> None:
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
        self.loss_fn = _LOSSES[loss]
        self.standardize_targets = standardize_targets
        n = len(self.target_names)
        self.register_buffer("target_mean", torch.zeros(n))
        self.register_buffer("target_std", torch.ones(n))
        self.val_metrics = RegressionMetrics(n)
        self.test_metrics = RegressionMetrics(n)

    def setup(self, stage: str) -> None:
        super().setup(stage)
        datamodule = getattr(self.trainer, "datamodule", None)
        if stage == "fit" and self.standardize_targets and hasattr(datamodule, "target_stats"):
            # when resuming, the checkpoint's buffers (loaded after setup) take precedence
            mean, std = datamodule.target_stats()
            self.target_mean.copy_(torch.as_tensor(mean, dtype=self.target_mean.dtype))
            self.target_std.copy_(torch.as_tensor(std, dtype=self.target_std.dtype).clamp(min=1e-6))

    def forward(self, inputs: Any, present: Any = None, cached: Any = None) -> Tensor:
        """Predictions ``(B, n_targets)`` in the targets' original units."""
        return super().forward(inputs, present, cached) * self.target_std + self.target_mean

    def _step(self, batch: dict[str, Any], stage: str) -> Tensor:
        standardized = self._outputs(batch)
        target = batch["target"].float()
        loss = self.loss_fn(standardized, (target - self.target_mean) / self.target_std)
        self._log_loss(loss, stage, len(batch["ids"]))
        if stage in ("val", "test"):
            preds = standardized * self.target_std + self.target_mean
            getattr(self, f"{stage}_metrics").update(preds.detach(), target)
        return loss

    def predict_step(self, batch: dict[str, Any], batch_idx: int, dataloader_idx: int = 0) -> dict[str, Any]:
        preds = self(batch["inputs"], batch.get("present"), batch.get("cached"))
        return {"ids": batch["ids"], "preds": preds.float().cpu()}

    def _epoch_metrics(self, stage: str) -> tuple[dict[str, Tensor], MetricTable]:
        metrics: RegressionMetrics = getattr(self, f"{stage}_metrics")
        values = metrics.compute(self.target_std)  # synchronised across processes by torchmetrics
        metrics.reset()
        scalars = {name: torch.nanmean(per_target) for name, per_target in values.items()}
        return scalars, MetricTable(self.target_names, values, REGRESSION_METRICS)

    def _evaluation_records(self, stage: str) -> tuple[Tensor, Tensor] | None:
        return getattr(self, f"{stage}_metrics").records()

    def _report_plots(self, directory: Path, table: MetricTable, records: Any) -> list[Path]:
        frame = table.frame(summary_row=False)
        written = [report.plot_r2_spearman(frame, directory / "r2_spearman_per_tissue.png")]
        if records is not None:
            preds, target = (t.float().cpu().numpy() for t in records)
            scatter = report.plot_best_worst(preds, target, self.target_names, frame["spearman"].to_numpy(),
                                             directory / "scatter_best_worst.png")  # fmt: skip
            written += [scatter] if scatter else []
        return written
