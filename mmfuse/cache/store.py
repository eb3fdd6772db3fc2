"""The embedding store on disk and the cache's options: each sequence embedded once, read back memory-mapped.

When a backbone's weights are fixed, its embedding of a sequence never changes, so recomputing it
every epoch (and every run) wastes nearly all of a fusion-only training run. With
``embedding_cache`` set on the task, each cached backbone is wrapped in a
:class:`~mmfuse.cache.CachedBackbone`: the sequences of the data set that the store lacks are embedded
before the first epoch (by :class:`~mmfuse.cache.EmbeddingCacheCallback`; or, with data modules that
cannot list their sequences, the first time a batch holds them) and appended to a store; from then on
(later epochs, later runs, other processes) they are read back.

Layout on disk (no pickle anywhere)::

    <directory>/<modality>-<Backbone>-<fingerprint>/
        meta.json        what the fingerprint covers (backbone, weights digest, tokenizer, options)
        rank<R>.bin      rows of ``D`` numbers (float32/float16/bfloat16 bits), appended
        rank<R>.idx      32-byte records: sequence key (16 bytes), first row (int64), number of rows
                         (uint32), CRC-32 of the key, the row count and the rows' bytes (uint32)

The fingerprint hashes the backbone's class and module structure, every tensor of its state dict,
its tokenizer, the storage options (precision, pooling, kept tokens) and the compute precision, so
changing any of them starts a new store; the key hashes the sequence after the data module's length
policy (crop), so a new crop gives new keys. Each process writes its own ``rank<R>`` shard, under an
exclusive file lock (two runs sharing a directory cannot interleave rows); an index record is written
only after its rows, so a crash never leaves an index entry pointing at missing data. The sequences to
embed are split between processes by key, and every process reads the records of all shards (after a
barrier, and at the start of each epoch), so each sequence is embedded once.

Integrity: a sequence's rows are checked against their record's CRC-32 the first time a process reads
them, so a data file zeroed, edited or replaced (even at the same size), or an index record whose key,
position or length changed, stops the run with one line naming the directory to delete instead of
giving other embeddings. A directory that cannot be written (read-only, full) is named with the option
that moves it, ``embedding_cache.directory``; a failed append is cut off again, leaving no partial rows.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import pickle
import struct
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

from mmfuse.errors import ConfigError

__all__ = ["FORMAT_VERSION", "CacheOptions", "EmbeddingStore", "digest_object", "digest_tensors"]

FORMAT_VERSION = 2  # 2: a CRC-32 in each index record
# not "S16": it drops trailing zeros
_INDEX = np.dtype([("key", "u1", (16,)), ("row", "<i8"), ("rows", "<u4"), ("crc", "<u4")])
_ROWS = struct.Struct("<I")
_UNWRITABLE = {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT, errno.ENOTDIR, errno.EEXIST}
_STORAGE = {"float32": (np.float32, torch.float32), "float16": (np.float16, torch.float16),
            "bfloat16": (np.uint16, torch.bfloat16)}  # fmt: skip
_POOLS = ("mean", "max", "first")


@dataclass
class CacheOptions:
    """Options of the embedding cache (``embedding_cache:`` of a task).

    Args:
        directory: where stores are kept; one sub-directory per (modality, backbone fingerprint).
            Share it between runs (and processes) to reuse embeddings. ``None``: nothing is stored, each batch's
            embeddings are computed and shaped as a store would give them (pooled, cropped, rounded); an
            exported model (``mmfuse export``) whose training cache pooled or rounded uses it.
        modalities: the modalities to cache; default: every backbone that is frozen. Only frozen
            backbones can be cached (a backbone that trains changes its embeddings every step).
        precision: number format on disk; ``float16``/``bfloat16`` halve the disk use (and the
            embeddings the adapter sees are rounded accordingly, also in the first epoch).
        pool: ``{modality: mean | max | first}``: store one pooled vector per sequence instead of
            every token (the adapter then sees a single token); bounds disk use for long sequences.
        center_tokens: ``{modality: n}``: store only the middle ``n`` tokens (e.g. Enformer's
            central bins around the TSS).
    """

    directory: str | None = "~/.cache/mmfuse/embeddings"
    modalities: list[str] | None = None
    precision: Literal["float32", "float16", "bfloat16"] = "float32"
    pool: dict[str, Literal["mean", "max", "first"]] | None = None
    center_tokens: dict[str, int] | None = None

    def cached_modalities(self, frozen: Mapping[str, bool]) -> list[str]:
        """The modalities to cache, given whether each backbone is frozen; checks every option.

        Raises:
            ConfigError: an option names a modality without a backbone, a backbone that trains, or a
                value out of range; or no backbone is frozen.
        """
        modalities = list(self.modalities) if self.modalities is not None else [m for m, f in frozen.items() if f]
        unknown = sorted(set(modalities) - set(frozen))
        if unknown:
            raise ConfigError(
                f"embedding_cache.modalities names {unknown}, which have no backbone; the backbones are "
                f"{sorted(frozen)}"
            )
        training = [m for m in modalities if not frozen[m]]
        if training:
            raise ConfigError(
                f"embedding_cache: the {training} backbone(s) train (their embeddings change every step), so "
                f"they cannot be cached; cache only frozen backbones (`finetune: {{freeze: true}}`), or leave "
                f"embedding_cache.modalities unset to cache every frozen one"
            )
        if not modalities:
            raise ConfigError(
                "embedding_cache is set but no backbone is frozen: freeze the backbones whose embeddings "
                "should be cached (`finetune: {freeze: true}`), or remove embedding_cache"
            )
        if self.precision not in _STORAGE:
            raise ConfigError(f"embedding_cache.precision must be one of {sorted(_STORAGE)}, not {self.precision!r}")
        for name, values in (("pool", self.pool or {}), ("center_tokens", self.center_tokens or {})):
            extra = sorted(set(values) - set(modalities))
            if extra:
                raise ConfigError(f"embedding_cache.{name} names {extra}, which are not cached ({modalities})")
        bad_pool = {m: p for m, p in (self.pool or {}).items() if p not in _POOLS}
        if bad_pool:
            raise ConfigError(f"embedding_cache.pool must map modalities to one of {list(_POOLS)}, not {bad_pool}")
        bad_keep = {m: n for m, n in (self.center_tokens or {}).items() if not isinstance(n, int) or n < 1}
        if bad_keep:
            raise ConfigError(f"embedding_cache.center_tokens must be positive whole numbers, not {bad_keep}")
        return modalities

    @property
    def store_dtype(self) -> torch.dtype:
        """The tensor type of stored rows."""
        return _STORAGE[self.precision][1]


def _keys(records: np.ndarray) -> list[bytes]:
    raw = np.ascontiguousarray(records["key"]).tobytes()
    return [raw[i : i + 16] for i in range(0, len(raw), 16)]


def _checksum(key: bytes, array: np.ndarray) -> int:
    """CRC-32 of a record: its key, its row count and its rows' bytes (an edit to any of them changes it)."""
    return zlib.crc32(np.ascontiguousarray(array).view(np.uint8), zlib.crc32(key + _ROWS.pack(len(array))))


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _unwritable(directory: Path, exc: OSError) -> ConfigError:
    return ConfigError(
        f"cannot write the embedding cache in {directory} ({exc.strerror or exc}): set `embedding_cache.directory` "
        f"to a directory this process can write, with room for the embeddings"
    )


