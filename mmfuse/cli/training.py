"""``mmfuse fit``, ``validate``, ``test`` and ``predict``: LightningCLI's subcommands (:class:`MmfuseCLI`)."""

from __future__ import annotations

from collections.abc import Sequence

from mmfuse.cli.lightning import MmfuseCLI

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the subcommand ``argv`` starts with (``None``: LightningCLI reads ``sys.argv`` itself)."""
    MmfuseCLI(None if argv is None else list(argv))
    return 0
