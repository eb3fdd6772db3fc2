"""The loaders of table data modules: sequences checked against tokenizers, samplers, the DataLoaders.

A :class:`~mmfuse.data.datasets.table.TableDataModule` composes a :class:`LoaderBuilder` (built from its
loader options when a loader is asked for, so a batch size a tuner changed holds): the loaders of each
split, with the reproducible training order (:class:`~mmfuse.data.sampler.EpochRandomSampler`, or a
``DistributedSampler`` under DDP) and length bucketing. :func:`check_tokenizer` checks every sequence of a
modality against the tokenizer a task attaches; :func:`select` picks records by id for ``predict``.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from lightning.pytorch.strategies import ParallelStrategy
from torch.utils.data import (
    ConcatDataset,
    DataLoader,
    Dataset,
    DistributedSampler,
    Sampler,
    SequentialSampler,
    Subset,
)
from torchdata.stateful_dataloader import StatefulDataLoader

from mmfuse.data.collate import MultiModalCollate
from mmfuse.data.errors import DataError
from mmfuse.data.sampler import BucketBatchSampler, EpochRandomSampler
from mmfuse.data.splits import SPLITS
from mmfuse.data.store.rows import SequenceView, SplitRecords
from mmfuse.data.store.validate import validate_sequences
from mmfuse.tokenizers import Tokenizer

__all__ = ["LoaderBuilder", "Refused", "check_served", "check_tokenizer", "deferred", "select", "shuffle_seed"]


def shuffle_seed() -> int:
    """The seed of the training order: the run's ``seed_everything`` (Lightning's ``PL_GLOBAL_SEED``),
    else torch's initial seed (a new order each run)."""
    seed = os.environ.get("PL_GLOBAL_SEED")
    return int(seed) if seed is not None else torch.initial_seed() % 2**63


class Refused:
    """Stands in for a loader that could not be built: iterating it or asking its length raises ``error``.

    Lightning calls a data module's ``*_dataloader`` hooks inside a context that patches ``DataLoader``'s
    ``__setattr__`` (to re-create custom loaders) and restores it only when the hook returns: an error raised
    in the hook leaves every later ``DataLoader`` of the process recording each attribute set on it, so the
    iterators (and their worker processes) of later runs in the same process stay alive until garbage
    collection, where shutting each worker down then waits 5 s. The hooks return this instead, and the
    error is raised just after, outside that context, with the same message.
    """

    def __init__(self, error: Exception) -> None:
        self.error = error

    def __iter__(self):
        raise self.error

    def __len__(self) -> int:
        raise self.error


def deferred(build: Callable[[], Any], data_module: Any) -> Any:
    """``build()``; when a Trainer asks (``data_module.trainer`` is set), a :class:`Refused` holding the error it
    raised instead of the error (for the data modules' loader hooks; called directly, they raise)."""
    if getattr(data_module, "trainer", None) is None:
        return build()
    try:
        return build()
    except Exception as error:  # noqa: BLE001 - raised again, unchanged, when Lightning uses the loader
        return Refused(error)


