"""The bundled sample data set: synthetic transcripts with a planted, documented signal.

It is generated, deterministically from a seed, rather than shipped as a file. Its form follows the
IsoFormer data set: per transcript a TSS-centred DNA window, the spliced transcript (5'UTR, CDS,
3'UTR; written with T like cDNA), the protein translated from its CDS, and log(1 + TPM) in the 30
GTEx tissues. Genes have 2-4 isoforms that share the TSS (hence the DNA window) and differ by a
cassette exon in the CDS and by the choice of a short or long 3'UTR.

The planted signal, each part carried by one modality only:

* **DNA - promoter motif, gene level.** Each gene follows one of four tissue programs, or none.
  Six copies of the program's transcription-factor motif (:data:`MOTIF_COPIES`; a homotypic
  cluster) sit 40-300 bp upstream of the TSS and
  raise expression by :data:`PROGRAM_EFFECT` in the program's tissues (:data:`PROGRAMS`). The
  promoter is not transcribed, so neither the RNA nor the protein shows it.
* **RNA - 3'UTR AU-rich elements, isoform level.** Long-3'UTR isoforms carry 1-3 copies of the
  AU-rich element ``TTATTTATT``, each lowering expression in every tissue by :data:`ARE_EFFECT`
  (mRNA decay). The DNA window ends before any 3'UTR; the protein does not contain it.
* **Protein - a motif peptide, isoform level.** In half of the genes the cassette exon encodes the
  peptide :data:`PROTEIN_MOTIF`; isoforms that include it gain :data:`PROTEIN_EFFECT` in the
  secretory tissues (:data:`SECRETORY_TISSUES`). The RNA holds it too (the protein is translated
  from it), but written with randomly chosen synonymous codons, so it is a plain amino-acid pattern
  only in the protein. The cassette exon lies outside the DNA window.

On top come a gene base level (sd :data:`GENE_SD`), an isoform effect (sd :data:`ISOFORM_SD`) and
measurement noise (sd :data:`NOISE_SD`) that no sequence explains; :func:`planted_signal` gives
the noiseless part, so tests can tell how much a model can learn.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from Bio.Data import CodonTable

from mmfuse.data.genomics.tissues import GTEX_TISSUES

__all__ = [
    "ARE",
    "ARE_EFFECT",
    "PROGRAMS",
    "PROGRAM_EFFECT",
    "PROTEIN_EFFECT",
    "PROTEIN_MOTIF",
    "SECRETORY_TISSUES",
    "GeneModel",
    "SampleTranscript",
    "make_sample_table",
    "planted_signal",
    "sample_transcripts",
]

#: program name -> (promoter motif, tissues it raises)
PROGRAMS: dict[str, tuple[str, tuple[str, ...]]] = {
    "neural": ("CAGCTGCC", ("Brain", "Pituitary", "Nerve", "Adrenal Gland")),
    "muscle": ("CCATATATGG", ("Muscle", "Heart", "Blood Vessel", "Esophagus")),
    "hepatic": ("GTTAATGATTAAC", ("Liver", "Kidney", "Adipose Tissue", "Breast")),
    "immune": ("GGGAATTCCC", ("Blood", "Spleen", "Lung", "Small Intestine")),
}
PROGRAM_EFFECT = 2.0
MOTIF_COPIES = 6
ARE = "TTATTTATT"
ARE_EFFECT = 0.5
PROTEIN_MOTIF = "CWHWCHWC"
PROTEIN_EFFECT = 2.0
SECRETORY_TISSUES: tuple[str, ...] = (
    "Pancreas",
    "Salivary Gland",
    "Stomach",
    "Thyroid",
    "Prostate",
    "Colon",
    "Cervix Uteri",
    "Vagina",
)
GENE_SD, ISOFORM_SD, NOISE_SD = 0.5, 0.3, 0.35

_DNA_WINDOW = 1024
_HALF = _DNA_WINDOW // 2
# amino-acid frequencies (UniProt), used for background protein sequence
_AA = "ACDEFGHIKLMNPQRSTVWY"
_AA_FREQ = np.array(
    [8.3, 1.4, 5.5, 6.8, 3.9, 7.1, 2.3, 5.9, 5.8, 9.7, 2.4, 4.1, 4.7, 3.9, 5.5, 6.6, 5.3, 6.9, 1.1, 2.9]
)
_CODONS: dict[str, list[str]] = {}
for _codon, _aa in sorted(CodonTable.unambiguous_dna_by_id[1].forward_table.items()):
    _CODONS.setdefault(_aa, []).append(_codon)
_STOPS = ("TAA", "TAG", "TGA")


@dataclass(frozen=True)
class GeneModel:
    """A sample gene's pieces, 5'->3' on its strand, as drawn (:mod:`mmfuse.data.samples.genome` lays
    them out in a genome): ``promoter`` (512 bp, up to the TSS), ``exon1`` (5'UTR + CDS start),
    ``intron1``, ``exon2``, ``cassette`` (skipped by some isoforms), ``exon4`` (the CDS's end with its stop
    codon), ``utr3_short`` and ``extension`` (the long 3'UTR's rest, with the AU-rich elements)."""

    promoter: str
    exon1: str
    intron1: str
    exon2: str
    cassette: str
    exon4: str
    utr3_short: str
    extension: str


@dataclass
class SampleTranscript:
    """One transcript of the sample data set (a row of :func:`make_sample_table`)."""

    gene: int
    isoform: int
    program: int  # -1: no program
    are_count: int
    has_motif: bool
    dna: str
    rna: str
    protein: str
    cds_start: int
    cds_end: int
    model: GeneModel | None = None
    cassette_in: bool = True
    long_utr: bool = False


def _random_dna(rng: np.random.Generator, n: int, gc: float = 0.42) -> str:
    p = [(1 - gc) / 2, gc / 2, gc / 2, (1 - gc) / 2]
    return "".join(rng.choice(list("ACGT"), size=n, p=p))


def _back_translate(rng: np.random.Generator, peptide: str) -> str:
    return "".join(_CODONS[aa][rng.integers(len(_CODONS[aa]))] for aa in peptide)


def _random_peptide(rng: np.random.Generator, n: int) -> str:
    return "".join(rng.choice(list(_AA), size=n, p=_AA_FREQ / _AA_FREQ.sum()))


def _plant(rng: np.random.Generator, seq: str, motif: str, copies: int, lo: int, hi: int) -> str:
    """Writes ``copies`` non-overlapping copies of ``motif`` into ``seq[lo:hi]``."""
    chars = list(seq)
    slots = (hi - lo) // (len(motif) + 2)
    for slot in sorted(rng.choice(slots, size=copies, replace=False)):
        start = lo + slot * (len(motif) + 2)
        chars[start : start + len(motif)] = motif
    return "".join(chars)


def _gene(rng: np.random.Generator, g: int) -> list[SampleTranscript]:
    program = int(rng.integers(-1, len(PROGRAMS)))
    promoter = _random_dna(rng, _HALF)
    promoter = promoter[:-32] + "TATAAAAG" + promoter[-24:]  # a TATA box for every gene (no signal)
    if program >= 0:
        motif = list(PROGRAMS.values())[program][0]
        promoter = _plant(rng, promoter, motif, MOTIF_COPIES, _HALF - 300, _HALF - 40)

    utr5 = _random_dna(rng, int(rng.integers(60, 150)), gc=0.55)
    has_motif = bool(rng.random() < 0.5)
    cassette = _random_peptide(rng, int(rng.integers(6, 14)))
    cassette += PROTEIN_MOTIF if has_motif else _random_peptide(rng, len(PROTEIN_MOTIF))
    cassette += _random_peptide(rng, int(rng.integers(6, 14)))
    part_a = "M" + _random_peptide(rng, int(rng.integers(30, 60)))
    part_b = _random_peptide(rng, int(rng.integers(40, 90)))
    part_c = _random_peptide(rng, int(rng.integers(40, 90)))
    exon1 = utr5 + _back_translate(rng, part_a)
    exon2 = _back_translate(rng, part_b)
    exon3 = _back_translate(rng, cassette)
    stop = _STOPS[rng.integers(3)]
    utr3_short = _random_dna(rng, int(rng.integers(120, 250)), gc=0.38)
    extension = _random_dna(rng, int(rng.integers(200, 500)), gc=0.35)
    are_long = int(rng.integers(1, 4))
    extension = _plant(rng, extension, ARE, are_long, 0, len(extension))
    exon4 = _back_translate(rng, part_c) + stop

    # genome downstream of the TSS: exon 1, then an intron long enough that every later exon,
    # and so every 3'UTR, lies outside the +-512 bp window
    intron1 = "GT" + _random_dna(rng, max(_HALF - len(exon1), 0) + int(rng.integers(50, 200)), gc=0.38) + "AG"
    dna = promoter + (exon1 + intron1)[:_HALF]
    model = GeneModel(promoter, exon1, intron1, exon2, exon3, exon4, utr3_short, extension)

    combos = [(cassette_in, long_3utr) for cassette_in in (True, False) for long_3utr in (True, False)]
    chosen = rng.choice(len(combos), size=int(rng.integers(2, 5)), replace=False)
    transcripts = []
    for i, k in enumerate(sorted(chosen)):
        include, long_utr = combos[k]
        cds = exon1[len(utr5) :] + exon2 + (exon3 if include else "") + exon4
        rna = utr5 + cds + utr3_short + (extension if long_utr else "")
        protein = part_a + part_b + (cassette if include else "") + part_c
        transcripts.append(
            SampleTranscript(
                gene=g,
                isoform=i,
                program=program,
                are_count=are_long if long_utr else 0,
                has_motif=has_motif and include,
                dna=dna,
                rna=rna,
                protein=protein,
                cds_start=len(utr5),
                cds_end=len(utr5) + len(cds),
                model=model,
                cassette_in=include,
                long_utr=long_utr,
            )  # fmt: skip
        )
    return transcripts


def _profiles() -> tuple[np.ndarray, np.ndarray]:
    programs = np.zeros((len(PROGRAMS), len(GTEX_TISSUES)))
    for p, (_, tissues) in enumerate(PROGRAMS.values()):
        programs[p, [GTEX_TISSUES.index(t) for t in tissues]] = 1.0
    secretory = np.zeros(len(GTEX_TISSUES))
    secretory[[GTEX_TISSUES.index(t) for t in SECRETORY_TISSUES]] = 1.0
    return programs, secretory


def planted_signal(program: Sequence[int], are_count: Sequence[int], has_motif: Sequence[bool]) -> np.ndarray:
    """The sequence-explained part of the targets, ``(N, 30)``, from each transcript's features."""
    programs, secretory = _profiles()
    program = np.asarray(program)
    dna = np.where(program[:, None] >= 0, programs[np.maximum(program, 0)], 0.0) * PROGRAM_EFFECT
    rna = -ARE_EFFECT * np.asarray(are_count, dtype=float)[:, None]
    protein = PROTEIN_EFFECT * np.asarray(has_motif, dtype=float)[:, None] * secretory[None, :]
    return dna + rna + protein


def _draw(num_genes: int, seed: int, noncoding_fraction: float) -> tuple[np.random.Generator, list[SampleTranscript],
                                                                        np.ndarray]:  # fmt: skip
    """The transcripts, which are non-coding, and the main random stream as the targets go on drawing from it."""
    rng = np.random.default_rng(seed)
    transcripts = [t for g in range(num_genes) for t in _gene(rng, g)]
    # drawn from their own stream, so the rest of the table does not depend on the fraction
    noncoding = np.random.default_rng([seed, 1]).random(len(transcripts)) < noncoding_fraction
    for t, nc in zip(transcripts, noncoding, strict=True):
        if nc:
            t.protein, t.has_motif = "", False
    return rng, transcripts, noncoding


def sample_transcripts(
    num_genes: int = 240, seed: int = 0, noncoding_fraction: float = 0.1
) -> list[tuple[SampleTranscript, bool]]:
    """The transcripts of :func:`make_sample_table` (same arguments, same order), each with whether it is
    non-coding; their :attr:`SampleTranscript.model` gives the gene's exons and introns."""
    _, transcripts, noncoding = _draw(num_genes, seed, noncoding_fraction)
    return [(t, bool(nc)) for t, nc in zip(transcripts, noncoding, strict=True)]


def make_sample_table(num_genes: int = 240, seed: int = 0, noncoding_fraction: float = 0.1) -> pd.DataFrame:
    """Generates the sample data set.

    Args:
        num_genes: number of genes (each with 2-4 isoforms).
        seed: random seed; the same seed gives the same table on every platform.
        noncoding_fraction: share of transcripts annotated non-coding (``biotype``
            ``processed_transcript``): they have no protein (an empty ``Protein``), so no protein
            signal, and exercise missing-modality handling.

    Returns:
        One row per transcript: ``transcript_id``, ``gene_id``, ``DNA`` (1,024 bp centred on the
        TSS), ``RNA``, ``Protein``, ``biotype``, ``cds_start``/``cds_end`` (0-based, in ``RNA``,
        stop codon included; the open reading frame of non-coding transcripts is kept), the ground
        truth (``program``, ``are_count``, ``has_motif``), the 30 tissue columns of
        :data:`~mmfuse.data.genomics.tissues.GTEX_TISSUES` (log(1 + TPM)) and ``expression_level``
        (``low``/``medium``/``high``: tertiles of the mean over tissues, for classification).
    """
    rng, transcripts, noncoding = _draw(num_genes, seed, noncoding_fraction)
    n = len(transcripts)
    signal = planted_signal(
        [t.program for t in transcripts], [t.are_count for t in transcripts], [t.has_motif for t in transcripts]
    )
    gene_level = rng.normal(2.5, GENE_SD, size=num_genes)
    tissue_offset = rng.normal(0.0, 0.2, size=len(GTEX_TISSUES))
    isoform_level = rng.normal(0.0, ISOFORM_SD, size=n)
    noise = rng.normal(0.0, NOISE_SD, size=(n, len(GTEX_TISSUES)))
    genes = np.array([t.gene for t in transcripts])
    targets = gene_level[genes, None] + tissue_offset[None, :] + isoform_level[:, None] + signal + noise
    targets = np.clip(targets, 0.0, None).astype(np.float32)

    table = pd.DataFrame(
        {
            "transcript_id": [f"SYNT{t.gene:05d}.{t.isoform + 1}" for t in transcripts],
            "gene_id": [f"SYNG{t.gene:05d}" for t in transcripts],
            "DNA": [t.dna for t in transcripts],
            "RNA": [t.rna for t in transcripts],
            "Protein": [t.protein for t in transcripts],
            "biotype": np.where(noncoding, "processed_transcript", "protein_coding"),
            "cds_start": [t.cds_start for t in transcripts],
            "cds_end": [t.cds_end for t in transcripts],
            "program": [t.program for t in transcripts],
            "are_count": [t.are_count for t in transcripts],
            "has_motif": [t.has_motif for t in transcripts],
        }
    )
    mean = targets.mean(axis=1)
    level = np.digitize(mean, np.quantile(mean, [1 / 3, 2 / 3]))
    table = pd.concat([table, pd.DataFrame(targets, columns=list(GTEX_TISSUES))], axis=1)
    table["expression_level"] = np.array(["low", "medium", "high"])[level]
    return table
