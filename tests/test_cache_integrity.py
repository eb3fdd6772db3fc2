"""Checksums of the embedding cache: a damaged data or index file is refused with one line, never read as
embeddings; an unwritable or full cache directory is named with the option that moves it, and a failed
append is cut off again.

Each damage is done to a shard the way the issue did it: truncated to half, 64 bytes of 0xFF in the middle,
emptied, zeroed at the same size, numbers edited in place, replaced by a foreign file of the same size.
"""

from __future__ import annotations

import contextlib
import errno
import io
import os
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import mmfuse.cache.backbone as backbone_module
import mmfuse.cache.store as store_module
from mmfuse.backbones import ESM2, FineTuning, NucleotideTransformer
from mmfuse.cache import CacheOptions, EmbeddingStore, cache_backbones
from mmfuse.data.collate import sequence_key
from mmfuse.errors import ConfigError
from tests.helpers.damage import KINDS, damage
from tests.helpers.in_process import QUICKSTART, bare_argv

DAMAGES = list(KINDS)
DIM = 8


def _key(i: int) -> bytes:
    return bytes.fromhex(sequence_key(f"SEQ{i}"))


def _values(i: int) -> torch.Tensor:
    return torch.arange(4 * DIM, dtype=torch.float32).reshape(4, DIM) + 100 * i + 1


def _filled(directory: Path, n: int = 8) -> EmbeddingStore:
    store = EmbeddingStore(directory, dim=DIM, precision="float32")
    store.put([(_key(i), _values(i)) for i in range(n)])
    return store


