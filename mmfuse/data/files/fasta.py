"""FASTA files: genomes (indexed by pyfaidx, read by slice) and protein sequences (UniProt headers)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from mmfuse.data.errors import DataError
from mmfuse.data.files.tables import open_text

__all__ = ["open_genome", "padded_slice", "protein_name", "read_proteins"]

_GENE_NAME = re.compile(r"\bGN=(\S+)")


def open_genome(path: str | Path) -> Any:
    """Opens an indexed FASTA with pyfaidx (upper-cased), building ``.fai`` beside it if missing."""
    import pyfaidx

    path = Path(path).expanduser()
    if not path.is_file():
        raise DataError(
            f"genome FASTA {str(path)!r} does not exist; give the path of the genome FASTA (plain or bgzip-compressed)"
        )
    try:
        return pyfaidx.Fasta(str(path), as_raw=True, sequence_always_upper=True)
    except Exception as exc:
        raise DataError(
            f"cannot read or build the index of {path} ({type(exc).__name__}: {exc}). Delete {path}.fai to have "
            f"it rebuilt (the directory must be writable), or run `samtools faidx {path}`; a gzipped FASTA "
            f"must be bgzip-compressed."
        ) from None


def padded_slice(genome: Any, contig: str, start: int, end: int) -> tuple[str, bool]:
    """Genome[start:end] on ``contig``, ``N`` past its ends; also whether padding was needed."""
    length = len(genome[contig])
    left, right = max(0, -start), max(0, end - length)
    sequence = genome[contig][max(0, start) : min(end, length)] if min(end, length) > max(0, start) else ""
    return "N" * left + sequence + "N" * right, bool(left or right)


def protein_name(header: str) -> str:
    """The TF name of a FASTA header: the ``GN=`` gene name of a UniProt header, else its first word.

    Examples:
        >>> protein_name("sp|P55317|FOXA1_HUMAN Hepatocyte nuclear factor 3-alpha OS=Homo sapiens GN=FOXA1 PE=1")
        'FOXA1'
        >>> protein_name("CTCF transcriptional repressor CTCF")
        'CTCF'
    """
    match = _GENE_NAME.search(header)
    return match.group(1) if match else header.split()[0]


def read_proteins(path: str | Path) -> tuple[dict[str, str], int]:
    """``({TF name: protein sequence}, number of repeated names)`` of a FASTA file (optionally gzipped).

    Names come from :func:`protein_name`; a name given again (another isoform, another entry) keeps
    its first sequence, as UniProt lists the canonical sequence first.

    Raises:
        DataError: a missing file, a file with no FASTA record, or a record without sequence.
    """
    from Bio import SeqIO

    path = Path(path).expanduser()
    if not path.is_file():
        raise DataError(f"proteins FASTA {str(path)!r} does not exist")
    proteins: dict[str, str] = {}
    repeated = 0
    with open_text(Path(path), "file") as handle:
        try:
            records = list(SeqIO.parse(handle, "fasta"))
        except ValueError as exc:  # e.g. text before the first '>'
            raise DataError(f"{path} is not a FASTA file: {str(exc).splitlines()[0]}") from None
    for record in records:
        if not record.description.strip():
            raise DataError(f"{path}: a record has an empty header; write '>NAME' (or a UniProt header)")
        name = protein_name(record.description)
        sequence = str(record.seq).strip()
        if not sequence:
            raise DataError(f"{path}: record {record.description!r} has no sequence")
        if name in proteins:
            repeated += 1
            continue
        proteins[name] = sequence
    if not proteins:
        raise DataError(f"{path} holds no FASTA record ('>NAME' lines followed by the sequence)")
    return proteins, repeated
