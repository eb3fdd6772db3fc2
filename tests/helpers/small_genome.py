"""A small genome, GTF and VCF written by a test: one coding gene on each strand, with known codons.

Contig ``chr1`` (2,800 bp) holds gene GPLUS on ``+`` and gene GMINUS on ``-``; both give the same
300-nt RNA from three 100-nt exons: 5'UTR RNA[0:30], CDS RNA[30:270) (80 codons, the last a stop),
3'UTR RNA[270:300). GPLUS has a second isoform, TPLUS2, without the middle exon (out of frame: 100
nt). Codons planted for the tests (0-based codon index, RNA position of its first base):

* 5 at RNA 45: ``CTG`` (L): its third base to A is synonymous (CTA);
* 10 at RNA 60: ``AAA`` (K): its middle base to G is missense K11R;
* 40 at RNA 150: ``TGG`` (W): its third base to A is a stop (W41*);
* 79 at RNA 267: the stop ``TAA``.

With ``WINDOW`` 600 the DNA windows are [700, 1300) (GPLUS, TSS 1000) and [2300, 2900) (GMINUS, TSS
2599: past the contig's end, padded).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from Bio.Seq import Seq

WINDOW = 600
LENGTH = 2800
EXONS = {"+": [(1000, 1100), (1300, 1400), (1600, 1700)], "-": [(2500, 2600), (2200, 2300), (1900, 2000)]}
CODONS = {5: "CTG", 10: "AAA", 40: "TGG"}


def _revcomp(s: str) -> str:
    return str(Seq(s).reverse_complement())


def rna() -> str:
    rng = np.random.default_rng(7)
    sense = [c for c in (a + b + d for a in "ACGT" for b in "ACGT" for d in "ACGT") if c not in ("TAA", "TAG", "TGA")]
    codons = ["ATG", *(sense[i] for i in rng.integers(len(sense), size=78)), "TAA"]
    for index, codon in CODONS.items():
        codons[index] = codon
    utr5 = "".join(rng.choice(list("ACGT"), size=30))
    utr3 = "".join(rng.choice(list("ACGT"), size=30))
    return utr5 + "".join(codons) + utr3


def protein() -> str:
    return str(Seq(rna()[30:270]).translate()).rstrip("*")


def genomic(strand: str, i: int) -> int:
    """0-based genome position of RNA base ``i`` of the gene on ``strand``."""
    offset = i
    for start, end in EXONS[strand]:
        if offset < end - start:
            return start + offset if strand == "+" else end - 1 - offset
        offset -= end - start
    raise IndexError(i)


def genome_sequence() -> str:
    rng = np.random.default_rng(11)
    chars = list("".join(rng.choice(list("ACGT"), size=LENGTH)))
    transcript = rna()
    for strand in "+-":
        for i, base in enumerate(transcript):
            chars[genomic(strand, i)] = base if strand == "+" else _revcomp(base)
    return "".join(chars)


def _gtf_lines(transcript: str, gene: str, strand: str, exons: list[tuple[int, int]]) -> list[str]:
    attributes = f'gene_id "{gene}"; transcript_id "{transcript}"; transcript_biotype "protein_coding";'
    lines = [f"chr1\ttest\texon\t{s + 1}\t{e}\t.\t{strand}\t.\t{attributes}" for s, e in exons]
    coding = sorted(genomic(strand, i) for i in range(30, 267))
    stop = sorted(genomic(strand, i) for i in range(267, 270))
    for s, e in exons:  # CDS pieces of each exon (stop codon left out, GENCODE style)
        inside = [p for p in coding if s <= p < e]
        if inside:
            lines.append(f"chr1\ttest\tCDS\t{inside[0] + 1}\t{inside[-1] + 1}\t.\t{strand}\t0\t{attributes}")
    lines.append(f"chr1\ttest\tstop_codon\t{stop[0] + 1}\t{stop[-1] + 1}\t.\t{strand}\t0\t{attributes}")
    return lines


def write_inputs(directory: Path, records: list[str] | None = None) -> tuple[Path, Path, Path]:
    """Writes ``genome.fa``, ``genes.gtf`` and ``variants.vcf`` (the given record lines) into ``directory``."""
    fasta, gtf, vcf = directory / "genome.fa", directory / "genes.gtf", directory / "variants.vcf"
    sequence = genome_sequence()
    fasta.write_text(">chr1\n" + "\n".join(sequence[i : i + 60] for i in range(0, LENGTH, 60)) + "\n")
    lines = [*_gtf_lines("TPLUS1", "GPLUS", "+", EXONS["+"]), *_gtf_lines("TMINUS1", "GMINUS", "-", EXONS["-"])]
    two = [EXONS["+"][0], EXONS["+"][2]]
    lines += [f'chr1\ttest\texon\t{s + 1}\t{e}\t.\t+\t.\tgene_id "GPLUS"; transcript_id "TPLUS2"; '
              f'transcript_biotype "retained_intron";' for s, e in two]  # fmt: skip
    gtf.write_text("\n".join(lines) + "\n")
    write_vcf(vcf, records or [])
    return fasta, gtf, vcf


def write_vcf(path: Path, records: list[str]) -> Path:
    header = ["##fileformat=VCFv4.2", "##contig=<ID=chr1,length=2800>", '##FILTER=<ID=q10,Description="low">',
              "#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO"]  # fmt: skip
    path.write_text("\n".join([*header, *records]) + "\n")
    return path


def snv(strand: str, i: int, rna_base: str, name: str = ".") -> str:
    """The VCF line of RNA base ``i`` of the gene on ``strand`` becoming ``rna_base``."""
    position = genomic(strand, i)
    ref = genome_sequence()[position]
    alt = rna_base if strand == "+" else _revcomp(rna_base)
    return f"chr1\t{position + 1}\t{name}\t{ref}\t{alt}\t.\tPASS\t."


def genome_snv(position: int) -> tuple[str, str]:
    """The VCF line of an SNV at 0-based ``position`` (the next base of ACGT), and its ALT."""
    ref = genome_sequence()[position]
    alt = {"A": "C", "C": "G", "G": "T", "T": "A"}[ref]
    return f"chr1\t{position + 1}\t.\t{ref}\t{alt}\t.\tPASS\t.", alt


def deletion(strand: str, i: int, length: int = 1) -> str:
    """The VCF line deleting RNA bases ``i .. i + length - 1`` (genome order: the anchor base before them)."""
    positions = sorted(genomic(strand, k) for k in range(i, i + length))
    anchor = positions[0] - 1
    sequence = genome_sequence()
    return f"chr1\t{anchor + 1}\t.\t{sequence[anchor : positions[-1] + 1]}\t{sequence[anchor]}\t.\tPASS\t."
