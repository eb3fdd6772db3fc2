"""The records store: a table's columns in a memory-mapped Arrow file, written once and read by row.

A data module never holds a data set's sequences as Python objects. :func:`open_records` streams the
user's source (CSV/TSV/Parquet files, a directory of them, a ``datasets`` directory or a hub data
set) in blocks into an Arrow IPC file under ``records_dir`` (default ``$MMFUSE_CACHE/records``,
else ``~/.cache/mmfuse/records``), named by a digest of the source (each file's path, size and the
SHA-256 of its whole content, :func:`content`) and of the columns kept, so it is written once and found
again by every later run, DataLoader worker and DDP rank. The file is memory-mapped: processes share its
pages through the page cache instead of copying them, and a row costs a few page reads.

Only the columns a data module asks for are kept, plus ``__row_id__`` (``FILE:ROW``, the data row
counted from 0 in its file: an id for tables that have none) and, for sources whose files or
``DatasetDict`` splits give the split, the split column. CSV/TSV columns are read as text, so ids
such as ``00003`` stay as written.

Safety: a source changed in any way (even at the same size with its modification time restored: ``cp -p``,
``rsync -t``, ``touch -r``) gives a new store, and one changed while its store is written leaves none (it is
digested again before the file is renamed into place). One process writes a store while the others that want
it wait on a lock beside it (``<store>.lock``, released by the system if the writer dies;
``MMFUSE_STORE_WAIT`` seconds, default 3600, then an error naming the lock): several DataLoader workers, DDP
ranks or nodes sharing ``records_dir`` leave one store, written once. The file appears whole or not at all
(written beside it, then renamed), sealed with checksums (:mod:`~mmfuse.data.store.integrity`) that every
read checks: a store truncated, zeroed, edited, emptied or not written by mmfuse is refused with one line
naming it and the fix, never read. A ``records_dir`` that cannot be written (read-only, full) is named with
the option that moves it, and no partial file is left behind.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
from filelock import FileLock, Timeout

from mmfuse.data.errors import DataError
from mmfuse.data.files.tables import (
    BATCH_ROWS,
    BLOCKS,
    SPLIT_ALIASES,
    RowTooLong,
    SourcePart,
    part_batches,
    part_columns,
    source_parts,
)
from mmfuse.data.store.integrity import seal
from mmfuse.data.store.mapped import ROW_ID, STORE_VERSION, RecordStore, normalise_columns
from mmfuse.io import atomic_path

__all__ = ["ROW_ID", "RecordStore", "built_records", "content", "default_records_dir", "digest", "ensure_store",
           "fingerprint", "open_records"]  # fmt: skip

_UNWRITABLE = {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT, errno.ENOTDIR, errno.EEXIST}


def default_records_dir() -> Path:
    """``$MMFUSE_CACHE/records``, else ``~/.cache/mmfuse/records``."""
    return Path(os.environ.get("MMFUSE_CACHE", "~/.cache/mmfuse")).expanduser() / "records"


# writing ----------------------------------------------------------------------------------------------
def digest(description: Any) -> str:
    """A short, stable name for ``description`` (JSON-able): what names a store file."""
    return hashlib.sha256(json.dumps(description, sort_keys=True, default=str).encode()).hexdigest()[:24]


_WHOLE = 1 << 20  # bytes of a source read (and hashed) at a time


def fingerprint(path: str | Path) -> list[Any]:
    """A source file's path, size, modification time and the SHA-256 of its whole content.

    Stores are named by :func:`content` (path, size and digest, not the modification time): an edit
    that keeps the size and the modification time (``cp -p``, ``rsync -t``, ``touch -r``) gives a
    new store, and a file touched without a change finds its store again.
    """
    path = Path(path)
    info = path.stat()
    hashed = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(_WHOLE), b""):
            hashed.update(block)
    return [str(path.resolve()), info.st_size, info.st_mtime_ns, hashed.hexdigest()[:32]]


def content(path: str | Path) -> list[Any]:
    """What names a store of ``path``: its path, size and content digest (:func:`fingerprint` without the
    modification time)."""
    resolved, size, _, hashed = fingerprint(path)
    return [resolved, size, hashed]


def _dataset_files(dataset: Any) -> list[Any]:
    """The content of a ``datasets`` split: the digests of its Arrow cache files (its rows and columns when it
    has none)."""
    files = [content(f["filename"]) for f in dataset.cache_files]
    return files or [len(dataset), list(dataset.column_names), str(dataset.features)]


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
    text_columns: Sequence[str] = (),
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
        text_columns: CSV/TSV columns read as written, ids (``NA`` and ``nan`` are ids; see :func:`part_batches`).
    """
    parts = source_parts(path, revision, preset_file)
    if isinstance(parts, list):
        splits: list[tuple[str | None, Any]] = [(p.split, p) for p in parts]
        description: Any = [content(p.path) + [p.split] for p in parts]
        names = list(dict.fromkeys(n for p in parts for n in part_columns(p)))
    else:
        splits = _dataset_splits(parts)
        description = [[s, _dataset_files(d)] for s, d in splits]
        names = list(dict.fromkeys(n for _, d in splits for n in d.column_names))
    has_split = any(s is not None for s, _ in splits)
    if has_split:
        names = [n for n in names if n != split_column] + [split_column]
    kept = [c for c in dict.fromkeys(columns) if c in names and not (has_split and c == split_column)]
    split = split_column if has_split else None
    text = [c for c in kept if c in set(text_columns)]
    key = digest({"v": STORE_VERSION, "source": description, "columns": kept, "split": split, "text": text})
    directory = Path(records_dir).expanduser() if records_dir is not None else default_records_dir()
    target = directory / f"{key}.arrow"

    def unchanged() -> None:  # the source read for the store is the one its name digests
        now = [content(p.path) + [p.split] for p in parts] if isinstance(parts, list) else \
            [[s, _dataset_files(d)] for s, d in splits]  # fmt: skip
        if now != description:
            raise DataError(f"{path} changed while its records store was being written; run again once it stays "
                            f"unchanged")  # fmt: skip

    def write(target: Path) -> None:
        for block in BLOCKS:
            try:
                return _write(target, splits, kept, split, names, path, text, block)
            except RowTooLong:
                continue

    return ensure_store(target, write, path, unchanged)


