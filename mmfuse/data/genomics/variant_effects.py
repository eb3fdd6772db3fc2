"""What a variant does to a transcript's model inputs: its DNA window, its spliced RNA and its protein.

:func:`variant_effect` builds both versions of a transcript's sequences exactly as ``mmfuse data
build-isoform`` builds them (:func:`~mmfuse.data.genomics.isoform_table.transcript_sequences`), the alternate one from
a copy of the genome around the transcript with the variant applied. Coordinates after an indel
shift by its length: exons, CDS and stop codon keep their bases, and the DNA window stays centred
on the (shifted) TSS, so an upstream insertion pushes the window's far end out rather than moving
the TSS. Bases a deletion removes leave the exons they were in; an insertion exactly at an exon's
boundary is intronic (only the DNA changes).

The protein is translated from the annotated start codon to the first stop codon, reading into the
3'UTR when a variant removes the stop (to the RNA's end if no stop follows). For an annotated CDS
ending in its stop codon that is build-isoform's ``Protein``; for a 3'-incomplete CDS the alternate
protein is translated over the annotated span instead, as the reference is.

Consequence classes (:data:`CONSEQUENCES`), one per transcript, the first that applies: outside the
exons ``splice_site`` (the two intronic bases at an exon boundary), ``intronic``, ``upstream`` or
``downstream`` (in the DNA window only); in a non-coding transcript's exon ``noncoding_exon``; in a
coding one ``5'UTR``/``3'UTR``, or in the CDS ``start_lost``, ``frameshift``, ``stop_gained``,
``stop_lost``, ``inframe_insertion``, ``inframe_deletion``, ``missense``, ``synonymous``. Mis-splicing
is not modelled: a splice-site variant changes the DNA, the RNA keeps the annotated exons.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from torch.utils.data import Dataset

from mmfuse.data.errors import DataError
from mmfuse.data.files.annotation import Transcript
from mmfuse.data.files.fasta import open_genome
from mmfuse.data.files.vcf import Variant
from mmfuse.data.genomics.isoform_table import genetic_code, transcript_sequences
from mmfuse.data.store.rows import Crop, crop_sequence

__all__ = ["CONSEQUENCES", "KINDS", "Effect", "VariantPairs", "buildable", "touches", "variant_effect"]

#: the sequences a variant's inputs are built as, by the modality a backbone reads
KINDS = ("dna", "rna", "protein")
CONSEQUENCES: dict[str, str] = {
    "upstream": "in the DNA window, 5' of the transcript (promoter): only the DNA changes",
    "downstream": "in the DNA window, 3' of the transcript's last base: only the DNA changes",
    "intronic": "in an intron: only the DNA changes (when the window holds it)",
    "splice_site": "one of the two intronic bases at an exon boundary (splicing not modelled: DNA only)",
    "noncoding_exon": "in an exon of a transcript without CDS: the RNA changes",
    "5'UTR": "in the 5'UTR: the RNA changes",
    "3'UTR": "in the 3'UTR: the RNA changes",
    "synonymous": "in the CDS, the protein unchanged (a stop codon kept as a stop, too)",
    "missense": "one or more residues replaced, the length kept",
    "stop_gained": "a premature stop codon (nonsense): the protein ends early",
    "stop_lost": "the stop codon lost: translation reads on into the 3'UTR",
    "start_lost": "the start codon changed: no protein is made (the protein is absent)",
    "frameshift": "an indel whose length is not a multiple of 3: the protein changes after it",
    "inframe_insertion": "an insertion of whole codons",
    "inframe_deletion": "a deletion of whole codons",
}
_MARGIN = 8  # bases kept around a transcript's local copy of the genome (the stop codon's read-ahead)


def _window_start(transcript: Transcript, window: int) -> int:
    half = window // 2
    return transcript.tss - (window - half - 1) if transcript.strand == "-" else transcript.tss - half


def _overlaps(lo: int, hi: int, start: int, end: int) -> bool:
    """Whether ``[start, end)`` (an insertion point when empty) falls in ``[lo, hi)``."""
    return lo < start < hi if start == end else lo < end and start < hi


def touches(transcript: Transcript, variant: Variant, window: int) -> bool:
    """Whether ``variant`` lies in the transcript's DNA window or between its first and last base."""
    start = _window_start(transcript, window)
    lo, hi = min(start, transcript.start), max(start + window, transcript.end)
    return _overlaps(lo, hi, variant.start, variant.end)


