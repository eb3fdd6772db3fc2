"""The loaders of table data modules: tokenizers checked and attached, samplers, the DataLoaders.

:class:`TableLoaders` is mixed into :class:`~mmfuse.data.datasets.table.TableDataModule`: it checks every
sequence against the tokenizers a task attaches (once per tokenizer), builds the collate function
(:class:`~mmfuse.data.collate.MultiModalCollate`, run in the workers), and the loaders of each split,
with the reproducible training order (:class:`~mmfuse.data.sampler.EpochRandomSampler`, or a
``DistributedSampler`` under DDP) and length bucketing.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping, Sequence
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
from mmfuse.data.store.rows import SplitRecords
from mmfuse.data.store.validate import validate_sequences
from mmfuse.tokenizers import Tokenizer

__all__ = ["TableLoaders", "shuffle_seed"]

# torchdata 0.11 calls an API torch deprecated (a no-op): nothing a user can act on
warnings.filterwarnings("ignore", message="'set_vital' is deprecated")


def shuffle_seed() -> int:
    """The seed of the training order: the run's ``seed_everything`` (Lightning's ``PL_GLOBAL_SEED``),
    else torch's initial seed (a new order each run)."""
    seed = os.environ.get("PL_GLOBAL_SEED")
    return int(seed) if seed is not None else torch.initial_seed() % 2**63


