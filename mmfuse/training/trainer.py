"""Lightning's ``Trainer`` whose ``last.ckpt`` is the last save point's, not a copy of the best one.

This module holds mmfuse's one use of Lightning internals (:func:`keep_last_checkpoint_current`):
``tests/training/test_lightning_shim.py`` fails with a clear message when a Lightning release renames what
it relies on, and ``tests/test_resume.py`` checks what it is for.
"""

from __future__ import annotations

from typing import Any

from lightning.pytorch import Trainer

__all__ = ["MmfuseTrainer", "keep_last_checkpoint_current"]

#: the ModelCheckpoint internals :func:`keep_last_checkpoint_current` relies on (no public hook exists)
SHIMMED = ("_save_topk_checkpoint", "_last_global_step_saved")


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
    """Lightning's ``Trainer`` whose ``last.ckpt`` is the last save point's (:func:`keep_last_checkpoint_current`)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        keep_last_checkpoint_current(self)
