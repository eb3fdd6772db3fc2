"""Variants from a VCF, one per alternate allele, checked against the genome.

The VCF is read with pysam (htslib's own parser, the reference implementation of the format): plain
``.vcf``, bgzipped ``.vcf.gz`` and ``.bcf`` alike, multi-allelic records and symbolic alleles as the
specification defines them. :func:`read_variants` splits each record into one :class:`Variant` per
ALT allele and keeps SNVs, MNVs and indels of at most ``max_indel`` bp; what it leaves out is counted
in :class:`VariantCounts`:

* symbolic and structural alleles (``<DEL>``, ``<*>``, breakends ``A[chr2:5[``), the overlapping
  deletion ``*``, a missing ALT (``.``), alleles with letters other than ``ACGTN`` and an ALT equal
  to REF;
* alleles longer than ``max_indel + 1`` bp (REF or ALT; the VCF's anchor base aside);
* variants on a contig the FASTA lacks (``chr1`` and ``1`` match, as for genome windows);
* variants whose REF is not the genome's bases at POS (another assembly, or a left-normalisation
  against another reference).

FILTER is not applied: every variant is kept and its FILTER (``PASS``, ``q10;s50``, ``.``) goes to
the output, where it can be filtered on.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mmfuse.data.errors import DataError
from mmfuse.data.genomics.windows import find_contig

__all__ = ["DEFAULT_MAX_INDEL", "Variant", "VariantCounts", "read_variants"]

DEFAULT_MAX_INDEL = 50
_BASES = re.compile(r"^[ACGTN]+$")


@dataclass(frozen=True)
class Variant:
    """One alternate allele of a VCF record.

    ``pos``, ``ref`` and ``alt`` are as the VCF writes them (1-based, with the anchor base of an
    indel); ``contig`` is the FASTA's name of ``chrom``. :attr:`start`, :attr:`end` and
    :attr:`inserted` are the minimal change (common leading and trailing bases removed): the genome's
    ``[start, end)`` (0-based; empty for an insertion) is replaced by ``inserted``.
    """

    chrom: str
    pos: int
    ref: str
    alt: str
    vcf_id: str = ""
    filter: str = "."
    contig: str = ""

    @property
    def name(self) -> str:
        """``chrom:pos:ref>alt``, unique per allele."""
        return f"{self.chrom}:{self.pos}:{self.ref}>{self.alt}"

    def _trimmed(self) -> tuple[int, str, str]:
        ref, alt, start = self.ref, self.alt, self.pos - 1
        while ref and alt and ref[-1] == alt[-1]:
            ref, alt = ref[:-1], alt[:-1]
        while ref and alt and ref[0] == alt[0]:
            ref, alt, start = ref[1:], alt[1:], start + 1
        return start, ref, alt

    @property
    def start(self) -> int:
        return self._trimmed()[0]

    @property
    def end(self) -> int:
        start, ref, _ = self._trimmed()
        return start + len(ref)

    @property
    def inserted(self) -> str:
        return self._trimmed()[2]

    @property
    def delta(self) -> int:
        """Length change of the genome (insertions positive)."""
        return len(self.alt) - len(self.ref)


@dataclass
class VariantCounts:
    """What :func:`read_variants` and the scoring kept and left out (printed at the end of a run)."""

    records: int = 0
    alleles: int = 0
    symbolic: int = 0
    too_long: int = 0
    missing_contigs: Counter = field(default_factory=Counter)
    ref_mismatch: int = 0
    ref_mismatch_example: str = ""
    outside_transcripts: int = 0
    scored_variants: int = 0
    rows: int = 0
    padded: int = 0
    unchanged: int = 0
    unbuildable: int = 0
    max_indel: int = DEFAULT_MAX_INDEL

    def lines(self) -> list[str]:
        missing = sum(self.missing_contigs.values())
        lines = [
            f"VCF records: {self.records}, alternate alleles: {self.alleles} (multi-allelic records split)",
            f"variants scored: {self.scored_variants}, in {self.rows} variant-transcript pairs",
            f"skipped, symbolic, structural, '*', non-ACGTN or ALT = REF alleles: {self.symbolic}",
            f"skipped, longer than {self.max_indel} bp (variants.max_indel): {self.too_long}",
            f"skipped, on a contig the FASTA lacks: {missing}"
            + "".join(f"\n  {contig}: {n}" for contig, n in sorted(self.missing_contigs.items())),
            f"skipped, REF differs from the genome: {self.ref_mismatch}"
            + (f" (e.g. {self.ref_mismatch_example})" if self.ref_mismatch_example else ""),
            f"skipped, in no transcript's DNA window or span: {self.outside_transcripts}",
            f"pairs whose DNA window runs past a contig end (padded with N): {self.padded}",
            f"pairs whose model inputs the variant leaves unchanged (outside the DNA window or cropped away): "
            f"{self.unchanged}",
        ]
        if self.unbuildable:
            lines.append(f"pairs skipped, the variant deletes the transcript's exons or coding start: "
                         f"{self.unbuildable}")  # fmt: skip
        return lines

    def why_none(self, fasta_contigs: list[str]) -> str:
        """Why no variant was scored, and what to check."""
        if not self.alleles:
            return "the VCF holds no variant record"
        kept = self.alleles - self.symbolic - self.too_long
        if not kept:
            return f"every allele is symbolic, structural or longer than {self.max_indel} bp (variants.max_indel)"
        if sum(self.missing_contigs.values()) == kept:
            ours = ", ".join(sorted(self.missing_contigs)[:3])
            return (f"no variant lies on a contig of the FASTA: the VCF names {ours}, the FASTA has "
                    f"{', '.join(fasta_contigs[:3])}; use the genome the VCF was called against")  # fmt: skip
        if self.ref_mismatch and not self.outside_transcripts:
            return (f"the REF of every variant on the FASTA's contigs differs from the genome (e.g. "
                    f"{self.ref_mismatch_example}): use the genome the VCF was called against")  # fmt: skip
        return ("no variant lies in a transcript of the annotation or in its DNA window; check that the VCF, the "
                "FASTA and the annotation are of one assembly")  # fmt: skip


def _open(path: Path) -> Any:
    import pysam

    if not path.is_file():
        raise DataError(f"--vcf {str(path)!r} does not exist; give the VCF of the variants (.vcf, .vcf.gz or .bcf)")
    try:
        return pysam.VariantFile(str(path))
    except NotImplementedError:  # htslib cannot read plain gzip (only BGZF, its blocked gzip)
        raise DataError(
            f"--vcf {str(path)!r} is gzip- but not bgzip-compressed; recompress it with `gunzip -c {path.name} | "
            f"bgzip > {path.name}` (htslib's bgzip, or pysam.tabix_compress), or give it uncompressed"
        ) from None
    except (ValueError, OSError) as exc:
        raise DataError(
            f"--vcf {str(path)!r} is not a VCF file htslib can read ({exc}); it needs the '##fileformat=VCFv4.x' "
            f"and '#CHROM POS ID REF ALT ...' header lines (a gzipped VCF must be bgzip-compressed)"
        ) from None


def _records(path: Path) -> Iterator[Any]:
    import pysam

    previous = pysam.set_verbosity(0)  # htslib's own warnings (contigs missing from the header, ...) stay quiet
    handle = None
    last = "its header"
    try:
        handle = _open(path)
        with handle:
            iterator = iter(handle)
            while True:
                try:
                    record = next(iterator)
                except StopIteration:
                    return
                except (ValueError, OSError) as exc:
                    raise DataError(
                        f"--vcf {path}: cannot read the record after {last} ({exc or type(exc).__name__}); each "
                        f"record needs 8 or more tab-separated fields: CHROM, POS (a number), ID, REF, ALT, QUAL, "
                        f"FILTER, INFO"
                    ) from None
                last = f"{record.chrom}:{record.pos}"
                yield record
    finally:
        if handle is not None:
            handle.close()
        pysam.set_verbosity(previous)


def _supported(allele: str) -> bool:
    return bool(_BASES.match(allele))


def read_variants(
    path: str | Path, genome: Any, counts: VariantCounts, max_indel: int = DEFAULT_MAX_INDEL
) -> Iterator[Variant]:
    """Yields the VCF's alleles that can be scored (see the module docstring), counting the rest.

    Args:
        path: the VCF (``.vcf``, ``.vcf.gz``, ``.bcf``).
        genome: the FASTA (pyfaidx), to find contigs and check REF.
        counts: filled with what was read and left out.
        max_indel: the longest REF or ALT, anchor base aside, in bp.
    """
    path = Path(path).expanduser()
    counts.max_indel = max_indel
    contigs: dict[str, str | None] = {}
    for record in _records(path):
        counts.records += 1
        alts = record.alts or (None,)
        ref = (record.ref or "").upper()
        for alt in alts:
            counts.alleles += 1
            alt = (alt or "").upper()
            if not _supported(ref) or not _supported(alt) or alt == ref:
                counts.symbolic += 1
                continue
            if max(len(ref), len(alt)) > max_indel + 1:
                counts.too_long += 1
                continue
            chrom = str(record.chrom)
            if chrom not in contigs:
                contigs[chrom] = find_contig(chrom, genome)
            contig = contigs[chrom]
            if contig is None:
                counts.missing_contigs[chrom] += 1
                continue
            start = record.pos - 1
            found = genome[contig][start : start + len(ref)] if start < len(genome[contig]) else ""
            if found != ref:
                counts.ref_mismatch += 1
                if not counts.ref_mismatch_example:
                    counts.ref_mismatch_example = f"{chrom}:{record.pos} REF {ref}, genome {found or 'past the end'}"
                continue
            filters = ";".join(record.filter.keys()) or "."
            yield Variant(chrom, record.pos, ref, alt, record.id or "", filters, contig)
