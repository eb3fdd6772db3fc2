"""What a task does besides its steps, as Lightning callbacks (:meth:`FusionTask.configure_callbacks` adds them).

- :class:`EpochSummary`: one line per epoch, ``epoch 3: train/loss 0.41  val/loss 0.45  val/spearman 0.52``,
  also where progress bars are off; its running loss is checkpointed, so a run resumed mid-epoch reports
  the same epoch loss.
- :class:`EvaluationReport`: after ``mmfuse validate``/``mmfuse test``, the per-target (per-class) table
  printed and written, and the report folder (:mod:`mmfuse.training.report`).
- :class:`StepReseeding`: with a fixed seed, every optimiser step draws from a generator seeded by
  (seed, step, process), so a resumed run repeats the random numbers of the run it continues.
- :class:`StopOnSignal`: a fit sent SIGTERM (a scheduler's pre-emption) or SIGINT (Ctrl+C) stops at the end of
  the step, writes ``last.ckpt`` there and exits 143 or 130 with one line saying how to resume.
"""

from __future__ import annotations

import math
import os
import signal
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch import Tensor

from mmfuse.errors import NonFiniteError
from mmfuse.io import atomic_path
from mmfuse.training import report
from mmfuse.training.metrics import MetricTable

__all__ = [
    "EpochSummary",
    "Evaluation",
    "EvaluationReport",
    "StepReseeding",
    "Stop",
    "StopOnSignal",
    "training_log_candidates",
]

_STAGE_TITLES = {"val": "Validation", "test": "Test"}


@dataclass
class Evaluation:
    """The metrics of the last validation/test epoch, as a task leaves them for its callbacks.

    Attributes:
        stage: ``val`` or ``test``.
        scalars: ``{name: value}`` logged as ``{stage}/{name}``.
        table: the metrics per target (per class), if the objective makes one.
        records: what the objective's plots need (e.g. predictions and targets), when reported.
        reported: whether this epoch gets a report (``mmfuse validate``/``mmfuse test``, not sanity checks).
    """

    stage: str
    scalars: dict[str, Tensor]
    table: MetricTable | None
    records: Any = None
    reported: bool = False


class EpochSummary(L.Callback):
    """Prints ``epoch N: train/loss …  val/loss …  val/<metric> …`` once per training epoch (rank zero).

    The training loss is the mean over the epoch's samples of every process: a running sum kept on the
    device (no host sync per step), reduced at the epoch's end. The task's ``training_step`` returns it
    as ``batch_loss`` with ``batch_size`` (``loss`` itself is divided by gradient accumulation).
    """

    def __init__(self) -> None:
        self._sum: Tensor | None = None
        self._samples = 0
        self._validation = ""
        self._restored: dict[str, Any] | None = None
        self._trainer: L.Trainer | None = None
        self._device = torch.device("cpu")

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._trainer, self._device = trainer, pl_module.device

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        restored, self._restored = self._restored, None
        if restored and restored.get("samples") and trainer.global_rank == 0:  # the others start from zero
            self._sum = restored["sum"].to(pl_module.device)
            self._samples = int(restored["samples"])

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:  # fmt: skip
        if not isinstance(outputs, dict) or "batch_loss" not in outputs:
            return
        weighted = outputs["batch_loss"].float() * outputs["batch_size"]
        self._sum = weighted if self._sum is None else self._sum + weighted
        self._samples += int(outputs["batch_size"])

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        evaluation = getattr(pl_module, "evaluation", None)
        if trainer.sanity_checking or trainer.state.fn == "validate" or "val/loss" not in trainer.callback_metrics:
            return
        val_loss = float(trainer.callback_metrics["val/loss"])
        if not math.isfinite(val_loss):  # before ModelCheckpoint (the last callback) can save a "best" model
            raise NonFiniteError(
                f"the validation loss is {val_loss} after epoch {trainer.current_epoch}: the weights diverged; "
                f"lower the learning rate, clip gradients (trainer.gradient_clip_val) or check the targets"
            )
        scalars = evaluation.scalars if evaluation is not None else {}
        self._validation = f"  val/loss {trainer.callback_metrics['val/loss'].item():.4f}  " + "  ".join(
            f"val/{k} {v.item():.4f}" for k, v in scalars.items()
        )
        # recorded now, before ModelCheckpoint (the last callback) saves this epoch: the training batches
        # of the epoch are done (the running mean is the epoch's loss when validation ends the epoch)
        total = self._totals(pl_module.device)
        running = {"train/loss": (total[0] / total[1]).item()} if total[1].item() > 0 else {}
        _record(pl_module, trainer.current_epoch, {**running, "val/loss": val_loss,
                                                   **{f"val/{k}": float(v) for k, v in scalars.items()}})  # fmt: skip

    def _totals(self, device: torch.device) -> Tensor:
        """``[loss sum, samples]`` over every process."""
        total = self._sum.detach().float().to(device) if self._sum is not None else torch.zeros((), device=device)
        running = torch.stack([total, torch.tensor(float(self._samples), device=device)])
        trainer = self._trainer
        return trainer.strategy.reduce(running, reduce_op="sum") if trainer is not None else running

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # runs after the epoch's validation
        total = self._totals(pl_module.device)
        train_loss = (total[0] / total[1].clamp(min=1)).item()
        self._sum, self._samples = None, 0
        if not math.isfinite(train_loss):
            raise NonFiniteError(
                f"the training loss of epoch {trainer.current_epoch} is {train_loss}: lower the learning rate, "
                f"clip gradients (trainer.gradient_clip_val) or check the targets"
            )
        _record(pl_module, trainer.current_epoch, {"train/loss": train_loss})
        pl_module.print(f"epoch {trainer.current_epoch}: train/loss {train_loss:.4f}{self._validation}")
        self._validation = ""

    def state_dict(self) -> dict[str, Any]:
        # every process saves (rank zero writes): the sums are of all of them
        total = self._totals(self._device).cpu()
        return {"sum": total[0], "samples": int(total[1])}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._restored = dict(state_dict)


