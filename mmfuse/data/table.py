"""The shared part of table-based data modules: reading, splitting, cropping, missing modalities, loaders.

A table has one record per row: an id, one sequence column per modality, and labels (targets or a
class). It comes from a CSV/TSV/Parquet file, a Hugging Face ``datasets`` hub id or a local data set
directory (:func:`read_source`). Subclasses say which columns are labels and how to turn them into
arrays (:meth:`TableDataModule._labels`).
"""

from __future__ import annotations

import hashlib
import os
import warnings
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import lightning as L
import numpy as np
import pandas as pd
import torch
from lightning.pytorch.strategies import ParallelStrategy
from lightning.pytorch.utilities import rank_zero_info
from torch.utils.data import ConcatDataset, DataLoader, Dataset, DistributedSampler, Sampler, SequentialSampler
from torchdata.stateful_dataloader import StatefulDataLoader

from mmfuse.data.collate import MultiModalCollate
from mmfuse.data.errors import DataError
from mmfuse.data.sampler import BucketBatchSampler, EpochRandomSampler, record_lengths
from mmfuse.data.sources import SPLIT_ALIASES as _SPLIT_ALIASES
from mmfuse.data.sources import read_source, read_table
from mmfuse.errors import ConfigError
from mmfuse.tokenizers import InvalidSequenceError, Tokenizer

__all__ = ["Crop", "TableDataModule", "crop_sequence", "read_source", "read_table"]

Crop = Literal["center", "end", "start", "error"]

# torchdata 0.11 calls an API torch deprecated (a no-op): nothing a user can act on
warnings.filterwarnings("ignore", message="'set_vital' is deprecated")

SPLITS = ("train", "val", "test")
#: keep the middle of DNA (around the TSS), the 3' end of RNA (3'UTR, as IsoFormer), a protein's N-terminus
_DEFAULT_CROP: dict[str, Crop] = {"dna": "center", "rna": "end", "protein": "start"}
_KEPT = {"center": "the middle", "end": "the 3' end", "start": "the 5' end"}
_KEPT_PROTEIN = {"center": "the middle", "end": "the C-terminus", "start": "the N-terminus"}


def crop_sequence(sequence: str, max_length: int, policy: Crop) -> str:
    """``sequence`` cut to ``max_length`` letters by ``policy`` (``error``: unchanged).

    ``center`` keeps the middle: with ``d = len(sequence) - max_length`` letters to drop, it drops
    ``d // 2`` at the start and the rest (one more when ``d`` is odd) at the end.

    Examples:
        >>> crop_sequence("ABCDEFG", 4, "center"), crop_sequence("ABCDEFG", 4, "end")
        ('BCDE', 'DEFG')
    """
    if len(sequence) <= max_length or policy == "error":
        return sequence
    if policy == "start":
        return sequence[:max_length]
    if policy == "end":
        return sequence[len(sequence) - max_length :]
    start = (len(sequence) - max_length) // 2
    return sequence[start : start + max_length]


def _gene_split(key: str, seed: int, val_fraction: float, test_fraction: float) -> str:
    """A split for ``key`` that depends only on the key and the seed (not on row order)."""
    digest = hashlib.md5(f"{seed}:{key}".encode()).digest()
    u = int.from_bytes(digest[:8], "big") / 2**64
    if u < test_fraction:
        return "test"
    if u < test_fraction + val_fraction:
        return "val"
    return "train"


def shuffle_seed() -> int:
    """The seed of the training order: the run's ``seed_everything`` (Lightning's ``PL_GLOBAL_SEED``),
    else torch's initial seed (a new order each run)."""
    seed = os.environ.get("PL_GLOBAL_SEED")
    return int(seed) if seed is not None else torch.initial_seed() % 2**63


def _is_missing(value: Any) -> bool:
    """Whether a table cell is empty: ``None``, NaN or ``pd.NA``."""
    return value is None or value is pd.NA or (isinstance(value, float) and value != value)


