"""Peaks of TF binding in BED files (name ``TF:context``, as ReMap writes them; narrowPeak summits).

Used by :class:`~mmfuse.data.TFBinding`; see :mod:`mmfuse.data.datasets.tf_binding` for the data set built
from them.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import IO

import numpy as np
import pandas as pd

from mmfuse.data.errors import DataError
from mmfuse.data.files.tables import open_text
from mmfuse.registry import suggest_name

__all__ = ["read_peaks"]

_SKIPPED_PREFIXES = ("#", "track", "browser")


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
