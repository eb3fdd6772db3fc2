"""Lightning's ``Trainer`` with mmfuse's commands beyond fit/validate/test/predict.

Each runs Lightning's predict loop (devices, precision, DDP sharding as configured) with the task's
``predict_step`` giving that command's rows, written by a :class:`~mmfuse.tasks.writer.PredictionWriter`
subclass (streamed per batch, renamed into place at the end, DDP parts joined in record order):

* :meth:`MmfuseTrainer.embed` (``mmfuse embed``, :mod:`mmfuse.tasks.embed`),
* :meth:`MmfuseTrainer.explain` (``mmfuse explain``, :mod:`mmfuse.tasks.explain`),
* :meth:`MmfuseTrainer.score_variants` (``mmfuse score-variants``, :mod:`mmfuse.tasks.variants`).
"""

from __future__ import annotations

from typing import Any

from lightning.pytorch import LightningModule, Trainer

from mmfuse.errors import ConfigError
from mmfuse.tasks.writer import running

__all__ = ["MmfuseTrainer"]


def _writer(trainer: Trainer, model: LightningModule | None, kind: type, section: str, command: str) -> Any:
    """The command's one writer among the trainer's callbacks; refuses a run without it or without the task."""
    found = [c for c in trainer.callbacks if isinstance(c, kind)]
    if len(found) != 1 or model is None:
        raise ConfigError(f"mmfuse {command} needs the task (the `model` section) and one {kind.__name__} (the "
                          f"`{section}` options)")  # fmt: skip
    return found[0]


def keep_last_checkpoint_current(trainer: Trainer) -> None:
    """Every ``ModelCheckpoint(save_last=True)`` with a monitor writes ``last.ckpt`` at every save point again.

    Lightning 2.6 writes ``last.ckpt`` only when a top-k checkpoint is saved at the same step, so with
    ``monitor`` and ``save_top_k: 1`` it is a copy of the best epoch, and ``--ckpt_path last`` would resume
    a killed run from its best epoch instead of where it stopped (``tests/test_resume.py``). After the
    top-k decision, the step counts as saved, which is what makes Lightning write ``last.ckpt``.
    """
    for callback in trainer.checkpoint_callbacks:
        if not callback.save_last or callback.save_last == "link" or callback.monitor is None:
            continue
        if getattr(callback, "_mmfuse_keeps_last", False):
            continue
        top_k = callback._save_topk_checkpoint

        def top_k_then_last(trainer: Trainer, candidates: Any, _top_k: Any = top_k, _cb: Any = callback) -> None:
            _top_k(trainer, candidates)
            _cb._last_global_step_saved = trainer.global_step

        callback._save_topk_checkpoint = top_k_then_last
        callback._mmfuse_keeps_last = True


class MmfuseTrainer(Trainer):
    """Lightning's ``Trainer`` with three more commands: :meth:`embed`, :meth:`explain`, :meth:`score_variants`;
    ``last.ckpt`` is the last save point's (:func:`keep_last_checkpoint_current`)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        keep_last_checkpoint_current(self)

    def embed(self, model: LightningModule | None = None, datamodule: Any = None, ckpt_path: str | None = None) -> None:
        """Write each record's embeddings: every backbone's (pooled) and, from a trained checkpoint, the fused one.

        Args:
            model: the task (its backbones from the config: zero-shot without ``ckpt_path``).
            datamodule: the records to embed (its ``predict_split``: all records by default).
            ckpt_path: a trained checkpoint, or ``None`` for the config's pretrained backbones.
        """
        from mmfuse.tasks.embed import EmbeddingWriter

        writer = _writer(self, model, EmbeddingWriter, "embeddings", "embed")
        writer.chosen = writer.check(model.model, ckpt_path)
        with running(model, writer):
            self.predict(model, datamodule=datamodule, ckpt_path=ckpt_path, return_predictions=False)

    def explain(
        self,
        model: LightningModule | None = None,
        datamodule: Any = None,
        ckpt_path: str | None = None,
        ids: list[str] | str | None = None,
    ) -> None:
        """Write per-position attributions of chosen records: integrated gradients and in-silico mutagenesis.

        Args:
            model: the task.
            datamodule: the records.
            ckpt_path: the trained checkpoint to explain.
            ids: the records to explain (``--ids T1,T2`` or a YAML list), in this order.
        """
        from mmfuse.tasks.explain import ExplanationWriter

        writer = _writer(self, model, ExplanationWriter, "attributions", "explain")
        writer.prepare(model, datamodule, ckpt_path, ids)
        loop = self.predict_loop
        inference_mode, loop.inference_mode = loop.inference_mode, False  # gradients are needed
        try:
            with running(model, writer):
                self.predict(model, datamodule=datamodule, ckpt_path=ckpt_path, return_predictions=False)
        finally:
            loop.inference_mode = inference_mode

    def score_variants(
        self,
        model: LightningModule | None = None,
        datamodule: Any = None,
        ckpt_path: str | None = None,
        vcf: str | None = None,
        fasta: str | None = None,
        annotation: str | None = None,
    ) -> None:
        """Score variants from a VCF through every modality they change: DNA window, transcript and protein.

        Args:
            model: the task.
            datamodule: the data module of the config (its genome window, crops and loader settings).
            ckpt_path: the trained checkpoint.
            vcf: the variants: ``.vcf``, bgzipped ``.vcf.gz`` or ``.bcf`` (read with pysam).
            fasta: the genome FASTA the VCF was called against (its ``.fai`` is built if missing).
            annotation: the transcripts: GTF or GFF3, optionally gzipped.
        """
        from mmfuse.tasks.variants import VariantWriter, score_variants

        writer = _writer(self, model, VariantWriter, "variants", "score-variants")
        score_variants(self, model, datamodule, ckpt_path, writer, vcf, fasta, annotation)


# `mmfuse score-variants`: LightningCLI finds a subcommand's method by its name
setattr(MmfuseTrainer, "score-variants", MmfuseTrainer.score_variants)
