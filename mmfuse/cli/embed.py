"""``mmfuse embed``: each record's embeddings to a file (:mod:`mmfuse.analysis.embed`)."""

from __future__ import annotations

from collections.abc import Sequence

from mmfuse.analysis.embed import EmbeddingWriter, embed
from mmfuse.cli.analyses import AnalysisCLI, run_command

__all__ = ["EmbedCLI", "main"]


class EmbedCLI(AnalysisCLI):
    command, writer, section = "embed", EmbeddingWriter, "embeddings"


def main(argv: Sequence[str] | None = None) -> int:
    return run_command(EmbedCLI, argv, lambda cli: embed(cli.trainer, cli.model, cli.datamodule,
                                                          cli.config.get("ckpt_path")))  # fmt: skip
