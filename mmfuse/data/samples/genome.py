"""The bundled sample data set as a genome, an annotation and a VCF of planted variants.

:func:`write_sample_genome` lays every gene of :func:`~mmfuse.data.samples.isoform.make_sample_table` out in
a synthetic genome (``genome.fa``: contigs ``chr1`` and ``chr2``, genes on both strands, random DNA
between them) with its transcripts in ``genes.gtf`` (GENCODE style: exons, CDS without the stop
codon, ``stop_codon``; non-coding transcripts without CDS), so that
:func:`~mmfuse.data.genomics.isoform_table.transcript_sequences` with a 1,024-bp window gives back each transcript's
``DNA``, ``RNA`` and ``Protein`` as the table has them. Its exons are the generator's own: exon 1
(5'UTR and the CDS's start), exon 2, the cassette exon (left out by some isoforms) and the last exon
(the CDS's end and the short or long 3'UTR). Intron 1 is the sample's; introns 2 and 3, the strands
and the DNA between genes are drawn from their own random stream, so the table stays as it was.

``variants.vcf`` holds variants planted where the sample's signal lies (:data:`PLANTED`), and three
that show the counted policies: one on a contig the FASTA lacks, one whose REF is not the genome's
and a symbolic ``<DEL>`` allele.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mmfuse.data.genomics.windows import reverse_complement
from mmfuse.data.samples.isoform import ARE, PROGRAMS, PROTEIN_MOTIF, GeneModel, SampleTranscript, sample_transcripts
from mmfuse.io import atomic_path

__all__ = ["PLANTED", "write_sample_genome"]

#: the planted variants' VCF ids, and what each does
PLANTED = {
    "promoter_motif": "an SNV in the middle of a promoter-motif copy of a gene with a tissue program (DNA only)",
    "promoter_motif_2": "the same, in another copy of the gene's motif; a multi-allelic record (two ALT alleles)",
    "intron1": "an SNV in intron 1, inside the DNA window (DNA only)",
    "utr5": "an SNV in the 5'UTR (DNA and RNA)",
    "are_break": "breaks an AU-rich element TTATTTATT -> TTATGTATT of a long 3'UTR (RNA only)",
    "motif_missense": f"a missense in the protein motif {PROTEIN_MOTIF} (W -> S) of the cassette exon",
    "synonymous": "a synonymous SNV in exon 2",
    "nonsense": "an SNV making a stop codon in exon 2",
    "frameshift": "a 1-bp deletion in exon 2",
    "missing_contig": "on contig chrUn, which the FASTA lacks (counted, skipped)",
    "wrong_ref": "a REF that is not the genome's base (counted, skipped)",
    "symbolic": "a symbolic <DEL> allele (counted, skipped)",
}
_PROMOTER = 512
_CONTIGS = ("chr1", "chr2")
_SYNONYMOUS_THIRD = ("GC", "GG", "CC", "AC", "GT", "CT", "TC", "CG")  # fourfold-degenerate codons


@dataclass
class _Placed:
    """A gene's block in the genome: its pieces 5'->3' from the promoter on, at ``start`` on ``contig``."""

    model: GeneModel
    contig: str
    strand: str
    start: int
    introns: tuple[str, str]

    @property
    def pieces(self) -> list[str]:
        m = self.model
        return [m.promoter, m.exon1, m.intron1, m.exon2, self.introns[0], m.cassette, self.introns[1], m.exon4,
                m.utr3_short, m.extension]  # fmt: skip

    @property
    def sequence(self) -> str:
        """The block 5'->3' on the gene's strand."""
        return "".join(self.pieces)

    def offset(self, piece: int) -> int:
        """Where piece ``piece`` starts in :attr:`sequence`."""
        return sum(len(p) for p in self.pieces[:piece])

    def genomic(self, start: int, end: int) -> tuple[int, int]:
        """``[start, end)`` of :attr:`sequence` as 0-based forward-strand coordinates."""
        if self.strand == "+":
            return self.start + start, self.start + end
        length = len(self.sequence)
        return self.start + length - end, self.start + length - start

    def exons(self, transcript: SampleTranscript) -> list[tuple[int, int]]:
        """The transcript's exons in :attr:`sequence`, 5'->3'."""
        m = self.model
        last = len(m.exon4) + len(m.utr3_short) + (len(m.extension) if transcript.long_utr else 0)
        exons = [(self.offset(1), self.offset(2)), (self.offset(3), self.offset(4))]
        if transcript.cassette_in:
            exons.append((self.offset(5), self.offset(6)))
        return [*exons, (self.offset(7), self.offset(7) + last)]


