"""``mmfuse fit``, ``validate``, ``test`` and ``predict``: LightningCLI's subcommands (:class:`MmfuseCLI`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from mmfuse.cli.lightning import MmfuseCLI, rank_zero

if TYPE_CHECKING:
    from mmfuse.training import Stop

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the subcommand ``argv`` starts with (``None``: LightningCLI reads ``sys.argv`` itself)."""
    try:
        MmfuseCLI(None if argv is None else list(argv))
    except SystemExit as exc:
        stop = getattr(exc, "mmfuse_stop", None)  # a fit stopped by a signal (training.StopOnSignal)
        if stop is not None:
            _write_stop(stop)
        raise
    return 0


def _write_stop(stop: Stop) -> None:
    """``summary_fit.json`` of a fit a signal stopped: ``"status": "stopped"``, the step and ``last.ckpt``."""
    from mmfuse.cli.summary import write_summary

    if rank_zero():
        write_summary({
            "command": "fit", "status": "stopped", "signal": stop.signal, "global_step": stop.step,
            "run_dir": stop.run_dir, "last_checkpoint": stop.checkpoint, "error": stop.message,
        }, stop.run_dir)  # fmt: skip
