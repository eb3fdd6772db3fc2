"""The Lightning task: a :class:`~mmfuse.model.FusionModel`, an objective and the optimiser; steps and loss logging.

Everything else is a small component: the objective (:mod:`mmfuse.training.objectives`) owns the loss,
predictions and metrics; callbacks (:mod:`mmfuse.training.callbacks`, :mod:`mmfuse.cache`) print the
epoch summary, write the report, fill the embedding cache and reseed per step; :mod:`mmfuse.training.slim`
trims and checks checkpoints.
"""

from __future__ import annotations

import functools
import inspect
import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any, ClassVar

import lightning as L
import torch
from torch import Tensor

from mmfuse.backbones import Backbone
from mmfuse.cache import CachedBackbone, CacheOptions, EmbeddingCacheCallback, cache_backbones
from mmfuse.data.protocols import TakesTokenizers
from mmfuse.errors import ConfigError, NonFiniteError
from mmfuse.model import AdapterFactory, FusionModel, HeadFactory
from mmfuse.training import slim
from mmfuse.training.alignment import AlignmentOptions, ContrastiveAlignment
from mmfuse.training.callbacks import EpochSummary, Evaluation, EvaluationReport, StepReseeding, StopOnSignal
from mmfuse.training.heads import MLPHead
from mmfuse.training.objectives import Classification, ObjectiveFactory, Regression
from mmfuse.training.token_objectives import TokenClassification

__all__ = [
    "ClassificationTask", "FusionTask", "OptimizerFactory", "RegressionTask", "SchedulerFactory",
    "TokenClassificationTask", "move_batch",
]  # fmt: skip

OptimizerFactory = Callable[[Iterable], torch.optim.Optimizer]
SchedulerFactory = Callable[[torch.optim.Optimizer], torch.optim.lr_scheduler.LRScheduler]


#: the checkpoint key of :attr:`FusionTask.history`
HISTORY_KEY = "mmfuse_history"


def _is_plain(value: Any) -> bool:
    if value is None or isinstance(value, (bool, int, float, str)):
        return True
    if isinstance(value, (list, tuple)):
        return all(_is_plain(v) for v in value)
    if isinstance(value, Mapping):
        return all(isinstance(k, str) and _is_plain(v) for k, v in value.items())
    return False


def _plain(value: Any) -> Any:
    """``value`` as plain data, as the CLI's config writes it: a ``partial`` of a class with plain keywords
    becomes ``{"class_path": ..., "init_args": ...}``; anything else not plain becomes ``None`` (left out)."""
    if isinstance(value, functools.partial) and isinstance(value.func, type) and not value.args:
        if _is_plain(value.keywords):
            return {"class_path": f"{value.func.__module__}.{value.func.__qualname__}", "init_args": value.keywords}
    return value if _is_plain(value) else None


def move_batch(batch: Any, device: torch.device) -> Any:
    """Moves a batch's tensors; strings and lists of them (ids, cache keys) stay as they are, unwalked."""
    if isinstance(batch, Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, Mapping):
        return {k: move_batch(v, device) for k, v in batch.items()}
    if isinstance(batch, list | tuple) and batch and isinstance(batch[0], Tensor):
        return type(batch)(move_batch(v, device) for v in batch)
    return batch


def _save_plain_hyperparameters(module: L.LightningModule, frame: Any) -> None:
    """Saves the constructor arguments as plain data (under the CLI, all are: its config); from Python,
    partials of classes are written as the CLI writes them and other objects are left out, so
    ``torch.load(weights_only=True)`` can always read the checkpoint."""
    module.save_hyperparameters(frame=frame)
    values = dict(module.hparams)
    plain = {key: _plain(value) for key, value in values.items()}
    dropped = [key for key, value in values.items() if plain[key] is None and value is not None]
    if dropped:  # saved again without them, so neither the checkpoint nor the loggers see them
        module.save_hyperparameters(ignore=dropped, frame=frame)
    module.hparams.update({k: p for k, p in plain.items() if k not in dropped and p is not values[k]})


