"""Reading GTEx expression files: a GCT in chunks, and the sample attributes that give each sample's tissue.

A GCT (``#1.2``; a dimensions line ``ROWS<TAB>SAMPLES``; a header ``Name Description sample…``; one row per
transcript or gene) is read in chunks of rows, each with the line number of its first row, so errors
name the line. Refused, naming the line and the fix: a missing version or dimensions line, a header or a
file that disagrees with the dimensions (a truncated download), an empty id, a value that is not a number.
Ids are read as written (``NA`` is an id); an empty value or one of pandas' null spellings (``NA``,
``nan``, …) is NaN.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd

from mmfuse.data.errors import DataError
from mmfuse.data.files.tables import NULLS, check_table_file, open_text, reading_error

__all__ = ["gct_chunks", "sample_tissues"]

#: what pandas raises on a file it cannot read (not ValueError: the DataErrors raised while reading are ValueErrors)
_UNREADABLE = (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, OSError, EOFError)


def _dimensions(path: Path, line: str) -> tuple[int, int]:
    fields = line.rstrip("\r\n").split("\t")
    try:
        rows, samples = int(fields[0]), int(fields[1])
    except (ValueError, IndexError):
        raise DataError(
            f"{path}:2: expected the GCT dimensions line (rows and sample columns, tab-separated, e.g. "
            f"'74628\\t17382'), found {line.strip()[:60]!r}; add it after the #1.2 line"
        ) from None
    return rows, samples


def gct_chunks(path: Path, chunk_rows: int) -> Iterator[tuple[int, pd.DataFrame]]:
    """``(line of the chunk's first row, chunk)``; each chunk's values are float64 (its first two columns:
    id and description, as text)."""
    with open_text(path, "expression file") as handle:
        try:
            if not handle.readline().startswith("#1."):
                raise DataError(f"{path}:1: not a GCT file (the first line should be #1.2)")
            rows, samples = _dimensions(path, handle.readline())
            # ids as written (``NA`` is an id, not missing); the values' null spellings are NaN in _check_chunk
            reader = pd.read_csv(handle, sep="\t", chunksize=chunk_rows, dtype={0: str, 1: str},
                                 keep_default_na=False)  # fmt: skip
            line, seen = 4, 0  # of the first data row: #1.2, dimensions, header
            for chunk in reader:
                if not isinstance(chunk.index, pd.RangeIndex):  # pandas made the extra fields an index
                    raise DataError(f"{path}:{line}: the row has more fields than the header; check its tabs")
                if chunk.shape[1] - 2 != samples:
                    raise DataError(f"{path}:3: the header names {chunk.shape[1] - 2} samples, the dimensions line "
                                    f"says {samples}; fix either")  # fmt: skip
                _check_chunk(path, chunk, line)
                yield line, chunk
                line, seen = line + len(chunk), seen + len(chunk)
        except pd.errors.ParserError as exc:  # its line numbers count from the header
            found = re.search(r"Expected (\d+) fields in line (\d+), saw (\d+)", str(exc))
            if found is None:
                raise reading_error(path, exc) from None
            expected, at, saw = (int(g) for g in found.groups())
            raise DataError(f"{path}:{at + 2}: {saw} tab-separated fields, the header has {expected}") from None
        except _UNREADABLE as exc:
            raise reading_error(path, exc) from None
    if seen != rows:
        raise DataError(f"{path}: the dimensions line says {rows} rows, the file has {seen}: it may be truncated "
                        f"(download it again) or the dimensions line is wrong")  # fmt: skip


def _check_chunk(path: Path, chunk: pd.DataFrame, line: int) -> None:
    empty = np.flatnonzero(chunk.iloc[:, 0].isna().to_numpy() | (chunk.iloc[:, 0].astype(str).str.strip() == ""))
    if len(empty):
        raise DataError(f"{path}:{line + int(empty[0])}: the transcript id (first column) is empty")
    for column in chunk.columns[2:]:
        values = chunk[column]
        if values.dtype.kind in "fiu":
            continue
        numbers = pd.to_numeric(values, errors="coerce")
        missing = values.isna().to_numpy() | values.isin(NULLS).to_numpy()  # empty, NA, nan, …: NaN
        bad = np.flatnonzero(numbers.isna().to_numpy() & ~missing)
        if len(bad):
            i = int(bad[0])
            raise DataError(f"{path}:{line + i}: the value of {chunk.iloc[i, 0]} in sample {column} is "
                            f"{values.iloc[i]!r}, not a number; fix the file")  # fmt: skip
        chunk[column] = numbers


def sample_tissues(path: Path, sample_column: str, tissue_column: str) -> dict[str, str]:
    """``{sample id: tissue}`` from a tab-separated sample attributes file (rows without either are left out)."""
    if not path.is_file():
        raise DataError(f"sample attributes {str(path)!r} do not exist")
    check_table_file(path)
    try:
        header = pd.read_csv(path, sep="\t", nrows=0).columns
        missing = [c for c in (sample_column, tissue_column) if c not in header]
        if missing:
            raise DataError(f"{path} has no column {missing[0]!r} (columns: {', '.join(header[:12])}…)")
        # sample ids as written; a tissue that is empty or NA leaves its sample out
        table = pd.read_csv(path, sep="\t", usecols=[sample_column, tissue_column], dtype=str,
                            keep_default_na=False, na_values={tissue_column: NULLS}).dropna()  # fmt: skip
        table = table[table[sample_column] != ""]
    except _UNREADABLE as exc:
        raise reading_error(path, exc) from None
    return dict(zip(table[sample_column], table[tissue_column], strict=True))
