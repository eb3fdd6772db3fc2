"""A frozen backbone whose embeddings come from the store: :class:`CachedBackbone`, a :class:`Backbone` itself.

It wraps the backbone it caches, keeps its state-dict keys (a checkpoint of a cached run loads into
an uncached model and back), and reads, from its tokenizer's output, the sequences' keys instead of
tokens: the fusion model calls it like any other backbone and has no cache branch.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from mmfuse.backbones.base import Backbone, BackboneOutput
from mmfuse.cache.store import FORMAT_VERSION, CacheOptions, EmbeddingStore, digest_object, digest_tensors
from mmfuse.data.collate import sequence_key
from mmfuse.tokenizers import Tokenizer

__all__ = ["CachedBackbone", "KeyTokenizer", "cache_backbones"]

_POOL = {"mean": lambda t: t.float().mean(0, keepdim=True), "max": lambda t: t.amax(0, keepdim=True),
         "first": lambda t: t[:1]}  # fmt: skip
_INNER = "backbone."


class KeyTokenizer:
    """The tokenizer of a cached modality: ``{"keys": [...], "sequences": [...]}`` (lists) instead of tokens.

    Everything else (``validate``, ``letters``, length limits, its ``repr``) is the wrapped tokenizer's,
    so the data module checks the sequences as it would for the backbone itself. Picklable, for
    DataLoader workers.

    Examples:
        >>> from mmfuse.backbones import ESM2
        >>> out = KeyTokenizer(ESM2("tiny").tokenizer)(["MKV"])
        >>> out["sequences"], out["keys"] == [sequence_key("MKV")]
        (['MKV'], True)
    """

    def __init__(self, tokenizer: Tokenizer) -> None:
        self.tokenizer = tokenizer

    def __call__(self, sequences: Sequence[str | None]) -> dict[str, list]:
        sequences = list(sequences)
        return {"keys": [sequence_key(s) if s is not None else None for s in sequences], "sequences": sequences}

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or name == "tokenizer":  # unpickling looks these up before __dict__ is set
            raise AttributeError(name)
        return getattr(self.tokenizer, name)

    def __repr__(self) -> str:
        return repr(self.tokenizer)


def _device_and_dtype(module: nn.Module) -> tuple[torch.device, torch.dtype]:
    # lazily: the first floating-point tensor decides (a tuple of every weight cost ~0.1 ms a call)
    for tensor in itertools.chain(module.parameters(), module.buffers()):
        if tensor.is_floating_point():
            return tensor.device, tensor.dtype
    return torch.device("cpu"), torch.float32


class CachedBackbone(Backbone):
    """``backbone`` (frozen) with its embeddings kept in an :class:`~mmfuse.cache.store.EmbeddingStore`.

    Its tokenizer gives each sequence's key; :meth:`encode` reads the stored embeddings of a batch,
    computing (and storing) only those not stored yet. Fed tokens instead of keys (a data module that
    does not tokenize with the model's tokenizers), it runs the wrapped backbone and warns once.

    Args:
        backbone: the frozen backbone to cache.
        options: where and how to store (:class:`~mmfuse.cache.store.CacheOptions`).
        modality: the data's modality it reads, as the model keys it (default: the backbone's own
            ``modality``, which is informative only).

    Attributes:
        computed: sequences embedded by this process so far.
        read: embeddings read back from the store so far.
        precision: the compute precision hashed into the store's fingerprint (the trainer's; set by
            :class:`~mmfuse.cache.EmbeddingCacheCallback` before the store is opened).
        rank: this process's shard (``rank<R>``).
    """

    def __init__(self, backbone: Backbone, options: CacheOptions, modality: str | None = None) -> None:
        nn.Module.__init__(self)
        self.backbone = backbone
        self.options = options
        self.modality = modality or backbone.modality
        self.frozen = True
        self.tokenizer = KeyTokenizer(backbone.tokenizer)
        self.padding_invariant = backbone.padding_invariant
        self.weights_source = backbone.weights_source
        self.precision, self.rank = "32-true", 0
        self.computed = self.read = 0
        self._store: EmbeddingStore | None = None
        self._warned = False
        # the wrapped backbone's keys, without a ``backbone.`` level: checkpoints do not change with the cache
        self.register_state_dict_post_hook(_drop_level)
        self.register_load_state_dict_pre_hook(_add_level)

    @property
    def embed_dim(self) -> int:
        return self.backbone.embed_dim

    def fixed_state_keys(self) -> set[str]:
        return self.backbone.fixed_state_keys()

    def unwrapped(self) -> Backbone:
        return self.backbone.unwrapped()

    def blocks(self) -> Sequence[nn.Module]:
        return self.backbone.blocks()

    def compile(self, *args: Any, **kwargs: Any) -> None:
        """Compiles the wrapped backbone (it runs on sequences the store lacks)."""
        self.backbone.compile(*args, **kwargs)

    # the store --------------------------------------------------------------------------------
    def fingerprint(self) -> dict[str, Any]:
        """What the store depends on (hashed into its directory name)."""
        modality, backbone = self.modality, self.backbone
        return {
            "format": FORMAT_VERSION,
            "backbone": f"{type(backbone).__module__}.{type(backbone).__qualname__}",
            "structure": hashlib.blake2b(repr(backbone).encode(), digest_size=16).hexdigest(),
            "weights": digest_tensors(backbone.state_dict()),
            "weights_source": backbone.weights_source,
            "tokenizer": digest_object(backbone.tokenizer),
            "dim": backbone.embed_dim,
            "precision": self.options.precision,
            "pool": (self.options.pool or {}).get(modality),
            "center_tokens": (self.options.center_tokens or {}).get(modality),
            "compute_precision": self.precision,
        }

    @property
    def store(self) -> EmbeddingStore:
        """The store, opened on first use (after any checkpoint is loaded: the weights are hashed)."""
        if self._store is None:
            meta = self.fingerprint()
            digest = hashlib.blake2b(json.dumps(meta, sort_keys=True, default=str).encode(), digest_size=8).hexdigest()
            name = f"{self.modality}-{type(self.backbone).__name__}-{digest}"
            directory = Path(self.options.directory).expanduser() / name
            self._store = EmbeddingStore(directory, self.embed_dim, self.options.precision, f"rank{self.rank}", meta)
        return self._store

    def refresh(self) -> None:
        """Reads what other processes (or runs) stored since the last call."""
        if self._store is not None:
            self._store.refresh()

    def summary(self) -> str:
        """``rna: 120 computed, 360 read, 0.1 MiB in DIR``."""
        size = f", {self._store.disk_bytes() / 2**20:,.1f} MiB in {self._store.directory}" if self._store else ""
        if self.options.directory is None:
            size = ", not stored (embedding_cache.directory: null)"
        return f"{self.modality}: {self.computed:,} computed, {self.read:,} read{size}"

    # embeddings -------------------------------------------------------------------------------
    def _embed(self, sequences: Sequence[str]) -> list[Tensor]:
        """Each sequence's rows to store: its unmasked tokens, cropped to the middle and/or pooled."""
        device, _ = _device_and_dtype(self.backbone)
        tokens = self.backbone.tokenizer(list(sequences))
        out = self.backbone({name: value.to(device, non_blocking=True) for name, value in tokens.items()})
        keep = (self.options.center_tokens or {}).get(self.modality)
        pool = (self.options.pool or {}).get(self.modality)
        rows = []
        for emb, m in zip(out.embeddings, out.mask, strict=True):
            kept = emb[m]
            if keep is not None and len(kept) > keep:
                start = (len(kept) - keep) // 2
                kept = kept[start : start + keep]
            if pool is not None and len(kept):
                kept = _POOL[pool](kept)
            rows.append(kept.detach().to("cpu", self.options.store_dtype))
        return rows

    def precompute(self, sequences: Sequence[str | None], batch_size: int, world_size: int = 1) -> int:
        """Embeds and stores this process's share of the ``sequences`` not stored yet; returns how many.

        Distinct keys are split between processes by their value, so under DDP every sequence is
        embedded by exactly one rank; batches group sequences of similar length (little padding).
        ``sequences`` may be lazy (a data module's records store, read by index): it is read once to
        key it, and again, batch by batch, for what this process embeds; no list of them is made.
        """
        if self.options.directory is None:  # nothing stored: each batch computes its own
            return 0
        store = self.store
        todo: dict[bytes, tuple[int, int]] = {}  # key -> (position in `sequences`, length)
        for i, sequence in enumerate(sequences):
            if sequence is None:
                continue
            key = bytes.fromhex(sequence_key(sequence))
            if key not in store and int.from_bytes(key[:8], "big") % world_size == self.rank:
                todo.setdefault(key, (i, len(sequence)))
        ordered = sorted(todo.items(), key=lambda item: item[1][1])
        with torch.no_grad():
            for start in range(0, len(ordered), batch_size):
                chunk = ordered[start : start + batch_size]
                rows = self._embed([sequences[i] for _, (i, _) in chunk])
                store.put(list(zip([key for key, _ in chunk], rows, strict=True)))
        self.computed += len(ordered)
        return len(ordered)

    def encode(self, batch: Mapping[str, Any]) -> BackboneOutput:
        """Embeddings ``(B, L, D)`` and mask ``(B, L)`` of ``{"keys": [...], "sequences": [...]}``.

        Only sequences not stored yet are embedded (each distinct one once), so after the first epoch a
        batch costs a few memory-mapped reads. A ``None`` key (a sample without the modality) gives a
        fully masked row.
        """
        if "keys" not in batch:
            self._warn_tokens()
            return self.backbone(batch)
        if self.options.directory is None:
            return self._computed(batch)
        store = self.store
        raw = [bytes.fromhex(k) if k is not None else None for k in batch["keys"]]
        rows: dict[bytes, np.ndarray] = {}
        missing = list(dict.fromkeys(k for k in raw if k is not None and k not in store))
        if missing:
            first = {k: raw.index(k) for k in missing}  # one sample per distinct sequence
            computed = self._embed([batch["sequences"][first[k]] for k in missing])
            store.put(list(zip(missing, computed, strict=True)))
            rows = {k: store.as_array(t) for k, t in zip(missing, computed, strict=True)}
            self.computed += len(missing)
        for k in raw:
            if k is not None and k not in rows:
                rows[k] = store.view(k)  # memory-mapped: copied once, into the batch below
                self.read += 1
        length = max([len(rows[k]) for k in raw if k is not None] + [1])
        embeddings = np.zeros((len(raw), length, store.dim), dtype=store.np_dtype)
        mask = np.zeros((len(raw), length), dtype=bool)
        for i, k in enumerate(raw):
            if k is not None:
                embeddings[i, : len(rows[k])] = rows[k]
                mask[i, : len(rows[k])] = True
        device, dtype = _device_and_dtype(self.backbone)
        return BackboneOutput(store.as_tensor(embeddings).to(device, dtype, non_blocking=True),
                              torch.from_numpy(mask).to(device, non_blocking=True))  # fmt: skip

    def _computed(self, batch: Mapping[str, Any]) -> BackboneOutput:
        """What :meth:`encode` gives without a store: the batch's distinct sequences embedded and shaped as stored."""
        keys = list(batch["keys"])
        distinct = list(dict.fromkeys(k for k in keys if k is not None))
        first = {k: keys.index(k) for k in distinct}
        rows = dict(zip(distinct, self._embed([batch["sequences"][first[k]] for k in distinct]), strict=True))
        self.computed += len(distinct)
        length = max([len(rows[k]) for k in keys if k is not None] + [1])
        embeddings = torch.zeros(len(keys), length, self.embed_dim, dtype=self.options.store_dtype)
        mask = torch.zeros(len(keys), length, dtype=torch.bool)
        for i, k in enumerate(keys):
            if k is not None:
                embeddings[i, : len(rows[k])] = rows[k]
                mask[i, : len(rows[k])] = True
        device, dtype = _device_and_dtype(self.backbone)
        return BackboneOutput(embeddings.to(device, dtype), mask.to(device))

    def _warn_tokens(self) -> None:
        if not self._warned:
            self._warned = True
            from lightning.pytorch.utilities import rank_zero_warn

            rank_zero_warn(
                f"embedding_cache: the batch holds {self.modality} tokens instead of sequences and keys (a data "
                f"module gives those when it tokenizes with the model's tokenizers, which the task attaches in "
                f"setup), so the backbone runs every step"
            )

    def extra_repr(self) -> str:
        return f"modality={self.modality!r}, directory={self.options.directory!r}"


def _drop_level(module: nn.Module, state: dict[str, Any], prefix: str, local_metadata: Any) -> None:
    inner = prefix + _INNER
    for key in [k for k in state if k.startswith(inner)]:
        state[prefix + key[len(inner) :]] = state.pop(key)


def _add_level(module: nn.Module, state: dict[str, Any], prefix: str, *args: Any) -> None:
    for key in [k for k in state if k.startswith(prefix)]:
        state[prefix + _INNER + key[len(prefix) :]] = state.pop(key)


def cache_backbones(
    backbones: Mapping[str, Backbone], options: CacheOptions | Mapping[str, Any]
) -> dict[str, Backbone]:
    """``backbones`` with the ones ``options`` caches wrapped in a :class:`CachedBackbone`.

    Raises:
        ConfigError: an option names a modality without a backbone or one that trains, or no backbone
            is frozen (see :meth:`~mmfuse.cache.store.CacheOptions.cached_modalities`).
    """
    if isinstance(options, Mapping):
        options = CacheOptions(**options)
    cached = options.cached_modalities({m: b.frozen for m, b in backbones.items()})
    return {m: CachedBackbone(b, options, m) if m in cached else b for m, b in backbones.items()}
