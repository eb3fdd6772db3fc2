"""``mmfuse explain``: per-position attributions of chosen records (:mod:`mmfuse.analysis.explain`)."""

from __future__ import annotations

from collections.abc import Sequence

from lightning.pytorch.cli import LightningArgumentParser

from mmfuse.analysis.explain import ExplanationWriter, explain
from mmfuse.cli.analyses import AnalysisCLI, run_command

__all__ = ["ExplainCLI", "main"]


class ExplainCLI(AnalysisCLI):
    command, writer, section = "explain", ExplanationWriter, "attributions"

    def add_inputs(self, parser: LightningArgumentParser) -> None:
        parser.add_argument("--ids", type=list[str] | str | None, default=None,
                            help="the records to explain: `T1,T2` or a YAML list of ids, in this order")  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    return run_command(ExplainCLI, argv, lambda cli: explain(cli.trainer, cli.model, cli.datamodule,
                                                              cli.config.get("ckpt_path"), cli.config.get("ids")))
