"""Build an isoform-expression table from a genome, an annotation and GTEx expression.

:func:`build_isoform_table` writes the table that :class:`~mmfuse.data.datasets.isoform.IsoformExpression`
reads: one row per transcript found in both the annotation and the expression file, with

* ``DNA``: ``window`` bp of genome around the TSS, read 5'→3' on the transcript's strand (the
  minus strand is reverse-complemented); the TSS is at index ``window // 2``, upstream before it.
  Positions past a contig's ends are ``N``.
* ``RNA``: the exons joined 5'→3' (minus strand: each exon reverse-complemented), written with T.
* ``Protein``: the CDS translated with the standard code (``MT``/``chrM``: vertebrate
  mitochondrial), the final ``*`` dropped; empty for transcripts without CDS (non-coding, kept).
* ``biotype``, ``cds_start``/``cds_end`` (0-based in ``RNA``, stop codon included; null when
  non-coding), ``utr5_length``/``utr3_length``, ``contig``, ``strand``, ``tss`` (0-based),
  ``annotation_transcript_id``/``annotation_gene_id`` (the ids as the annotation writes them;
  ``transcript_id``/``gene_id`` are the expression file's).
* one column per tissue: log(1 + mean TPM) over that tissue's samples.

The expression file (GTEx GCT: ``#1.2``, a dimensions line, a header ``transcript_id gene_id
sample…``) is read in chunks, and each chunk is written as a Parquet row group, so memory does not
grow with the number of transcripts (the annotation's exon coordinates aside).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from mmfuse.data.errors import DataError
from mmfuse.data.files.annotation import Transcript, read_annotation, strip_version
from mmfuse.data.files.fasta import open_genome, padded_slice
from mmfuse.data.files.gct import gct_chunks
from mmfuse.data.files.gct import sample_tissues as read_sample_tissues
from mmfuse.data.genomics.tissues import GTEX_TISSUES
from mmfuse.data.genomics.windows import DEFAULT_WINDOW
from mmfuse.io import atomic_path

__all__ = [
    "BuildSummary",
    "build_isoform_table",
    "genetic_code",
    "transcript_sequences",
]

_MITOCHONDRIAL = {"MT", "chrM", "M", "chrMT"}
_STOPS = {"TAA", "TAG", "TGA"}


@dataclass
class BuildSummary:
    """What :func:`build_isoform_table` wrote and what it left out."""

    written: int = 0
    noncoding: int = 0
    padded: int = 0
    missing_from_annotation: int = 0
    missing_from_expression: int = 0
    bad_values_skipped: int = 0
    missing_contigs: Counter = field(default_factory=Counter)
    tissues: list[str] = field(default_factory=list)
    samples_without_tissue: list[str] = field(default_factory=list)
    expression_rows: int = 0

    def lines(self) -> list[str]:
        lines = [
            f"transcripts written: {self.written} ({self.noncoding} non-coding, kept with an empty Protein)",
            f"tissues: {len(self.tissues)}",
            f"in the expression file but not the annotation: {self.missing_from_annotation}",
            f"in the annotation but not the expression file: {self.missing_from_expression}",
            f"skipped, contig not in the genome: {sum(self.missing_contigs.values())}"
            + "".join(f"\n  {contig}: {n}" for contig, n in sorted(self.missing_contigs.items())),
            f"DNA windows padded with N past a contig end: {self.padded}",
        ]
        if self.bad_values_skipped:
            lines.append(f"skipped for NaN or negative TPM: {self.bad_values_skipped}")
        if self.samples_without_tissue:
            missing = self.samples_without_tissue
            lines.append(f"expression samples left out, not in the sample attributes: {len(missing)} "
                         f"(e.g. {', '.join(missing[:3])})")  # fmt: skip
        return lines

    def why_empty(self, genome_contigs: Sequence[str], annotation: dict[str, Transcript]) -> str:
        """Why no transcript was written, and what to check."""
        if not annotation:
            return "the annotation holds no transcript"
        if not self.missing_contigs and self.missing_from_annotation:
            example = next(iter(annotation.values())).transcript_id
            return (f"no transcript id of the expression file is in the annotation (its ids look like {example!r}; "
                    f"versions are ignored): use an annotation of the release the expression was quantified with")
        if not self.missing_contigs:
            return "every transcript had a NaN or negative TPM and was skipped (--bad-values skip)"
        ours = ", ".join(sorted(self.missing_contigs, key=str)[:3])
        theirs = ", ".join(list(genome_contigs)[:3])
        return (f"no matched transcript lies on a contig of the genome: the annotation names {ours}, the genome "
                f"FASTA has {theirs}; use a genome and an annotation with the same contig names (UCSC 'chr1' "
                f"against Ensembl '1')")


def genetic_code(contig: str) -> int:
    """The NCBI translation table of ``contig``: 2 (vertebrate mitochondrial) for ``MT``/``chrM``, else 1."""
    return 2 if contig in _MITOCHONDRIAL else 1


def _reverse_complement(sequence: str) -> str:
    from Bio.Seq import Seq

    return str(Seq(sequence).reverse_complement())


def _coding_region(transcript: Transcript, exons: list[tuple[int, int]]) -> tuple[int, int] | None:
    """CDS (with stop_codon features) as a 0-based half-open interval of the spliced transcript."""
    parts = transcript.cds + transcript.stop
    if not parts:
        return None
    first = min(s for s, _ in parts) if transcript.strand == "+" else max(e for _, e in parts) - 1
    last = max(e for _, e in parts) - 1 if transcript.strand == "+" else min(s for s, _ in parts)
    positions = []
    for genomic in (first, last):
        offset = 0
        for start, end in exons:
            if start <= genomic < end:
                positions.append(offset + (genomic - start if transcript.strand == "+" else end - 1 - genomic))
                break
            offset += end - start
        else:
            raise DataError(f"transcript {transcript.transcript_id}: its CDS lies outside its exons")
    return positions[0], positions[1] + 1


def transcript_sequences(genome: Any, transcript: Transcript, window: int, dna: bool = True) -> dict[str, Any]:
    """DNA window, RNA, Protein and CDS coordinates of one transcript (see the module docstring).

    ``dna=False`` leaves the window out (``DNA`` is ``None``) but still says whether it would be padded.
    """
    contig, minus = transcript.contig, transcript.strand == "-"
    length = len(genome[contig])
    exons = transcript.ordered_exons()
    if max(e for _, e in exons) > length:
        raise DataError(
            f"transcript {transcript.transcript_id} ends past contig {contig} ({length:,} bp): do the genome "
            f"and the annotation come from the same assembly?"
        )
    pieces = [genome[contig][s:e] for s, e in exons]
    rna = "".join(_reverse_complement(p) for p in pieces) if minus else "".join(pieces)
    tss, half = transcript.tss, window // 2
    start = tss - (window - half - 1) if minus else tss - half
    if dna:
        window_dna, padded = padded_slice(genome, contig, start, start + window)
        window_dna = _reverse_complement(window_dna) if minus else window_dna
    else:
        window_dna, padded = None, start < 0 or start + window > length
    row: dict[str, Any] = {"DNA": window_dna, "RNA": rna, "Protein": "", "cds_start": None, "cds_end": None}
    region = _coding_region(transcript, exons)
    if region is not None:
        cds_start, cds_end = region
        if rna[cds_end - 3 : cds_end] not in _STOPS and rna[cds_end : cds_end + 3] in _STOPS:
            cds_end += 3  # CDS given without its stop codon and no stop_codon feature
        from Bio.Seq import Seq

        coding = rna[cds_start + transcript.phase : cds_end]
        coding = coding[: len(coding) - len(coding) % 3]
        protein = str(Seq(coding).translate(table=genetic_code(contig))).rstrip("*")
        row.update(cds_start=cds_start, cds_end=cds_end, Protein=protein)
    row["utr5_length"] = row["cds_start"]
    row["utr3_length"] = None if region is None else len(rna) - row["cds_end"]
    row["padded"] = padded
    return row


def _tissue_matrix(
    samples: Sequence[str], sample_tissue: dict[str, str], min_samples: int
) -> tuple[list[str], np.ndarray]:
    """Tissues with ``min_samples`` samples or more (GTEx order first) and the (samples, tissues) averaging matrix."""
    counts = Counter(sample_tissue[s] for s in samples if s in sample_tissue)
    known = [t for t in GTEX_TISSUES if counts.get(t, 0) >= min_samples]
    tissues = known + sorted(t for t, n in counts.items() if n >= min_samples and t not in GTEX_TISSUES)
    if not tissues:
        raise DataError(
            f"no tissue has {min_samples} sample(s) in the expression file: do the sample ids of the sample "
            f"attributes file match the GCT's columns (e.g. {samples[0] if samples else '?'})?"
        )
    index = {t: i for i, t in enumerate(tissues)}
    matrix = np.zeros((len(samples), len(tissues)))
    for row, sample in enumerate(samples):
        column = index.get(sample_tissue.get(sample, ""))
        if column is not None:
            matrix[row, column] = 1.0 / counts[tissues[column]]
    return tissues, matrix


def _schema(tissues: list[str], coordinates: bool = False) -> Any:
    import pyarrow as pa

    columns = [(name, pa.string()) for name in ("transcript_id", "gene_id", "annotation_transcript_id",
               "annotation_gene_id", "contig", "strand", "biotype", "DNA", "RNA", "Protein")
               if not (coordinates and name == "DNA")]  # fmt: skip
    columns += [(name, pa.int64()) for name in ("tss", "cds_start", "cds_end", "utr5_length", "utr3_length")]
    return pa.schema(columns + [(tissue, pa.float32()) for tissue in tissues])


def build_isoform_table(
    fasta: str | Path,
    annotation: str | Path,
    expression: str | Path,
    sample_tissues: str | Path,
    out: str | Path,
    window: int = DEFAULT_WINDOW,
    tissue_column: str = "SMTS",
    sample_column: str = "SAMPID",
    min_samples: int = 1,
    bad_values: Literal["error", "skip"] = "error",
    chunk_rows: int = 256,
    coordinates: bool = False,
) -> BuildSummary:
    """Writes the isoform-expression table (Parquet) for the transcripts in both inputs.

    Args:
        fasta: genome FASTA (indexed with ``.fai``, which is built if missing).
        annotation: GTF or GFF3 (optionally gzipped), see :mod:`mmfuse.data.files.annotation`.
        expression: GTEx transcript TPM GCT (optionally gzipped).
        sample_tissues: tab-separated sample attributes, mapping ``sample_column`` to ``tissue_column``.
        out: the Parquet file to write (atomically: a failed run leaves no partial file).
        window: DNA window length in bp, centred on the TSS.
        tissue_column: tissue column of the sample attributes (GTEx: ``SMTS``; ``SMTSD`` for subtissues).
        sample_column: sample id column of the sample attributes.
        min_samples: tissues with fewer samples in the expression file are left out.
        bad_values: ``error`` on NaN or negative TPM (naming the line), or ``skip`` those transcripts
            (counted).
        chunk_rows: transcripts per chunk read and per Parquet row group.
        coordinates: leave the ``DNA`` column out (its ``contig``, ``strand`` and 0-based ``tss``
            locate the window): the table stays small, and the data module cuts each window from the
            genome when it reads the record (``genome: {fasta: FASTA, contig_column: contig,
            tss_column: tss, window: WINDOW}``).

    Returns:
        The counts of what was written and left out.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    if window < 1 or min_samples < 1 or chunk_rows < 1:
        raise DataError("window, min_samples and chunk_rows must be positive")
    out = Path(out).expanduser()
    if out.suffix.lower() not in (".parquet", ".pq"):
        raise DataError(f"--out {out}: the table is written as Parquet; name it {out.with_suffix('.parquet').name}")
    genome = open_genome(fasta)
    transcripts = read_annotation(annotation)
    sample_tissue = read_sample_tissues(Path(sample_tissues).expanduser(), sample_column, tissue_column)
    expression = Path(expression).expanduser()
    if not expression.is_file():
        raise DataError(f"expression file {str(expression)!r} does not exist")
    summary = BuildSummary()
    lines: dict[str, int] = {}  # each expression id, as written, and its line
    matched: dict[str, str] = {}  # each annotation transcript matched (by its key), and the expression id matching it
    with atomic_path(out) as tmp:
        writer = None
        try:
            for line, chunk in gct_chunks(expression, chunk_rows):
                summary.expression_rows += len(chunk)
                if writer is None:
                    samples = [str(c) for c in chunk.columns[2:]]
                    summary.samples_without_tissue = [s for s in samples if s not in sample_tissue]
                    tissues, matrix = _tissue_matrix(samples, sample_tissue, min_samples)
                    summary.tissues = tissues
                    schema = _schema(tissues, coordinates)
                    writer = pq.ParquetWriter(tmp, schema)
                values = chunk.iloc[:, 2:].to_numpy(dtype=np.float64)
                bad = ~(values >= 0)  # NaN compares false
                rows = []
                means = np.log1p(np.where(bad, 0.0, values) @ matrix)
                for i, (tid, gid) in enumerate(zip(chunk.iloc[:, 0], chunk.iloc[:, 1], strict=True)):
                    if bad[i].any():
                        if bad_values == "error":
                            j = int(np.flatnonzero(bad[i])[0])
                            raise DataError(
                                f"{expression}:{line + i}: TPM of {tid} in sample {samples[j]} is {values[i, j]} "
                                f"(NaN or negative); fix the file or pass --bad-values skip"
                            )
                        summary.bad_values_skipped += 1
                        continue
                    tid = str(tid)
                    if tid in lines:
                        raise DataError(f"{expression}:{line + i}: transcript {tid} appears twice (first at line "
                                        f"{lines[tid]}); keep one row per transcript")  # fmt: skip
                    lines[tid] = line + i
                    key = _match(transcripts, tid)
                    if key is None:
                        summary.missing_from_annotation += 1
                        continue
                    transcript, other = transcripts[key], matched.setdefault(key, tid)
                    if other != tid:
                        raise DataError(
                            f"{expression}:{line + i}: transcripts {other} (line {lines[other]}) and {tid} collide "
                            f"once their versions are stripped: both match {transcript.transcript_id} of the "
                            f"annotation, which has one transcript of that id; keep one of them in the expression "
                            f"file, or use the annotation release the expression was quantified with"
                        )
                    if transcript.contig not in genome:
                        summary.missing_contigs[transcript.contig] += 1
                        continue
                    row = transcript_sequences(genome, transcript, window, dna=not coordinates)
                    summary.padded += row.pop("padded")
                    if coordinates:
                        del row["DNA"]
                    summary.noncoding += not row["Protein"]
                    row.update(
                        transcript_id=tid, gene_id=str(gid), annotation_transcript_id=transcript.transcript_id,
                        annotation_gene_id=transcript.gene_id, contig=transcript.contig, strand=transcript.strand,
                        biotype=transcript.biotype, tss=transcript.tss,
                    )  # fmt: skip
                    row.update(zip(tissues, means[i].astype(np.float32).tolist(), strict=True))
                    rows.append(row)
                if rows:
                    writer.write_table(pa.Table.from_pylist(rows, schema=schema))
                    summary.written += len(rows)
            if writer is None:
                raise DataError(f"{expression} has no transcripts")
            if not summary.written:
                why = summary.why_empty(list(genome.keys()), transcripts)
                raise DataError(f"no transcript written to {out}: {why}")
        finally:
            if writer is not None:
                writer.close()
    summary.missing_from_expression = sum(1 for key in transcripts if key not in matched)
    return summary


def _match(transcripts: dict[str, Transcript], tid: str) -> str | None:
    """The key of the annotation's transcript of the expression id ``tid``: the id without its version (how
    :func:`~mmfuse.data.files.annotation.read_annotation` keys a transcript whose id stays unique without
    it), else the id as written (ids that differ only in their suffix, e.g. isoforms ``AT1G01010.1`` and
    ``.2``); ``None`` when the annotation has neither."""
    return next((key for key in (strip_version(tid), tid) if key in transcripts), None)