def _mapper(variant: Variant, offset: int) -> tuple[Any, Any]:
    """Maps interval starts and ends from the reference to the alternate genome (both ``- offset``)."""
    s, e, n = variant.start - offset, variant.end - offset, len(variant.inserted)
    delta = n - (e - s)

    def start(a: int) -> int:
        return a if a < s else a + delta if a >= e else s + min(a - s, n)

    def end(b: int) -> int:
        return b if b <= s else b + delta if b >= e else s + min(b - s, n)

    return start, end


def _shifted(transcript: Transcript, start: Any, end: Any) -> Transcript:
    def move(intervals: list[tuple[int, int]]) -> list[tuple[int, int]]:
        moved = [(start(a), end(b)) for a, b in intervals]
        return [(a, b) for a, b in moved if a < b]

    return replace(transcript, exons=move(transcript.exons), cds=move(transcript.cds), stop=move(transcript.stop))


def buildable(transcript: Transcript, variant: Variant) -> bool:
    """Whether the alternate transcript keeps an exon (and its CDS, if any, a first base in one)."""
    alternate = _shifted(transcript, *_mapper(variant, 0))
    if not alternate.exons:
        return False
    return not transcript.cds or bool(alternate.cds)


def _orf(rna: str, start: int, contig: str) -> tuple[str, bool]:
    """The protein translated from ``rna[start]`` to the first stop; whether a stop ended it."""
    from Bio.Seq import Seq

    coding = rna[start:]
    protein = str(Seq(coding[: len(coding) - len(coding) % 3]).translate(table=genetic_code(contig)))
    stop = protein.find("*")
    return (protein[:stop], True) if stop >= 0 else (protein, False)


@dataclass
class Effect:
    """Both versions of a transcript's sequences (``{dna, rna, protein}``; ``None``: not built, or no
    protein) and what the variant does."""

    consequence: str
    protein_change: str
    ref: dict[str, str | None]
    alt: dict[str, str | None]
    padded: bool


def variant_effect(genome: Any, transcript: Transcript, variant: Variant, window: int, dna: bool = True) -> Effect:
    """The reference and alternate sequences of ``transcript`` and the variant's consequence.

    Args:
        genome: the FASTA (pyfaidx); ``transcript.contig`` and ``variant.contig`` name its contigs.
        transcript: a transcript that :func:`touches` the variant and is :func:`buildable` with it.
        variant: the allele.
        window: DNA window in bp, centred on the TSS.
        dna: build the DNA windows (``False``: ``dna`` is ``None`` on both sides).
    """
    contig = transcript.contig
    length = len(genome[contig])
    window_start = _window_start(transcript, window)
    parts = transcript.exons + transcript.cds + transcript.stop
    lo = max(0, min(window_start, min(s for s, _ in parts), variant.start) - _MARGIN)
    hi = min(length, max(window_start + window, max(e for _, e in parts), variant.end) + _MARGIN)
    local = genome[contig][lo:hi]  # past-the-end padding stays right: lo is 0 or hi the contig's end when needed
    s, e = variant.start - lo, variant.end - lo
    reference = _shifted(transcript, lambda a: a - lo, lambda b: b - lo)
    alternate = _shifted(reference, *_mapper(variant, lo))
    ref_row = transcript_sequences({contig: local}, reference, window, dna=dna)
    alt_row = transcript_sequences({contig: local[:s] + variant.inserted + local[e:]}, alternate, window, dna=dna)
    ref_protein, alt_protein, stopped = ref_row["Protein"], alt_row["Protein"], True
    if ref_protein:
        first = ref_row["cds_start"] + transcript.phase
        if _orf(ref_row["RNA"], first, contig)[0] == ref_protein and alt_row["cds_start"] is not None:
            alt_protein, stopped = _orf(alt_row["RNA"], alt_row["cds_start"] + alternate.phase, contig)
    consequence = _consequence(transcript, variant, ref_row, alt_row, ref_protein, alt_protein)
    if consequence == "start_lost":
        alt_protein = ""
    change = _protein_change(consequence, ref_protein, alt_protein, stopped, _codon(ref_row, alt_row, transcript))
    ref = {"dna": ref_row["DNA"], "rna": ref_row["RNA"], "protein": ref_protein or None}
    alt = {"dna": alt_row["DNA"], "rna": alt_row["RNA"], "protein": alt_protein or None}
    return Effect(consequence, change, ref, alt, bool(ref_row["padded"]))


