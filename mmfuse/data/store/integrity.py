"""Checksums of the store files: written with a file, checked before its bytes are trusted.

A store file is an Arrow IPC file followed by mmfuse's checksum record and a fixed-size tail::

    [Arrow IPC file: N bytes][record: JSON, L bytes][tail: L (u64), CRC-32 of the record (u32), MAGIC]

The record holds, for each record batch and column, the byte range of that column's buffers in the
batch and their CRC-32 (:func:`zlib.crc32`), and one CRC-32 over every other byte of the Arrow file: its
header, schema, the metadata of each batch, padding and footer (the *skeleton*, a few kilobytes).
:func:`open_checked` checks the tail, the record and the skeleton before pyarrow parses anything, so
the layout pyarrow reads is the one written; each column's bytes in a batch are checked the first time
the process reads them (:class:`Checks`); a file of at most :data:`EAGER` bytes is checked whole when
opened. A file that fails a check is refused (:class:`Damaged`), never read; one without the tail
(:class:`Unsealed`) was written by something else, or by mmfuse before stores carried checksums.

Checks read the file with ``pread`` into one reused buffer, not through the memory map, so checking a
store does not add its pages to the process's resident memory.
"""

from __future__ import annotations

import json
import mmap
import os
import struct
import zlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

__all__ = ["EAGER", "MAGIC", "Checks", "Damaged", "Unsealed", "open_checked", "seal"]

#: the last bytes of every store file mmfuse writes
MAGIC = b"mmfuse-crc32"
_TAIL = struct.Struct(f"<QI{len(MAGIC)}s")
_FORMAT = 1
#: files up to this size are checked whole when opened; larger ones column by column, as read
EAGER = 64 << 20
_PIECE = 4 << 20  # bytes read (and checksummed) at a time


class Damaged(Exception):
    """The file's bytes differ from those its checksums were computed over (the message says where)."""


class Unsealed(Exception):
    """The file ends without mmfuse's checksum tail."""


def _crc(fd: int, start: int, end: int, crc: int = 0, buffer: bytearray | None = None) -> int:
    """CRC-32 of bytes ``[start, end)`` of ``fd``, continuing ``crc``."""
    buffer = buffer if buffer is not None else bytearray(min(_PIECE, max(end - start, 1)))
    view = memoryview(buffer)
    while start < end:
        n = os.preadv(fd, [view[: min(len(view), end - start)]], start)
        if n <= 0:
            raise Damaged(f"it ends at byte {start}, before byte {end} its checksums cover")
        crc = zlib.crc32(view[:n], crc)
        start += n
    return crc


def _gaps(ranges: Sequence[tuple[int, int]], size: int) -> Iterator[tuple[int, int]]:
    """The intervals of ``[0, size)`` outside every range."""
    position = 0
    for start, end in sorted(ranges):
        if start > position:
            yield position, start
        position = max(position, end)
    if position < size:
        yield position, size


def _layout(arrow: Any, base: int, size: int) -> list[list[tuple[int, int]]] | None:
    """``[batch][column] -> (start, end)`` of each column's buffers within ``arrow``'s bytes (``(0, 0)``:
    none), or ``None`` where a buffer does not lie in the file (pyarrow copied it: no lazy checks)."""
    import pyarrow as pa

    reader = pa.ipc.open_file(pa.BufferReader(arrow))
    layout = []
    for i in range(reader.num_record_batches):
        batch = reader.get_batch(i)
        row = []
        for column in batch.columns:
            buffers = [b for b in column.buffers() if b is not None and b.size]
            spans = [(b.address - base, b.address - base + b.size) for b in buffers]
            if any(s < 0 or e > size for s, e in spans):
                return None
            row.append((min(s for s, _ in spans), max(e for _, e in spans)) if spans else (0, 0))
        layout.append(row)
    return layout


def seal(path: Path) -> None:
    """Appends the checksum record and tail to the Arrow IPC file at ``path`` (just written, not yet renamed
    into place)."""
    import pyarrow as pa

    size = path.stat().st_size
    with path.open("rb") as handle:
        mapping = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
        try:
            whole = pa.py_buffer(mapping)
            layout = _layout(whole, whole.address, size)  # reads metadata only: the bodies' pages stay out
            del whole
            buffer = bytearray(_PIECE)
            fd = handle.fileno()
            ranges = [[(s, e, _crc(fd, s, e, buffer=buffer)) for s, e in row] for row in layout or []]
            skeleton = 0
            for start, end in _gaps([(s, e) for row in ranges for s, e, _ in row], size):
                skeleton = _crc(fd, start, end, skeleton, buffer)
        finally:
            mapping.close()
    record = json.dumps({"format": _FORMAT, "arrow_bytes": size, "skeleton": skeleton, "ranges": ranges},
                        separators=(",", ":")).encode()  # fmt: skip
    with path.open("ab") as handle:
        handle.write(record + _TAIL.pack(len(record), zlib.crc32(record), MAGIC))