class FusionTask(L.LightningModule):
    """Trains a :class:`~mmfuse.model.FusionModel` (``self.model``) for an objective.

    Args:
        backbones: one encoder per modality, keyed by the modality names of the data
            (``{dna: Enformer, rna: NucleotideTransformer, protein: ESM2}``).
        adapter: fusion adapter, built with the backbones' widths (default: ``ConcatFusion``).
        head: prediction head, built with the fused width and the objective's number of outputs
            (default: ``MLPHead``).
        objective: what is learned: loss, predictions, metrics (:mod:`mmfuse.training.objectives`), built
            with the target names; ``RegressionTask`` defaults to ``Regression``, ``ClassificationTask``
            to ``Classification``. YAML: ``objective: {class_path: Regression, init_args: {loss: huber}}``.
        target_names: names of the targets (or classes); linked from the data module by the CLI.
        optimizer: optimizer over the trainable parameters (default: AdamW, lr 1e-3).
        lr_scheduler: optional learning-rate scheduler, stepped every epoch (``ReduceLROnPlateau``
            watches ``val/loss``).
        modality_dropout: during training, hide each present modality of each sample with this
            probability (always keeping one), so the model learns to predict from any subset.
        embedding_cache: keep the embeddings of frozen backbones on disk
            (:class:`~mmfuse.cache.CacheOptions`): each sequence is embedded once, then read back in
            later epochs and runs (the backbones are wrapped in :class:`~mmfuse.cache.CachedBackbone`).
        compile_backbones: compile these backbones' forward passes with ``torch.compile`` (``true``:
            every backbone; or a list of modalities); gains are measured in docs/performance.md.
        modality_contribution: in ``mmfuse test``/``validate``, also evaluate the model with every subset
            of its modalities hidden and report each modality's contribution
            (:mod:`mmfuse.analysis.contribution`); ``None``: on for two or three modalities.
        alignment: an auxiliary CLIP-style contrastive loss between two modalities' pooled embeddings,
            added with a weight to the training loss and logged as ``<stage>/alignment_loss``
            (:class:`~mmfuse.training.alignment.AlignmentOptions`: ``{modalities: [rna, protein], weight: 0.1}``).
    """

    #: the objective built when ``objective`` is not given
    default_objective: ClassVar[ObjectiveFactory | None] = None

    def __init__(
        self,
        backbones: dict[str, Backbone],
        adapter: AdapterFactory | None = None,
        head: HeadFactory | None = None,
        objective: ObjectiveFactory | None = None,
        target_names: list[str] | None = None,
        optimizer: OptimizerFactory = torch.optim.AdamW,
        lr_scheduler: SchedulerFactory | None = None,
        modality_dropout: float = 0.0,
        embedding_cache: CacheOptions | None = None,
        compile_backbones: bool | list[str] = False,
        modality_contribution: bool | None = None,
        alignment: AlignmentOptions | None = None,
    ) -> None:
        super().__init__()
        _save_plain_hyperparameters(self, inspect.currentframe())
        factory = objective or self.default_objective
        if factory is None:
            raise ConfigError("FusionTask needs an objective, e.g. `objective: {class_path: Regression}`")
        self.objective = factory(list(target_names or []))
        self.target_names = self.objective.target_names
        if not backbones:
            raise ConfigError("a task needs at least one backbone (`backbones: {modality: ...}`)")
        compiled = list(backbones) if compile_backbones is True else list(compile_backbones or [])
        unknown = sorted(set(compiled) - set(backbones))
        if unknown:
            raise ConfigError(f"compile_backbones names {unknown}, which have no backbone ({sorted(backbones)})")
        for modality in compiled:
            backbones[modality].compile()  # lazily, at the first call; the state dict keeps its keys
        if embedding_cache is not None:
            backbones = cache_backbones(backbones, embedding_cache)
        tokens = self.objective.token_head(list(backbones))
        if tokens is not None and isinstance(backbones[tokens[0]], CachedBackbone):
            raise ConfigError(
                f"{type(self.objective).__name__} reads every token of {tokens[0]!r}, which a cache keyed by whole "
                f"sequences cannot give back one by one; leave {tokens[0]!r} out of embedding_cache.modalities"
            )
        self.model = FusionModel(backbones, self.objective.num_outputs, adapter, head or MLPHead, modality_dropout,
                                 *(tokens or (None,)))  # fmt: skip
        self.optimizer_factory, self.scheduler_factory = optimizer, lr_scheduler
        # checkpoints may leave out fixed backbone weights; on_load_checkpoint checks them strictly itself
        self.strict_loading = not slim.reloadable_keys(self.model.backbones)
        self.evaluation: Evaluation | None = None
        self.modality_contribution = modality_contribution
        #: the auxiliary contrastive loss between two modalities, if asked for (:mod:`mmfuse.training.alignment`)
        self.alignment = (
            ContrastiveAlignment(alignment, {m: b.embed_dim for m, b in self.model.backbones.items()})
            if alignment is not None else None
        )  # fmt: skip
        #: one entry per training epoch, ``{"epoch": 3, "train/loss": …, "val/loss": …, "val/spearman": …}``,
        #: kept by :class:`~mmfuse.training.callbacks.EpochSummary` and saved in checkpoints, so a report reads
        #: the training's loss curves whatever logger (or none) the run had
        self.history: list[dict[str, float]] = []

    def configure_callbacks(self) -> list[L.Callback]:
        cached = any(isinstance(b, CachedBackbone) for b in self.model.backbones.values())
        return [
            EpochSummary(),
            EvaluationReport(),
            StepReseeding(),
            StopOnSignal(),
            *([EmbeddingCacheCallback()] if cached else []),
        ]

    def setup(self, stage: str) -> None:
        datamodule = self.trainer.datamodule if self._trainer is not None else None
        if isinstance(datamodule, TakesTokenizers):
            datamodule.attach_tokenizers(self.model.tokenizers())
        if stage == "fit":
            self.objective.prepare(datamodule)

    def forward(self, inputs: Mapping[str, Mapping[str, Any]], present: Mapping[str, Tensor] | None = None) -> Tensor:
        """Predictions of tokenized inputs in the data's terms (original units, class probabilities)."""
        return self.objective.predict(self.model(inputs, present).float())

    def transfer_batch_to_device(self, batch: Any, device: torch.device, dataloader_idx: int) -> Any:
        return move_batch(batch, device) if isinstance(batch, dict) else super().transfer_batch_to_device(
            batch, device, dataloader_idx)  # fmt: skip

    def configure_optimizers(self) -> Any:
        trained = [p for p in self.parameters() if p.requires_grad]
        optimizer = _optimizer(self.optimizer_factory, trained, scheduled=self.scheduler_factory is not None)
        if self.scheduler_factory is None:
            return optimizer
        scheduler = self.scheduler_factory(optimizer)
        config: dict[str, Any] = {"scheduler": scheduler, "interval": "epoch"}
        if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            config["monitor"] = "val/loss"
        return {"optimizer": optimizer, "lr_scheduler": config}

    # steps ----------------------------------------------------------------------------------------
    def _loss(self, batch: dict[str, Any], stage: str) -> tuple[Tensor, Tensor]:
        """The objective's loss of a batch, and the loss trained on (with the alignment term, if any)."""
        # head outputs in float32: under mixed precision the loss and the metrics are computed in full precision
        if self.alignment is None:
            outputs = self.model(batch["inputs"], batch.get("present")).float()
            aligned = None
        else:
            features = self.model.encode(batch["inputs"], batch.get("present"))
            outputs = self.model.outputs(features).float()
            aligned = self.alignment(features)
        loss = self.objective.loss(outputs, batch["target"])
        on_step = stage == "train"
        if on_step and loss.device.type == "cpu" and not torch.isfinite(loss):  # free on the CPU; elsewhere per epoch
            raise NonFiniteError(
                f"the training loss is {loss.item()} at step {self.global_step} (records {', '.join(batch['ids'][:4])}"
                f"{', …' if len(batch['ids']) > 4 else ''}): check their targets, or lower the learning rate"
            )
        self.log(f"{stage}/loss", loss, batch_size=len(batch["ids"]), on_step=on_step, on_epoch=True,
                 prog_bar=True, sync_dist=not on_step)  # fmt: skip
        if not on_step:
            self.objective.update(stage, outputs, batch["target"])
        if aligned is not None:
            self.log(f"{stage}/alignment_loss", aligned, batch_size=len(batch["ids"]), on_step=on_step, on_epoch=True,
                     sync_dist=not on_step)  # fmt: skip
            return loss, loss + self.alignment.weight * aligned  # type: ignore[union-attr]
        return loss, loss

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Any]:
        loss, total = self._loss(batch, "train")  # train/loss reports the objective's; the alignment trains too
        return {"loss": total, "batch_loss": loss.detach(), "batch_size": len(batch["ids"])}

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._loss(batch, "val")

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._loss(batch, "test")

    def predict_step(self, batch: dict[str, Any], batch_idx: int, dataloader_idx: int = 0) -> dict[str, Any]:
        prediction = self.objective.batch_prediction(self.model(batch["inputs"], batch.get("present")).float(), batch)
        weights = getattr(self.model.adapter, "modality_weights", None)  # GatedFusion's, of this batch
        if isinstance(weights, Tensor):
            prediction["modality_weights"] = dict(zip(self.model.adapter.modalities, weights.float().cpu().T,
                                                      strict=True))  # fmt: skip
        return prediction

    def _end_evaluation(self, stage: str) -> None:
        reported = (stage == "test" or self.trainer.state.fn == "validate") and not self.trainer.sanity_checking
        records = self.objective.records(stage) if reported else None
        scalars, table = self.objective.compute(stage)
        for name, value in scalars.items():
            self.log(f"{stage}/{name}", value, prog_bar=name == self.objective.progress_metric)
        self.evaluation = Evaluation(stage, scalars, table, records, reported)

    def on_validation_epoch_end(self) -> None:
        self._end_evaluation("val")

    def on_test_epoch_end(self) -> None:
        self._end_evaluation("test")

    # checkpoints ------------------------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        slim.trim_checkpoint(checkpoint, self.model.backbones)
        checkpoint[HISTORY_KEY] = [dict(entry) for entry in self.history]

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        slim.check_checkpoint(checkpoint, self, self.target_names)
        history = checkpoint.get(HISTORY_KEY)
        self.history = [dict(e) for e in history if isinstance(e, dict)] if isinstance(history, list) else []


