"""Transcript models from a GTF or GFF3 annotation, read line by line.

Only the coordinates of exons, CDS and stop codons are kept (memory grows with the number of exons,
never with sequence). Both GTF attribute styles are read: GENCODE (``transcript_id "ENST….2"``) and
Ensembl (``transcript_id "ENST…"; transcript_version "2"``). In GFF3, exons, CDS and stop codons
point at their transcript with ``Parent=`` (several parents separated by commas), and the
transcript (``mRNA``, ``transcript``, ``ncRNA``, ``lnc_RNA``, …; any type) points at its gene.

Ids are matched without their version suffix (:func:`strip_version`: ``ENST00000456328.2`` ↔
``ENST00000456328``); the id as written (with ``transcript_version``/``version`` appended when the
annotation keeps the version in its own attribute) is kept in :attr:`Transcript.transcript_id`.

Stop codons: GENCODE/Ensembl GTF leave the stop codon out of ``CDS`` and give it as a
``stop_codon`` line; GFF3 files do either. ``stop_codon`` features are merged into the CDS when
present; :mod:`mmfuse.data.genomics.isoform_table` adds the three bases after a CDS that ends without a stop codon
when they are one, so the CDS includes its stop codon under both conventions.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO
from urllib.parse import unquote

from mmfuse.data.errors import DataError
from mmfuse.data.files.tables import open_text

__all__ = ["Transcript", "read_annotation", "strip_version"]

_VERSION = re.compile(r"\.\d+(?=$|_PAR_Y$)")  # GENCODE keeps PAR copies as ENST….5_PAR_Y
_GTF_ATTRIBUTE = re.compile(r'\s*([^\s;"]+)\s+(?:"([^"]*)"|([^\s;"]+))\s*(?:;|$)')
_CODING_PARTS = {"CDS": "cds", "stop_codon": "stop"}
_BIOTYPE_KEYS = ("transcript_biotype", "transcript_type", "biotype")
_GFF_PREFIXES = ("transcript:", "gene:")


def strip_version(identifier: str) -> str:
    """The id without its version suffix: ``ENST00000456328.2`` → ``ENST00000456328``.

    Examples:
        >>> strip_version("ENST00000456328.2"), strip_version("ENST00000381192.5_PAR_Y")
        ('ENST00000456328', 'ENST00000381192_PAR_Y')
    """
    return _VERSION.sub("", identifier)


@dataclass
class Transcript:
    """One transcript's model; intervals are 0-based, half-open, on the forward strand.

    ``exons``, ``cds`` and ``stop`` are as read (unsorted); :meth:`ordered_exons` sorts them 5'→3'.
    """

    transcript_id: str
    gene_id: str = ""
    contig: str = ""
    strand: str = "+"
    biotype: str = ""
    exons: list[tuple[int, int]] = field(default_factory=list)
    cds: list[tuple[int, int]] = field(default_factory=list)
    stop: list[tuple[int, int]] = field(default_factory=list)
    #: phase of the 5'-most CDS feature (bases to skip before the first full codon)
    phase: int = 0

    @property
    def start(self) -> int:
        return min(s for s, _ in self.exons)

    @property
    def end(self) -> int:
        return max(e for _, e in self.exons)

    @property
    def tss(self) -> int:
        """0-based position of the first transcribed base."""
        return self.start if self.strand == "+" else self.end - 1

    def ordered_exons(self) -> list[tuple[int, int]]:
        return sorted(self.exons, reverse=self.strand == "-")


def _open(path: Path) -> IO[str]:
    return open_text(path, "annotation")


def _format(path: Path) -> str:
    suffixes = [s.lower() for s in path.suffixes if s.lower() != ".gz"]
    kind = suffixes[-1] if suffixes else ""
    if kind == ".gtf":
        return "gtf"
    if kind in (".gff3", ".gff"):
        return "gff3"
    raise DataError(f"cannot tell the format of annotation {str(path)!r}: name it .gtf or .gff3 (optionally .gz)")


def _records(path: Path) -> Iterator[tuple[int, list[str]]]:
    """Yields (line number, 9 fields) of each feature line; comments and blank lines are skipped."""
    with _open(path) as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip() or line.startswith("#"):
                continue
            if line.startswith(">"):  # GFF3 with an embedded ##FASTA section
                return
            fields = line.rstrip("\n\r").split("\t")
            if len(fields) != 9:
                raise DataError(
                    f"{path}:{number}: expected 9 tab-separated fields, found {len(fields)}; is this a "
                    f"GTF/GFF3 file (spaces instead of tabs?)"
                )
            yield number, fields


def _interval(path: Path, number: int, fields: list[str]) -> tuple[int, int]:
    try:
        start, end = int(fields[3]), int(fields[4])
    except ValueError:
        raise DataError(f"{path}:{number}: start/end {fields[3]!r}/{fields[4]!r} are not integers") from None
    if start < 1 or end < start:
        raise DataError(f"{path}:{number}: invalid interval {start}-{end} (1-based, start <= end)")
    if fields[6] not in ("+", "-"):
        raise DataError(f"{path}:{number}: strand {fields[6]!r} is neither + nor -")
    return start - 1, end


def _gtf_attributes(path: Path, number: int, text: str) -> dict[str, str]:
    attributes: dict[str, str] = {}
    position, text = 0, text.strip()
    while position < len(text):
        match = _GTF_ATTRIBUTE.match(text, position)
        if match is None:
            raise DataError(f"{path}:{number}: cannot read the attributes at {text[position:][:40]!r}")
        key, quoted, bare = match.groups()
        attributes.setdefault(key, quoted if quoted is not None else bare)
        position = match.end()
    return attributes


def _gff_attributes(path: Path, number: int, text: str) -> dict[str, str]:
    attributes = {}
    for item in text.strip().strip(";").split(";"):
        if not item.strip():
            continue
        key, sep, value = item.partition("=")
        if not sep:
            raise DataError(f"{path}:{number}: attribute {item!r} is not key=value (is this a GTF file?)")
        attributes[key.strip()] = unquote(value)
    return attributes


def _versioned(identifier: str, version: str | None) -> str:
    return f"{identifier}.{version}" if version and strip_version(identifier) == identifier else identifier


def _add(transcript: Transcript, kind: str, interval: tuple[int, int], phase: str) -> None:
    if kind == "exon":
        transcript.exons.append(interval)
        return
    getattr(transcript, _CODING_PARTS[kind]).append(interval)
    if kind == "CDS" and phase.isdigit():
        # the 5'-most CDS feature seen so far decides the phase
        first = min(transcript.cds) if transcript.strand == "+" else max(transcript.cds)
        if interval == first:
            transcript.phase = int(phase)


def _same_place(path: Path, number: int, transcript: Transcript, fields: list[str]) -> None:
    """Refuses a line of ``transcript`` on another contig or strand than its earlier lines (exons would merge)."""
    if (fields[0], fields[6]) != (transcript.contig, transcript.strand):
        raise DataError(
            f"{path}:{number}: transcript {transcript.transcript_id} is on {fields[0]} ({fields[6]}) here but on "
            f"{transcript.contig} ({transcript.strand}) in its earlier lines; one id must name one transcript (give "
            f"the copies distinct ids, e.g. GENCODE's _PAR_Y suffix, or remove one)"
        )


def _read_gtf(path: Path) -> dict[str, Transcript]:
    transcripts: dict[str, Transcript] = {}
    for number, fields in _records(path):
        kind = fields[2]
        if kind not in ("exon", "transcript", *_CODING_PARTS):
            continue
        interval = _interval(path, number, fields)
        attributes = _gtf_attributes(path, number, fields[8])
        if "transcript_id" not in attributes:
            raise DataError(f"{path}:{number}: {kind} line without a transcript_id attribute")
        original = _versioned(attributes["transcript_id"], attributes.get("transcript_version"))
        key = original  # keyed without the version by read_annotation, where that stays unique
        transcript = transcripts.get(key)
        if transcript is None:
            gene = _versioned(attributes.get("gene_id", ""), attributes.get("gene_version"))
            transcript = transcripts[key] = Transcript(original, gene, fields[0], fields[6])
        _same_place(path, number, transcript, fields)
        if not transcript.biotype:
            transcript.biotype = next((attributes[k] for k in _BIOTYPE_KEYS if k in attributes), "")
        if kind != "transcript":
            _add(transcript, kind, interval, fields[7])
    return transcripts


def _strip_prefix(identifier: str) -> str:
    for prefix in _GFF_PREFIXES:
        if identifier.startswith(prefix):
            return identifier[len(prefix) :]
    return identifier


def _read_gff3(path: Path) -> dict[str, Transcript]:
    parents: dict[str, tuple[str, str, str, dict[str, str]]] = {}  # ID -> (Parent, contig, strand, attributes)
    children: dict[str, Transcript] = {}  # by Parent ID, filled before the transcript line may be seen
    for number, fields in _records(path):
        kind = fields[2]
        attributes = _gff_attributes(path, number, fields[8])
        if kind in ("exon", *_CODING_PARTS):
            interval = _interval(path, number, fields)
            if "Parent" not in attributes:
                raise DataError(f"{path}:{number}: {kind} feature without a Parent= attribute")
            for parent in attributes["Parent"].split(","):
                transcript = children.setdefault(parent, Transcript(parent, "", fields[0], fields[6]))
                _same_place(path, number, transcript, fields)
                _add(transcript, kind, interval, fields[7])
        elif "ID" in attributes and "Parent" in attributes:  # a transcript (genes have no Parent)
            kept = {
                k: attributes[k] for k in ("transcript_id", "version", "gene_id", *_BIOTYPE_KEYS) if k in attributes
            }
            parents[attributes["ID"]] = (attributes["Parent"].split(",")[0], fields[0], fields[6], kept)
    transcripts: dict[str, Transcript] = {}
    for parent_id, transcript in children.items():
        gene, _, _, attributes = parents.get(parent_id, ("", "", "", {}))
        original = attributes.get("transcript_id") or _strip_prefix(parent_id)
        transcript.transcript_id = _versioned(original, attributes.get("version"))
        transcript.gene_id = attributes.get("gene_id") or _strip_prefix(gene)
        transcript.biotype = next((attributes[k] for k in _BIOTYPE_KEYS if k in attributes), "")
        key = transcript.transcript_id
        other = transcripts.get(key)
        if other is not None and (other.contig, other.strand) != (transcript.contig, transcript.strand):
            raise DataError(
                f"{path}: transcript {transcript.transcript_id} is annotated on {other.contig} ({other.strand}) and on "
                f"{transcript.contig} ({transcript.strand}); one id must name one transcript (give the copies distinct "
                f"ids, e.g. GENCODE's _PAR_Y suffix, or remove one)"
            )
        transcripts[key] = transcript
    return transcripts


def read_annotation(path: str | Path) -> dict[str, Transcript]:
    """Reads the transcripts of a GTF or GFF3 file (``.gz`` too), keyed by id without version.

    Args:
        path: ``.gtf``, ``.gff3`` or ``.gff``, optionally gzipped.

    Returns:
        ``{strip_version(transcript id): Transcript}``; transcripts without exons are left out. Ids
        that differ only in their suffix (TAIR's ``AT1G01010.1`` and ``AT1G01010.2``, the bundled
        sample's ``SYNT00000.1`` and ``.2``: isoforms, not versions) stay distinct, keyed as written.

    Raises:
        DataError: a malformed line (named ``file:line``), or a file that does not exist.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise DataError(f"annotation {str(path)!r} does not exist")
    transcripts = _read_gtf(path) if _format(path) == "gtf" else _read_gff3(path)
    stripped = Counter(strip_version(key) for key in transcripts)
    return {
        strip_version(key) if stripped[strip_version(key)] == 1 else key: t for key, t in transcripts.items() if t.exons
    }
