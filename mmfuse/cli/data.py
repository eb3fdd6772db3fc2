"""``mmfuse sample-data`` and ``mmfuse data``: plain argparse commands that write data files (no Lightning)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from mmfuse.errors import MmfuseError

__all__ = ["data", "sample_data"]


def sample_data(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="mmfuse sample-data", description="Write the bundled sample data set.")
    parser.add_argument("--out", help="output file: .csv, .tsv or .parquet (a directory with --layout)")
    parser.add_argument(
        "--genome", metavar="DIR",
        help="also (or only) write the sample as a genome: DIR/genome.fa, DIR/genes.gtf (its transcripts) and "
        "DIR/variants.vcf (planted variants), the inputs of `mmfuse score-variants`",
    )  # fmt: skip
    parser.add_argument("--genes", type=int, default=240, help="number of genes (default 240)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument(
        "--layout", choices=("isoformer", "modelgenerator"),
        help="write it as a published data set is laid out, into the directory --out: isoformer "
        "(transcript_expression/GTEx_final.csv with coordinates, and genome.fa to cut the DNA from) or "
        "modelgenerator (train_0.tsv, train_1.tsv, validation.tsv, test.tsv)",
    )  # fmt: skip
    options = parser.parse_args(argv)
    if options.out is None and options.genome is None:
        parser.error("give --out FILE (the table), --genome DIR (a genome, annotation and VCF), or both")
    if options.genome is not None:
        from mmfuse.data.samples.genome import write_sample_genome

        fasta, gtf, vcf = write_sample_genome(options.genome, options.genes, options.seed)
        print(f"Wrote {fasta}, {gtf} and {vcf}; score the variants with: mmfuse score-variants --config CONFIG "
              f"--ckpt_path CKPT --vcf {vcf} --fasta {fasta} --annotation {gtf} --variants.window 1024")  # fmt: skip
        if options.out is None:
            return 0
    out = Path(options.out)
    if options.layout == "isoformer":
        from mmfuse.data.samples.layouts import write_isoformer_layout

        csv, genome = write_isoformer_layout(out, options.genes, options.seed)
        print(f"Wrote {csv} and {genome}; read them with columns: isoformer, path: {out}, "
              f"genome: {{fasta: {genome}, window: 1024}}")  # fmt: skip
        return 0
    if options.layout == "modelgenerator":
        from mmfuse.data.samples.layouts import write_modelgenerator_layout

        print(f"Wrote {write_modelgenerator_layout(out, options.genes, options.seed)}; read it with "
              f"columns: modelgenerator, path: {out}")  # fmt: skip
        return 0
    from mmfuse.data.samples.isoform import make_sample_table
    from mmfuse.io import atomic_path

    table = make_sample_table(options.genes, options.seed)
    with atomic_path(out) as tmp:
        if out.suffix == ".parquet":
            table.to_parquet(tmp, index=False)
        else:
            table.to_csv(tmp, index=False, sep="\t" if out.suffix == ".tsv" else ",")
    print(f"Wrote {len(table)} transcripts of {table['gene_id'].nunique()} genes to {out}")
    return 0


def data(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="mmfuse data", description="Build data tables from public files.")
    commands = parser.add_subparsers(dest="command", required=True)
    build = commands.add_parser(
        "build-isoform",
        description="Build an isoform-expression table (IsoformExpression's input) from a genome FASTA, a "
        "GTF/GFF3 annotation and a GTEx transcript TPM GCT: TSS-centred DNA, spliced RNA, translated protein "
        "and log(1 + mean TPM) per tissue, for the transcripts found in both the annotation and the GCT.",
    )
    build.add_argument("--fasta", required=True, help="genome FASTA; its .fai index is built beside it if missing")
    build.add_argument("--annotation", required=True, help="GTF or GFF3 (GENCODE or Ensembl), optionally .gz")
    build.add_argument("--expression", required=True, help="GTEx transcript TPM file (.gct or .gct.gz)")
    build.add_argument(
        "--sample-tissues", required=True, help="tab-separated sample attributes (GTEx SampleAttributesDS)"
    )
    build.add_argument("--out", required=True, help="output Parquet file (written atomically)")
    build.add_argument(
        "--window", type=int, default=196_608, help="DNA window in bp, centred on the TSS (default 196608)"
    )
    build.add_argument(
        "--coordinates", action="store_true",
        help="write each transcript's contig, strand and 0-based TSS instead of its DNA window (a small table; "
        "IsoformExpression cuts the windows from the genome: genome: {fasta: FASTA, contig_column: contig, "
        "tss_column: tss})",
    )  # fmt: skip
    build.add_argument("--tissue-column", default="SMTS", help="tissue column of --sample-tissues (default SMTS)")
    build.add_argument(
        "--sample-column", default="SAMPID", help="sample id column of --sample-tissues (default SAMPID)"
    )
    build.add_argument("--min-samples", type=int, default=1, help="leave out tissues with fewer samples (default 1)")
    build.add_argument(
        "--bad-values", choices=("error", "skip"), default="error",
        help="NaN or negative TPM: stop naming the line (error, default) or leave the transcript out (skip)",
    )  # fmt: skip
    options = parser.parse_args(argv)
    from mmfuse.data.genomics.isoform_table import build_isoform_table

    try:
        summary = build_isoform_table(
            options.fasta, options.annotation, options.expression, options.sample_tissues, options.out,
            window=options.window, tissue_column=options.tissue_column, sample_column=options.sample_column,
            min_samples=options.min_samples, bad_values=options.bad_values, coordinates=options.coordinates,
        )  # fmt: skip
    except MmfuseError as exc:
        print(f"mmfuse: error: {exc}", file=sys.stderr)
        raise SystemExit(1) from None
    print("\n".join([f"Wrote {options.out}", *summary.lines()]))
    return 0