class RegressionTask(FusionTask):
    """A :class:`FusionTask` whose objective is :class:`~mmfuse.training.objectives.Regression` unless given:
    targets standardised with training-split statistics, MSE loss, predictions in the original units,
    metrics per target (MSE, R², Pearson, Spearman). Options of the loss go to the objective:
    ``objective: {class_path: Regression, init_args: {loss: huber, standardize_targets: false}}``."""

    default_objective = Regression


class ClassificationTask(FusionTask):
    """A :class:`FusionTask` whose objective is :class:`~mmfuse.training.objectives.Classification` unless given:
    one logit (two classes, binary cross-entropy) or one per class (cross-entropy); predictions are class
    probabilities and labels. ``objective: {class_path: Classification, init_args: {label_smoothing: 0.1}}``.

    Examples:
        >>> from mmfuse.backbones import ESM2
        >>> task = ClassificationTask({"protein": ESM2("tiny")}, target_names=["cytosol", "membrane", "nucleus"])
        >>> inputs = {"protein": task.model.tokenizers()["protein"](["MKTAYIAKQR", "MVLSPADK"])}
        >>> probs = task.eval()(inputs)  # class probabilities
        >>> probs.shape, torch.allclose(probs.sum(dim=1), torch.ones(2))
        (torch.Size([2, 3]), True)
    """

    default_objective = Classification