class Checks:
    """The checksums of one open store file: each ``(batch, column)`` range checked once, when first read.

    Args:
        path: the file (for messages).
        handle: the open file (read with ``pread``).
        ranges: ``[batch][column] -> (start, end, crc)``.
        columns: the column names, for messages.
        rows: the first row of each batch and the row count at the end (``len(ranges) + 1`` numbers).
    """

    def __init__(self, path: Path, handle: Any, ranges: list[list[tuple[int, int, int]]], columns: Sequence[str],
                 rows: Sequence[int]) -> None:  # fmt: skip
        self.path, self.handle, self.ranges, self.columns, self.rows = path, handle, ranges, list(columns), list(rows)
        # empty ranges need no check; no ranges at all: the skeleton covered every byte, checked at open
        self.checked = [[s == e for s, e, _ in row] for row in ranges] or [[True] * len(self.columns)
                                                                          for _ in self.rows[1:]]  # fmt: skip
        self._buffer: bytearray | None = None

    def chunk(self, batch: int, column: int) -> None:
        """Checks the bytes of ``column`` in ``batch`` (once per process)."""
        if self.checked[batch][column]:
            return
        start, end, crc = self.ranges[batch][column]
        if self._buffer is None:
            self._buffer = bytearray(_PIECE)
        if _crc(self.handle.fileno(), start, end, buffer=self._buffer) != crc:
            raise Damaged(
                f"its bytes {start}-{end} (column {self.columns[column]!r}, rows {self.rows[batch]}-"
                f"{self.rows[batch + 1] - 1}) differ from those written"
            )
        self.checked[batch][column] = True

    def column(self, column: int) -> None:
        """Checks every batch of ``column``."""
        for batch in range(len(self.ranges)):
            self.chunk(batch, column)

    def everything(self) -> None:
        for column in range(len(self.columns)):
            self.column(column)

    def __getstate__(self) -> dict[str, Any]:
        raise TypeError("Checks belong to one open file; pickle the store's path instead")


def _record(fd: int, size: int) -> dict[str, Any]:
    """The checksum record of a file of ``size`` bytes (its tail and the record's own CRC checked)."""
    if size < _TAIL.size:
        raise Unsealed("it is empty" if size == 0 else f"it is {size} bytes, shorter than a store's tail")
    tail = os.pread(fd, _TAIL.size, size - _TAIL.size)
    length, crc, magic = _TAIL.unpack(tail)
    if magic != MAGIC:
        raise Unsealed("it does not end with mmfuse's checksum record")
    if length > size - _TAIL.size:
        raise Damaged(f"its checksum record claims {length} bytes, more than the file holds")
    raw = os.pread(fd, length, size - _TAIL.size - length)
    if zlib.crc32(raw) != crc:
        raise Damaged("its checksum record differs from the one written")
    try:
        record = json.loads(raw)
        assert record["format"] == _FORMAT and record["arrow_bytes"] + length + _TAIL.size == size
        return record
    except (ValueError, KeyError, TypeError, AssertionError):
        raise Damaged("its checksum record does not describe this file") from None


def open_checked(path: Path, eager: int | None = None) -> tuple[mmap.mmap, Any, Any, Checks]:
    """Maps ``path``, checks its tail, record and skeleton, and parses it with pyarrow.

    Returns:
        ``(mapping, table, metadata, checks)``: the memory map, the ``pyarrow.Table`` (zero-copy views of
        the map), the schema's metadata, and the :class:`Checks` of its columns (those of a file of at
        most ``eager`` bytes, default :data:`EAGER`, already done).

    Raises:
        Unsealed: the file lacks the tail (empty, not written by mmfuse, or written before checksums).
        Damaged: a check failed (the message says which bytes).
        OSError, pyarrow.ArrowException: the file could not be read.
    """
    import pyarrow as pa

    handle = path.open("rb")
    try:
        size = os.fstat(handle.fileno()).st_size
        record = _record(handle.fileno(), size)
        n, ranges = record["arrow_bytes"], [[tuple(r) for r in row] for row in record["ranges"]]
        if any(not (0 <= s <= e <= n) for row in ranges for s, e, _ in row):
            raise Damaged("its checksum record names bytes outside the file")
        skeleton = 0
        buffer = bytearray(_PIECE)
        for start, end in _gaps([(s, e) for row in ranges for s, e, _ in row], n):
            skeleton = _crc(handle.fileno(), start, end, skeleton, buffer)
        if skeleton != record["skeleton"]:
            raise Damaged("its layout (schema, batch metadata or footer) differs from the one written")
        mapping = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
        whole = pa.py_buffer(mapping)
        reader = pa.ipc.open_file(pa.BufferReader(whole.slice(0, n)))
        table = reader.read_all()
        columns = list(table.column_names)
        starts = [0]
        for i in range(reader.num_record_batches):
            starts.append(starts[-1] + reader.get_batch(i).num_rows)
        checks = Checks(path, handle, ranges, columns, starts)
        layout = _layout(whole.slice(0, n), whole.address, n) if ranges else None
        if layout is None or [[r[:2] for r in row] for row in ranges] != layout or not _aligned(table, starts):
            checks.everything()  # the layout is not the one the ranges describe: check every byte now
        elif size <= (EAGER if eager is None else eager):
            checks.everything()
        return mapping, table, reader.schema.metadata or {}, checks
    except BaseException:
        handle.close()
        raise


def _aligned(table: Any, starts: Sequence[int]) -> bool:
    """Whether every column of ``table`` is chunked as the file's batches (what :class:`Checks` indexes)."""
    for column in table.columns:
        lengths = [len(c) for c in column.chunks]
        if len(lengths) != len(starts) - 1 or any(a != b - c for a, b, c in zip(lengths, starts[1:], starts[:-1],
                                                                               strict=True)):  # fmt: skip
            return False
    return True
