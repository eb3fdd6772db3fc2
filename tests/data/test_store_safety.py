"""The records store under damage and contention: changed sources, broken files, concurrent builders, no room."""

from __future__ import annotations

import errno
import multiprocessing
import os
from pathlib import Path

import pyarrow as pa
import pytest
from filelock import FileLock

from mmfuse.data import DataError, IsoformExpression
from mmfuse.data.store import records as records_module
from mmfuse.data.store.records import fingerprint, open_records


def _table(path: Path, rows: int = 50, letter: str = "A") -> Path:
    lines = ["id,seq"] + [f"r{i},{letter * 8}" for i in range(rows)]
    path.write_text("\n".join(lines) + "\n")
    return path


def _open(path: Path, records: Path):
    return open_records(str(path), ["id", "seq"], "split", records, text_columns=["id"])  # as a data module does


def test_an_edit_that_keeps_size_and_modification_time_gives_a_new_store(tmp_path):
    table = _table(tmp_path / "t.csv")
    first = _open(table, tmp_path / "records")
    stat = table.stat()
    _table(table, letter="C")  # the same size
    os.utime(table, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # and the same modification time
    assert table.stat().st_size == stat.st_size and table.stat().st_mtime_ns == stat.st_mtime_ns
    second = _open(table, tmp_path / "records")
    assert second.path != first.path
    assert first.cell(first.column("seq"), 0) == "AAAAAAAA" and second.cell(second.column("seq"), 0) == "CCCCCCCC"
    again = _open(table, tmp_path / "records")
    assert again.path == second.path  # unchanged: found again


def test_a_large_file_is_fingerprinted_by_sampled_blocks(tmp_path, monkeypatch):
    monkeypatch.setattr(records_module, "_WHOLE", 1_000)
    path = tmp_path / "big.bin"
    data = bytearray(os.urandom(200_000))
    path.write_bytes(bytes(data))
    before = fingerprint(path)
    data[0] ^= 1  # the head is always among the blocks read
    path.write_bytes(bytes(data))
    os.utime(path, ns=(path.stat().st_atime_ns, before[2]))
    assert fingerprint(path)[3] != before[3] and fingerprint(path)[1:3] == before[1:3]


@pytest.mark.parametrize("damage", ["truncated", "empty", "foreign", "garbage"])
def test_a_damaged_or_foreign_store_is_refused_with_its_path(tmp_path, damage):
    table = _table(tmp_path / "t.csv")
    store = _open(table, tmp_path / "records")
    path = store.path
    del store
    if damage == "truncated":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif damage == "empty":
        path.write_bytes(b"")
    elif damage == "garbage":
        path.write_bytes(b"not an arrow file at all" * 10)
    else:  # a valid Arrow file that mmfuse did not write
        foreign = pa.table({"id": ["x"], "seq": ["ACGT"]})
        with pa.ipc.new_file(str(path), foreign.schema) as writer:
            writer.write_table(foreign)
    with pytest.raises(DataError) as caught:
        _open(table, tmp_path / "records")
    message = str(caught.value)
    assert str(path) in message and "delete it and run again" in message
    assert ("not a records store" in message) == (damage == "foreign")
    with pytest.raises(DataError, match="cannot be read|not a records store"):  # a data module says the same
        IsoformExpression({"path": str(table), "id_column": "id", "records_dir": str(tmp_path / "records")},
                          modalities={"rna": "seq"}).setup("predict")  # fmt: skip


def _build(args: tuple[str, str, float]) -> tuple[int, int]:
    """In a fresh process: opens (building) the store; returns the inode it opened and its row count."""
    table, records, delay = args
    import time

    original = records_module._write

    def slow(*a, **k):  # the build takes long enough for the other process to arrive meanwhile
        time.sleep(delay)
        return original(*a, **k)

    records_module._write = slow
    store = open_records(table, ["id", "seq"], "split", records)
    return os.stat(store.path).st_ino, len(store)


def test_two_processes_building_the_same_store_at_once_leave_one_store_written_once(tmp_path):
    table = _table(tmp_path / "t.csv", rows=2_000)
    records = tmp_path / "records"
    with multiprocessing.get_context("spawn").Pool(2) as pool:
        results = pool.map(_build, [(str(table), str(records), 1.0)] * 2)
    assert results[0] == results[1] and results[0][1] == 2_000  # both opened the one file written
    assert [p.name for p in records.iterdir() if p.suffix == ".arrow"] and not list(records.glob(".*.tmp"))
    assert len(list(records.glob("*.arrow"))) == 1


def test_a_process_waiting_too_long_for_another_one_building_says_so(tmp_path, monkeypatch):
    table = _table(tmp_path / "t.csv")
    records = tmp_path / "records"
    records.mkdir()
    first = _open(table, tmp_path / "elsewhere")  # where the store would go in `records`
    target = records / first.path.name
    monkeypatch.setenv("MMFUSE_STORE_WAIT", "0.2")
    with FileLock(f"{target}.lock"):  # another process is writing it
        with pytest.raises(DataError) as caught:
            _open(table, records)
    assert str(target) in str(caught.value) and "MMFUSE_STORE_WAIT" in str(caught.value)
    assert _open(table, records).path == target  # once it is released, the store is written
    monkeypatch.setenv("MMFUSE_STORE_WAIT", "soon")
    with pytest.raises(DataError, match="MMFUSE_STORE_WAIT is seconds"):
        _open(_table(tmp_path / "u.csv", rows=3), records)


def test_an_unwritable_or_full_records_dir_is_named_with_the_fix(tmp_path, monkeypatch):
    table = _table(tmp_path / "t.csv")
    blocked = tmp_path / "a-file"
    blocked.write_text("")  # a records_dir under a file cannot be made (as a read-only one cannot be written)
    with pytest.raises(DataError) as caught:
        _open(table, blocked / "records")
    assert f"in {blocked / 'records'}" in str(caught.value) and "source.records_dir" in str(caught.value)

    def full(target, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(target))

    monkeypatch.setattr(records_module, "_write", full)
    with pytest.raises(DataError, match="No space left on device.*source.records_dir"):
        _open(table, tmp_path / "records")
    assert not list((tmp_path / "records").glob("*.arrow"))