def _spliced(exons: list[tuple[int, int]], start: int, end: int) -> list[tuple[int, int]]:
    """The pieces of spliced positions ``[start, end)`` in the coordinates the exons are given in."""
    pieces, offset = [], 0
    for a, b in exons:
        lo, hi = max(start, offset), min(end, offset + b - a)
        if lo < hi:
            pieces.append((a + lo - offset, a + hi - offset))
        offset += b - a
    return pieces


def _gtf(placed: _Placed, transcript: SampleTranscript, noncoding: bool, tid: str, gid: str) -> list[str]:
    exons = placed.exons(transcript)
    biotype = "processed_transcript" if noncoding else "protein_coding"
    attributes = f'gene_id "{gid}"; transcript_id "{tid}"; gene_type "protein_coding"; transcript_type "{biotype}";'
    starts = [placed.genomic(*e) for e in exons]
    span = (min(s for s, _ in starts), max(e for _, e in starts))
    rows = [("transcript", *span, ".")] + [("exon", s, e, ".") for s, e in starts]
    if not noncoding:
        for kind, lo, hi in (("CDS", transcript.cds_start, transcript.cds_end - 3),
                             ("stop_codon", transcript.cds_end - 3, transcript.cds_end)):  # fmt: skip
            done = 0
            for piece in _spliced(exons, lo, hi):
                s, e = placed.genomic(*piece)
                rows.append((kind, s, e, str((3 - done % 3) % 3)))
                done += piece[1] - piece[0]
    return [f"{placed.contig}\tmmfuse\t{kind}\t{s + 1}\t{e}\t.\t{placed.strand}\t{phase}\t{attributes}"
            for kind, s, e, phase in rows]  # fmt: skip


def _layout(
    num_genes: int, seed: int
) -> tuple[dict[str, str], list[_Placed], list[tuple[SampleTranscript, bool, _Placed]]]:
    rng = np.random.default_rng([seed, 2])  # its own stream: the table's draws stay as they were

    def dna(n: int) -> str:
        return "".join(rng.choice(list("ACGT"), size=n))

    contigs: dict[str, list[str]] = {c: [] for c in _CONTIGS}
    lengths = dict.fromkeys(_CONTIGS, 0)
    genes: dict[int, _Placed] = {}
    transcripts = []
    for transcript, noncoding in sample_transcripts(num_genes, seed):
        if transcript.gene not in genes:
            assert transcript.model is not None
            contig = _CONTIGS[0] if transcript.gene < (num_genes + 1) // 2 else _CONTIGS[1]
            strand = "+-"[int(rng.integers(2))]
            introns = tuple("GT" + dna(int(rng.integers(80, 400))) + "AG" for _ in range(2))
            spacer = dna(int(rng.integers(300, 800)))
            contigs[contig].append(spacer)
            lengths[contig] += len(spacer)
            placed = _Placed(transcript.model, contig, strand, lengths[contig], introns)  # type: ignore[arg-type]
            block = placed.sequence
            contigs[contig].append(block if strand == "+" else reverse_complement(block))
            lengths[contig] += len(block)
            genes[transcript.gene] = placed
        transcripts.append((transcript, noncoding, genes[transcript.gene]))
    for contig in _CONTIGS:
        contigs[contig].append(dna(500))
    return {c: "".join(parts) for c, parts in contigs.items()}, list(genes.values()), transcripts


