"""The multi-modal task skeleton: backbones keyed by modality → fusion adapter → head.

It also holds what every task shares: the loss logging, the one-line summary per epoch and the
per-target (per-class) report of ``mmfuse validate``/``mmfuse test`` (a table printed, and a folder
``report_<stage>/`` written by :mod:`mmfuse.tasks.report`). A task implements
:meth:`MultiModalTask._step` (loss and metric updates) and :meth:`MultiModalTask._epoch_metrics`, and
may add plots (:meth:`MultiModalTask._evaluation_records`, :meth:`MultiModalTask._report_plots`).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_only
from torch import Tensor, nn
from torchmetrics import SumMetric

from mmfuse.adapters import ConcatFusion, FusionAdapter, drop_modalities
from mmfuse.backbones import Backbone
from mmfuse.checkpoints import CheckpointMismatchError, state_dict_mismatch
from mmfuse.embedding_cache import CacheOptions, EmbeddingCache
from mmfuse.errors import ConfigError
from mmfuse.io import atomic_path
from mmfuse.tasks import report
from mmfuse.tasks.heads import Head, MLPHead
from mmfuse.tasks.metrics import MetricTable
from mmfuse.tokenizers import Tokenizer

# Frozen backbones stay in eval mode on purpose, and the task's own device transfer (strings skipped)
# is meant to replace the data module's: Lightning's notices about either are noise for mmfuse users.
warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode at the start of training")
warnings.filterwarnings("ignore", message=r"You have overridden `transfer_batch_to_device` in `LightningModule`")

__all__ = ["AdapterFactory", "HeadFactory", "MultiModalTask", "OptimizerFactory", "SchedulerFactory"]

#: builds the adapter once backbone widths are known: ``input_dims -> adapter``
AdapterFactory = Callable[[dict[str, int]], FusionAdapter]
#: builds the head once the fused width and the number of targets are known: ``(in_dim, out_dim) -> head``
HeadFactory = Callable[[int, int], Head]
OptimizerFactory = Callable[[Iterable], torch.optim.Optimizer]
SchedulerFactory = Callable[[torch.optim.Optimizer], torch.optim.lr_scheduler.LRScheduler]

_STAGE_TITLES = {"val": "Validation", "test": "Test"}


def _is_plain(value: Any) -> bool:
    if value is None or isinstance(value, (bool, int, float, str)):
        return True
    if isinstance(value, (list, tuple)):
        return all(_is_plain(v) for v in value)
    if isinstance(value, Mapping):
        return all(isinstance(k, str) and _is_plain(v) for k, v in value.items())
    return False


def _names(names: list[str]) -> str:
    return ", ".join(names[:4]) + (", …" if len(names) > 4 else "")


def _target_difference(saved: list[str], given: list[str]) -> str:
    """How the checkpoint's targets differ from the data module's, briefly."""
    if len(saved) != len(given):
        return (f"it was trained with {len(saved)} targets ({_names(saved)}), the data module gives "
                f"{len(given)} ({_names(given)})")  # fmt: skip
    differ = [i for i, (a, b) in enumerate(zip(saved, given, strict=True)) if a != b]
    first = differ[0]
    return (f"it was trained with target_names {_names(saved)}; target {first} is {saved[first]!r} in the "
            f"checkpoint but {given[first]!r} in the data module ({len(differ)} differ)")  # fmt: skip


class MultiModalTask(L.LightningModule):
    """Base LightningModule of mmfuse tasks.

    Args:
        backbones: one encoder per modality, keyed by the modality names of the data
            (``{dna: Enformer, rna: NucleotideTransformer, protein: ESM2}``).
        adapter: fusion adapter, built with the backbones' widths (default: ``ConcatFusion``).
        head: prediction head, built with the fused width and the number of outputs
            (:meth:`_num_outputs`; default: ``MLPHead``).
        target_names: names of the targets (or classes); linked from the data module by the CLI.
        optimizer: optimizer over the trainable parameters (default: AdamW, lr 1e-3).
        lr_scheduler: optional learning-rate scheduler, stepped every epoch
            (``ReduceLROnPlateau`` watches ``val/loss``).
        modality_dropout: during training, hide each present modality of each sample with this
            probability (always keeping one), so the model learns to predict from any subset.
        embedding_cache: keep the embeddings of frozen backbones on disk
            (:class:`~mmfuse.embedding_cache.CacheOptions`): each sequence is embedded once, then read
            back in later epochs and runs.
        compile_backbones: compile these backbones' forward passes with ``torch.compile``
            (``true``: every backbone; or a list of modalities). The first steps take longer (and each
            new shape until shapes are marked dynamic, usually the second); later steps run fused
            kernels (on CPU it needs a C++ compiler). Measured gains are in docs/performance.md.
    """

    #: the epoch metric shown in the progress bar (besides the loss)
    _progress_metric: str = ""

    def __init__(
        self,
        backbones: dict[str, Backbone],
        adapter: AdapterFactory | None = None,
        head: HeadFactory | None = None,
        target_names: list[str] | None = None,
        optimizer: OptimizerFactory = torch.optim.AdamW,
        lr_scheduler: SchedulerFactory | None = None,
        modality_dropout: float = 0.0,
        embedding_cache: CacheOptions | None = None,
        compile_backbones: bool | list[str] = False,
    ) -> None:
        super().__init__()
        self._save_plain_hyperparameters()
        if not backbones:
            raise ConfigError("a task needs at least one backbone (`backbones: {modality: ...}`)")
        if not target_names:
            raise ConfigError(
                "target_names is empty: the CLI links it from the data module; from Python pass "
                "target_names=datamodule.target_names"
            )
        self.target_names = list(target_names)
        self.backbones = nn.ModuleDict(backbones)
        dims = {m: b.embed_dim for m, b in backbones.items()}
        self.adapter = (adapter or ConcatFusion)(dims)
        self.head = (head or MLPHead)(self.adapter.output_dim, self._num_outputs())
        self.optimizer_factory = optimizer
        self.scheduler_factory = lr_scheduler
        if not 0.0 <= modality_dropout < 1.0:
            raise ConfigError(f"modality_dropout must be in [0, 1), not {modality_dropout}")
        self.modality_dropout = modality_dropout
        self.embedding_cache = EmbeddingCache(embedding_cache, backbones) if embedding_cache is not None else None
        self._cache_warned = False
        compiled = list(backbones) if compile_backbones is True else list(compile_backbones or [])
        unknown = sorted(set(compiled) - set(backbones))
        if unknown:
            raise ConfigError(f"compile_backbones names {unknown}, which have no backbone ({sorted(backbones)})")
        for modality in compiled:
            self.backbones[modality].compile()  # lazily, at the first call; the state dict keeps its keys
        # checkpoints of this model may leave out fixed backbone weights (on_save_checkpoint);
        # on_load_checkpoint checks them strictly itself
        self.strict_loading = not self._reloadable_keys()
        # the one-line epoch summary: a running sum on the device (no host sync per step, unlike
        # MeanMetric's NaN check) and a count of samples, reduced over processes at the epoch's end
        self.train_loss_sum = SumMetric(nan_strategy="disable")
        self._train_samples = 0
        self._val_summary = ""

    def _num_outputs(self) -> int:
        """Width of the head's output: one per target (a classifier of two classes needs one)."""
        return len(self.target_names)

    def _save_plain_hyperparameters(self) -> None:
        """Saves constructor arguments that are plain data; objects never go into checkpoints.

        Under the CLI every argument is plain (its config); from Python, modules and classes are
        left out, so ``torch.load(weights_only=True)`` can always read the checkpoint.
        """
        import inspect

        self.save_hyperparameters(frame=inspect.currentframe().f_back)  # type: ignore[union-attr]
        for key in [k for k, v in self.hparams.items() if not _is_plain(v)]:
            del self._hparams[key]
            self._hparams_initial.pop(key, None)

    # data ---------------------------------------------------------------------------------------
    def tokenizers(self) -> dict[str, Tokenizer]:
        """The tokenizer of each backbone, keyed by modality."""
        return {m: b.tokenizer for m, b in self.backbones.items()}

    def setup(self, stage: str) -> None:
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        if datamodule is not None and hasattr(datamodule, "attach_tokenizers"):
            if self.embedding_cache is not None:
                datamodule.attach_tokenizers(self.tokenizers(), cached=self.embedding_cache.modalities)
            else:
                datamodule.attach_tokenizers(self.tokenizers())

    # model --------------------------------------------------------------------------------------
    def forward(
        self,
        inputs: Mapping[str, Mapping[str, Tensor]],
        present: Mapping[str, Tensor] | None = None,
        cached: Mapping[str, Mapping[str, Sequence[str | None]]] | None = None,
    ) -> Tensor:
        """Head outputs ``(B, n_outputs)`` from tokenized inputs ``{modality: tokenizer output}``.

        Tasks override it to return predictions (original units, class probabilities); their
        training steps call this one.

        Args:
            inputs: one tokenizer output per modality; a modality that no sample of the batch has
                may be left out.
            present: ``{modality: (B,) bool}``, False where a sample lacks the modality (its slot
                holds a stand-in); default: every modality in ``inputs`` is present.
            cached: the batch's ``cached`` modalities, ``{modality: {"keys": [...], "sequences": [...]}}``
                (untokenized, for the ``embedding_cache``; see :class:`~mmfuse.data.collate.MultiModalCollate`).
        """
        return self.head(self.fuse(inputs, present, cached))

    def _outputs(self, batch: Mapping[str, Any]) -> Tensor:
        """Head outputs of a collated batch, in float32 (under mixed precision the loss and the metrics
        are computed in full precision)."""
        return MultiModalTask.forward(self, batch["inputs"], batch.get("present"), batch.get("cached")).float()

    def fuse(
        self,
        inputs: Mapping[str, Mapping[str, Tensor]],
        present: Mapping[str, Tensor] | None = None,
        cached: Mapping[str, Mapping[str, Sequence[str | None]]] | None = None,
    ) -> Tensor:
        """The adapter's fused representation ``(B, output_dim)``; see :meth:`forward`."""
        cached = cached or {}
        if not any(m in inputs or m in cached for m in self.backbones):
            raise ValueError(f"the batch holds none of the modalities {sorted(self.backbones)}")
        sizes = [len(next(iter(inputs[m].values()))) for m in self.backbones if m in inputs]
        batch = sizes[0] if sizes else len(next(iter(cached.values()))["keys"])
        features = {}
        for modality, backbone in self.backbones.items():
            if modality in cached and self.embedding_cache is not None:
                embeddings, mask = self.embedding_cache.embed(
                    modality, backbone, cached[modality]["keys"], cached[modality]["sequences"], self.device,
                    self.dtype, self._compute_precision(), self.global_rank,
                )  # fmt: skip
            elif modality not in inputs:  # no sample of this batch has it: nothing to encode
                empty = torch.zeros(batch, 1, backbone.embed_dim, device=self.device, dtype=self.dtype)
                features[modality] = (empty, torch.zeros(batch, 1, dtype=torch.bool, device=self.device))
                continue
            else:
                if self.embedding_cache is not None and modality in self.embedding_cache.modalities:
                    self._warn_uncached(modality)
                out = backbone(inputs[modality])
                embeddings, mask = out.embeddings, out.mask
            if present is not None and modality in present:
                mask = mask & present[modality].to(mask.device).unsqueeze(1)
            features[modality] = (embeddings, mask)
        if self.training and self.modality_dropout > 0:
            features = drop_modalities(features, self.modality_dropout)
        return self.adapter(features)

    def _compute_precision(self) -> str:
        return str(self.trainer.precision) if self._trainer is not None else "32-true"

    def _warn_uncached(self, modality: str) -> None:
        if not self._cache_warned:
            self._cache_warned = True
            from lightning.pytorch.utilities import rank_zero_warn

            rank_zero_warn(
                f"embedding_cache: the batch holds {modality} tokens instead of sequences and keys (a data module "
                f"gives those after `attach_tokenizers(..., cached=...)`, which the task calls in setup), so the "
                f"backbone runs every step"
            )

    def _refresh_cache(self) -> None:
        """Reads what every process stored so far: after a barrier, so under DDP no rank starts an epoch
        before the others have written what they embedded in the last one."""
        if self.embedding_cache is not None:
            if self._trainer is not None and self.trainer.world_size > 1:
                self.trainer.strategy.barrier("mmfuse-embedding-cache")
            self.embedding_cache.refresh()

    def _precompute_cache(self, splits: Sequence[str]) -> None:
        """Embeds, before the loop starts, every sequence of ``splits`` the cache lacks, each by one
        process; the loop then only reads (the data module must offer ``split_sequences``)."""
        datamodule = getattr(self.trainer, "datamodule", None)
        if self.embedding_cache is None or not hasattr(datamodule, "split_sequences"):
            return
        self._refresh_cache()
        total = 0
        for modality in self.embedding_cache.modalities:
            sequences = datamodule.split_sequences(list(splits), modality)  # lazy: read from the records store
            total += self.embedding_cache.precompute(
                modality, self.backbones[modality], sequences, self.device, datamodule.eval_batch_size,
                self._compute_precision(), self.global_rank, self.trainer.world_size,
            )  # fmt: skip
        self._refresh_cache()
        if total:
            self.print(self.embedding_cache.summary())

    def on_fit_start(self) -> None:
        self._precompute_cache(["train", "val"])

    def on_test_start(self) -> None:
        self._precompute_cache(["test"])

    def on_predict_start(self) -> None:
        datamodule = getattr(self.trainer, "datamodule", None)
        self._precompute_cache([getattr(datamodule, "predict_split", "all")])

    def on_validation_start(self) -> None:
        if self.trainer.state.fn == "validate":
            self._precompute_cache(["val"])

    def on_train_epoch_start(self) -> None:
        self._refresh_cache()

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        # With a fixed seed, each optimiser step draws its random numbers (dropout, modality dropout)
        # from a generator seeded by (seed, step, process): a run resumed from a checkpoint repeats
        # the random numbers of the run it continues, and DDP processes draw different ones.
        seed = os.environ.get("PL_GLOBAL_SEED")
        if seed is not None:
            step = self.trainer.global_step * self.trainer.world_size + self.trainer.global_rank
            torch.manual_seed((int(seed) * 1_000_003 + step) % 2**63)

    def on_validation_epoch_start(self) -> None:
        self._refresh_cache()

    def on_test_epoch_start(self) -> None:
        self._refresh_cache()

    def on_predict_epoch_start(self) -> None:
        self._refresh_cache()

    def transfer_batch_to_device(self, batch: Any, device: torch.device, dataloader_idx: int) -> Any:
        """Moves the batch's tensors; its strings (ids, cached sequences and keys) are left as they are
        without Lightning walking through them (thousands of strings per batch with a cache)."""
        if not isinstance(batch, dict) or not ({"ids", "cached"} & batch.keys()):
            return super().transfer_batch_to_device(batch, device, dataloader_idx)
        strings = {k: batch[k] for k in ("ids", "cached") if k in batch}
        rest = {k: v for k, v in batch.items() if k not in strings}
        return {**super().transfer_batch_to_device(rest, device, dataloader_idx), **strings}

    # optimisation ---------------------------------------------------------------------------------
    def configure_optimizers(self) -> Any:
        params = [p for p in self.parameters() if p.requires_grad]
        optimizer = self.optimizer_factory(params)
        if self.scheduler_factory is None:
            return optimizer
        scheduler = self.scheduler_factory(optimizer)
        config: dict[str, Any] = {"scheduler": scheduler, "interval": "epoch"}
        if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            config["monitor"] = "val/loss"
        return {"optimizer": optimizer, "lr_scheduler": config}

    # steps ----------------------------------------------------------------------------------------
    def _step(self, batch: dict[str, Any], stage: str) -> Tensor:
        """The loss of a batch; updates the metrics of ``stage`` (``train``, ``val``, ``test``)."""
        raise NotImplementedError

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        return self._step(batch, "train")

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._step(batch, "val")

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._step(batch, "test")

    def _log_loss(self, loss: Tensor, stage: str, batch_size: int) -> None:
        """Logs ``{stage}/loss`` (per step in training, per epoch elsewhere) and keeps the epoch's mean."""
        on_step = stage == "train"
        self.log(f"{stage}/loss", loss, batch_size=batch_size, on_step=on_step, on_epoch=True,
                 prog_bar=True, sync_dist=not on_step)  # fmt: skip
        if on_step:
            self.train_loss_sum.update(loss.detach() * batch_size)
            self._train_samples += batch_size

    # epoch ends -----------------------------------------------------------------------------------
    def _epoch_metrics(self, stage: str) -> tuple[dict[str, Tensor], MetricTable | None]:
        """Computes (over all processes) and resets the metrics of ``stage``.

        Returns:
            ``{name: scalar}`` logged as ``{stage}/{name}``, and the table per target (per class)
            that ``mmfuse validate``/``mmfuse test`` print and write, if any.
        """
        return {}, None

    def on_validation_epoch_end(self) -> None:
        scalars = self._end_evaluation("val")
        if not self.trainer.sanity_checking and self.trainer.state.fn != "validate":
            val_loss = self.trainer.callback_metrics["val/loss"].item()
            self._val_summary = f"  val/loss {val_loss:.4f}  " + "  ".join(
                f"val/{k} {v.item():.4f}" for k, v in scalars.items()
            )

    def on_test_epoch_end(self) -> None:
        self._end_evaluation("test")

    def on_train_epoch_end(self) -> None:
        # runs after the epoch's validation: one line per epoch, also where progress bars are off
        samples = self.trainer.strategy.reduce(
            torch.tensor(float(self._train_samples), device=self.device), reduce_op="sum"
        )
        train_loss = (self.train_loss_sum.compute() / samples.clamp(min=1)).item()
        self.train_loss_sum.reset()
        self._train_samples = 0
        self.print(f"epoch {self.current_epoch}: train/loss {train_loss:.4f}{self._val_summary}")
        self._val_summary = ""
        if self.embedding_cache is not None and self.current_epoch == 0:
            self.print(self.embedding_cache.summary())

    def _evaluation_records(self, stage: str) -> Any:
        """What the report's plots need of the epoch's records (e.g. predictions and targets), taken
        before :meth:`_epoch_metrics` resets the metrics; called on every process (it may gather)."""
        return None

    def _report_plots(self, directory: Path, table: MetricTable, records: Any) -> list[Path]:
        """Writes the task's own plots into the report folder (rank zero); returns the files written."""
        return []

    def _end_evaluation(self, stage: str) -> dict[str, Tensor]:
        reporting = (stage == "test" or self.trainer.state.fn == "validate") and not self.trainer.sanity_checking
        records = self._evaluation_records(stage) if reporting else None
        scalars, table = self._epoch_metrics(stage)
        for name, value in scalars.items():
            self.log(f"{stage}/{name}", value, prog_bar=name == self._progress_metric)
        if table is not None and reporting:
            self._report(table, stage, records)
        return scalars

    @rank_zero_only
    def _report(self, table: MetricTable, stage: str, records: Any = None) -> None:
        """Prints ``table``, writes it to ``metrics_<stage>.csv`` and writes the folder ``report_<stage>/``
        (``metrics.csv``, ``metrics.md``, the task's plots, ``loss_curves.png``) in the run's log directory."""
        print("\n" + table.text(f"{_STAGE_TITLES[stage]} metrics per {table.index_title}"))
        log_dir = Path(self.trainer.log_dir or self.trainer.default_root_dir)
        path = log_dir / f"metrics_{stage}.csv"
        with atomic_path(path) as tmp:
            table.frame().to_csv(tmp)
        print(f"Per-{table.index_title} metrics written to {path}")

        directory = log_dir / f"report_{stage}"
        written = report.write_metrics(table.frame(summary_row=True), directory, table.columns)
        written += self._report_plots(directory, table, records)
        training_log = report.find_training_log(self._training_log_candidates())
        curves = report.plot_loss_curves(training_log, directory / "loss_curves.png") if training_log else None
        written += [curves] if curves else []
        print(f"Report written to {directory}: {', '.join(p.name for p in written)}")
        if curves is None:
            print("  (no loss_curves.png: no CSV log of training found; log with a CSVLogger to get one)")

    def _training_log_candidates(self) -> list[Path]:
        """Where a CSVLogger ``metrics.csv`` with this model's training may be: this run's CSV loggers,
        then the run the checkpoint came from (``…/version_N/checkpoints/x.ckpt`` → ``…/version_N/metrics.csv``)."""
        from lightning.pytorch.loggers import CSVLogger

        candidates = [Path(lg.log_dir) / "metrics.csv" for lg in self.trainer.loggers if isinstance(lg, CSVLogger)]
        ckpt_path = self.trainer.ckpt_path
        if ckpt_path and "://" not in str(ckpt_path):
            candidates.append(Path(ckpt_path).parent.parent / "metrics.csv")
        return candidates

    # checkpoints ----------------------------------------------------------------------------------
    def _reloadable_keys(self) -> set[str]:
        """Checkpoint keys left out because the backbones' weight sources give them back."""
        return {f"backbones.{m}.{k}" for m, b in self.backbones.items() for k in b.fixed_state_keys()}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Stores only what training changes: fixed weights of loaded backbones are reloaded from their
        source when the model is rebuilt, so a LoRA run of a 650M-parameter model writes megabytes."""
        # the epoch's running training loss (summed over processes: every process saves, rank 0
        # writes), so a run resumed mid-epoch reports the same epoch loss
        reduce = self.trainer.strategy.reduce if self._trainer is not None else (lambda x, reduce_op: x)
        running = torch.stack([self.train_loss_sum.sum_value.detach().float(),
                               torch.tensor(float(self._train_samples), device=self.device)])  # fmt: skip
        total = reduce(running, reduce_op="sum").cpu()
        checkpoint["mmfuse_train_loss"] = {"sum": total[0], "samples": int(total[1])}
        omitted = self._reloadable_keys()
        if not omitted:
            return
        state = checkpoint["state_dict"]
        for key in omitted:
            state.pop(key, None)
        checkpoint["mmfuse_reloaded_weights"] = {
            m: b.weights_source for m, b in self.backbones.items() if b.fixed_state_keys()
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Checks the checkpoint's weights and target names against this model before Lightning loads them."""
        expected = self.state_dict()
        reloaded = checkpoint.get("mmfuse_reloaded_weights")
        if reloaded:  # fixed backbone weights come from their sources, not from the checkpoint
            omitted = self._reloadable_keys()
            expected = {k: v for k, v in expected.items() if k not in omitted}
        saved = checkpoint.get("hyper_parameters", {}).get("target_names")
        problem = None
        if saved is not None and list(saved) != self.target_names:  # the clearer cause, said first
            problem = _target_difference(list(saved), self.target_names)
        problem = problem or state_dict_mismatch(expected, checkpoint.get("state_dict", {}))
        if problem:
            sources = f" (its fixed backbone weights come from {reloaded})" if reloaded else ""
            raise CheckpointMismatchError(
                f"the checkpoint{sources} does not fit the model built from this config: {problem}. Use the "
                f"config the checkpoint was trained with (saved beside it as config.yaml)"
                + (
                    ", or give the data the trained targets, in that order (the data module's target columns / "
                    "classes)."
                    if saved is not None and list(saved) != self.target_names
                    else "."
                )
            )
        running = checkpoint.get("mmfuse_train_loss")
        rank = self.trainer.global_rank if self._trainer is not None else 0
        if running and running.get("samples") and rank == 0:  # the others start from zero
            self.train_loss_sum.reset()
            self.train_loss_sum.update(running["sum"].to(self.train_loss_sum.device))
            self._train_samples = int(running["samples"])