def _record(pl_module: Any, epoch: int, values: dict[str, float]) -> None:
    """Adds ``values`` to the task's history entry of ``epoch`` (see :attr:`FusionTask.history`)."""
    history = getattr(pl_module, "history", None)
    if not isinstance(history, list):
        return
    if history and history[-1].get("epoch") == epoch:
        history[-1].update(values)
    else:
        history.append({"epoch": epoch, **values})


def training_log_candidates(trainer: L.Trainer) -> list[Path]:
    """Where a CSVLogger ``metrics.csv`` with this model's training may be: this run's CSV loggers, then the
    run the checkpoint came from (``…/version_N/checkpoints/x.ckpt`` → ``…/version_N/metrics.csv``)."""
    from lightning.pytorch.loggers import CSVLogger

    candidates = [Path(lg.log_dir) / "metrics.csv" for lg in trainer.loggers if isinstance(lg, CSVLogger)]
    ckpt_path = trainer.ckpt_path
    if ckpt_path and "://" not in str(ckpt_path):
        candidates.append(Path(ckpt_path).parent.parent / "metrics.csv")
    return candidates


class EvaluationReport(L.Callback):
    """After ``mmfuse validate``/``mmfuse test``: prints the table per target (per class), writes it to
    ``metrics_<stage>.csv`` and writes the folder ``report_<stage>/`` (``metrics.csv``, ``metrics.md``, the
    objective's plots, ``loss_curves.png``) in the run's log directory (rank zero)."""

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._report(trainer, pl_module)

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._report(trainer, pl_module)

    def _report(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        evaluation: Evaluation | None = getattr(pl_module, "evaluation", None)
        if evaluation is None or not evaluation.reported or evaluation.table is None or not trainer.is_global_zero:
            return
        table, stage = evaluation.table, evaluation.stage
        print("\n" + table.text(f"{_STAGE_TITLES[stage]} metrics per {table.index_title}"))
        log_dir = Path(trainer.log_dir or trainer.default_root_dir)
        path = log_dir / f"metrics_{stage}.csv"
        with atomic_path(path) as tmp:
            table.frame().to_csv(tmp)
        print(f"Per-{table.index_title} metrics written to {path}")

        directory = log_dir / f"report_{stage}"
        written = report.write_metrics(table.frame(summary_row=True), directory, table.columns)
        written += pl_module.objective.plots(directory, table, evaluation.records)
        # the history the checkpoint carries (any logger, or none); else a CSV log of an older checkpoint's run
        losses = report.history_losses(getattr(pl_module, "history", None) or [])
        if losses is None:
            training_log = report.find_training_log(training_log_candidates(trainer))
            losses = report.read_csv_losses(training_log) if training_log else None
        curves = report.plot_loss_curves(losses, directory / "loss_curves.png") if losses is not None else None
        written += [curves] if curves else []
        print(f"Report written to {directory}: {', '.join(p.name for p in written)}")
        if curves is None:
            print(
                "  (no loss_curves.png: this model has no training history (a checkpoint of `mmfuse fit` keeps "
                "it) and no CSV log of its training was found)"
            )


class StepReseeding(L.Callback):
    """Seeds the global generator at every optimiser step from (``PL_GLOBAL_SEED``, step, process).

    Dropout and modality dropout then draw the same numbers in a run resumed from a checkpoint as in
    the run it continues, and DDP processes draw different ones. Without a seed it does nothing.
    """

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any,
                             batch_idx: int) -> None:  # fmt: skip
        seed = os.environ.get("PL_GLOBAL_SEED")
        if seed is not None:
            step = trainer.global_step * trainer.world_size + trainer.global_rank
            _seed_generators((int(seed) * 1_000_003 + step) % 2**63)