def _splice_sites(transcript: Transcript) -> list[tuple[int, int]]:
    """The two intronic bases beside every exon boundary inside the transcript."""
    first, last = transcript.start, transcript.end
    return [*((a - 2, a) for a, _ in transcript.exons if a != first), *((b, b + 2) for _, b in transcript.exons
            if b != last)]  # fmt: skip


def _consequence(transcript: Transcript, variant: Variant, ref_row: dict[str, Any], alt_row: dict[str, Any],
                 ref_protein: str, alt_protein: str) -> str:  # fmt: skip
    s, e, minus = variant.start, variant.end, transcript.strand == "-"
    if not any(_overlaps(a, b, s, e) for a, b in transcript.exons):
        if any(_overlaps(a, b, s, e) for a, b in _splice_sites(transcript)):
            return "splice_site"
        if _overlaps(transcript.start, transcript.end, s, e):
            return "intronic"
        before = e <= transcript.start if not minus else s >= transcript.end
        return "upstream" if before else "downstream"
    if not ref_protein:
        return "noncoding_exon"
    coding = transcript.cds + transcript.stop
    if not any(_overlaps(a, b, s, e) for a, b in coding):
        lo, hi = min(a for a, _ in coding), max(b for _, b in coding)
        return "5'UTR" if (s >= hi if minus else e <= lo) else "3'UTR"
    if alt_row["cds_start"] is None:
        return "start_lost"
    first, alt_first = ref_row["cds_start"] + transcript.phase, alt_row["cds_start"] + transcript.phase
    codon, alt_codon = ref_row["RNA"][first : first + 3], alt_row["RNA"][alt_first : alt_first + 3]
    if alt_codon != codon and alt_codon != "ATG":
        return "start_lost"
    if variant.delta % 3:
        return "frameshift"
    expected = len(ref_protein) + variant.delta // 3
    if len(alt_protein) != expected:
        return "stop_gained" if len(alt_protein) < expected else "stop_lost"
    if variant.delta:
        return "inframe_insertion" if variant.delta > 0 else "inframe_deletion"
    return "missense" if alt_protein != ref_protein else "synonymous"


