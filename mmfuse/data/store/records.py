"""The records store: a table's columns in a memory-mapped Arrow file, written once and read by row.

A data module never holds a data set's sequences as Python objects. :func:`open_records` streams the
user's source (CSV/TSV/Parquet files, a directory of them, a ``datasets`` directory or a hub data
set) in blocks into an Arrow IPC file under ``records_dir`` (default ``$MMFUSE_CACHE/records``,
else ``~/.cache/mmfuse/records``), named by a digest of the source (paths, sizes, modification
times) and of the columns kept, so it is written once and found again by every later run,
DataLoader worker and DDP rank. The file is memory-mapped: processes share its pages through the
page cache instead of copying them, and a row costs a few page reads.

Only the columns a data module asks for are kept, plus ``__row_id__`` (``FILE:ROW``, the data row
counted from 0 in its file: an id for tables that have none) and, for sources whose files or
``DatasetDict`` splits give the split, the split column. CSV/TSV columns are read as text, so ids
such as ``00003`` stay as written.
"""

from __future__ import annotations

import hashlib
import json
import mmap
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mmfuse.data.errors import DataError
from mmfuse.data.files.tables import (
    _BATCH_ROWS,
    BLOCKS,
    SPLIT_ALIASES,
    RowTooLong,
    SourcePart,
    part_batches,
    part_columns,
    source_parts,
)
from mmfuse.io import atomic_path

__all__ = ["ROW_ID", "RecordStore", "default_records_dir", "open_records"]

ROW_ID = "__row_id__"
_VERSION = 1


def default_records_dir() -> Path:
    """``$MMFUSE_CACHE/records``, else ``~/.cache/mmfuse/records``."""
    return Path(os.environ.get("MMFUSE_CACHE", "~/.cache/mmfuse")).expanduser() / "records"


# writing ----------------------------------------------------------------------------------------------
def _digest(description: Any) -> str:
    return hashlib.sha256(json.dumps(description, sort_keys=True, default=str).encode()).hexdigest()[:24]


def _stat(path: Path) -> list[Any]:
    info = path.stat()
    return [str(path.resolve()), info.st_size, info.st_mtime_ns]


def _dataset_splits(loaded: Any) -> list[tuple[str | None, Any]]:
    if not hasattr(loaded, "keys"):  # a Dataset
        return [(None, loaded)]
    names = list(loaded.keys())
    if len(names) == 1:
        return [(None, loaded[names[0]])]
    unknown = [n for n in names if n.lower() not in SPLIT_ALIASES]
    if unknown:
        raise DataError(
            f"the data set has splits {names}; {unknown} cannot be read as train, validation or test. "
            f"Rename them (e.g. with DatasetDict.save_to_disk), or save one table with a split column."
        )
    return [(SPLIT_ALIASES[n.lower()], loaded[n]) for n in names]


def open_records(
    path: str,
    columns: Sequence[str],
    split_column: str,
    records_dir: str | Path | None = None,
    revision: str | None = None,
    preset_file: str | None = None,
) -> RecordStore:
    """The records store of a source: opened if written before, else written first (atomically).

    Args:
        path: the source (see :func:`source_parts`).
        columns: the columns to keep; those the source lacks are left out (the caller checks
            :attr:`RecordStore.names` and says what is missing).
        split_column: the column that receives the split given by file names or ``DatasetDict`` keys
            (replacing a column of that name).
        records_dir: where stores are written (default :func:`default_records_dir`).
        revision: of a hub data set.
        preset_file: the file of a known hub data set (see :func:`source_parts`).
    """
    parts = source_parts(path, revision, preset_file)
    if isinstance(parts, list):
        splits: list[tuple[str | None, Any]] = [(p.split, p) for p in parts]
        description: Any = [_stat(p.path) + [p.split] for p in parts]
        names = list(dict.fromkeys(n for p in parts for n in part_columns(p)))
    else:
        splits = _dataset_splits(parts)
        description = [[s, d._fingerprint] for s, d in splits]
        names = list(dict.fromkeys(n for _, d in splits for n in d.column_names))
    has_split = any(s is not None for s, _ in splits)
    if has_split:
        names = [n for n in names if n != split_column] + [split_column]
    kept = [c for c in dict.fromkeys(columns) if c in names and not (has_split and c == split_column)]
    key = _digest({"v": _VERSION, "source": description, "columns": kept, "split": split_column if has_split else None})
    directory = Path(records_dir).expanduser() if records_dir is not None else default_records_dir()
    target = directory / f"{key}.arrow"
    for block in BLOCKS:
        if target.is_file():
            break
        try:
            _write(target, splits, kept, split_column if has_split else None, names, path, block)
        except RowTooLong:
            continue
    return RecordStore.open(target)


