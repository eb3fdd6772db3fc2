"""Files of TF binding data: peaks (BED, name ``TF:context``) and TF proteins (FASTA); region overlaps.

Used by :class:`~mmfuse.data.TFBinding`; see :mod:`mmfuse.data.tf_binding` for the data set built
from them. :class:`IntervalIndex` answers which regions overlap a set of peaks, and
:func:`sample_free` draws regions that pass such a test, reproducibly and without testing a whole
large pool when a few draws suffice.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO

import numpy as np
import pandas as pd

from mmfuse.data.errors import DataError
from mmfuse.data.sources import open_text
from mmfuse.registry import suggest_name

__all__ = ["IntervalIndex", "outside", "protein_name", "read_peaks", "read_proteins", "sample_free"]

_SKIPPED_PREFIXES = ("#", "track", "browser")
_GENE_NAME = re.compile(r"\bGN=(\S+)")
_ROUNDS = 8  # random draws of candidates before the exhaustive search


# ---------------------------------------------------------------------------------------------
# readers


def _open_text(path: Path) -> IO[str]:
    return open_text(path, "file")


def _is_int(text: str) -> bool:
    return text.strip().lstrip("-").isdigit()


def read_peaks(
    path: str | Path, summit: bool = False, contexts: Sequence[str] | None = None, tfs: Sequence[str] | None = None
) -> pd.DataFrame:
    """Peaks of a BED file whose name (4th) column is ``TF:context``, one row per peak and context.

    Blank lines, lines starting with ``#``, ``track`` or ``browser``, and a header line (a first line
    whose start is not a number) are skipped; columns past the fourth are ignored, except the tenth
    (narrowPeak's summit offset from the start, ``-1`` for none) when ``summit`` is set. A name with
    several contexts separated by commas gives one row per context.

    Args:
        path: the BED file, optionally gzipped (``.gz``).
        summit: read the narrowPeak summit (10th column).
        contexts: keep only these contexts (default: all).
        tfs: keep only these TFs (default: all).

    Returns:
        Columns ``contig``, ``start``, ``end`` (0-based, half-open), ``summit`` (absolute position, or
        -1), ``tf``, ``context`` and ``line`` (its line in the file).

    Raises:
        DataError: a missing file, a malformed line (named ``file:line``, with what is wrong), or a
            name in ``contexts``/``tfs`` that no peak has (with the closest names of the file).

    Examples:
        >>> import tempfile, pathlib
        >>> bed = pathlib.Path(tempfile.mkdtemp()) / "peaks.bed"
        >>> _ = bed.write_text("track name=x\\nchr1\\t100\\t160\\tFOXA1:MCF-7,HepG2\\t0\\t.\\n")
        >>> read_peaks(bed)[["start", "tf", "context"]].values.tolist()
        [[100, 'FOXA1', 'MCF-7'], [100, 'FOXA1', 'HepG2']]
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise DataError(f"peaks file {str(path)!r} does not exist")
    keep_contexts = set(contexts) if contexts is not None else None
    keep_tfs = set(tfs) if tfs is not None else None
    columns: dict[str, list] = {k: [] for k in ("contig", "start", "end", "summit", "tf", "context", "line")}
    seen_contexts: set[str] = set()
    seen_tfs: set[str] = set()
    first = True
    with _open_text(path) as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip() or line.startswith(_SKIPPED_PREFIXES):
                continue
            fields = line.rstrip("\r\n").split("\t")
            if len(fields) < 4:
                fields = line.split()
            is_header = first and (len(fields) < 2 or not _is_int(fields[1]))
            first = False
            if is_header:
                continue
            contig, start, end, peak_summit, tf, names = _parse_peak(fields, summit, f"{path}:{number}")
            if keep_contexts is not None:
                seen_contexts.update(names)
            if keep_tfs is not None:
                seen_tfs.add(tf)
                if tf not in keep_tfs:
                    continue
            for context in names:
                if keep_contexts is None or context in keep_contexts:
                    for key, value in zip(columns, (contig, start, end, peak_summit, tf, context, number), strict=True):
                        columns[key].append(value)
    for option, kept, seen in (("contexts", keep_contexts, seen_contexts), ("tfs", keep_tfs, seen_tfs)):
        if kept is not None and kept - seen:
            raise DataError(_unmatched(option, sorted(kept - seen), sorted(seen), path))
    table = pd.DataFrame(columns)
    return table.astype({"start": np.int64, "end": np.int64, "summit": np.int64, "line": np.int64})


def _unmatched(option: str, names: list[str], seen: list[str], path: Path) -> str:
    close = [f"{n!r} → {c!r}" for n in names if (c := suggest_name(n, seen)) is not None]
    hint = f" Closest names in the file: {', '.join(close)}." if close else ""
    return (
        f"`{option}` lists {', '.join(map(repr, names))}, which name(s) no peak of {path}.{hint} Write them as the "
        f"file does (names are case-sensitive), or leave them out."
    )


def _parse_peak(fields: list[str], summit: bool, where: str) -> tuple[str, int, int, int, str, list[str]]:
    """``(contig, start, end, summit, tf, contexts)`` of one BED line's fields; ``where`` is ``file:line``."""
    if len(fields) < 4:
        raise DataError(
            f"{where}: {len(fields)} column(s); a peak needs 4 tab-separated columns: chrom, start, end and "
            f"the name TF:context"
        )
    contig, start_text, end_text, name = (f.strip() for f in fields[:4])
    if not (_is_int(start_text) and _is_int(end_text)):
        raise DataError(f"{where}: start {start_text!r} and end {end_text!r} must be whole numbers (0-based BED)")
    start, end = int(start_text), int(end_text)
    if start < 0 or end <= start:
        raise DataError(f"{where}: the interval [{start}, {end}) is empty or negative; BED needs 0 <= start < end")
    tf, colon, context_text = name.partition(":")
    contexts = [c.strip() for c in context_text.split(",") if c.strip()]
    if not colon or not tf.strip() or not contexts:
        raise DataError(
            f"{where}: the name {name!r} is not TF:context (e.g. FOXA1:MCF-7, as ReMap's non-redundant peak "
            f"files write it). ReMap's all-peaks files write experiment.TF.biotype; convert them with "
            f'awk \'BEGIN{{FS=OFS="\\t"}} {{split($4, a, "."); $4 = a[2] ":" a[3]; print}}\''
        )
    peak_summit = -1
    if summit:
        offset = fields[9].strip() if len(fields) >= 10 else ""
        if not _is_int(offset):
            raise DataError(
                f"{where}: no summit offset in the 10th column (narrowPeak), found {offset or 'none'!r}; "
                f"set center: midpoint for peaks without summits"
            )
        if int(offset) >= end - start:
            raise DataError(f"{where}: summit offset {offset} lies past the peak's end ({end - start} bp long)")
        peak_summit = start + int(offset) if int(offset) >= 0 else -1
    return contig, start, end, peak_summit, tf.strip(), contexts


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
    with _open_text(path) as handle:
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


# ---------------------------------------------------------------------------------------------
# intervals and negatives


class IntervalIndex:
    """Which query intervals overlap any interval of a fixed set (0-based, half-open: touching is not
    overlapping). Per contig it keeps the starts sorted and the running maximum of the ends, so each
    query is one binary search.

    Args:
        contig: ``(n,)`` integer code of each interval's contig.
        start: ``(n,)`` starts.
        end: ``(n,)`` ends.

    Examples:
        >>> index = IntervalIndex(np.array([0, 0]), np.array([10, 50]), np.array([20, 60]))
        >>> index.overlaps(np.array([0, 0, 1]), np.array([19, 20, 10]), np.array([25, 50, 20])).tolist()
        [True, False, False]
    """

    def __init__(self, contig: np.ndarray, start: np.ndarray, end: np.ndarray) -> None:
        self._by_contig: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        for c in np.unique(contig):
            rows = np.flatnonzero(contig == c)
            order = rows[np.argsort(start[rows], kind="stable")]
            self._by_contig[int(c)] = (start[order], np.maximum.accumulate(end[order]))

    def overlaps(self, contig: np.ndarray, start: np.ndarray, end: np.ndarray) -> np.ndarray:
        """``(m,)`` bool: whether each query interval (``contig``, ``start``, ``end``) overlaps one of the set."""
        hit = np.zeros(len(contig), dtype=bool)
        for c in np.unique(contig):
            if int(c) not in self._by_contig:
                continue
            starts, max_end = self._by_contig[int(c)]
            rows = np.flatnonzero(contig == c)
            before = np.searchsorted(starts, end[rows], side="left")  # intervals starting before the query ends
            found = before > 0
            found[found] = max_end[before[found] - 1] > start[rows][found]
            hit[rows] = found
        return hit


def outside(
    index: IntervalIndex, contig: np.ndarray, start: np.ndarray, end: np.ndarray
) -> Callable[[np.ndarray], np.ndarray]:
    """``ids -> bool array``: which of the intervals ``ids`` (rows of ``contig``/``start``/``end``) overlap
    nothing in ``index``."""
    return lambda ids: ~index.overlaps(contig[ids], start[ids], end[ids])


def sample_free(
    rng: np.random.Generator, candidates: np.ndarray, need: int, free: Callable[[np.ndarray], np.ndarray]
) -> np.ndarray:
    """Up to ``need`` distinct ``candidates`` for which ``free`` holds, drawn at random (reproducibly).

    Candidates are drawn in rounds and tested in bulk, so a large pool is never tested whole when
    most of it is free; if the rounds leave some wanted, every remaining candidate is tested.

    Args:
        rng: the random generator (the same state gives the same draw).
        candidates: distinct ids to draw from.
        need: how many to draw.
        free: ``ids -> (len(ids),) bool``, whether each id may be drawn (e.g. :func:`outside`).

    Returns:
        ``min(need, number of free candidates)`` distinct ids, in drawn order.

    Examples:
        >>> picked = sample_free(np.random.default_rng(0), np.arange(100), 5, lambda x: x % 2 == 0)
        >>> len(picked), bool((picked % 2 == 0).all()), len(set(picked.tolist()))
        (5, True, 5)
    """
    picked = np.empty(0, dtype=candidates.dtype)
    if need <= 0 or len(candidates) == 0:
        return picked
    for _ in range(_ROUNDS):
        draw = candidates[rng.integers(0, len(candidates), size=2 * need + 8)]
        _, first = np.unique(draw, return_index=True)
        draw = draw[np.sort(first)]  # distinct, in drawn order
        draw = draw[~np.isin(draw, picked)]
        picked = np.concatenate([picked, draw[free(draw)]])[:need]
        if len(picked) == need:
            return picked
    rest = candidates[~np.isin(candidates, picked)]
    rest = rng.permutation(rest[free(rest)])
    return np.concatenate([picked, rest[: need - len(picked)]])
