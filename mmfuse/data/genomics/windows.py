"""DNA windows cut from a genome by each record's coordinates, when the record is read.

A table may give a transcript's coordinates instead of its DNA (IsoFormer's ``GTEx_final.csv``:
``chr``, ``strand``, ``start``, ``end``, 1-based and inclusive). :class:`GenomeWindows` names the
genome FASTA and the columns; :class:`WindowReader` checks every record's coordinates up front
(contig, strand, start ≤ end: one clear error naming the record) and cuts each window in the
process that reads the record (a DataLoader worker), from the indexed FASTA through pyfaidx.

A window holds ``window`` bp read 5'→3' on the transcript's strand, the TSS at index ``window // 2``
(upstream before it): on ``+`` the TSS is ``start``, on ``-`` it is ``end`` and the window is
reverse-complemented. Positions past a contig's ends are ``N`` (counted); soft-masked lowercase
is upper-cased; IUPAC ambiguity codes (R, Y, K, M, S, W, B, D, H, V) are read as ``N``, as
Enformer's one-hot encoding reads both (no base); any other letter is an error naming the record.
Contig names match with or without ``chr`` (and ``MT``/``chrM``).
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mmfuse.data.errors import DataError
from mmfuse.data.files.fasta import open_genome, padded_slice

__all__ = ["DEFAULT_WINDOW", "GenomeWindows", "WindowReader", "find_contig", "reverse_complement"]

DEFAULT_WINDOW = 196_608  # Enformer's input length
_COMPLEMENT = str.maketrans("ACGTNacgtn", "TGCANtgcan")
_IUPAC_TO_N = str.maketrans("RYKMSWBDHVryksmwbdhv", "N" * 20)
_NOT_DNA = re.compile(r"[^ACGTN]")


def reverse_complement(sequence: str) -> str:
    """The reverse complement of an ``ACGTN`` sequence.

    Examples:
        >>> reverse_complement("AACGTN")
        'NACGTT'
    """
    return sequence.translate(_COMPLEMENT)[::-1]


@dataclass(frozen=True)
class GenomeWindows:
    """Where a table's DNA comes from when it gives coordinates instead of sequences.

    Args:
        fasta: the genome FASTA (plain or bgzip-compressed; its ``.fai`` index is built beside it
            if missing), e.g. GRCh38's ``GRCh38.primary_assembly.genome.fa``.
        window: bp per window, centred on the TSS (Enformer reads 196,608).
        contig_column: the column naming each record's contig (``chr1`` or ``1``: both match).
        strand_column: the column holding ``+`` or ``-``.
        start_column: the transcript's first position.
        end_column: the transcript's last position.
        one_based: ``start``/``end`` are 1-based and inclusive (GTF, IsoFormer's file); ``false``:
            0-based, end exclusive (BED).
        tss_column: a column holding the TSS itself (0-based; ``mmfuse data build-isoform
            --coordinates`` writes ``tss``) instead of ``start``/``end``.
        modality: the modality the windows feed.
    """

    fasta: str
    window: int = DEFAULT_WINDOW
    contig_column: str = "chr"
    strand_column: str = "strand"
    start_column: str = "start"
    end_column: str = "end"
    one_based: bool = True
    tss_column: str | None = None
    modality: str = "dna"

    def __post_init__(self) -> None:
        if not isinstance(self.window, int) or isinstance(self.window, bool) or self.window < 1:
            raise DataError(f"genome `window` must be a positive whole number of bp, not {self.window!r}")

    @property
    def columns(self) -> list[str]:
        """The coordinate columns read from the table."""
        ends = [self.tss_column] if self.tss_column else [self.start_column, self.end_column]
        return [self.contig_column, self.strand_column, *ends]


def _contig_aliases(name: str) -> list[str]:
    bare = name[3:] if name.lower().startswith("chr") else name
    aliases = [name, bare, f"chr{bare}"]
    if bare.upper() in ("M", "MT"):
        aliases += ["MT", "chrM", "M", "chrMT"]
    return aliases


def find_contig(name: str, contigs: Any) -> str | None:
    """The name ``contigs`` (a genome, or any container of names) gives contig ``name``, with or without
    ``chr`` (and ``MT``/``chrM``); ``None`` if it has none of them.

    Examples:
        >>> find_contig("chr1", {"1", "2"}), find_contig("MT", ["chrM"]), find_contig("3", ["1"])
        ('1', 'chrM', None)
    """
    return next((a for a in _contig_aliases(name) if a in contigs), None) if name else None


class WindowReader:
    """Checks coordinates once and cuts windows by record row, opening the FASTA once per process.

    Args:
        options: the genome and columns.
        frame: the coordinate columns and ``ids`` of the records (one row per store row).
        ids: the records' ids, for messages.
        source: the table, for messages.
    """

    def __init__(self, options: GenomeWindows, frame: pd.DataFrame, ids: Sequence[str], source: str) -> None:
        self.options = options
        self.path = Path(options.fasta).expanduser()
        self._genome: Any = None
        self._pid = -1
        lengths = self._lengths()
        self.contigs, code = self._resolve(frame[options.contig_column], ids, lengths, source)
        tss, minus = self._tss(frame, ids, source)
        sizes = np.array([lengths[c] for c in self.contigs], dtype=np.int64)[code]
        beyond = np.flatnonzero(tss >= sizes)
        if len(beyond):
            i = int(beyond[0])
            raise DataError(
                f"{len(beyond)} record(s) of {source} start past the end of their contig in {self.path} (e.g. "
                f"{ids[i]!r}: TSS {tss[i] + 1:,} on {self.contigs[code[i]]}, {sizes[i]:,} bp): do the table and the "
                f"genome come from the same assembly?"
            )
        half = options.window // 2
        self.starts = np.where(minus, tss - (options.window - half - 1), tss - half)
        self.code, self.minus = code.astype(np.int32), minus
        self.padded = int(((self.starts < 0) | (self.starts + options.window > sizes)).sum())

    # set-up ----------------------------------------------------------------------------------------
    def genome(self) -> Any:
        """The pyfaidx ``Fasta``, opened in this process (a file handle is not shared across a fork)."""
        if self._genome is None or self._pid != os.getpid():
            self._genome, self._pid = open_genome(self.path), os.getpid()
        return self._genome

    def _lengths(self) -> dict[str, int]:
        genome = self.genome()
        return {name: len(record) for name, record in genome.records.items()}

    def _resolve(self, column: pd.Series, ids: Sequence[str], lengths: dict[str, int],
                 source: str) -> tuple[list[str], np.ndarray]:  # fmt: skip
        names = column.astype("string").fillna("").str.strip()
        uniques, code = np.unique(names.to_numpy(dtype=str), return_inverse=True)
        resolved = []
        for name in uniques:
            match = find_contig(str(name), lengths)
            if match is None:
                i = int(np.flatnonzero(names.to_numpy(dtype=str) == name)[0])
                tried = " or ".join(repr(a) for a in dict.fromkeys(_contig_aliases(str(name))[:3]))
                known = ", ".join(list(lengths)[:8])
                raise DataError(
                    f"record {ids[i]!r} of {source} is on contig {str(name)!r}, which {self.path} does not hold "
                    f"(looked for {tried}; its contigs: {known}{' …' if len(lengths) > 8 else ''}). Use the genome "
                    f"the table was made for, or fix column {self.options.contig_column!r}."
                )
            resolved.append(match)
        return resolved, code

    def _tss(self, frame: pd.DataFrame, ids: Sequence[str], source: str) -> tuple[np.ndarray, np.ndarray]:
        o = self.options
        strand = np.array(frame[o.strand_column].astype("string").fillna("").str.strip().tolist(), dtype=object)
        bad = np.flatnonzero((strand != "+") & (strand != "-"))
        if len(bad):
            i = int(bad[0])
            raise DataError(
                f"{len(bad)} record(s) of {source} have a strand other than '+' or '-' in column {o.strand_column!r} "
                f"(e.g. {ids[i]!r}: {strand[i]!r}); the TSS and the window's direction depend on it. Fix the strand, "
                f"or leave those records out."
            )
        minus = strand == "-"
        columns = [o.tss_column] if o.tss_column else [o.start_column, o.end_column]
        values = {}
        for name in columns:
            number = pd.to_numeric(frame[name], errors="coerce").to_numpy(dtype=np.float64)
            odd = np.flatnonzero(~np.isfinite(number) | (number != np.round(number)))
            if len(odd):
                i = int(odd[0])
                raise DataError(
                    f"{len(odd)} record(s) of {source} have a missing or non-integer {name!r} (e.g. {ids[i]!r}: "
                    f"{frame[name].iloc[i]!r}); coordinates must be whole numbers."
                )
            values[name] = number.astype(np.int64)
        if o.tss_column:
            tss = values[o.tss_column]
        else:
            start, end = values[o.start_column], values[o.end_column]
            base = 1 if o.one_based else 0
            wrong = np.flatnonzero((start > end - (1 - base)) | (start < base))
            if len(wrong):
                i = int(wrong[0])
                kind = "1-based, inclusive" if base else "0-based, end exclusive"
                raise DataError(
                    f"{len(wrong)} record(s) of {source} have start > end or a start below {base} (e.g. {ids[i]!r}: "
                    f"start {start[i]}, end {end[i]}); coordinates are {kind} (genome.one_based: "
                    f"{str(o.one_based).lower()}). Fix them, or leave those records out."
                )
            tss = np.where(minus, end - 1, start - base)
        if (tss < 0).any():
            i = int(np.flatnonzero(tss < 0)[0])
            raise DataError(f"record {ids[i]!r} of {source} has a negative TSS ({tss[i]}); fix its coordinates.")
        return tss, minus

    # reading ---------------------------------------------------------------------------------------
    def __call__(self, row: int, record_id: str) -> str:
        """The window of store row ``row``, 5'→3' on the record's strand."""
        contig = self.contigs[self.code[row]]
        start = int(self.starts[row])
        end = start + self.options.window
        window = padded_slice(self.genome(), contig, start, end)[0].translate(_IUPAC_TO_N)
        bad = _NOT_DNA.search(window)
        if bad:
            where = start + bad.start()
            raise DataError(
                f"record {record_id!r}: the genome holds {bad.group()!r} at {contig}:{where + 1:,} (1-based), which is "
                f"not a DNA letter; check {self.path}"
            )
        return reverse_complement(window) if self.minus[row] else window

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "_genome"} | {"_genome": None}