class TableLoaders:
    """Tokenizers, collation and loaders of table data modules.

    Mixed into :class:`~mmfuse.data.datasets.table.TableDataModule`, which provides the attributes below and
    ``setup`` and ``split_sequences``; :class:`~mmfuse.data.datasets.checks.TableChecks` provides
    ``_crop_hint`` and ``_fill``.
    """

    path: str
    modalities: dict[str, str]
    served: list[str]
    genome_windows: Any
    predict_split: str
    batch_size: int
    eval_batch_size: int
    num_workers: int
    bucketing: bool
    bucket_pool: int
    _splits: dict[str, SplitRecords] | None
    _collate: MultiModalCollate | None
    _validated: set[str]
    #: the records `predict` reads instead of its split, set by :meth:`select_records`
    _selected: Dataset | None = None

    # tokenizers -----------------------------------------------------------------------------------
    def attach_tokenizers(self, tokenizers: Mapping[str, Tokenizer]) -> None:
        """Uses ``tokenizers`` (one per modality) in the collate function, after checking every sequence.

        Each modality's batch entry is its tokenizer's output (see :class:`~mmfuse.data.collate.MultiModalCollate`).

        Raises:
            DataError: a modality without a column, or a sequence some tokenizer rejects (the first
                few are listed with their record ids).
        """
        unknown = sorted(set(tokenizers) - set(self.served))
        if unknown:
            genome = ""
            if self.genome_windows is None and "dna" in unknown:
                genome = (" For DNA windows cut from a genome by the table's coordinates (IsoFormer's GTEx_final.csv "
                          "has no DNA column), set `genome: GENOME.fa`.")  # fmt: skip
            raise DataError(
                f"the model reads modalities {sorted(tokenizers)} but the data module maps only "
                f"{sorted(self.served)} to columns; add {unknown} to the data module's `modalities`.{genome}"
            )
        self.setup()
        for modality, tokenizer in tokenizers.items():
            key = f"{modality}:{tokenizer!r}"
            if key not in self._validated:
                self._validate(modality, tokenizer)
                self._validated.add(key)
        self._collate = MultiModalCollate(tokenizers)

    def _validate(self, modality: str, tokenizer: Tokenizer) -> None:
        assert self._splits is not None
        view = self.split_sequences("all", modality)
        count, problems, limit = validate_sequences(view, tokenizer)
        if count:
            derived = view.reader.derived.get(modality)
            if modality in self.modalities:
                where = f"column {self.modalities[modality]!r} of {self.path}"
            else:
                where = derived.source if derived is not None else f"cut from {self.genome_windows.fasta}"
            raise DataError(
                f"{count} {modality} sequence(s) ({where}) cannot be read by "
                f"{tokenizer.name}:\n" + "\n".join(problems) + (self._crop_hint(modality, limit) if limit else "")
            )

    # loaders --------------------------------------------------------------------------------------
    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)

    def predict_dataloader(self) -> DataLoader:
        if self._selected is not None:
            collate = MultiModalCollate(self._attached().tokenizers, keep_sequences=True)
            return DataLoader(self._selected, batch_size=self.eval_batch_size, num_workers=self.num_workers,
                              collate_fn=collate)  # fmt: skip
        return self._loader(self.predict_split, shuffle=False)

    def select_records(self, ids: Sequence[str]) -> None:
        """``predict`` reads only the records ``ids`` (in this order, each once) from now on, with their sequences.

        Raises:
            DataError: ids the table does not have (a few listed, with ids it has).
        """
        self.setup("predict")
        assert self._splits is not None
        wanted = list(dict.fromkeys(str(i) for i in ids))
        if not wanted:
            raise DataError("no record ids were given; name the records to read, e.g. --ids T1,T2")
        parts = [self._splits[name] for name in SPLITS]
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
                f"{len(missing)} of the {len(wanted)} ids given are not records of {self.path}: "
                f"{', '.join(missing[:5])}{', …' if len(missing) > 5 else ''} (its ids read like {known}); "
                f"ids are matched exactly, version suffix included"
            )
        self._selected = Subset(ConcatDataset(parts), [index[i] for i in wanted])

    def _attached(self) -> MultiModalCollate:
        if self._collate is None:
            raise RuntimeError(
                f"{type(self).__name__} has no tokenizers: a task attaches its backbones' tokenizers in its "
                f"setup(); outside a Trainer call `datamodule.attach_tokenizers(task.model.tokenizers())` first."
            )
        return self._collate

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        self._attached()
        assert self._splits is not None
        dataset: Dataset
        if split == "all":
            dataset = ConcatDataset([self._splits[s] for s in SPLITS])
        else:
            dataset = self._splits[split]
        if len(dataset) == 0:
            raise DataError(f"the {split!r} split of {self.path} is empty; {self._fill(split)}")
        batch_size = self.batch_size if shuffle else self.eval_batch_size
        sampler = self._train_sampler(dataset) if shuffle else SequentialSampler(dataset)
        batching: dict[str, Any] = {"batch_size": batch_size, "sampler": sampler}
        if self.bucketing:  # lengths in the order of `dataset`, the splits concatenated for "all"
            parts = [self._splits[s] for s in SPLITS] if split == "all" else [self._splits[split]]
            lengths = np.concatenate([records.lengths() for records in parts])
            batching = {"batch_sampler": BucketBatchSampler(
                sampler, batch_size, drop_last=False, lengths=lengths, pool_size=self.bucket_pool,
                shuffle_batches=shuffle,
            )}  # fmt: skip
        # a StatefulDataLoader: Lightning stores how far through the epoch it got in each checkpoint,
        # and a run resumed from a mid-epoch checkpoint skips the batches already trained on
        return StatefulDataLoader(
            dataset,
            **batching,
            num_workers=self.num_workers,
            collate_fn=self._collate,
            persistent_workers=self.num_workers > 0,
        )

    def _train_sampler(self, dataset: Dataset) -> Sampler:
        """The training order: a function of (seed, epoch) alone, so a resumed run repeats it.

        Lightning creates the epoch's iterator (and, resuming mid-epoch, skips the batches already
        trained on) before it calls ``set_epoch``, so the sampler starts at the trainer's current
        epoch. Under DDP it is a ``DistributedSampler`` (built here for the same reason; Lightning
        leaves it in place).
        """
        trainer = getattr(self, "trainer", None)
        epoch = trainer.current_epoch if trainer is not None else 0
        sampler: EpochRandomSampler | DistributedSampler
        if trainer is not None and trainer.world_size > 1 and isinstance(trainer.strategy, ParallelStrategy):
            sampler = DistributedSampler(dataset, trainer.world_size, trainer.global_rank, True, shuffle_seed())
        else:
            sampler = EpochRandomSampler(dataset, shuffle_seed())
        sampler.set_epoch(epoch)
        return sampler
