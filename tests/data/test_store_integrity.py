"""Checksums of the records and cell stores: a damaged store is refused with one line, never read; a source
changed in any way gives a new store; a records_dir that cannot be written leaves nothing behind.

Each damage is done to a store file the way the issue did it (truncated to half, 64 bytes of 0xFF in the
middle, emptied, zeroed at the same size, letters edited at the same length, replaced by a foreign Arrow
file); small stores are checked whole when opened, large ones (``EAGER`` lowered here) a batch's column at
a time when first read, so the tests do both.
"""

from __future__ import annotations

import contextlib
import errno
import io
import json
import os
import re
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

import mmfuse.data.files.tables as tables
from mmfuse.data import CellClassification, DataError, IsoformExpression
from mmfuse.data.samples.isoform import make_sample_table
from mmfuse.data.store import integrity
from mmfuse.data.store import records as records_module
from mmfuse.data.store.cells import CellSequences, open_cells
from mmfuse.data.store.mapped import ROW_ID, RecordStore
from mmfuse.data.store.records import content, fingerprint, open_records
from tests.helpers.damage import KINDS, damage
from tests.helpers.in_process import QUICKSTART, bare_argv

DAMAGES = list(KINDS)
FIX = "delete it and run again to write it anew"


def _table(path: Path, rows: int = 50, letter: str = "A", prefix: str = "r") -> Path:
    lines = ["id,seq"] + [f"{prefix}{i:04d},{letter * 12}" for i in range(rows)]
    path.write_text("\n".join(lines) + "\n")
    return path


def _open(path: Path, records: Path) -> RecordStore:
    return open_records(str(path), ["id", "seq"], "split", records, text_columns=["id"])  # as a data module does