def _write(target: Path, splits: list[tuple[str | None, Any]], kept: list[str], split_column: str | None,
           names: list[str], source: str, block: int) -> None:  # fmt: skip
    import pyarrow as pa

    with atomic_path(target) as tmp:
        writer = None
        try:
            for split, part in splits:
                label = part.path.name if isinstance(part, SourcePart) else (split or "data")
                present = [c for c in kept if c in (part_columns(part) if isinstance(part, SourcePart)
                                                    else part.column_names)]  # fmt: skip
                if isinstance(part, SourcePart):
                    batches = part_batches(part, present, block)
                else:
                    batches = (t for t in part.select_columns(present).with_format("arrow").iter(_BATCH_ROWS))
                row = 0
                for batch in batches:
                    table = pa.Table.from_batches([batch]) if isinstance(batch, pa.RecordBatch) else batch
                    table = _normalise(table, kept)
                    n = table.num_rows
                    table = table.append_column(ROW_ID, pa.array([f"{label}:{i}" for i in range(row, row + n)]))
                    if split_column is not None:
                        table = table.append_column(split_column, pa.array([split] * n, pa.string()))
                    row += n
                    if writer is None:
                        meta = {"mmfuse": json.dumps({"version": _VERSION, "names": names, "source": source})}
                        schema = table.schema.with_metadata(meta)
                        writer = pa.ipc.new_file(str(tmp), schema)
                    if not table.schema.equals(schema):
                        try:
                            table = table.cast(schema)
                        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                            raise DataError(
                                f"{label} of {source} stores its columns with other types than the part before "
                                f"it ({exc}); write every part with the same column types"
                            ) from None
                    writer.write_table(table)
            if writer is None:
                raise DataError(f"{source} holds no records")
        finally:
            if writer is not None:
                writer.close()


def _normalise(table: Any, kept: list[str]) -> Any:
    """``table`` with every column of ``kept`` (missing ones null), in that order, string-like as text."""
    import pyarrow as pa

    arrays, fields = [], []
    for name in kept:
        if name in table.column_names:
            column = table.column(name)
            if pa.types.is_large_string(column.type) or pa.types.is_string_view(column.type):
                column = column.cast(pa.string())
            elif pa.types.is_dictionary(column.type):
                column = column.cast(column.type.value_type)
            elif pa.types.is_null(column.type):
                column = column.cast(pa.string())
        else:
            column = pa.nulls(table.num_rows, pa.string())
        arrays.append(column)
        fields.append(pa.field(name, column.type))
    return pa.Table.from_arrays(arrays, schema=pa.schema(fields))