class TokenClassificationTask(FusionTask):
    """A :class:`FusionTask` whose objective is :class:`~mmfuse.training.token_objectives.TokenClassification`
    unless given: labels belong to the tokens of one modality (Geneformer's gene classification: the genes of a
    cell); the head reads each token's embedding (with the record's fused representation, ``context``) and the
    loss and metrics count labelled tokens only. ``objective: {class_path: TokenClassification, init_args:
    {modality: cell, context: false}}``.

    Examples:
        >>> from mmfuse.backbones import Geneformer
        >>> task = TokenClassificationTask({"cell": Geneformer("tiny")}, target_names=["background", "marker"])
        >>> inputs = {"cell": task.model.tokenizers()["cell"](["G0001:5;G0002:1;G0003:2", "G0004:1"])}
        >>> task.eval()(inputs).shape  # class probabilities per token: <cls>, 3 genes, <eos>
        torch.Size([2, 5, 2])
    """

    default_objective = TokenClassification


def _optimizer(factory: Callable[..., Any], parameters: list[Tensor], scheduled: bool) -> torch.optim.Optimizer:
    """``factory(parameters)``; options torch refuses (a negative learning rate) or that train nothing (a
    non-finite learning rate, or zero without a scheduler to raise it) end in a :class:`ConfigError`
    naming ``model.init_args.optimizer``."""
    where = "model.init_args.optimizer.init_args"
    try:
        optimizer = factory(parameters)
    except ValueError as exc:  # torch checks lr, betas, eps, weight_decay and says which
        raise ConfigError(f"the optimizer refuses its options: {exc}; fix {where}") from None
    for group in optimizer.param_groups:
        lr = group.get("lr")
        lr = float(lr) if isinstance(lr, int | float | Tensor) else None
        if lr is not None and not (math.isfinite(lr) and (lr > 0 or scheduled)):
            raise ConfigError(f"the learning rate is {lr}, so nothing would train; set {where}.lr to a positive number")
    return optimizer