def _damage(path: Path, kind: str, letters: bytes = b"AAAAAAAAAAAA") -> None:
    def edit(data: bytearray) -> None:  # letters of a record (in the last half if there are some), as many others
        at = data.find(letters, len(data) // 2)
        at = at if at >= 0 else data.index(letters)
        data[at : at + len(letters)] = bytes(b ^ 2 for b in letters)  # A -> C, c -> a, 0 -> 2

    def foreign(size: int) -> bytes:  # an Arrow file mmfuse did not write, with the store's columns and metadata
        table = pa.table({"id": ["x"], "seq": ["ACGT"], ROW_ID: ["t.csv:0"]})
        meta = {"mmfuse": json.dumps({"version": 2, "names": ["id", "seq"], "source": "t.csv"})}
        sink = io.BytesIO()
        with pa.ipc.new_file(sink, table.schema.with_metadata(meta)) as writer:
            writer.write_table(table)
        return sink.getvalue()

    damage(path, kind, edit, foreign)


def _expected(path: Path, kind: str, column: str = "seq") -> str:
    """The one line that refuses ``path`` damaged as ``kind`` (a regular expression; an edit names ``column``, a
    regular expression too, as the group ``column``)."""
    if kind == "foreign":
        return (rf"^{re.escape(str(path))} is not a records store of this mmfuse version \(an Arrow file written "
                rf"by something else, by another version, or before stores carried checksums\): {FIX}$")  # fmt: skip
    why = {"truncated": r"it does not end with mmfuse's checksum record", "emptied": "it is empty",
           "zeroed": r"it does not end with mmfuse's checksum record",
           "edited": rf"its bytes \d+-\d+ \(column '(?P<column>{column})', rows \d+-\d+\) differ from those written",
           "ff": r"its bytes \d+-\d+ \(column '(?P<column>[^']+)', rows \d+-\d+\) differ from those written|"
                 r"its layout \(schema, batch metadata or footer\) differs from the one written"}[kind]  # fmt: skip
    return rf"^the records store {re.escape(str(path))} cannot be read \(({why})\): it is truncated or damaged; {FIX}$"


@pytest.fixture
def many_batches(monkeypatch):
    """Sources read in blocks of 2 kB: a store of several record batches (each checked on its own)."""
    monkeypatch.setattr(records_module, "BLOCKS", (2048, 1 << 20))
    monkeypatch.setattr(tables, "BLOCKS", (2048, 1 << 20))


# damaged stores ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("damage", DAMAGES)
def test_a_damaged_small_store_is_refused_when_opened_with_one_line(tmp_path, damage):
    table = _table(tmp_path / "t.csv")
    store = _open(table, tmp_path / "records")
    path = store.path
    assert store.value("seq", 49) == "A" * 12
    del store
    _damage(path, damage)
    with pytest.raises(DataError) as caught:
        _open(table, tmp_path / "records")
    assert re.match(_expected(path, damage), str(caught.value)), str(caught.value)
    with pytest.raises(DataError) as caught:  # a data module says the same, before any record is read
        IsoformExpression({"path": str(table), "id_column": "id", "records_dir": str(tmp_path / "records")},
                          modalities={"rna": "seq"}).setup("predict")  # fmt: skip
    assert re.match(_expected(path, damage), str(caught.value)), str(caught.value)


@pytest.mark.parametrize("damage", ["ff", "edited", "zeroed"])
def test_a_damaged_large_store_is_refused_at_the_first_read_of_the_damaged_part(tmp_path, monkeypatch,
                                                                                 many_batches, damage):  # fmt: skip
    monkeypatch.setattr(integrity, "EAGER", 0)  # every store is "large": checked as read
    table = _table(tmp_path / "t.csv", rows=400)
    store = _open(table, tmp_path / "records")
    chunks = store.column("seq").num_chunks
    assert chunks > 3
    path = store.path
    del store
    _damage(path, damage)
    if damage == "zeroed":  # the layout is gone: refused when opened
        with pytest.raises(DataError, match=_expected(path, damage)):
            _open(table, tmp_path / "records")
        return
    try:
        store = _open(table, tmp_path / "records")
    except DataError as exc:  # the 0xFF landed in a batch's metadata: refused when opened
        assert damage == "ff" and re.match(_expected(path, damage), str(exc)), str(exc)
        return
    expected = _expected(path, damage)
    read, refused, columns = {}, [], set()
    for row in range(len(store)):
        try:
            read[row] = [store.value(c, row) for c in ("id", "seq", ROW_ID)]
        except DataError as exc:
            refused.append(row)
            found = re.match(expected, str(exc))
            assert found, str(exc)
            columns.add(found["column"])
            first, last = map(int, re.search(r"rows (\d+)-(\d+)", str(exc)).groups())
            assert first <= row <= last
    assert refused, "the damaged rows were read"
    assert refused == list(range(refused[0], refused[-1] + 1)) and len(read) + len(refused) == 400
    assert read == {r: [f"r{r:04d}", "A" * 12, f"t.csv:{r}"] for r in read}, "only undamaged values are read"
    (column,) = columns
    for reader in (lambda: store.column(column), lambda: store.frame([column]), lambda: list(store.blocks(column)),
                   lambda: store.table):  # fmt: skip
        with pytest.raises(DataError, match=expected):
            reader()


def test_a_worker_spawned_with_the_store_checks_it_again(tmp_path, monkeypatch, many_batches):
    import pickle

    monkeypatch.setattr(integrity, "EAGER", 0)
    store = _open(_table(tmp_path / "t.csv", rows=400), tmp_path / "records")
    assert store.value("seq", 399) == "A" * 12  # checked in this process
    _damage(store.path, "edited")
    copied = pickle.loads(pickle.dumps(store))  # what a spawned DataLoader worker gets: the path, opened again
    with pytest.raises(DataError, match="differ from those written"):
        [copied.value("seq", row) for row in range(len(copied))]


def test_a_store_of_an_earlier_mmfuse_is_never_read(tmp_path):
    """A store written before stores carried checksums: a plain Arrow file. Its name differs (the store format is
    part of it), so it is not even looked for; at the name of a current store it is refused."""
    table = _table(tmp_path / "t.csv")
    store = _open(table, tmp_path / "records")
    path = store.path
    old = store.frame(["id", "seq", ROW_ID])
    del store
    arrow = pa.Table.from_pandas(old, preserve_index=False)
    meta = {"mmfuse": json.dumps({"version": 1, "names": ["id", "seq"], "source": str(table)})}
    with pa.ipc.new_file(str(path), arrow.schema.with_metadata(meta)) as writer:
        writer.write_table(arrow)
    with pytest.raises(DataError, match=_expected(path, "foreign")):
        _open(table, tmp_path / "records")


# a changed source ----------------------------------------------------------------------------------------------
def test_an_edit_keeping_size_and_modification_time_gives_a_fresh_store_with_the_new_ids(tmp_path):
    table = _table(tmp_path / "t.csv", rows=2_000)
    first = _open(table, tmp_path / "records")
    assert first.value("id", 1_000) == "r1000"
    stat = table.stat()
    _table(table, rows=2_000, prefix="s")  # other ids, the same size
    os.utime(table, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # and the modification time restored
    assert (table.stat().st_size, table.stat().st_mtime_ns) == (stat.st_size, stat.st_mtime_ns)
    second = _open(table, tmp_path / "records")
    assert second.path != first.path
    assert second.frame(["id"])["id"].tolist() == [f"s{i:04d}" for i in range(2_000)]
    dm = IsoformExpression({"path": str(table), "id_column": "id", "records_dir": str(tmp_path / "records")},
                           modalities={"rna": "seq"}, split={"group": None})  # fmt: skip
    dm.setup("predict")
    ids = [i for split in ("train", "val", "test") for i in dm.split_ids(split)]
    assert sorted(ids) == [f"s{i:04d}" for i in range(2_000)]


def test_the_digest_covers_every_byte_of_a_large_file(tmp_path):
    path = tmp_path / "big.bin"
    data = bytearray(os.urandom(3 << 20))
    path.write_bytes(bytes(data))
    for at in ((3 << 19) + 17, (3 << 20) - 1):  # away from any evenly spaced sample; the last byte
        before = fingerprint(path)
        data[at] ^= 1
        path.write_bytes(bytes(data))
        os.utime(path, ns=(path.stat().st_atime_ns, before[2]))
        assert fingerprint(path)[1:3] == before[1:3] and fingerprint(path)[3] != before[3]
        assert content(path) == [before[0], before[1], fingerprint(path)[3]]


def test_a_file_touched_without_a_change_keeps_its_store(tmp_path):
    table = _table(tmp_path / "t.csv")
    first = _open(table, tmp_path / "records")
    os.utime(table, ns=(1, 2))
    assert _open(table, tmp_path / "records").path == first.path


def test_a_source_changed_while_its_store_is_written_leaves_no_store(tmp_path, monkeypatch):
    table = _table(tmp_path / "t.csv")
    real = records_module._write

    def edited_meanwhile(*args):
        real(*args)
        _table(table, letter="C")  # another process rewrites the table while it is read

    monkeypatch.setattr(records_module, "_write", edited_meanwhile)
    with pytest.raises(DataError, match=rf"^{re.escape(str(table))} changed while its records store was being "
                                        r"written; run again once it stays unchanged$"):  # fmt: skip
        _open(table, tmp_path / "records")
    assert [p.name for p in (tmp_path / "records").iterdir() if not p.name.endswith(".lock")] == []
    monkeypatch.setattr(records_module, "_write", real)
    assert _open(table, tmp_path / "records").value("seq", 0) == "C" * 12


# a records_dir that cannot be written -------------------------------------------------------------------------
def _left(directory: Path) -> list[str]:
    """What a failed write left in ``directory`` besides the lock file."""
    return sorted(p.name for p in directory.iterdir() if not p.name.endswith(".lock")) if directory.is_dir() else []


def test_a_read_only_records_dir_is_named_with_the_option_that_moves_it(tmp_path, monkeypatch):
    table = _table(tmp_path / "t.csv")
    records = tmp_path / "records"
    records.mkdir()
    records.chmod(0o500)
    probe = records / "probe"
    try:
        probe.touch()  # root writes despite the mode: make the rename into place fail as a read-only disk does
        probe.unlink()
        real = os.replace

        def read_only(src, dst, *args, **kwargs):
            if Path(dst).parent == records:
                raise OSError(errno.EROFS, "Read-only file system", str(dst))
            return real(src, dst, *args, **kwargs)

        monkeypatch.setattr(os, "replace", read_only)
    except PermissionError:
        pass
    try:
        with pytest.raises(DataError) as caught:
            _open(table, records)
    finally:
        records.chmod(0o700)
    message = str(caught.value)
    assert re.match(rf"^cannot write the records store of {re.escape(str(table))} in {re.escape(str(records))} "
                    r"\((Read-only file system|Permission denied)\): set `source.records_dir` \(or MMFUSE_CACHE\) to "
                    r"a directory this process can write", message), message  # fmt: skip
    assert _left(records) == []


@pytest.mark.parametrize("where", ["arrow", "checksums"])
def test_a_full_disk_leaves_no_partial_store(tmp_path, monkeypatch, where):
    table = _table(tmp_path / "t.csv")
    records = tmp_path / "records"

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    if where == "arrow":  # the Arrow file written half, then the disk is full
        real = records_module.part_batches

        def half(*args, **kwargs):
            yield next(iter(real(*args, **kwargs)))
            full()

        monkeypatch.setattr(records_module, "part_batches", half)
    else:  # the checksum record cannot be appended
        monkeypatch.setattr(records_module, "seal", full)
    with pytest.raises(DataError) as caught:
        _open(table, records)
    assert str(caught.value).startswith(f"cannot write the records store of {table} in {records} (No space left on "
                                        f"device): set `source.records_dir` (or MMFUSE_CACHE)")  # fmt: skip
    assert _left(records) == []


# the cell store ------------------------------------------------------------------------------------------------
def _cells(path: Path, cells: int = 30, shift: float = 0.0) -> Path:
    rng = np.random.default_rng(0)
    counts = rng.integers(0, 4, size=(cells, 6)).astype(float) + shift
    lines = ["cell_id,cell_type," + ",".join(f"G{g}" for g in range(6))]
    lines += [f"c{i:03d},t{i % 3}," + ",".join(f"{v:g}" for v in row) for i, row in enumerate(counts)]
    path.write_text("\n".join(lines) + "\n")
    return path


def _cell_store(path: Path, records: Path) -> RecordStore:
    return open_cells(str(path), ["cell_id", "cell_type"], "cell_id", records_dir=records)


@pytest.mark.parametrize("damage", DAMAGES)
def test_a_damaged_cell_store_is_refused_with_one_line(tmp_path, damage):
    table = _cells(tmp_path / "cells.csv")
    source = {"path": str(table), "id_column": "cell_id", "records_dir": str(tmp_path / "records")}
    built = CellClassification(source, label_column="cell_type")
    built.setup("fit")
    path = built.records().path
    _damage(path, damage, letters=b"c01")
    expected = _expected(path, damage, column="[^']+")
    with pytest.raises(DataError, match=expected):
        CellClassification(source, label_column="cell_type").setup("fit")
    with pytest.raises(DataError, match=expected):
        RecordStore.open(path)


def test_a_cell_string_is_never_made_from_damaged_rows(tmp_path, monkeypatch):
    monkeypatch.setattr(integrity, "EAGER", 0)
    table = _cells(tmp_path / "cells.csv")
    store = _cell_store(table, tmp_path / "records")
    strings = CellSequences(store, str(table))
    expected = strings(0)
    path = store.path
    data = bytearray(path.read_bytes())
    values = store._checks.ranges[0][store.column_names.index("__cell_values__")]  # the values' bytes
    data[values[0] : values[0] + 8] = bytes(8)  # zeroed, the same size
    path.write_bytes(bytes(data))
    fresh = CellSequences(_cell_store(table, tmp_path / "records"), str(table))
    with pytest.raises(DataError, match=r"column '__cell_values__', rows 0-29\) differ from those written"):
        fresh(0)
    assert expected.startswith("G")


def test_a_cell_table_edited_at_the_same_size_and_time_is_converted_again(tmp_path):
    table = _cells(tmp_path / "cells.csv")
    first = _cell_store(table, tmp_path / "records")
    stat = table.stat()
    before = CellSequences(first, str(table))(0)
    text = table.read_text().replace("c000,t0,", "c000,t1,", 1)  # one letter, the same size
    table.write_text(text)
    os.utime(table, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    second = _cell_store(table, tmp_path / "records")
    assert second.path != first.path and second.frame(["cell_type"])["cell_type"][0] == "t1"
    assert CellSequences(second, str(table))(0) == before


# through the command ------------------------------------------------------------------------------------------
def test_fit_with_a_damaged_store_stops_with_one_line_and_no_traceback(tmp_path):
    from mmfuse.cli import main

    make_sample_table(12, seed=0).to_csv(tmp_path / "sample.csv", index=False)
    args = ["fit", "--config", str(QUICKSTART), f"--data.init_args.source.path={tmp_path / 'sample.csv'}",
            f"--data.init_args.source.records_dir={tmp_path / 'records'}", "--data.init_args.loader.batch_size=4",
            "--data.init_args.lengths.max={dna: 256, rna: 256, protein: 128}",
            "--data.init_args.split.val_fraction=0.25",
            "--trainer.max_steps=1", "--trainer.limit_val_batches=1", "--trainer.num_sanity_val_steps=0",
            "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false",
            f"--trainer.logger.init_args.save_dir={tmp_path / 'runs'}"]  # fmt: skip

    def run() -> tuple[int, str]:
        err = io.StringIO()
        with bare_argv(), contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            try:
                main(list(args))
            except SystemExit as exit_:
                return int(exit_.code or 0), err.getvalue()
        return 0, err.getvalue()

    assert run()[0] == 0
    (path,) = (tmp_path / "records").glob("*.arrow")
    checkpoints = sorted((tmp_path / "runs").rglob("*.ckpt"))
    assert checkpoints
    _damage(path, "edited", letters=b"SYNT0000")  # a record id
    code, err = run()
    errors = [line for line in err.splitlines() if line.startswith("mmfuse: error:")]
    assert code == 1 and "Traceback" not in err and len(errors) == 1, err
    expected = _expected(path, "edited", column="[^']+")
    assert re.match(expected.replace("^", "^mmfuse: error: ", 1), errors[0]), errors[0]
    assert sorted((tmp_path / "runs").rglob("*.ckpt")) == checkpoints, "no training on the damaged store"