def _find_gene(transcripts: list[tuple[SampleTranscript, bool, _Placed]], used: set[int],
               test) -> tuple[SampleTranscript, _Placed]:  # fmt: skip
    """The first coding transcript of a gene not used yet that passes ``test``."""
    found = next((t, p) for t, nc, p in transcripts if not nc and t.gene not in used and test(t, p))
    used.add(found[0].gene)
    return found


class _Vcf:
    """VCF records of changes written 5'->3' on a gene's strand."""

    def __init__(self, genome: dict[str, str]) -> None:
        self.genome, self.lines = genome, []

    def snv(self, name: str, placed: _Placed, at: int, bases: str) -> None:
        """Base ``at`` of the gene's block becomes each of ``bases`` (strand-relative)."""
        position, _ = placed.genomic(at, at + 1)
        alts = bases if placed.strand == "+" else reverse_complement(bases)[::-1]
        ref = self.genome[placed.contig][position]
        self.lines.append((placed.contig, position + 1, name, ref, ",".join(alts)))

    def deletion(self, name: str, placed: _Placed, at: int) -> None:
        position, _ = placed.genomic(at, at + 1)
        sequence = self.genome[placed.contig]
        self.lines.append(
            (placed.contig, position, name, sequence[position - 1 : position + 1], sequence[position - 1])
        )

    def write(self, path: Path) -> None:
        header = ["##fileformat=VCFv4.2", "##source=mmfuse sample-data --genome",
                  *(f"##contig=<ID={c},length={len(s)}>" for c, s in self.genome.items()), "##contig=<ID=chrUn>",
                  '##ALT=<ID=DEL,Description="Deletion">', "#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO"]  # fmt: skip
        order = {c: i for i, c in enumerate([*self.genome, "chrUn"])}
        records = sorted(self.lines, key=lambda r: (order[r[0]], r[1]))
        body = [f"{c}\t{p}\t{n}\t{r}\t{a}\t.\tPASS\t." for c, p, n, r, a in records]
        with atomic_path(path) as tmp:
            tmp.write_text("\n".join([*header, *body]) + "\n")


def _codon_change(exon: str, frame: int, test) -> tuple[int, str] | None:
    """The first (position in ``exon``, new base) whose codon (read from ``frame``) passes ``test(old, new)``."""
    from Bio.Seq import Seq

    for start in range(frame, len(exon) - 2, 3):
        codon = exon[start : start + 3]
        for k in range(3):
            for base in "ACGT":
                new = codon[:k] + base + codon[k + 1 :]
                if new != codon and test(str(Seq(codon).translate()), str(Seq(new).translate()), codon, k):
                    return start + k, base
    return None