def _codon(ref_row: dict[str, Any], alt_row: dict[str, Any], transcript: Transcript) -> int:
    """The 0-based codon of the first base the variant changes in the RNA (for synonymous changes)."""
    ref, alt = ref_row["RNA"], alt_row["RNA"]
    first = next((i for i, (a, b) in enumerate(zip(ref, alt, strict=False)) if a != b), min(len(ref), len(alt)))
    return max(0, (first - (ref_row["cds_start"] or 0) - transcript.phase) // 3)


def _span(protein: str, start: int, stop: int) -> str:
    """``K12`` or ``K12_L14`` for residues ``protein[start:stop]`` (1-based in the name)."""
    return f"{protein[start]}{start + 1}" + (f"_{protein[stop - 1]}{stop}" if stop - start > 1 else "")


def _protein_change(consequence: str, ref: str, alt: str, stopped: bool, codon: int) -> str:
    """The change in HGVS-like short form (``p.K12R``, ``p.K12*``, ``p.K12Rfs*5``); empty outside the CDS."""
    if not ref or consequence not in CONSEQUENCES or consequence in _NOT_CODING:
        return ""
    if consequence == "start_lost":
        return f"p.{ref[0]}1?"
    if consequence == "synonymous":
        return f"p.{ref[codon] if codon < len(ref) else '*'}{codon + 1}="
    n = next((i for i, (a, b) in enumerate(zip(ref, alt, strict=False)) if a != b), min(len(ref), len(alt)))
    old, new = (ref[n] if n < len(ref) else "*"), (alt[n] if n < len(alt) else "*")
    if consequence == "frameshift":
        return f"p.{old}{n + 1}{new}fs*{len(alt) - n + 1 if stopped else '?'}"
    if consequence == "stop_gained":
        return f"p.{old}{n + 1}*"
    if consequence == "stop_lost":
        return f"p.*{n + 1}{new}ext*{len(alt) - n if stopped else '?'}"
    m = 0
    while m < min(len(ref), len(alt)) - n and ref[len(ref) - 1 - m] == alt[len(alt) - 1 - m]:
        m += 1
    removed, added = ref[n : len(ref) - m], alt[n : len(alt) - m]
    if len(removed) == 1 and len(added) == 1:
        return f"p.{removed}{n + 1}{added}"
    if not added:
        return f"p.{_span(ref, n, n + len(removed))}del"
    if not removed:
        return f"p.{_span(ref, n - 1, n + 1)}ins{added}"
    return f"p.{_span(ref, n, n + len(removed))}delins{added}"


_NOT_CODING = {"upstream", "downstream", "intronic", "splice_site", "noncoding_exon", "5'UTR", "3'UTR"}


class VariantPairs(Dataset):
    """One item per (variant, transcript): both records as the model reads them, and the output's fields.

    Sequences are built when an item is read (in a DataLoader worker), from the FASTA opened once per
    process, and cropped as the data module crops them.

    Args:
        fasta: the genome.
        pairs: ``(variant, transcript)`` with the transcript's contig named as in the FASTA.
        window: DNA window in bp.
        inputs: ``{model modality: kind}``, kind one of :data:`KINDS`.
        crops: ``{model modality: (max_length, policy)}``.
    """

    def __init__(self, fasta: str | Path, pairs: Sequence[tuple[Variant, Transcript]], window: int,
                 inputs: Mapping[str, str], crops: Mapping[str, tuple[int, Crop]]) -> None:  # fmt: skip
        unknown = {m: k for m, k in inputs.items() if k not in KINDS}
        if unknown:
            raise DataError(f"variant inputs are built as {', '.join(KINDS)}, not {unknown}")
        self.fasta, self.pairs, self.window = Path(fasta), list(pairs), window
        self.inputs, self.crops = dict(inputs), dict(crops)
        self._genome: Any = None
        self._pid = -1

    def __len__(self) -> int:
        return len(self.pairs)

    def _open(self) -> Any:
        if self._genome is None or self._pid != os.getpid():  # a file handle is not shared across a fork
            self._genome, self._pid = open_genome(self.fasta), os.getpid()
        return self._genome

    def _inputs(self, sequences: Mapping[str, str | None]) -> dict[str, str | None]:
        out = {}
        for modality, kind in self.inputs.items():
            sequence = sequences[kind]
            crop = self.crops.get(modality)
            out[modality] = crop_sequence(sequence, *crop) if crop and sequence is not None else sequence
        return out

    def __getitem__(self, i: int) -> dict[str, Any]:
        return self.item(*self.pairs[i])

    def item(self, variant: Variant, transcript: Transcript) -> dict[str, Any]:
        """A pair's reference and alternate records and its output's fields."""
        effect = variant_effect(self._open(), transcript, variant, self.window, dna="dna" in self.inputs.values())
        ref, alt = self._inputs(effect.ref), self._inputs(effect.alt)
        row = {
            "variant": variant.name, "vcf_id": variant.vcf_id, "chrom": variant.chrom, "pos": variant.pos,
            "ref": variant.ref, "alt": variant.alt, "filter": variant.filter,
            "transcript_id": transcript.transcript_id, "gene_id": transcript.gene_id, "strand": transcript.strand,
            "consequence": effect.consequence, "changed": ",".join(m for m in ref if ref[m] != alt[m]) or "none",
            "protein_change": effect.protein_change,
        }  # fmt: skip
        name = f"{variant.name}|{transcript.transcript_id}"
        return {
            "ref": {"id": f"{name}|ref", "sequences": ref},
            "alt": {"id": f"{name}|alt", "sequences": alt},
            "row": row,
        }

    def __getstate__(self) -> dict[str, Any]:
        return self.__dict__ | {"_genome": None}