def _seed_generators(seed: int) -> None:
    """``torch.manual_seed(seed)`` for the generators a run uses, without its cost where no accelerator has
    started: there it queues a lazy seeding per device kind, recording the Python stack each time (about
    0.5 ms a step on a CPU, measured by cProfile on the quickstart's cached epoch)."""
    torch.default_generator.manual_seed(seed)
    if torch.cuda.is_initialized():
        torch.cuda.manual_seed_all(seed)
    if torch.backends.mps.is_available():
        torch.mps.manual_seed(seed)
    xpu = getattr(torch, "xpu", None)
    if xpu is not None and xpu.is_available() and xpu.is_initialized():
        xpu.manual_seed_all(seed)


@dataclass(frozen=True)
class Stop:
    """Where a fit stopped on a signal: the signal's name, the optimiser steps done, the checkpoint written
    there (``None``: it could not be written) and the run directory."""

    signal: str
    step: int
    checkpoint: str | None
    run_dir: str

    @property
    def message(self) -> str:
        if self.checkpoint is None:
            return f"stopped by {self.signal} at step {self.step}; no checkpoint could be written there"
        return f"stopped by {self.signal} at step {self.step}; resume with --ckpt_path last (saved {self.checkpoint})"


class StopOnSignal(L.Callback):
    """A fit sent SIGTERM or SIGINT stops at the end of the current optimiser step, saves ``last.ckpt`` there
    and exits with status 128 + the signal's number (143, 130), printing one line::

        mmfuse: stopped by SIGTERM at step 11; resume with --ckpt_path last (saved .../checkpoints/last.ckpt)

    ``--ckpt_path last`` then continues to the same weights as an uninterrupted run. SIGTERM is Lightning's own
    handling (its ``SIGTERMException``, raised on every process at the same step under DDP); this callback
    adds the checkpoint, the line and the exit status. SIGINT (Ctrl+C) is turned into the same stop; a
    second Ctrl+C stops at once, without saving. The stop is attached to the exception as ``mmfuse_stop``
    (a :class:`Stop`) for the command line's summary.
    """

    def __init__(self) -> None:
        self.interrupted_by: int | None = None  # SIGINT, once received
        self._sigint: Any = None  # the SIGINT handler this callback replaced while fitting
        self._run_dir: str | None = None

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.interrupted_by = None
        self._run_dir = str(trainer.log_dir or trainer.default_root_dir)  # a collective under DDP: every rank
        if threading.current_thread() is threading.main_thread():  # signal handlers live in the main thread
            self._sigint = signal.signal(signal.SIGINT, self._on_sigint)

    def _on_sigint(self, signum: int, frame: Any) -> None:
        if self.interrupted_by is not None:  # a second Ctrl+C: stop now, saving nothing
            self._restore()
            raise SystemExit(128 + signal.SIGINT)
        self.interrupted_by = signum
        # Lightning's SIGTERM handling stops every process at the end of the same step
        os.kill(os.getpid(), signal.SIGTERM)

    def _restore(self) -> None:
        if self._sigint is not None and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, self._sigint)
        self._sigint = None

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._restore()

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        self._restore()
        from lightning.pytorch.utilities.exceptions import SIGTERMException

        if not isinstance(exception, SIGTERMException):
            return
        signum = self.interrupted_by or signal.SIGTERM
        path = self._checkpoint_path(trainer)
        try:
            trainer.save_checkpoint(path)
        except Exception as exc:  # the stop still exits non-zero and says why nothing was saved
            print(f"mmfuse: error: could not write {path} ({exc})", file=sys.stderr)
            path = None
        for callback in trainer.checkpoint_callbacks:
            if path is not None and str(Path(path).parent) == str(getattr(callback, "dirpath", None)):
                callback.last_model_path = path  # the summary's last checkpoint
        run_dir = self._run_dir or str(trainer.default_root_dir)
        stop = Stop(signal.Signals(signum).name, trainer.global_step, path, run_dir)
        exception.code = 128 + signum
        exception.mmfuse_stop = stop
        if trainer.is_global_zero:
            print(f"mmfuse: {stop.message}", file=sys.stderr, flush=True)

    @staticmethod
    def _checkpoint_path(trainer: L.Trainer) -> str:
        from lightning.pytorch.callbacks import ModelCheckpoint

        for callback in trainer.checkpoint_callbacks:
            if isinstance(callback, ModelCheckpoint) and callback.dirpath is not None:
                return os.path.join(callback.dirpath, callback.CHECKPOINT_NAME_LAST + callback.FILE_EXTENSION)
        return os.path.join(trainer.log_dir or trainer.default_root_dir, "checkpoints", "last.ckpt")
