"""The synthetic data set of :class:`~mmfuse.data.TFBinding` (``path: sample``), written as real files.

It writes a genome FASTA, a ReMap-style peaks BED and a UniProt-style protein FASTA, which
:class:`~mmfuse.data.TFBinding` then reads like any other data (the same code path). The planted
signal needs all three modalities:

* three TFs (:data:`SAMPLE_MOTIFS`), each with a consensus-like DNA motif planted at the centre of
  each of its peaks, and a random protein of :data:`PROTEIN_LENGTH` residues;
* two contexts (cell types, :data:`SAMPLE_CONTEXT_MOTIFS`), each with its own motif planted
  :data:`CONTEXT_OFFSET` bp downstream of the centre of every peak in that context (a stand-in for
  the chromatin that differs between cell types).

Each site of the genome holds the peak of one experiment (TF, context), so a region bound in another
experiment (how :class:`~mmfuse.data.TFBinding` draws unbound records) carries another TF's motif, or
the same TF's motif beside the other context's motif: telling bound from unbound needs the DNA, the
TF and the context. Sites lie ``window + 64`` bp apart, so a window holds one site. The background is
uniform random DNA.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

__all__ = ["CONTEXT_OFFSET", "PEAK_WIDTH", "PROTEIN_LENGTH", "SAMPLE_CONTEXT_MOTIFS", "SAMPLE_MOTIFS", "write_sample"]

#: TF → the motif planted at the centre of its peaks (consensus-like: CTCF's core, a forkhead site,
#: HNF4A's DR1 element)
SAMPLE_MOTIFS = {"CTCF": "CCACCAGGGGGCGC", "FOXA1": "TGTTTACTTA", "HNF4A": "GGGGTCAAAGGTCA"}
#: context → the motif planted beside every peak in that context
SAMPLE_CONTEXT_MOTIFS = {"HepG2": "TGACTCAT", "MCF-7": "AGGTCACAGTGACCT"}
#: the context motif starts this many bp after the peak's centre
CONTEXT_OFFSET = 12
PEAK_WIDTH = 60
PROTEIN_LENGTH = 48
_AMINO_ACIDS = "ACDEFGHIKLMNPQRSTVWY"


def write_sample(
    directory: str | Path, peaks: int = 96, seed: int = 0, contigs: Sequence[str] = ("chr1", "chr2"), window: int = 256
) -> tuple[Path, Path, Path]:
    """Writes ``peaks.bed``, ``genome.fa`` and ``proteins.fasta`` into ``directory``.

    Args:
        directory: where the files go (it must exist).
        peaks: number of peaks (sites), spread evenly over ``contigs`` and the six experiments.
        seed: random seed; the same seed gives the same files.
        contigs: the contigs of the genome.
        window: the DNA window the data module will cut around each peak (sets the spacing of sites).

    Returns:
        The paths of the peaks BED, the genome FASTA and the proteins FASTA.

    Examples:
        >>> import tempfile
        >>> bed, fasta, proteins = write_sample(tempfile.mkdtemp(), peaks=6)
        >>> bed.read_text().splitlines()[2].split("\\t")[3] in {"CTCF:HepG2", "FOXA1:MCF-7", "HNF4A:HepG2",
        ...     "CTCF:MCF-7", "FOXA1:HepG2", "HNF4A:MCF-7"}
        True
    """
    directory = Path(directory)
    rng = np.random.default_rng(seed)
    experiments = [(tf, context) for tf in SAMPLE_MOTIFS for context in SAMPLE_CONTEXT_MOTIFS]
    assigned = [experiments[k % len(experiments)] for k in rng.permutation(peaks)]
    spacing = window + 64
    lines = [
        'track name=sample_peaks description="mmfuse synthetic TF peaks"',
        "#chrom\tstart\tend\tname\tscore\tstrand",
    ]
    records = []
    for i, contig in enumerate(contigs):
        sites = assigned[i :: len(contigs)]
        bases = np.array(list("ACGT"))[rng.integers(0, 4, size=(len(sites) + 1) * spacing)]
        for j, (tf, context) in enumerate(sites):
            centre = (j + 1) * spacing + int(rng.integers(-16, 17))
            motif, mark = SAMPLE_MOTIFS[tf], SAMPLE_CONTEXT_MOTIFS[context]
            bases[centre - len(motif) // 2 : centre - len(motif) // 2 + len(motif)] = list(motif)
            bases[centre + CONTEXT_OFFSET : centre + CONTEXT_OFFSET + len(mark)] = list(mark)
            half = PEAK_WIDTH // 2
            lines.append(f"{contig}\t{centre - half}\t{centre + half}\t{tf}:{context}\t1000\t.")
        sequence = "".join(bases)
        records.append(f">{contig}\n" + "\n".join(sequence[k : k + 60] for k in range(0, len(sequence), 60)))
    bed, fasta, proteins = directory / "peaks.bed", directory / "genome.fa", directory / "proteins.fasta"
    bed.write_text("\n".join(lines) + "\n")
    fasta.write_text("\n".join(records) + "\n")
    entries = []
    for k, tf in enumerate(SAMPLE_MOTIFS):
        residues = "M" + "".join(rng.choice(list(_AMINO_ACIDS), size=PROTEIN_LENGTH - 1))
        entries.append(f">sp|S{k:05d}|{tf}_SYNTH Synthetic {tf} OS=synthetic OX=0 GN={tf} PE=5 SV=1\n{residues}")
    proteins.write_text("\n".join(entries) + "\n")
    return bed, fasta, proteins