def _sequences(column: pd.Series) -> list[str | None]:
    """Strings of a sequence column; missing values (NaN, None, empty or blank) become ``None``."""
    return [s if isinstance(s, str) and s.strip() else None for s in column.tolist()]


class _Records(Dataset):
    def __init__(self, ids: list[str], sequences: dict[str, list[str | None]], labels: np.ndarray | None) -> None:
        self.ids, self.sequences, self.labels = ids, sequences, labels

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict[str, Any]:
        item: dict[str, Any] = {"id": self.ids[i], "sequences": {m: s[i] for m, s in self.sequences.items()}}
        if self.labels is not None:
            item["target"] = self.labels[i]
        return item


class TableDataModule(L.LightningDataModule):
    """Base of data modules that read one record per table row (see :class:`IsoformExpression`).

    Args:
        path: the table file (CSV/TSV/Parquet, optionally compressed), a local ``datasets``
            directory, a Hugging Face hub data set id (see :func:`read_source`), or ``sample`` for
            the bundled synthetic data set.
        modalities: ``{modality: column}``; modalities must cover the task's backbones.
        id_column: unique record id, written next to predictions.
        gene_column: gene of each record, used for the split; ``null`` splits by record.
        split_column: column holding train/val/test; used when present in the table.
        val_fraction: share of genes in the validation split (when splitting by gene).
        test_fraction: share of genes in the test split (when splitting by gene).
        split_seed: seed of the split by gene.
        missing_modalities: what to do with a record whose sequence of some modality is missing
            (empty or NaN, e.g. no protein for a non-coding transcript): ``mask`` keeps it with that
            modality marked absent (counted and logged; adapters ignore absent modalities) and drops
            records with no sequence at all (counted and logged, e.g. non-coding transcripts for a
            protein-only model); ``error`` refuses the table.
        predict_split: records to predict: ``all`` or one split.
        batch_size: training batch size.
        eval_batch_size: batch size of validation/test/predict (default: ``batch_size``).
        num_workers: DataLoader worker processes (tokenization runs there).
        sample_genes: genes in the sample data set (with ``path: sample``).
        sample_seed: seed of the sample data set.
        max_lengths: ``{modality: letters}``: longer sequences are cropped by ``crop`` once, in
            :meth:`setup` (counted in :attr:`crop_counts` and logged); default: no limit.
        crop: ``{modality: policy}`` for sequences over ``max_lengths``: ``center`` keeps the middle,
            ``end`` the end, ``start`` the start, ``error`` leaves them whole (the tokenizer then
            rejects them, naming the record). Defaults: dna ``center`` (around the TSS), rna ``end``
            (the 3' end with the 3'UTR, as IsoFormer), protein ``start`` (the N-terminus), other
            modalities ``error``.
        dataset_revision: branch, tag or commit of a hub data set ``path``.
        bucketing: batch records of similar total length (letters summed over modalities) together,
            so each batch is padded only to its own longest sequence (the Hugging Face Trainer's
            ``group_by_length``; see :class:`~mmfuse.data.sampler.BucketBatchSampler`). Training
            batches still come in random order; evaluation batches come longest first.
        bucket_pool: with ``bucketing``, how many batches' worth of records are sorted by length
            together; larger pools pad less but make batches less random.
    """

    def __init__(
        self,
        path: str,
        modalities: dict[str, str],
        id_column: str = "transcript_id",
        gene_column: str | None = "gene_id",
        split_column: str = "split",
        val_fraction: float = 0.1,
        test_fraction: float = 0.1,
        split_seed: int = 0,
        missing_modalities: Literal["mask", "error"] = "mask",
        predict_split: Literal["all", "train", "val", "test"] = "all",
        batch_size: int = 8,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        sample_genes: int = 240,
        sample_seed: int = 0,
        max_lengths: dict[str, int] | None = None,
        crop: dict[str, Crop] | None = None,
        dataset_revision: str | None = None,
        bucketing: bool = False,
        bucket_pool: int = 100,
    ) -> None:
        super().__init__()
        if not isinstance(bucket_pool, int) or isinstance(bucket_pool, bool) or bucket_pool < 1:
            raise ConfigError(f"`bucket_pool` must be a positive whole number of batches, not {bucket_pool!r}")
        if not 0 <= val_fraction < 1 or not 0 <= test_fraction < 1 or val_fraction + test_fraction >= 1:
            raise ConfigError("val_fraction and test_fraction must be in [0, 1) and sum to less than 1")
        if not modalities:
            raise ConfigError("`modalities` is empty: map each modality to its column, e.g. {dna: DNA}")
        if missing_modalities not in ("mask", "error"):
            raise ConfigError(f"`missing_modalities` is 'mask' or 'error', not {missing_modalities!r}")
        self.path = path
        self.modalities = dict(modalities)
        self.id_column = id_column
        self.gene_column = gene_column
        self.split_column = split_column
        self.val_fraction, self.test_fraction, self.split_seed = val_fraction, test_fraction, split_seed
        self.missing_modalities = missing_modalities
        self.predict_split = predict_split
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.num_workers = num_workers
        self.sample_genes, self.sample_seed = sample_genes, sample_seed
        self.max_lengths = dict(max_lengths or {})
        self.crop = {m: _DEFAULT_CROP.get(m, "error") for m in self.modalities} | dict(crop or {})
        self.dataset_revision = dataset_revision
        self.bucketing, self.bucket_pool = bucketing, bucket_pool
        for option, keys in (("max_lengths", self.max_lengths), ("crop", crop or {})):
            unknown = sorted(set(keys) - set(self.modalities))
            if unknown:
                raise ConfigError(
                    f"`{option}` names {unknown}, which are not among the modalities {sorted(self.modalities)}; "
                    f"use those names (or map the modality to its column in `modalities`)"
                )
        bad = {m: n for m, n in self.max_lengths.items() if not isinstance(n, int) or n < 1}
        if bad:
            raise ConfigError(f"`max_lengths` must be positive whole numbers of letters, not {bad}")
        policies = {m: c for m, c in self.crop.items() if c not in _KEPT and c != "error"}
        if policies:
            raise ConfigError(f"`crop` policies are center, end, start or error, not {policies}")
        self.crop_counts: dict[str, int] = {}
        self._splits: dict[str, _Records] | None = None
        self._collate: MultiModalCollate | None = None
        self._validated: set[str] = set()
        self.absent_counts: dict[str, int] = {}
        self._split_by: str | None = None  # how setup split the records, for an empty split's message

    # subclass hooks -------------------------------------------------------------------------------
    #: the option that names the label columns, in messages
    _label_option = "label columns"

    def _label_columns(self) -> list[str]:
        """Columns holding the labels (required for fit/validate/test, optional for predict)."""
        raise NotImplementedError

    def _labels(self, table: pd.DataFrame) -> tuple[pd.DataFrame, np.ndarray]:
        """Checks the labels, drops records by the subclass's policy, returns ``(table, labels)``."""
        raise NotImplementedError

    # reading --------------------------------------------------------------------------------------
    def _read(self, dtype: Mapping[str, Any] | None = None) -> pd.DataFrame:
        if self.path == "sample":
            from mmfuse.data.sample import make_sample_table

            return make_sample_table(self.sample_genes, self.sample_seed)
        return read_source(self.path, self.dataset_revision, dtype, self.split_column)

    def setup(self, stage: str | None = None) -> None:
        """Reads and checks the table, and splits it (once)."""
        if self._splits is not None:
            return
        table = self._read()
        self._check_columns(table, needs_labels=stage != "predict")
        table = table.reset_index(drop=True)
        ids = table[self.id_column].astype(str)
        duplicated = ids[ids.duplicated()].unique()
        if len(duplicated):
            raise DataError(
                f"{len(duplicated)} ids occur more than once in column {self.id_column!r} of {self.path} "
                f"(e.g. {', '.join(map(repr, duplicated[:3]))}); ids must be unique. Make them unique (drop repeated "
                f"rows, or rename the ids), or set id_column to a column with one value per record"
                f"{self._unique_columns(table)}."
            )
        labels = None
        # prediction needs no labels: every record is predicted, whatever its label holds
        if stage != "predict" and all(c in table.columns for c in self._label_columns()):
            table, labels = self._labels(table)
            ids = table[self.id_column].astype(str)
        splits = self._assign_splits(table)
        for modality, column in self.modalities.items():
            self._check_text(table[column], ids, modality, column)
        sequences = self._crop({m: _sequences(table[c]) for m, c in self.modalities.items()})
        keep = self._check_missing(ids.tolist(), sequences)
        splits = np.where(keep, splits, "dropped")
        self._splits = {}
        for name in SPLITS:
            rows = np.flatnonzero(splits == name)
            self._splits[name] = _Records(
                [ids[i] for i in rows],
                {m: [s[i] for i in rows] for m, s in sequences.items()},
                labels[rows] if labels is not None else None,
            )
        counts = ", ".join(f"{k} {len(v)}" for k, v in self._splits.items())
        rank_zero_info(f"{type(self).__name__}: {int(keep.sum())} records from {self.path} ({counts})")

    def _check_columns(self, table: pd.DataFrame, needs_labels: bool) -> None:
        options = {self.id_column: "`id_column`"} | {c: f"`modalities.{m}`" for m, c in self.modalities.items()}
        if needs_labels:
            options |= {c: f"`{self._label_option}`" for c in self._label_columns() if c not in options}
        missing = [c for c in options if c not in table.columns]
        if missing:
            named = list(dict.fromkeys(options[c] for c in missing))
            raise DataError(
                f"{self.path} lacks column(s) {', '.join(map(repr, missing[:5]))}"
                f"{' …' if len(missing) > 5 else ''}. Its columns are: {', '.join(map(str, table.columns[:40]))}. "
                f"Set the data module's {' and '.join(named)} to the table's column names, or add the column(s)."
            )

    def _unique_columns(self, table: pd.DataFrame) -> str:
        """`` (columns with unique values: a, b)``: the columns that could be ids, or ``""``."""
        skip = {self.id_column, *self.modalities.values(), *self._label_columns()}
        found = [str(c) for c in table.columns if c not in skip and table[c].notna().all() and table[c].is_unique]
        return f" (columns with unique values: {', '.join(found[:5])})" if found else ""

    def _check_text(self, column: pd.Series, ids: pd.Series, modality: str, name: str) -> None:
        """Refuses values that are neither text nor missing (numbers: the modality mapped to a wrong column)."""
        odd = [i for i, v in enumerate(column.tolist()) if not isinstance(v, str) and not _is_missing(v)]
        if odd:
            examples = ", ".join(f"{ids.iloc[i]!r} ({column.iloc[i]})" for i in odd[:3])
            raise DataError(
                f"column {name!r} of {self.path}, the {modality} sequences, holds {len(odd)} value(s) that are not "
                f"text, e.g. {examples}. Map {modality} to the column holding its sequences in `modalities`."
            )

    def _crop(self, sequences: dict[str, list[str | None]]) -> dict[str, list[str | None]]:
        """Applies ``max_lengths`` and ``crop``; counts and logs the cropped sequences per modality."""
        self.crop_counts = {}
        for modality, limit in self.max_lengths.items():
            policy = self.crop[modality]
            if policy == "error":  # left whole: the tokenizer rejects what it cannot read, naming the record
                continue
            seqs = sequences[modality]
            long = [i for i, s in enumerate(seqs) if s is not None and len(s) > limit]
            for i in long:
                seqs[i] = crop_sequence(seqs[i], limit, policy)  # type: ignore[arg-type]
            self.crop_counts[modality] = len(long)
            if long:
                unit, kept = ("aa", _KEPT_PROTEIN) if modality == "protein" else ("nt", _KEPT)
                unit = unit if modality in _DEFAULT_CROP else "letters"
                rank_zero_info(
                    f"{type(self).__name__}: cropped {len(long)} {modality} sequences to {limit:,} {unit} "
                    f"(kept {kept[policy]})"
                )
        return sequences

    def _check_missing(self, ids: list[str], sequences: dict[str, list[str | None]]) -> np.ndarray:
        """Applies ``missing_modalities``; returns which records to keep."""
        absent = {m: [i for i, s in enumerate(seqs) if s is None] for m, seqs in sequences.items()}
        self.absent_counts = {m: len(rows) for m, rows in absent.items()}
        keep = np.ones(len(ids), dtype=bool)
        if not any(self.absent_counts.values()):
            return keep
        summary = ", ".join(f"{n} lack {m}" for m, n in self.absent_counts.items() if n)
        if self.missing_modalities == "error":
            examples = "; ".join(
                f"{m}: {', '.join(repr(ids[i]) for i in rows[:3])}" for m, rows in absent.items() if rows
            )
            raise DataError(
                f"records of {self.path} have empty sequences ({summary}; e.g. {examples}). Fill them, or "
                f"set missing_modalities: mask to train with those modalities marked absent."
            )
        nothing = [i for i in range(len(ids)) if all(sequences[m][i] is None for m in sequences)]
        keep[nothing] = False
        dropped = ""
        if nothing:  # e.g. non-coding transcripts in a protein-only model
            examples = ", ".join(repr(ids[i]) for i in nothing[:3])
            dropped = f"; dropped {len(nothing)} with none of {sorted(sequences)} (e.g. {examples})"
        rank_zero_info(f"{type(self).__name__}: {summary} (marked absent: missing_modalities is 'mask'){dropped}")
        return keep

    def _assign_splits(self, table: pd.DataFrame) -> np.ndarray:
        if self.split_column in table.columns:
            raw = table[self.split_column].astype(str).str.strip().str.lower()
            unknown = sorted(set(raw) - set(_SPLIT_ALIASES))
            if unknown:
                first = table[self.id_column].iloc[int(np.flatnonzero(raw == unknown[0])[0])]
                raise DataError(
                    f"column {self.split_column!r} of {self.path} holds {', '.join(map(repr, unknown[:5]))}; use "
                    f"train, val or test (first such record: {str(first)!r}), or set split_column to another name "
                    f"if that column is not a split."
                )
            self._split_by = None
            return raw.map(_SPLIT_ALIASES).to_numpy()
        if self.gene_column is not None and self.gene_column not in table.columns:
            raise DataError(
                f"{self.path} has neither a {self.split_column!r} column nor the gene column "
                f"{self.gene_column!r} to split by; add one, or set gene_column: null to split by record."
            )
        keys = table[self.gene_column if self.gene_column is not None else self.id_column].astype(str)
        cache = {k: _gene_split(k, self.split_seed, self.val_fraction, self.test_fraction) for k in keys.unique()}
        by = f"{self.gene_column!r}" if self.gene_column is not None else "record"
        self._split_by = (
            f"by {by} ({len(cache)} values), val_fraction {self.val_fraction}, test_fraction {self.test_fraction}"
        )
        return keys.map(cache).to_numpy()

    # tokenizers -----------------------------------------------------------------------------------
    def attach_tokenizers(self, tokenizers: Mapping[str, Tokenizer], cached: Sequence[str] = ()) -> None:
        """Uses ``tokenizers`` (one per modality) in the collate function, after checking every sequence.

        ``cached`` names modalities whose embeddings the task caches: batches carry their sequences
        and keys instead of tokens (see :class:`~mmfuse.data.collate.MultiModalCollate`).

        Raises:
            DataError: a modality without a column, or a sequence some tokenizer rejects (the first
                few are listed with their record ids).
        """
        unknown = sorted(set(tokenizers) - set(self.modalities))
        if unknown:
            raise DataError(
                f"the model reads modalities {sorted(tokenizers)} but the data module maps only "
                f"{sorted(self.modalities)} to columns; add {unknown} to the data module's `modalities`."
            )
        self.setup()
        for modality, tokenizer in tokenizers.items():
            key = f"{modality}:{tokenizer!r}"
            if key not in self._validated:
                self._validate(modality, tokenizer)
                self._validated.add(key)
        self._collate = MultiModalCollate(tokenizers, cached)

    def _validate(self, modality: str, tokenizer: Tokenizer) -> None:
        assert self._splits is not None
        problems = []
        count = 0
        limit = None
        for records in self._splits.values():
            for rid, sequence in zip(records.ids, records.sequences[modality], strict=True):
                if sequence is None:  # absent, handled by _check_missing
                    continue
                try:
                    tokenizer.validate(sequence)
                except InvalidSequenceError as exc:
                    count += 1
                    limit = exc.limit or limit
                    if len(problems) < 3:
                        problems.append(f"  record {rid!r}: {exc.reason}")
        if count:
            column = self.modalities[modality]
            raise DataError(
                f"{count} {modality} sequence(s) (column {column!r} of {self.path}) cannot be read by "
                f"{tokenizer.name}:\n" + "\n".join(problems) + (self._crop_hint(modality, limit) if limit else "")
            )

    def _crop_hint(self, modality: str, limit: int) -> str:
        """How to crop sequences of ``modality`` that are longer than a tokenizer's ``limit`` letters."""
        policy = self.crop[modality]
        kept = (_KEPT_PROTEIN if modality == "protein" else _KEPT).get(policy)
        how = f" (crop: {policy} keeps {kept})" if kept else " and a `crop` policy for it (center, end or start)"
        return (
            f"\nTo crop the too long ones when the data is read, set the data module's "
            f"`max_lengths: {{{modality}: {limit}}}`{how}; they are counted in crop_counts."
        )

    # loaders --------------------------------------------------------------------------------------
    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        if self._collate is None:
            raise RuntimeError(
                f"{type(self).__name__} has no tokenizers: a task attaches its backbones' tokenizers in its "
                f"setup(); outside a Trainer call `datamodule.attach_tokenizers(task.tokenizers())` first."
            )
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
            lengths = np.concatenate([record_lengths(records.sequences) for records in parts])
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

    def _fill(self, split: str) -> str:
        """Why ``split`` is empty and how to give it records."""
        if split == "all":
            return "no record is left: check the options that drop records (missing_modalities, missing labels)."
        if self._split_by is None:
            fix = f"the table's {self.split_column!r} column marks no record {split}: mark some"
        elif split == "train":
            fix = f"records are split {self._split_by}: lower val_fraction and test_fraction"
        else:
            fix = f"records are split {self._split_by}: raise {split}_fraction"
        skip = {"val": ", or set trainer.limit_val_batches: 0 to train without validation",
                "test": ", or test on another table"}.get(split, "")  # fmt: skip
        return f"{fix}{skip}."

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

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)

    def predict_dataloader(self) -> DataLoader:
        return self._loader(self.predict_split, shuffle=False)

    def split_ids(self, split: str) -> Sequence[str]:
        """Record ids of one split (after :meth:`setup`)."""
        self.setup()
        assert self._splits is not None
        return list(self._splits[split].ids)

    def split_sequences(self, split: str, modality: str) -> list[str]:
        """The sequences of ``modality`` in one split (``all``: every split), as batches carry them
        (after the length policy); records lacking the modality are left out."""
        self.setup()
        assert self._splits is not None
        splits = SPLITS if split == "all" else (split,)
        return [s for name in splits for s in self._splits[name].sequences[modality] if s is not None]

    def split_labels(self, split: str) -> np.ndarray | None:
        """Labels of one split, in record order (``None`` for a table without labels)."""
        self.setup()
        assert self._splits is not None
        return self._splits[split].labels