def digest_tensors(state: Mapping[str, Tensor]) -> str:
    h = hashlib.blake2b(digest_size=16)
    for name in sorted(state):
        t = state[name].detach()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
        h.update(t.cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def digest_object(obj: Any) -> str:
    try:
        data = pickle.dumps(obj, protocol=4)  # dumped only, never loaded
    except Exception:
        data = repr(obj).encode()
    return hashlib.blake2b(data, digest_size=16).hexdigest()


class EmbeddingStore:
    """Append-only, memory-mapped store of per-sequence embeddings ``(rows, dim)`` keyed by 16 bytes.

    Args:
        directory: the store's directory (created with ``meta`` written to ``meta.json``).
        dim: width of a row.
        precision: ``float32``, ``float16`` or ``bfloat16``.
        shard: this process's shard name (``rank<R>``).
        meta: what the store holds, written once for people to read.
    """

    def __init__(self, directory: str | Path, dim: int, precision: str, shard: str = "rank0",
                 meta: Mapping[str, Any] | None = None) -> None:  # fmt: skip
        self.directory = Path(directory)
        self.dim = dim
        self.np_dtype, self.torch_dtype = _STORAGE[precision]
        self.row_bytes = dim * np.dtype(self.np_dtype).itemsize
        self.shard = shard
        meta_path = self.directory / "meta.json"
        tmp = meta_path.with_name(f".meta.json.{os.getpid()}.tmp")
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            if meta is not None and not meta_path.exists():
                tmp.write_text(json.dumps(dict(meta), indent=2, sort_keys=True, default=str))
                os.replace(tmp, meta_path)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise _unwritable(self.directory, exc) from None
        self._entries: dict[bytes, tuple[str, int, int, int]] = {}
        self._checked: set[bytes] = set()  # keys whose rows this process has checked
        self._index_read: dict[str, int] = {}
        self._maps: dict[str, np.ndarray] = {}
        self.refresh()

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: bytes) -> bool:
        return key in self._entries

    def refresh(self) -> int:
        """Reads index records written since the last call (by any process); returns how many keys are new."""
        added = 0
        for path in sorted(self.directory.glob("*.idx")):
            shard = path.stem
            start = self._index_read.get(shard, 0)
            with open(path, "rb") as f:
                f.seek(start)
                data = f.read()
            whole = len(data) - len(data) % _INDEX.itemsize  # a record being written is read next time
            records = np.frombuffer(data[:whole], dtype=_INDEX)
            for key, row, rows, crc in zip(_keys(records), records["row"].tolist(), records["rows"].tolist(),
                                           records["crc"].tolist(), strict=True):  # fmt: skip
                added += key not in self._entries
                self._entries[key] = (shard, row, rows, crc)
                self._checked.discard(key)
            self._index_read[shard] = start + whole
        return added

    def _rows(self, shard: str, row: int, rows: int) -> np.ndarray:
        mapped = self._maps.get(shard)
        if mapped is None or row < 0 or row + rows > len(mapped):
            path = self.directory / f"{shard}.bin"
            n = path.stat().st_size // self.row_bytes if path.exists() else 0
            mapped = np.memmap(path, dtype=self.np_dtype, mode="r", shape=(n, self.dim)) if n else np.empty(
                (0, self.dim), dtype=self.np_dtype)  # fmt: skip
            self._maps[shard] = mapped
            if row < 0 or row + rows > n:  # the index outlived its data: a truncated or replaced data file
                raise ConfigError(
                    f"embedding cache {self.directory}: an index record of {shard}.idx points at rows {row}–"
                    f"{row + rows - 1}, past the end of {shard}.bin ({n} rows); the data file was truncated or "
                    f"replaced. Delete {self.directory} to compute these embeddings again."
                )
        return mapped[row : row + rows]

    def view(self, key: bytes) -> np.ndarray:
        """The stored rows of ``key``, a read-only memory-mapped ``(rows, dim)`` array (bfloat16 as uint16),
        checked against their record's CRC-32 on this process's first read of them.

        Raises:
            ConfigError: the rows (or their record) differ from those written.
        """
        shard, row, rows, crc = self._entries[key]
        array = self._rows(shard, row, rows)
        if key not in self._checked:
            if _checksum(key, array) != crc:
                raise ConfigError(
                    f"embedding cache {self.directory}: the rows {row}–{row + rows - 1} of {shard}.bin differ from "
                    f"those written (their checksum in {shard}.idx does not match): the data file or its index was "
                    f"changed or damaged after it was written. Delete {self.directory} to compute these embeddings "
                    f"again."
                )
            self._checked.add(key)
        return array

    def get(self, key: bytes) -> Tensor:
        """The stored ``(rows, dim)`` tensor of ``key`` (in the storage precision, on the CPU)."""
        return self.as_tensor(np.array(self.view(key)))

    def as_tensor(self, array: np.ndarray) -> Tensor:
        """A tensor of the storage precision sharing ``array``'s memory."""
        out = torch.from_numpy(array)
        return out.view(self.torch_dtype) if self.torch_dtype == torch.bfloat16 else out

    def as_array(self, tensor: Tensor) -> np.ndarray:
        """``tensor`` (on the CPU, storage precision) as the array the store holds."""
        return (tensor.view(torch.uint16) if self.torch_dtype == torch.bfloat16 else tensor).numpy()

    def put(self, items: Sequence[tuple[bytes, Tensor]]) -> None:
        """Appends ``(key, (rows, dim) tensor)`` items to this process's shard (keys already stored are skipped)."""
        items = [(k, t) for k, t in items if k not in self._entries]
        if not items:
            return
        arrays = [self.as_array(t.detach().to("cpu", self.torch_dtype).contiguous()) for _, t in items]
        try:
            records = self._append(items, arrays)
        except OSError as exc:
            if exc.errno not in _UNWRITABLE:
                raise
            raise _unwritable(self.directory, exc) from None
        for key, row, rows, crc in zip(_keys(records), records["row"].tolist(), records["rows"].tolist(),
                                       records["crc"].tolist(), strict=True):  # fmt: skip
            self._entries[key] = (self.shard, row, rows, crc)  # read again (the same) by the next refresh()

    def _append(self, items: Sequence[tuple[bytes, Tensor]], arrays: Sequence[np.ndarray]) -> np.ndarray:
        """Appends rows, then their index records, under the shard's lock; a failed write is cut off again."""
        flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND
        data = os.open(self.directory / f"{self.shard}.bin", flags, 0o666)
        try:
            index = os.open(self.directory / f"{self.shard}.idx", flags, 0o666)
        except OSError:
            os.close(data)
            raise
        try:
            fcntl.flock(data, fcntl.LOCK_EX)
            size, index_size = os.fstat(data).st_size, os.fstat(index).st_size
            try:
                if size % self.row_bytes:  # rows of a write that died half-way: pad to the next row
                    _write_all(data, b"\0" * (self.row_bytes - size % self.row_bytes))
                row = -(-size // self.row_bytes)
                records = np.zeros(len(items), dtype=_INDEX)
                for i, ((key, _), array) in enumerate(zip(items, arrays, strict=True)):
                    _write_all(data, array.tobytes())
                    records[i] = (np.frombuffer(key, dtype=np.uint8), row, len(array), _checksum(key, array))
                    row += len(array)
                os.fsync(data)  # the rows reach the disk before the index records that point at them
                if index_size % _INDEX.itemsize:  # a record that died half-way: drop it
                    index_size -= index_size % _INDEX.itemsize
                    os.ftruncate(index, index_size)
                _write_all(index, records.tobytes())
                return records
            except OSError:  # e.g. no space left: cut both files back to where this write started
                for fd, end in ((index, index_size), (data, size)):
                    with contextlib.suppress(OSError):
                        os.ftruncate(fd, end)
                raise
            finally:
                fcntl.flock(data, fcntl.LOCK_UN)
        finally:
            os.close(index)
            os.close(data)

    def disk_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.directory.glob("*.bin"))
