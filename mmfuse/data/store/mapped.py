"""The records store as read: a table's columns memory-mapped from an Arrow IPC file (or held in memory).

:class:`RecordStore` reads records by row or in blocks and never copies the file: processes map it and share
its pages through the page cache. :mod:`mmfuse.data.store.records` writes the files.
"""

from __future__ import annotations

import json
import mmap
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mmfuse.data.errors import DataError
from mmfuse.data.store.integrity import Checks, Damaged, Unsealed, open_checked

__all__ = ["ROW_ID", "STORE_VERSION", "RecordStore", "normalise_columns", "numeric_mask"]

ROW_ID = "__row_id__"
STORE_VERSION = 2  #: 2: sealed with checksums (mmfuse.data.store.integrity)


def normalise_columns(table: Any, kept: list[str]) -> Any:
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



class RecordStore:
    """A table of records, memory-mapped from its file (or held in memory), read by row or in blocks.

    A mapped store's bytes are checked against the checksums written with them (see
    :mod:`~mmfuse.data.store.integrity`) before they are read: every column of a batch the first time this
    process reads from it (:meth:`value`, :meth:`scalar`, :meth:`blocks`, :meth:`chunks`), whole columns
    for :meth:`column` and :meth:`frame`, the whole file when it opens if it is small. Bytes that differ
    from those written stop the read with a :class:`~mmfuse.data.errors.DataError` naming the file.

    Args:
        table: the ``pyarrow.Table``.
        names: every column of the source (the store keeps only some), for messages.
        source: what the records were read from, for messages.
        path: the store's file, when it has one (reopened, not copied, in spawned processes).
        meta: what the writer kept beside the records (:func:`built_records`).
        checks: the file's checksums (:meth:`open` passes them; ``None``: held in memory, nothing to check).
    """

    def __init__(self, table: Any, names: Sequence[str], source: str, path: Path | None = None,
                 mapping: mmap.mmap | None = None, meta: Mapping[str, Any] | None = None,
                 checks: Checks | None = None) -> None:  # fmt: skip
        self._table, self.names, self.source, self.path = table, list(names), source, path
        self.meta = dict(meta or {})
        self._mmap, self._checks = mapping, checks
        self._index = {name: j for j, name in enumerate(table.column_names)}
        self._starts = list(checks.rows) if checks is not None else [0, table.num_rows]
        self._chunks: dict[str, list[Any]] = {}
        self._columns: dict[str, Any] = {}

    @classmethod
    def open(cls, path: Path) -> RecordStore:
        """Memory-maps a store file written by :func:`open_records`, after checking its layout."""
        import pyarrow as pa

        try:
            mapping, table, schema_meta, checks = open_checked(path)
        except Unsealed as exc:
            if not _arrow_file(path):
                raise _damaged(path, str(exc)) from None
            raise DataError(f"{path} is not a records store of this mmfuse version (an Arrow file written by "
                            f"something else, by another version, or before stores carried checksums): {_FIX}") \
                from None  # fmt: skip
        except Damaged as exc:
            raise _damaged(path, str(exc)) from None
        except (OSError, ValueError, pa.ArrowException) as exc:
            raise _damaged(path, str(exc)) from None
        try:
            meta = json.loads(schema_meta[b"mmfuse"])
            known = meta["version"] == STORE_VERSION and ROW_ID in table.column_names
        except (KeyError, TypeError, ValueError):
            known = False
        if not known:
            raise DataError(f"{path} is not a records store of this mmfuse version (an Arrow file written by "
                            f"something else, or by another version): {_FIX}")  # fmt: skip
        return cls(table, meta.get("names", table.column_names), meta.get("source", str(path)), path, mapping, meta,
                   checks)  # fmt: skip

    @classmethod
    def from_frame(cls, frame: pd.DataFrame, source: str) -> RecordStore:
        """A store held in memory, of a table some code built (the sample data, peaks with windows)."""
        import pyarrow as pa

        frame = frame.reset_index(drop=True)
        table = pa.Table.from_pandas(frame, preserve_index=False)
        table = normalise_columns(table, list(table.column_names))
        table = table.append_column(ROW_ID, pa.array([f"row:{i}" for i in range(len(frame))]))
        return cls(table, list(frame.columns), source)

    def __len__(self) -> int:
        return self._table.num_rows

    @property
    def column_names(self) -> list[str]:
        return list(self._table.column_names)

    @property
    def table(self) -> Any:
        """The whole ``pyarrow.Table`` (every byte of a mapped store checked first: prefer the readers below)."""
        if self._checks is not None:
            self._check(self._checks.everything)
        return self._table

    # checks -----------------------------------------------------------------------------------------
    def _check(self, check: Callable[..., None], *args: Any) -> None:
        try:
            check(*args)
        except Damaged as exc:
            raise _damaged(self.path, str(exc)) from None

    def _check_rows(self, name: str, first: int, stop: int) -> None:
        """Checks ``name``'s bytes of rows ``[first, stop)``."""
        if self._checks is None or stop <= first:
            return
        j = self._index[name]
        last = min(bisect_left(self._starts, stop), len(self._starts) - 1)
        for k in range(bisect_right(self._starts, first) - 1, last):
            if not self._checks.checked[k][j]:
                self._check(self._checks.chunk, k, j)

    # reading ----------------------------------------------------------------------------------------
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
        names = [c for c in dict.fromkeys(columns) if c in self._index]
        for name in names:
            self._check_rows(name, 0, len(self))
        table = self._table.select(names)
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
        frame = table.to_pandas(split_blocks=True, deduplicate_objects=False)  # no hash table of every id
        del table
        self.release()
        pa.default_memory_pool().release_unused()
        return frame

    def chunks(self, column: str) -> Iterator[tuple[int, Any]]:
        """``(first row, array)`` of each stored chunk of one column, in row order, each checked as it comes."""
        start = 0
        for chunk in self._chunk_list(column):
            self._check_rows(column, start, start + len(chunk))
            yield start, chunk
            start += len(chunk)

    def blocks(self, column: str, size: int = 8192) -> Iterator[tuple[int, Any]]:
        """``(first row, array)`` blocks of one column, in row order (each block's pages released after it)."""
        chunked = self._table.column(column)
        start = 0
        while start < len(chunked):
            self._check_rows(column, start, start + size)
            block = chunked.slice(start, size).combine_chunks()
            yield start, block
            start += len(block)
            del block
            self.release()

    def scalar(self, name: str, row: int) -> Any:
        """The ``pyarrow`` scalar at ``row`` of column ``name`` (its bytes checked on the first read of their batch)."""
        if self._checks is None:
            column = self._columns.get(name)
            if column is None:
                column = self._columns[name] = self._table.column(name)
            return column[row]
        chunks = self._chunks.get(name)
        if chunks is None:
            chunks = self._chunk_list(name)
        starts = self._starts
        k = bisect_right(starts, row) - 1
        if not 0 <= row < starts[-1]:
            raise IndexError(f"row {row} of a store of {len(self)} rows")
        if not self._checks.checked[k][self._index[name]]:
            self._check(self._checks.chunk, k, self._index[name])
        return chunks[k][row - starts[k]]

    def value(self, name: str, row: int) -> Any:
        """The Python value at ``row`` of column ``name`` (see :meth:`scalar`)."""
        return self.scalar(name, row).as_py()

    def cell(self, column: Any, row: int) -> Any:
        """The value at ``row`` of a column (a ``ChunkedArray`` from :meth:`column`)."""
        return column[row].as_py()

    def column(self, name: str) -> Any:
        """One whole column, a ``ChunkedArray`` (every batch of it checked first)."""
        self._check_rows(name, 0, len(self))
        return self._table.column(name)

    def _chunk_list(self, name: str) -> list[Any]:
        chunks = self._chunks.get(name)
        if chunks is None:
            chunks = self._chunks[name] = self._table.column(name).chunks
        return chunks

    def release(self) -> None:
        """Drops the pages this process read from its resident memory (they stay in the page cache)."""
        if self._mmap is not None and hasattr(mmap, "MADV_DONTNEED"):
            self._mmap.madvise(mmap.MADV_DONTNEED)

    def __getstate__(self) -> dict[str, Any]:  # a spawned DataLoader worker maps the file again (and checks it)
        if self.path is not None:
            return {"path": self.path}
        return {"table": self._table, "names": self.names, "source": self.source, "meta": self.meta}

    def __setstate__(self, state: dict[str, Any]) -> None:
        if "path" in state:
            other = RecordStore.open(state["path"])
            self.__dict__.update(other.__dict__)
        else:
            self.__init__(state["table"], state["names"], state["source"], meta=state.get("meta"))  # type: ignore[misc]


_FIX = "delete it and run again to write it anew"


def _damaged(path: Path | None, why: str) -> DataError:
    return DataError(f"the records store {path} cannot be read ({why}): it is truncated or damaged; {_FIX}")


def _arrow_file(path: Path) -> bool:
    """Whether ``path`` is a whole Arrow IPC file (one mmfuse did not seal)."""
    import pyarrow as pa

    try:
        with pa.memory_map(str(path)) as source:
            pa.ipc.open_file(source)
        return True
    except (OSError, ValueError, pa.ArrowException):
        return False


def numeric_mask(array: Any) -> np.ndarray:
    """Which text cells of ``array`` are numbers (``3``, ``-1.5e3``), e.g. a modality mapped to a label column."""
    import pyarrow.compute as pc

    found = pc.match_substring_regex(array, r"^\s*[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?\s*$")
    return np.asarray(found.fill_null(False).to_numpy(zero_copy_only=False), dtype=bool)
