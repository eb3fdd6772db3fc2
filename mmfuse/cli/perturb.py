"""``mmfuse perturb``: in-silico perturbation of genes in cells (:mod:`mmfuse.analysis.perturb`)."""

from __future__ import annotations

from collections.abc import Sequence

from mmfuse.analysis.perturb import PerturbationWriter, perturb
from mmfuse.cli.analyses import AnalysisCLI, run_command

__all__ = ["PerturbCLI", "main"]


class PerturbCLI(AnalysisCLI):
    command, writer, section = "perturb", PerturbationWriter, "perturbation"


def main(argv: Sequence[str] | None = None) -> int:
    return run_command(PerturbCLI, argv, lambda cli: perturb(cli.trainer, cli.model, cli.datamodule,
                                                              cli.config.get("ckpt_path")))  # fmt: skip
