"""The sample data set written in the published data sets' layouts, to try their configs offline.

* :func:`write_isoformer_layout`: IsoFormer's ``transcript_expression/GTEx_final.csv``
  (InstaDeepAI/multi_omics_transcript_expression): coordinates instead of DNA, ``split`` train/test,
  and a genome FASTA holding every gene's DNA window, half of them on the minus strand, so that
  cutting the windows (``genome:``) gives back the sample's DNA exactly.
* :func:`write_modelgenerator_layout`: ModelGenerator's directory
  (genbio-ai/transcript_isoform_expression_prediction): ``train_0.tsv``, ``train_1.tsv``,
  ``validation.tsv``, ``test.tsv`` with ``dna_seq``, ``rna_seq``, ``protein_seq`` and
  ``labels_0`` … ``labels_29``, without ids or genes.

``mmfuse data sample --layout isoformer --out DIR`` writes them from the command line.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd

from mmfuse.data.genomics.tissues import GTEX_TISSUES
from mmfuse.data.genomics.windows import reverse_complement
from mmfuse.data.samples.isoform import make_sample_table

__all__ = ["write_isoformer_layout", "write_modelgenerator_layout"]

_SPACER = 300  # bp of random DNA before, between and after the windows


def _held_out(key: str, fraction: float) -> bool:
    return int.from_bytes(hashlib.md5(key.encode()).digest()[:8], "big") / 2**64 < fraction


def write_isoformer_layout(directory: str | Path, num_genes: int = 240, seed: int = 0,
                           test_fraction: float = 0.2) -> tuple[Path, Path]:  # fmt: skip
    """Writes ``DIR/transcript_expression/GTEx_final.csv`` and ``DIR/genome.fa``; returns both paths.

    Genes alternate between contigs ``chr1`` and ``chr2`` and between strands; the TSS of each lies
    at index ``len(DNA) // 2`` of its window, as :class:`~mmfuse.data.genomics.windows.GenomeWindows` cuts
    them. ``split`` is ``train`` or ``test`` by gene (no validation, as the published file).
    """
    directory = Path(directory)
    table = make_sample_table(num_genes, seed)
    rng = np.random.default_rng([seed, 7])
    contigs: dict[str, list[str]] = {"chr1": [], "chr2": []}
    offsets = {"chr1": 0, "chr2": 0}
    placed: dict[str, tuple[str, str, int]] = {}  # gene -> contig, strand, tss (0-based)
    for i, (gene, dna) in enumerate(table.groupby("gene_id", sort=False)["DNA"].first().items()):
        contig, strand = ("chr1", "chr2")[i % 2], "+-"[(i // 2) % 2]
        spacer = "".join(rng.choice(list("ACGT"), _SPACER))
        contigs[contig].append(spacer)
        offsets[contig] += _SPACER
        half = len(dna) // 2
        if strand == "+":
            contigs[contig].append(dna)
            tss = offsets[contig] + half
        else:  # the window read on the minus strand is the reverse complement of the genome
            contigs[contig].append(reverse_complement(dna))
            tss = offsets[contig] + len(dna) - 1 - half
        offsets[contig] += len(dna)
        placed[str(gene)] = (contig, strand, tss)
    genome = directory / "genome.fa"
    directory.mkdir(parents=True, exist_ok=True)
    with genome.open("w") as handle:
        for contig, pieces in contigs.items():
            sequence = "".join(pieces) + "".join(rng.choice(list("ACGT"), _SPACER))
            handle.write(f">{contig}\n")
            handle.writelines(sequence[i : i + 60] + "\n" for i in range(0, len(sequence), 60))
    rows = []
    for record in table.itertuples(index=False):
        contig, strand, tss = placed[record.gene_id]
        span = len(record.RNA)
        start, end = (tss + 1, tss + span) if strand == "+" else (tss + 2 - span, tss + 1)
        cds = record.RNA[record.cds_start : record.cds_end] if record.Protein else ""
        rows.append({
            "transcript_id_gtex": record.transcript_id, "gene_id_gtex": record.gene_id,
            "split": "test" if _held_out(record.gene_id, test_fraction) else "train",
            "chr": contig, "strand": strand, "start": max(start, 1), "end": end, "RNA": record.RNA,
            "5UTR": record.RNA[: record.cds_start], "CDS": cds, "3UTR": record.RNA[record.cds_end :],
            "Protein": record.Protein,
        })  # fmt: skip
    out = pd.concat([pd.DataFrame(rows), table[list(GTEX_TISSUES)]], axis=1)
    csv = directory / "transcript_expression" / "GTEx_final.csv"
    csv.parent.mkdir(parents=True, exist_ok=True)
    out.to_csv(csv, index=False)
    return csv, genome


def write_modelgenerator_layout(directory: str | Path, num_genes: int = 240, seed: int = 0) -> Path:
    """Writes ModelGenerator's files (two training shards, validation, test; split by gene); returns the directory."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    table = make_sample_table(num_genes, seed)
    out = table[["DNA", "RNA", "Protein", *GTEX_TISSUES]].set_axis(
        ["dna_seq", "rna_seq", "protein_seq", *(f"labels_{i}" for i in range(len(GTEX_TISSUES)))], axis=1
    )
    u = np.array([int.from_bytes(hashlib.md5(g.encode()).digest()[:8], "big") / 2**64 for g in table.gene_id])
    files = {"train_0.tsv": u < 0.35, "train_1.tsv": (u >= 0.35) & (u < 0.7), "validation.tsv": (u >= 0.7) & (u < 0.85),
             "test.tsv": u >= 0.85}  # fmt: skip
    for name, rows in files.items():
        out[rows].to_csv(directory / name, sep="\t", index=False)
    return directory