# reading ----------------------------------------------------------------------------------------------
class RecordStore:
    """A table of records, memory-mapped from its file (or held in memory), read by row or in blocks.

    Args:
        table: the ``pyarrow.Table``.
        names: every column of the source (the store keeps only some), for messages.
        source: what the records were read from, for messages.
        path: the store's file, when it has one (reopened, not copied, in spawned processes).
    """

    def __init__(self, table: Any, names: Sequence[str], source: str, path: Path | None = None,
                 mapping: mmap.mmap | None = None) -> None:  # fmt: skip
        self.table, self.names, self.source, self.path = table, list(names), source, path
        self._mmap = mapping

    @classmethod
    def open(cls, path: Path) -> RecordStore:
        """Memory-maps a store file written by :func:`open_records`."""
        import pyarrow as pa

        with path.open("rb") as handle:
            mapping = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
        table = pa.ipc.open_file(pa.BufferReader(pa.py_buffer(mapping))).read_all()  # zero-copy views of the map
        meta = json.loads((table.schema.metadata or {}).get(b"mmfuse", b"{}"))
        return cls(table, meta.get("names", table.column_names), meta.get("source", str(path)), path, mapping)

    @classmethod
    def from_frame(cls, frame: pd.DataFrame, source: str) -> RecordStore:
        """A store held in memory, of a table some code built (the sample data, peaks with windows)."""
        import pyarrow as pa

        frame = frame.reset_index(drop=True)
        table = pa.Table.from_pandas(frame, preserve_index=False)
        table = _normalise(table, list(table.column_names))
        table = table.append_column(ROW_ID, pa.array([f"row:{i}" for i in range(len(frame))]))
        return cls(table, list(frame.columns), source)

    def __len__(self) -> int:
        return self.table.num_rows

    @property
    def column_names(self) -> list[str]:
        return list(self.table.column_names)

    def frame(self, columns: Sequence[str], numeric: Mapping[str, Any] | None = None,
              categorical: Sequence[str] = ()) -> pd.DataFrame:  # fmt: skip
        """The (small) ``columns`` as a DataFrame (text as Python strings); never the sequences.

        ``numeric`` (``{column: "float32" | "float64"}``) columns stored as text (CSV) are parsed in
        Arrow when every cell is a number or missing, and ``categorical`` ones (a split, a contig, a
        strand) become pandas categoricals, so a table of 170k records does not become millions of
        Python strings; a numeric column with other text is left as text (the caller's check names
        the record).
        """
        import pyarrow as pa
        import pyarrow.compute as pc

        numeric = dict(numeric or {})
        table = self.table.select([c for c in dict.fromkeys(columns) if c in self.table.column_names])
        for name in table.column_names:
            column, kind = table.column(name), table.schema.field(name).type
            if name in numeric and (pa.types.is_string(kind) or pa.types.is_floating(kind)):
                try:
                    column = pc.cast(column, pa.type_for_alias(numeric[name]))
                except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                    continue
            elif name in categorical and pa.types.is_string(kind):
                column = pc.dictionary_encode(column)
            else:
                continue
            table = table.set_column(table.column_names.index(name), name, column)
        frame = table.to_pandas(split_blocks=True)
        del table
        self.release()
        pa.default_memory_pool().release_unused()
        return frame

    def blocks(self, column: str, size: int = 8192) -> Iterator[tuple[int, Any]]:
        """``(first row, array)`` blocks of one column, in row order (each block's pages released after it)."""
        chunked = self.table.column(column)
        start = 0
        while start < len(chunked):
            block = chunked.slice(start, size).combine_chunks()
            yield start, block
            start += len(block)
            del block
            self.release()

    def cell(self, column: Any, row: int) -> Any:
        """The value at ``row`` of a column (a ``ChunkedArray`` from :meth:`column`)."""
        return column[row].as_py()

    def column(self, name: str) -> Any:
        return self.table.column(name)

    def release(self) -> None:
        """Drops the pages this process read from its resident memory (they stay in the page cache)."""
        if self._mmap is not None and hasattr(mmap, "MADV_DONTNEED"):
            self._mmap.madvise(mmap.MADV_DONTNEED)

    def __getstate__(self) -> dict[str, Any]:  # a spawned DataLoader worker maps the file again
        if self.path is not None:
            return {"path": self.path}
        return {"table": self.table, "names": self.names, "source": self.source}

    def __setstate__(self, state: dict[str, Any]) -> None:
        if "path" in state:
            other = RecordStore.open(state["path"])
            self.__dict__.update(other.__dict__)
        else:
            self.__init__(state["table"], state["names"], state["source"])  # type: ignore[misc]


def numeric_mask(array: Any) -> np.ndarray:
    """Which text cells of ``array`` are numbers (``3``, ``-1.5e3``), e.g. a modality mapped to a label column."""
    import pyarrow.compute as pc

    found = pc.match_substring_regex(array, r"^\s*[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?\s*$")
    return np.asarray(found.fill_null(False).to_numpy(zero_copy_only=False), dtype=bool)
