"""``mmfuse score-variants``: the predicted effect of a VCF's variants (:mod:`mmfuse.analysis.variants`)."""

from __future__ import annotations

from collections.abc import Sequence

from lightning.pytorch.cli import LightningArgumentParser

from mmfuse.analysis.variants import VariantWriter, score_variants
from mmfuse.cli.analyses import AnalysisCLI, run_command

__all__ = ["ScoreVariantsCLI", "main"]


class ScoreVariantsCLI(AnalysisCLI):
    command, writer, section = "score-variants", VariantWriter, "variants"

    def add_inputs(self, parser: LightningArgumentParser) -> None:
        parser.add_argument("--vcf", type=str | None, default=None,
                            help="the variants: .vcf, bgzipped .vcf.gz or .bcf (read with pysam)")  # fmt: skip
        parser.add_argument("--fasta", type=str | None, default=None,
                            help="the genome FASTA the VCF was called against (.fai built if missing)")
        parser.add_argument("--annotation", type=str | None, default=None,
                            help="the transcripts: GTF or GFF3, optionally gzipped")  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    def run(cli: ScoreVariantsCLI) -> None:
        score_variants(cli.trainer, cli.model, cli.datamodule, cli.config.get("ckpt_path"),
                       cli.config.get("vcf"), cli.config.get("fasta"), cli.config.get("annotation"))  # fmt: skip

    return run_command(ScoreVariantsCLI, argv, run)
