"""The records store as read: a table's columns memory-mapped from an Arrow IPC file (or held in memory).

:class:`RecordStore` reads records by row or in blocks and never copies the file: processes map it and share
its pages through the page cache. :mod:`mmfuse.data.store.records` writes the files.
"""

from __future__ import annotations

import json
import mmap
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mmfuse.data.errors import DataError

__all__ = ["ROW_ID", "STORE_VERSION", "RecordStore", "normalise_columns", "numeric_mask"]

ROW_ID = "__row_id__"
STORE_VERSION = 1


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

    Args:
        table: the ``pyarrow.Table``.
        names: every column of the source (the store keeps only some), for messages.
        source: what the records were read from, for messages.
        path: the store's file, when it has one (reopened, not copied, in spawned processes).
        meta: what the writer kept beside the records (:func:`built_records`).
    """

    def __init__(self, table: Any, names: Sequence[str], source: str, path: Path | None = None,
                 mapping: mmap.mmap | None = None, meta: Mapping[str, Any] | None = None) -> None:  # fmt: skip
        self.table, self.names, self.source, self.path = table, list(names), source, path
        self.meta = dict(meta or {})
        self._mmap = mapping

    @classmethod
    def open(cls, path: Path) -> RecordStore:
        """Memory-maps a store file written by :func:`open_records`."""
        import pyarrow as pa

        fix = "delete it and run again to write it anew"
        try:
            with path.open("rb") as handle:
                mapping = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
            table = pa.ipc.open_file(pa.BufferReader(pa.py_buffer(mapping))).read_all()  # zero-copy views of the map
        except (OSError, ValueError, pa.ArrowException) as exc:  # an empty file cannot be mapped (ValueError)
            raise DataError(f"the records store {path} cannot be read ({exc}): it is truncated or damaged; {fix}") \
                from None  # fmt: skip
        try:
            meta = json.loads(table.schema.metadata[b"mmfuse"])
            known = meta["version"] == STORE_VERSION and ROW_ID in table.column_names
        except (KeyError, TypeError, ValueError):
            known = False
        if not known:
            raise DataError(f"{path} is not a records store of this mmfuse version (an Arrow file written by "
                            f"something else, or by another version): {fix}")  # fmt: skip
        return cls(table, meta.get("names", table.column_names), meta.get("source", str(path)), path, mapping, meta)

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
        frame = table.to_pandas(split_blocks=True, deduplicate_objects=False)  # no hash table of every id
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
