"""The config parsing shared by the analyses (``mmfuse embed``, ``explain``, ``score-variants``).

An analysis reads the same YAML as ``mmfuse fit`` (trainer, model, data), plus ``--ckpt_path``, its writer's
section (``embeddings``, ``attributions``, ``variants``) and its own inputs; :class:`AnalysisCLI` builds the
trainer, the task and the data module from it, and the command's module runs the analysis
(:mod:`mmfuse.analysis`) on them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from lightning.pytorch.cli import LightningArgumentParser

from mmfuse.cli.lightning import MmfuseCLI

__all__ = ["AnalysisCLI", "run_command"]


class AnalysisCLI(MmfuseCLI):
    """The config of one analysis; subclasses name the command, its writer and its own arguments."""

    #: the writer's class and the section of its options
    writer: type
    section: str

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.link_arguments("data.target_names", "model.init_args.target_names", apply_on="instantiate")
        parser.add_lightning_class_args(self.writer, self.section)
        parser.add_argument("--ckpt_path", type=str | None, default=None,
                            help="the trained checkpoint (`last`: the newest last.ckpt of the config's runs)")
        self.add_inputs(parser)

    def add_inputs(self, parser: LightningArgumentParser) -> None:
        """The command's own arguments (none by default)."""


def run_command(cli_class: type[AnalysisCLI], argv: Sequence[str] | None, analysis: Callable[[Any], Any]) -> int:
    """Parses ``argv`` with ``cli_class`` (``None``: the process's arguments after the command) and runs
    ``analysis`` on the parsed CLI."""
    import sys

    cli = cli_class(list(sys.argv[2:] if argv is None else argv), run=False)
    analysis(cli)
    return 0