def _plant(vcf: _Vcf, transcripts: list[tuple[SampleTranscript, bool, _Placed]]) -> None:
    motifs = [motif for motif, _ in PROGRAMS.values()]
    used: set[int] = set()  # one gene per signal
    transcript, placed = _find_gene(transcripts, used, lambda t, p: t.program >= 0)
    motif = motifs[transcript.program]
    first = placed.model.promoter.find(motif)
    second = placed.model.promoter.find(motif, first + len(motif))
    middle = len(motif) // 2
    swap = {"A": "C", "C": "A", "G": "T", "T": "G"}
    vcf.snv("promoter_motif", placed, first + middle, swap[motif[middle]])
    vcf.snv("promoter_motif_2", placed, second + middle, "".join(b for b in "ACGT" if b != motif[middle])[:2])
    vcf.snv("intron1", placed, placed.offset(2) + 60, swap[placed.model.intron1[60]])
    vcf.snv("utr5", placed, placed.offset(1) + 20, swap[placed.model.exon1[20]])
    # the RNA signal: an AU-rich element of a long 3'UTR broken in its middle
    transcript, placed = _find_gene(transcripts, used, lambda t, p: t.long_utr and ARE in p.model.extension)
    at = placed.offset(9) + placed.model.extension.find(ARE) + 4
    vcf.snv("are_break", placed, at, "G")
    # the protein signal: W -> S in the cassette's motif
    transcript, placed = _find_gene(transcripts, used, lambda t, p: t.has_motif)
    peptide_at = _translation(placed.model.cassette).find(PROTEIN_MOTIF) + 1  # its first W
    vcf.snv("motif_missense", placed, placed.offset(5) + 3 * peptide_at + 1, "C")  # TGG -> TCG
    # coding changes in exon 2 of a gene on the other strand (exon 2 is read from its first base: exon 1 ends a codon)
    transcript, placed = _find_gene(transcripts, used, lambda t, p: p.strand != placed.strand)
    exon2, base = placed.model.exon2, placed.offset(3)
    synonymous = _codon_change(exon2, 0, lambda old, new, codon, k: k == 2 and codon[:2] in _SYNONYMOUS_THIRD)
    nonsense = _codon_change(exon2, 0, lambda old, new, codon, k: new == "*")
    for name, change in (("synonymous", synonymous), ("nonsense", nonsense)):
        assert change is not None
        vcf.snv(name, placed, base + change[0], change[1])
    vcf.deletion("frameshift", placed, base + 31)
    # the counted policies
    position, _ = placed.genomic(placed.offset(3) + 40, placed.offset(3) + 41)
    genome_base = vcf.genome[placed.contig][position]
    wrong = swap[genome_base]
    vcf.lines.append((placed.contig, position + 1, "wrong_ref", wrong, swap[wrong]))
    vcf.lines.append(("chrUn", 1000, "missing_contig", "A", "G"))
    vcf.lines.append((placed.contig, position + 11, "symbolic", vcf.genome[placed.contig][position + 10], "<DEL>"))


def _translation(coding: str) -> str:
    from Bio.Seq import Seq

    return str(Seq(coding[: len(coding) // 3 * 3]).translate())


def write_sample_genome(directory: str | Path, num_genes: int = 240, seed: int = 0) -> tuple[Path, Path, Path]:
    """Writes ``genome.fa``, ``genes.gtf`` and ``variants.vcf`` of the sample data set into ``directory``.

    Args:
        directory: created if missing; the three files are written atomically.
        num_genes: genes of the sample (as ``make_sample_table``'s ``num_genes``).
        seed: the sample's seed.

    Returns:
        The FASTA, the GTF and the VCF.
    """
    directory = Path(directory).expanduser()
    directory.mkdir(parents=True, exist_ok=True)
    genome, genes, transcripts = _layout(num_genes, seed)
    fasta, gtf, vcf = directory / "genome.fa", directory / "genes.gtf", directory / "variants.vcf"
    with atomic_path(fasta) as tmp, open(tmp, "w") as handle:
        for contig, sequence in genome.items():
            handle.write(f">{contig}\n")
            handle.writelines(sequence[i : i + 80] + "\n" for i in range(0, len(sequence), 80))
    Path(f"{fasta}.fai").unlink(missing_ok=True)  # an index of an earlier genome would be wrong
    lines = ["##description: the mmfuse sample data set's transcripts (mmfuse sample-data --genome)"]
    for transcript, noncoding, placed in transcripts:
        lines += _gtf(placed, transcript, noncoding, f"SYNT{transcript.gene:05d}.{transcript.isoform + 1}",
                      f"SYNG{transcript.gene:05d}")  # fmt: skip
    with atomic_path(gtf) as tmp:
        tmp.write_text("\n".join(lines) + "\n")
    planted = _Vcf(genome)
    if num_genes >= 4:
        _plant(planted, transcripts)
    planted.write(vcf)
    return fasta, gtf, vcf