class LoaderBuilder:
    """The DataLoaders of a data module's splits.

    Args:
        splits: the records of each split (:class:`~mmfuse.data.store.rows.SplitRecords`).
        collate: the collate function, with the tokenizers a task attached (run in the workers).
        batch_size: training batch size.
        eval_batch_size: batch size of validation, test and prediction.
        num_workers: DataLoader workers (persistent when there are any).
        bucketing: batches of records of similar lengths (:class:`~mmfuse.data.sampler.BucketBatchSampler`).
        bucket_pool: batches sorted together when bucketing.
        path: the records' source, in messages.
        fill: why a split is empty and how to fill it (a message), by split name.
    """

    def __init__(self, splits: Mapping[str, SplitRecords], collate: MultiModalCollate, batch_size: int,
                 eval_batch_size: int, num_workers: int, bucketing: bool, bucket_pool: int, path: str,
                 fill: Callable[[str], str]) -> None:  # fmt: skip
        self.splits, self.collate, self.path, self.fill = splits, collate, path, fill
        self.batch_size, self.eval_batch_size, self.num_workers = batch_size, eval_batch_size, num_workers
        self.bucketing, self.bucket_pool = bucketing, bucket_pool

    def loader(self, split: str, shuffle: bool, trainer: Any = None) -> DataLoader:
        """The loader of ``split`` (or ``all``), shuffled for training; ``trainer`` gives the epoch and DDP ranks."""
        dataset: Dataset
        parts = [self.splits[s] for s in SPLITS] if split == "all" else [self.splits[split]]
        dataset = ConcatDataset(parts) if split == "all" else parts[0]
        if len(dataset) == 0:
            raise DataError(f"the {split!r} split of {self.path} is empty; {self.fill(split)}")
        batch_size = self.batch_size if shuffle else self.eval_batch_size
        sampler = self.train_sampler(dataset, trainer) if shuffle else SequentialSampler(dataset)
        batching: dict[str, Any] = {"batch_size": batch_size, "sampler": sampler}
        if self.bucketing:  # lengths in the order of `dataset`, the splits concatenated for "all"
            lengths = np.concatenate([records.lengths() for records in parts])
            batching = {"batch_sampler": BucketBatchSampler(
                sampler, batch_size, drop_last=False, lengths=lengths, pool_size=self.bucket_pool,
                shuffle_batches=shuffle,
            )}  # fmt: skip
        # a StatefulDataLoader: Lightning stores how far through the epoch it got in each checkpoint,
        # and a run resumed from a mid-epoch checkpoint skips the batches already trained on
        with warnings.catch_warnings():  # its constructor calls an API torch deprecated (a no-op)
            warnings.filterwarnings("ignore", message="'set_vital' is deprecated")
            return StatefulDataLoader(
                dataset,
                **batching,
                num_workers=self.num_workers,
                collate_fn=self.collate,
                persistent_workers=self.num_workers > 0,
            )

    def selected(self, dataset: Dataset) -> DataLoader:
        """The loader of records picked by :func:`select`, in their order, with their sequences."""
        keep = MultiModalCollate(self.collate.tokenizers, keep_sequences=True)
        return DataLoader(dataset, batch_size=self.eval_batch_size, num_workers=self.num_workers, collate_fn=keep)

    @staticmethod
    def train_sampler(dataset: Dataset, trainer: Any = None) -> Sampler:
        """The training order: a function of (seed, epoch) alone, so a resumed run repeats it.

        Lightning creates the epoch's iterator (and, resuming mid-epoch, skips the batches already
        trained on) before it calls ``set_epoch``, so the sampler starts at the trainer's current
        epoch. Under DDP it is a ``DistributedSampler`` (built here for the same reason; Lightning
        leaves it in place).
        """
        epoch = trainer.current_epoch if trainer is not None else 0
        sampler: EpochRandomSampler | DistributedSampler
        if trainer is not None and trainer.world_size > 1 and isinstance(trainer.strategy, ParallelStrategy):
            sampler = DistributedSampler(dataset, trainer.world_size, trainer.global_rank, True, shuffle_seed())
        else:
            sampler = EpochRandomSampler(dataset, shuffle_seed())
        sampler.set_epoch(epoch)
        return sampler


def check_served(tokenizers: Mapping[str, Tokenizer], served: Sequence[str], genome: Any) -> None:
    """Refuses tokenizers of modalities the records do not carry (``served``), naming the option to set."""
    unknown = sorted(set(tokenizers) - set(served))
    if unknown:
        hint = ""
        if genome is None and "dna" in unknown:
            hint = (" For DNA windows cut from a genome by the table's coordinates (IsoFormer's GTEx_final.csv "
                    "has no DNA column), set `genome: GENOME.fa`.")  # fmt: skip
        raise DataError(
            f"the model reads modalities {sorted(tokenizers)} but the data module maps only "
            f"{sorted(served)} to columns; add {unknown} to the data module's `modalities`.{hint}"
        )


def check_tokenizer(view: SequenceView, tokenizer: Tokenizer, modalities: Mapping[str, str], path: str, genome: Any,
                    crop_hint: Callable[[int], str]) -> None:  # fmt: skip
    """Refuses sequences of ``view`` that ``tokenizer`` cannot read, the first few listed with their record ids
    and where they come from (a column of ``path``, a derived source, or ``genome``); ``crop_hint`` says how
    to crop those over a length limit."""
    count, problems, limit = validate_sequences(view, tokenizer)
    if count:
        modality, derived = view.modality, view.reader.derived.get(view.modality)
        if modality in modalities:
            where = f"column {modalities[modality]!r} of {path}"
        else:
            where = derived.source if derived is not None else f"cut from {genome.fasta}"
        raise DataError(
            f"{count} {modality} sequence(s) ({where}) cannot be read by "
            f"{tokenizer.name}:\n" + "\n".join(problems) + (crop_hint(limit) if limit else "")
        )


def select(splits: Mapping[str, SplitRecords], ids: Sequence[str], path: str) -> Dataset:
    """The records ``ids`` (in this order, each once) of ``splits``.

    Raises:
        DataError: no ids, or ids the records do not have (a few listed, with ids they have).
    """
    wanted = list(dict.fromkeys(str(i) for i in ids))
    if not wanted:
        raise DataError("no record ids were given; name the records to read, e.g. --ids T1,T2")
    parts = [splits[name] for name in SPLITS]
    index: dict[str, int] = {}
    offset = 0
    for records in parts:
        for i, rid in enumerate(records.ids):
            index.setdefault(rid, offset + i)
        offset += len(records)
    missing = [i for i in wanted if i not in index]
    if missing:
        known = ", ".join(list(index)[:3])
        raise DataError(
            f"{len(missing)} of the {len(wanted)} ids given are not records of {path}: "
            f"{', '.join(missing[:5])}{', …' if len(missing) > 5 else ''} (its ids read like {known}); "
            f"ids are matched exactly, version suffix included"
        )
    return Subset(ConcatDataset(parts), [index[i] for i in wanted])
