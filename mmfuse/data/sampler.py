"""Length-aware batching: records of similar length share a batch, so each batch pads little.

:class:`BucketBatchSampler` is the Hugging Face Trainer's ``group_by_length`` as a PyTorch
``BatchSampler``: it reads the indices of any sampler (random, sequential or distributed) in pools of
``pool_size * batch_size``, sorts each pool by length and cuts it into batches. The collate function
pads each batch to its own longest sequence, so sorted pools waste far fewer padding tokens.

:class:`EpochRandomSampler` shuffles by ``(seed, epoch)`` alone, so a run resumed mid-epoch (the data
loader skips the batches it already gave) sees the same order as the run it continues.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import BatchSampler, RandomSampler, Sampler

from mmfuse.errors import ConfigError

__all__ = ["BucketBatchSampler", "EpochRandomSampler", "record_lengths"]


def record_lengths(sequences: Mapping[str, Sequence[str | None]]) -> np.ndarray:
    """Total length of each record: the sum of its sequences' lengths over modalities (absent: 0).

    Args:
        sequences: ``{modality: [sequence or None] * N}``, as ``_Records.sequences``.

    Returns:
        ``(N,)`` int64 letters per record.

    Examples:
        >>> record_lengths({"rna": ["ACGU", "AC"], "protein": ["MK", None]}).tolist()
        [6, 2]
    """
    columns = [np.fromiter((len(s) if s else 0 for s in seqs), dtype=np.int64, count=len(seqs))
               for seqs in sequences.values()]  # fmt: skip
    sizes = {len(c) for c in columns}
    if len(sizes) > 1:
        counts = {m: len(s) for m, s in sequences.items()}
        raise ValueError(f"modalities hold different numbers of records: {counts}")
    return np.sum(columns, axis=0, dtype=np.int64) if columns else np.zeros(0, dtype=np.int64)


def _generator(seed: int, epoch: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed + epoch)  # as DistributedSampler seeds its permutation


class EpochRandomSampler(RandomSampler):
    """A random permutation of the dataset's indices that depends only on ``seed`` and the epoch.

    Lightning calls :meth:`set_epoch` before each training epoch (as it does for
    ``DistributedSampler``), so each epoch has its own order, and a run resumed from a checkpoint draws
    exactly the orders of the run it continues, whatever random numbers were drawn before. The
    permutation is the one a ``DistributedSampler`` with the same seed shares out among processes, so
    one process with batches of ``N·B`` sees the batches that ``N`` DDP processes with batches of
    ``B`` see together. It is a
    ``RandomSampler``, so Lightning knows it shuffles and swaps in a shuffling ``DistributedSampler``
    (same seed) under DDP.

    Args:
        data_source: the dataset (only its length is used).
        seed: the shuffling seed (e.g. the run's ``seed_everything``).

    Examples:
        >>> sampler = EpochRandomSampler(range(6), seed=0)
        >>> first = list(sampler); sampler.set_epoch(1)
        >>> sorted(first) == list(range(6)), list(sampler) != first, list(EpochRandomSampler(range(6), 0)) == first
        (True, True, True)
    """

    def __init__(self, data_source: Sequence[Any], seed: int) -> None:
        super().__init__(data_source)
        self.seed = int(seed)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Chooses the epoch whose permutation :meth:`__iter__` yields."""
        self.epoch = int(epoch)

    def __iter__(self) -> Iterator[int]:
        yield from torch.randperm(len(self.data_source), generator=_generator(self.seed, self.epoch)).tolist()


class BucketBatchSampler(BatchSampler):
    """Batches of indices of similar length, drawn from ``sampler`` a pool at a time.

    The indices ``sampler`` yields are read in pools of ``pool_size * batch_size``; each pool is
    sorted by ``lengths`` (longest first, ties in sampler order) and cut into batches, whose order is
    shuffled within the pool (``shuffle_batches``): by the ``seed`` and ``epoch`` of ``sampler`` when
    it has them (:class:`EpochRandomSampler`, ``DistributedSampler``), so a resumed run repeats the
    order, else with torch's default generator (``seed_everything`` repeats it). Each index of
    ``sampler`` lands in exactly one batch; only the last batch of the last pool can be short. With
    ``drop_last`` the last ``len(sampler) % batch_size`` indices of the sampler are dropped before
    sorting, so every batch is full and the dropped records are the sampler's (random) last ones, not
    the shortest or longest.

    Lightning re-creates this sampler with a ``DistributedSampler`` (DDP) or an index-tracking wrapper
    (predict) in place of ``sampler`` and every other argument as given, when the data loader was
    built inside a ``*_dataloader`` hook (as data modules do).

    Args:
        sampler: yields dataset indices, e.g. ``RandomSampler``, ``SequentialSampler`` or
            ``DistributedSampler``.
        batch_size: indices per batch.
        drop_last: drop the last ``len(sampler) % batch_size`` indices (see above).
        lengths: ``(N,)`` length of every dataset index (e.g. :func:`record_lengths`).
        pool_size: batches' worth of indices sorted together; larger pools pad less but mix less.
        shuffle_batches: shuffle the order of the batches of each pool (for training); otherwise
            they come longest first.

    Examples:
        >>> from torch.utils.data import SequentialSampler
        >>> lengths = [5, 1, 4, 2, 3, 9]
        >>> list(BucketBatchSampler(SequentialSampler(lengths), 2, lengths=lengths, shuffle_batches=False))
        [[5, 0], [2, 4], [3, 1]]
    """

    def __init__(
        self,
        sampler: Sampler[int] | Iterable[int],
        batch_size: int,
        drop_last: bool = False,
        *,
        lengths: Sequence[int] | np.ndarray,
        pool_size: int = 100,
        shuffle_batches: bool = True,
    ) -> None:
        super().__init__(sampler, batch_size, drop_last)
        if not isinstance(pool_size, int) or isinstance(pool_size, bool) or pool_size < 1:
            raise ConfigError(f"pool_size must be a positive whole number of batches, not {pool_size!r}")
        self.lengths = np.asarray(lengths, dtype=np.int64)
        if self.lengths.ndim != 1:
            raise ValueError(f"lengths must be one number per dataset index, got shape {self.lengths.shape}")
        self.pool_size = pool_size
        self.shuffle_batches = shuffle_batches

    def __iter__(self) -> Iterator[list[int]]:
        pool_indices = self.pool_size * self.batch_size
        keep = len(self) * self.batch_size if self.drop_last else None  # type: ignore[arg-type]
        indices = iter(self.sampler) if keep is None else itertools.islice(self.sampler, keep)
        for pool_number in itertools.count():
            pool = list(itertools.islice(indices, pool_indices))
            if not pool:
                return
            yield from self._batches(np.asarray(pool, dtype=np.int64), pool_number)

    def _batches(self, pool: np.ndarray, pool_number: int = 0) -> Iterator[list[int]]:
        """``pool`` sorted by length (longest first, stable) and cut into batches, in shuffled order."""
        ordered = pool[np.argsort(-self.lengths[pool], kind="stable")].tolist()
        batches = [ordered[i : i + self.batch_size] for i in range(0, len(ordered), self.batch_size)]
        if not self.shuffle_batches:
            order: Iterable[int] = range(len(batches))
        elif hasattr(self.sampler, "seed") and hasattr(self.sampler, "epoch"):
            if pool_number == 0:
                self._shuffler = _generator(self.sampler.seed + 1, self.sampler.epoch)
            order = torch.randperm(len(batches), generator=self._shuffler).tolist()
        else:
            order = torch.randperm(len(batches)).tolist()
        for b in order:
            yield batches[b]

    def __len__(self) -> int:
        n = len(self.sampler)  # type: ignore[arg-type]
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)