def _damage(path: Path, kind: str) -> None:
    def edit(data: bytearray) -> None:  # one number of a sequence's rows, in place
        data[len(data) // 2 + 1] ^= 0x40

    damage(path, kind, edit, lambda size: np.random.default_rng(0).bytes(size))  # foreign: the same size


def _message(directory: Path | str) -> str:
    """The one line refusing a damaged shard (a regular expression): past its end, or a checksum that differs.
    ``directory``: the store's, or a regular expression (a ``str``) matching it."""
    where = re.escape(str(directory)) if isinstance(directory, Path) else directory
    past = r"an index record of rank0\.idx points at rows \d+–\d+, past the end of rank0\.bin \(\d+ rows\); the data " \
           r"file was truncated or replaced"  # fmt: skip
    differ = r"the rows \d+–\d+ of rank0\.bin differ from those written \(their checksum in rank0\.idx does not " \
             r"match\): the data file or its index was changed or damaged after it was written"  # fmt: skip
    return rf"^embedding cache (?P<where>{where}): ({past}|{differ})\. Delete (?P=where) to " \
           r"compute these embeddings again\.$"  # fmt: skip


# damaged shards --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("damage", DAMAGES)
def test_a_damaged_data_file_is_never_read_as_embeddings(tmp_path, damage):
    _filled(tmp_path)
    _damage(tmp_path / "rank0.bin", damage)
    reader = EmbeddingStore(tmp_path, dim=DIM, precision="float32")  # a later run
    read, refused = {}, []
    for i in range(8):
        try:
            read[i] = reader.get(_key(i))
        except ConfigError as exc:
            assert re.match(_message(tmp_path), str(exc)), str(exc)
            refused.append(i)
    assert refused, "a damaged file was read"
    for i, values in read.items():  # what is read is exactly what was written
        assert torch.equal(values, _values(i))
    if damage in ("zeroed", "foreign", "emptied"):
        assert refused == list(range(8))


@pytest.mark.parametrize(("field", "refused", "gone"), [("key", [0], [2]), ("row", [1], []), ("rows", [0], []),
                                                    ("zeroed", [], [0, 1, 2])])  # fmt: skip
def test_an_edited_index_record_is_never_read_as_another_sequences_embeddings(tmp_path, field, refused, gone):
    _filled(tmp_path, n=3)
    index = tmp_path / "rank0.idx"
    records = np.fromfile(index, dtype=store_module._INDEX)
    if field == "key":  # record 2 now claims sequence 0's key (and, written later, wins)
        records["key"][2] = records["key"][0]
    elif field == "row":  # record 1 points at record 0's rows
        records["row"][1] = records["row"][0]
    elif field == "rows":  # record 0 claims a row fewer
        records["rows"][0] -= 1
    else:
        records[:] = 0
    records.tofile(index)
    reader = EmbeddingStore(tmp_path, dim=DIM, precision="float32")
    assert [i for i in range(3) if _key(i) not in reader] == gone  # embedded again when next needed, never read
    for i in range(3):
        if i in gone:
            continue
        if i in refused:
            with pytest.raises(ConfigError, match=_message(tmp_path)):
                reader.get(_key(i))
        else:
            assert torch.equal(reader.get(_key(i)), _values(i))


def test_a_cached_backbone_never_computes_an_output_from_damaged_rows(tmp_path):
    torch.manual_seed(0)
    options = CacheOptions(directory=str(tmp_path))
    cached = cache_backbones({"protein": ESM2("tiny", finetune=FineTuning(freeze=True))}, options)["protein"]
    sequences = ["MKTAYIAKQR", "MVLS"]
    first = cached(cached.tokenizer(sequences))
    cached.precompute(sequences, batch_size=2)
    data = next(tmp_path.glob("protein-*/rank0.bin"))
    _damage(data, "zeroed")
    torch.manual_seed(0)
    again = cache_backbones({"protein": ESM2("tiny", finetune=FineTuning(freeze=True))}, options)["protein"]
    assert again.store.directory == data.parent  # the same weights find the same store
    with pytest.raises(ConfigError, match=_message(data.parent)):
        again(again.tokenizer(sequences))
    assert again.read == 0 and first.embeddings.abs().sum() > 0


def test_a_cache_of_the_format_before_checksums_is_never_opened(tmp_path, monkeypatch):
    torch.manual_seed(0)
    options = CacheOptions(directory=str(tmp_path))
    current = cache_backbones({"rna": NucleotideTransformer("tiny", modality="rna", finetune=FineTuning(freeze=True))},
                              options)["rna"]  # fmt: skip
    assert current.fingerprint()["format"] == store_module.FORMAT_VERSION == 2
    directory = current.store.directory
    monkeypatch.setattr(backbone_module, "FORMAT_VERSION", 1)  # what mmfuse wrote before index records had a CRC
    torch.manual_seed(0)
    old = cache_backbones({"rna": NucleotideTransformer("tiny", modality="rna", finetune=FineTuning(freeze=True))},
                          options)["rna"]  # fmt: skip
    assert old.store.directory != directory


# a directory that cannot be written --------------------------------------------------------------------------
def test_a_read_only_cache_directory_is_named_with_the_option_that_moves_it(tmp_path, monkeypatch):
    parent = tmp_path / "cache"
    parent.mkdir()
    parent.chmod(0o500)
    try:
        try:
            (parent / "probe").mkdir()  # root writes despite the mode: make it fail as a read-only disk does
            (parent / "probe").rmdir()
            real = os.mkdir

            def read_only(path, *args, **kwargs):
                if Path(path).parent == parent:
                    raise OSError(errno.EROFS, "Read-only file system", str(path))
                return real(path, *args, **kwargs)

            monkeypatch.setattr(os, "mkdir", read_only)
        except PermissionError:
            pass
        with pytest.raises(ConfigError) as caught:
            EmbeddingStore(parent / "rna-x", dim=DIM, precision="float32", meta={"backbone": "x"})
    finally:
        parent.chmod(0o700)
    assert re.match(rf"^cannot write the embedding cache in {re.escape(str(parent / 'rna-x'))} \((Read-only file "
                    r"system|Permission denied)\): set `embedding_cache.directory` to a directory this process can "
                    r"write, with room for the embeddings$", str(caught.value)), str(caught.value)  # fmt: skip
    assert list(parent.iterdir()) == []


def test_a_full_disk_cuts_a_failed_append_off_and_keeps_what_was_stored(tmp_path, monkeypatch):
    store = _filled(tmp_path, n=2)
    sizes = {p.name: p.stat().st_size for p in tmp_path.iterdir()}
    real = store_module._write_all
    written = []

    def fills_up(fd, data):
        if written:  # the second row block finds the disk full half-way
            os.write(fd, bytes(data)[: len(data) // 2])
            raise OSError(errno.ENOSPC, "No space left on device")
        written.append(len(data))
        real(fd, data)

    monkeypatch.setattr(store_module, "_write_all", fills_up)
    with pytest.raises(ConfigError, match=rf"^cannot write the embedding cache in {re.escape(str(tmp_path))} \(No "
                                          r"space left on device\): set `embedding_cache.directory`"):  # fmt: skip
        store.put([(_key(5), _values(5)), (_key(6), _values(6))])
    assert {p.name: p.stat().st_size for p in tmp_path.iterdir()} == sizes, "no partial rows or records left"
    monkeypatch.setattr(store_module, "_write_all", real)
    reader = EmbeddingStore(tmp_path, dim=DIM, precision="float32")
    assert len(reader) == 2 and _key(5) not in reader and _key(6) not in store
    assert torch.equal(reader.get(_key(1)), _values(1))
    store.put([(_key(5), _values(5))])  # room again: stored after the others
    assert torch.equal(EmbeddingStore(tmp_path, dim=DIM, precision="float32").get(_key(5)), _values(5))


# through the command -------------------------------------------------------------------------------------------
def test_predict_from_a_zeroed_cache_stops_with_one_line_and_writes_no_predictions(tmp_path):
    from mmfuse.cli import main

    config = QUICKSTART.with_name("frozen_cached.yaml")
    small = ["--data.init_args.sample.size=12", "--data.init_args.loader.batch_size=4",
             "--data.init_args.lengths.max={dna: 256, rna: 256, protein: 128}",
             "--data.init_args.split.val_fraction=0.25", "--trainer.enable_progress_bar=false",
             "--trainer.enable_model_summary=false",
             f"--model.init_args.embedding_cache.directory={tmp_path / 'cache'}",
             f"--trainer.logger.init_args.save_dir={tmp_path / 'runs'}"]  # fmt: skip

    def run(*args: str) -> tuple[int, str]:
        err = io.StringIO()
        with bare_argv(), contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            try:
                main([args[0], "--config", str(config), *small, *args[1:]])
            except SystemExit as exit_:
                return int(exit_.code or 0), err.getvalue()
        return 0, err.getvalue()

    code, err = run("fit", "--trainer.max_steps=2", "--trainer.limit_val_batches=1", "--trainer.num_sanity_val_steps=0")
    assert code == 0, err
    (checkpoint,) = (tmp_path / "runs").rglob("last.ckpt")
    before = tmp_path / "before.csv"
    assert run("predict", f"--ckpt_path={checkpoint}", f"--predictions.output={before}")[0] == 0
    assert len(pd.read_csv(before)) > 0
    shards = sorted((tmp_path / "cache").glob("*/rank0.bin"))
    assert shards
    for shard in shards:
        _damage(shard, "zeroed")
    after = tmp_path / "after.csv"
    code, err = run("predict", f"--ckpt_path={checkpoint}", f"--predictions.output={after}")
    errors = [line for line in err.splitlines() if line.startswith("mmfuse: error:")]
    assert code == 1 and "Traceback" not in err and len(errors) == 1, err
    directories = "|".join(re.escape(str(s.parent)) for s in shards)
    assert re.match(_message(directories).replace("^", "^mmfuse: error: ", 1), errors[0]), errors[0]
    assert not after.exists() and not list(tmp_path.glob(".after.csv*")), "no predictions from a damaged cache"