def _wait_s() -> float:
    text = os.environ.get("MMFUSE_STORE_WAIT", "3600")
    try:
        return float(text)
    except ValueError:
        raise DataError(f"MMFUSE_STORE_WAIT is seconds to wait for a records store, not {text!r}") from None


def ensure_store(target: Path, write: Callable[[Path], None], source: str,
                 unchanged: Callable[[], None] | None = None) -> RecordStore:  # fmt: skip
    """Opens the store ``target``, first writing it with ``write`` (atomically) under a lock, unless it exists.

    ``write(path)`` writes a sealed store file at ``path`` (a name beside ``target``); ``unchanged()`` then
    raises if the source changed while it was read, and only then is the file renamed to ``target``. Another
    process writing it meanwhile is waited for; an unwritable ``records_dir`` is named with the fix, and no
    partial file is left behind.
    """
    if not target.is_file():
        lock = FileLock(f"{target}.lock", timeout=_wait_s())
        staged = target.with_name(f".{target.name}.{os.getpid()}.staged")
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            with lock:
                if not target.is_file():  # the process holding the lock before may have written it
                    try:
                        write(staged)
                        if unchanged is not None:
                            unchanged()
                        os.replace(staged, target)
                    finally:
                        staged.unlink(missing_ok=True)
        except Timeout:
            raise DataError(
                f"waited {_wait_s():g} s for the records store {target}, which another process is writing (it "
                f"holds {lock.lock_file}); let it finish, or raise MMFUSE_STORE_WAIT (seconds) to wait longer"
            ) from None
        except OSError as exc:
            if exc.errno not in _UNWRITABLE:
                raise
            raise DataError(
                f"cannot write the records store of {source} in {target.parent} ({exc.strerror}): set "
                f"`source.records_dir` (or MMFUSE_CACHE) to a directory this process can write, with room for a "
                f"copy of the data set's records"
            ) from None
    return RecordStore.open(target)


def _write(target: Path, splits: list[tuple[str | None, Any]], kept: list[str], split_column: str | None,
           names: list[str], source: str, text_columns: Sequence[str], block: int) -> None:  # fmt: skip
    import pyarrow as pa

    with atomic_path(target) as tmp:
        writer = None
        try:
            for split, part in splits:
                label = part.path.name if isinstance(part, SourcePart) else (split or "data")
                present = [c for c in kept if c in (part_columns(part) if isinstance(part, SourcePart)
                                                    else part.column_names)]  # fmt: skip
                if isinstance(part, SourcePart):
                    batches = part_batches(part, present, block, text_columns)
                else:
                    batches = (t for t in part.select_columns(present).with_format("arrow").iter(BATCH_ROWS))
                row = 0
                for batch in batches:
                    table = pa.Table.from_batches([batch]) if isinstance(batch, pa.RecordBatch) else batch
                    table = normalise_columns(table, kept)
                    n = table.num_rows
                    table = table.append_column(ROW_ID, pa.array([f"{label}:{i}" for i in range(row, row + n)]))
                    if split_column is not None:
                        table = table.append_column(split_column, pa.array([split] * n, pa.string()))
                    row += n
                    if writer is None:
                        meta = {"mmfuse": json.dumps({"version": STORE_VERSION, "names": names, "source": source})}
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
        seal(tmp)


def built_records(name: str, description: Any, build: Callable[[], tuple[pd.DataFrame, dict[str, Any]]],
                  records_dir: str | Path | None, source: str) -> RecordStore:  # fmt: skip
    """The records store of a table that code builds from its inputs (TF binding's records from peaks):
    opened if built before from the same ``description`` (the inputs' :func:`content` and the options
    that shape the records), else ``build()`` gives ``(table, metadata)`` and it is written first. The
    metadata (JSON) is kept in the file and read back as :attr:`RecordStore.meta`."""
    import pyarrow as pa

    key = digest({"v": STORE_VERSION, "built": name, "from": description})
    directory = Path(records_dir).expanduser() if records_dir is not None else default_records_dir()
    target = directory / f"{name}-{key}.arrow"

    def write(target: Path) -> None:
        frame, meta = build()
        table = normalise_columns(pa.Table.from_pandas(frame.reset_index(drop=True), preserve_index=False),
                           list(frame.columns))  # fmt: skip
        table = table.append_column(ROW_ID, pa.array([f"row:{i}" for i in range(table.num_rows)]))
        info = {**meta, "version": STORE_VERSION, "names": list(frame.columns), "source": source}
        table = table.replace_schema_metadata({"mmfuse": json.dumps(info)})
        with atomic_path(target) as tmp:
            with pa.ipc.new_file(str(tmp), table.schema) as writer:
                writer.write_table(table)
            seal(tmp)

    return ensure_store(target, write, source)
