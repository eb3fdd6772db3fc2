"""Isoform-expression tables: one transcript per row, sequences per modality, one target per tissue."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import lightning as L
import numpy as np
import pandas as pd
from lightning.pytorch.utilities import rank_zero_info
from torch.utils.data import DataLoader, Dataset

from mmfuse.data.collate import MultiModalCollate
from mmfuse.data.errors import DataError
from mmfuse.data.tissues import GTEX_TISSUES
from mmfuse.errors import ConfigError
from mmfuse.tokenizers import InvalidSequenceError, Tokenizer

__all__ = ["IsoformExpression", "read_table"]

_SPLITS = ("train", "val", "test")
_SPLIT_ALIASES = {"train": "train", "training": "train", "val": "val", "valid": "val", "validation": "val",
                  "dev": "val", "test": "test"}  # fmt: skip
_DEFAULT_MODALITIES = {"dna": "DNA", "rna": "RNA", "protein": "Protein"}


def read_table(path: str | Path) -> pd.DataFrame:
    """Reads a CSV, TSV or Parquet table, choosing the format by the file's suffixes."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise DataError(f"table {str(path)!r} does not exist; check the data module's `path`")
    suffixes = [s.lower() for s in path.suffixes if s.lower() not in (".gz", ".bz2", ".zst", ".xz")]
    kind = suffixes[-1] if suffixes else ""
    if kind in (".parquet", ".pq"):
        return pd.read_parquet(path)
    if kind in (".tsv", ".tab", ".txt"):
        return pd.read_csv(path, sep="\t")
    if kind == ".csv":
        return pd.read_csv(path)
    raise DataError(f"cannot tell the format of {str(path)!r}: name it .csv, .tsv or .parquet (optionally .gz)")


def _gene_split(key: str, seed: int, val_fraction: float, test_fraction: float) -> str:
    """A split for ``key`` that depends only on the key and the seed (not on row order)."""
    digest = hashlib.md5(f"{seed}:{key}".encode()).digest()
    u = int.from_bytes(digest[:8], "big") / 2**64
    if u < test_fraction:
        return "test"
    if u < test_fraction + val_fraction:
        return "val"
    return "train"


class _Records(Dataset):
    def __init__(self, ids: list[str], sequences: dict[str, list[str]], targets: np.ndarray | None) -> None:
        self.ids, self.sequences, self.targets = ids, sequences, targets

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict[str, Any]:
        item: dict[str, Any] = {"id": self.ids[i], "sequences": {m: s[i] for m, s in self.sequences.items()}}
        if self.targets is not None:
            item["target"] = self.targets[i]
        return item


class IsoformExpression(L.LightningDataModule):
    """Transcript table → batches of sequences per modality and expression per tissue.

    The table is a local CSV/TSV/Parquet file, or ``sample`` for the bundled synthetic data set (see
    :mod:`mmfuse.data.sample`). Column defaults follow the public IsoFormer data set: ``DNA``, ``RNA``,
    ``Protein`` and the 30 GTEx tissues. Records are split by the ``split`` column when the table has
    one (values train/val/test), otherwise deterministically by gene, so that all isoforms of a gene
    fall in the same split.

    The task attaches its backbones' tokenizers (:meth:`attach_tokenizers`) before the loaders are
    built; every sequence is then checked once, and a bad one is reported with its record id.

    Args:
        path: the table file, or ``sample``.
        modalities: ``{modality: column}``; modalities must match the task's backbones
            (default ``{dna: DNA, rna: RNA, protein: Protein}``).
        target_columns: target columns, in output order (default: the 30 GTEx tissues).
        id_column: unique record id, written next to predictions.
        gene_column: gene of each record, used for the split; ``null`` splits by record.
        split_column: column holding train/val/test; used when present in the table.
        val_fraction: share of genes in the validation split (when splitting by gene).
        test_fraction: share of genes in the test split (when splitting by gene).
        split_seed: seed of the split by gene.
        nan_targets: ``error`` on NaN/inf targets, or ``drop`` those records (counted and logged).
        predict_split: records to predict: ``all`` or one split.
        batch_size: training batch size.
        eval_batch_size: batch size of validation/test/predict (default: ``batch_size``).
        num_workers: DataLoader worker processes (tokenization runs there).
        sample_genes: genes in the sample data set (with ``path: sample``).
        sample_seed: seed of the sample data set.
    """

    def __init__(
        self,
        path: str = "sample",
        modalities: dict[str, str] | None = None,
        target_columns: list[str] | None = None,
        id_column: str = "transcript_id",
        gene_column: str | None = "gene_id",
        split_column: str = "split",
        val_fraction: float = 0.1,
        test_fraction: float = 0.1,
        split_seed: int = 0,
        nan_targets: Literal["error", "drop"] = "error",
        predict_split: Literal["all", "train", "val", "test"] = "all",
        batch_size: int = 8,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        sample_genes: int = 240,
        sample_seed: int = 0,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        if not 0 <= val_fraction < 1 or not 0 <= test_fraction < 1 or val_fraction + test_fraction >= 1:
            raise ConfigError("val_fraction and test_fraction must be in [0, 1) and sum to less than 1")
        self.path = path
        self.modalities = dict(modalities or _DEFAULT_MODALITIES)
        self.target_names: list[str] = list(target_columns or GTEX_TISSUES)
        self.id_column = id_column
        self.gene_column = gene_column
        self.split_column = split_column
        self.val_fraction, self.test_fraction, self.split_seed = val_fraction, test_fraction, split_seed
        self.nan_targets = nan_targets
        self.predict_split = predict_split
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.num_workers = num_workers
        self.sample_genes, self.sample_seed = sample_genes, sample_seed
        self._splits: dict[str, _Records] | None = None
        self._collate: MultiModalCollate | None = None
        self._validated: set[str] = set()

    # reading ------------------------------------------------------------------------------------
    def _read(self) -> pd.DataFrame:
        if self.path == "sample":
            from mmfuse.data.sample import make_sample_table

            return make_sample_table(self.sample_genes, self.sample_seed)
        return read_table(self.path)

    def setup(self, stage: str | None = None) -> None:
        """Reads and checks the table, and splits it (once)."""
        if self._splits is not None:
            return
        table = self._read()
        needs_targets = stage != "predict"
        self._check_columns(table, needs_targets)
        table = table.reset_index(drop=True)
        ids = table[self.id_column].astype(str)
        duplicated = ids[ids.duplicated()].unique()
        if len(duplicated):
            raise DataError(
                f"{len(duplicated)} ids occur more than once in column {self.id_column!r} of {self.path} "
                f"(e.g. {', '.join(map(repr, duplicated[:3]))}); ids must be unique."
            )
        targets = None
        if all(c in table.columns for c in self.target_names):
            table, targets = self._targets(table)
            ids = table[self.id_column].astype(str)
        splits = self._assign_splits(table)
        sequences = {m: table[c].fillna("").astype(str).tolist() for m, c in self.modalities.items()}
        self._splits = {}
        for name in _SPLITS:
            rows = np.flatnonzero(splits == name)
            self._splits[name] = _Records(
                [ids[i] for i in rows],
                {m: [s[i] for i in rows] for m, s in sequences.items()},
                targets[rows] if targets is not None else None,
            )
        counts = ", ".join(f"{k} {len(v)}" for k, v in self._splits.items())
        rank_zero_info(f"IsoformExpression: {len(table)} records from {self.path} ({counts})")

    def _check_columns(self, table: pd.DataFrame, needs_targets: bool) -> None:
        required = [self.id_column, *self.modalities.values()]
        if needs_targets:
            required += self.target_names
        missing = [c for c in required if c not in table.columns]
        if missing:
            raise DataError(
                f"{self.path} lacks column(s) {', '.join(map(repr, missing[:5]))}"
                f"{' …' if len(missing) > 5 else ''}. Its columns are: {', '.join(map(str, table.columns[:40]))}. "
                f"Map yours with the data module's id_column / modalities / target_columns options."
            )

    def _targets(self, table: pd.DataFrame) -> tuple[pd.DataFrame, np.ndarray]:
        values = table[self.target_names].apply(pd.to_numeric, errors="coerce").to_numpy(dtype=np.float64)
        bad = ~np.isfinite(values)
        bad_rows = np.flatnonzero(bad.any(axis=1))
        if len(bad_rows) and self.nan_targets == "error":
            examples = []
            for i in bad_rows[:3]:
                column = self.target_names[int(np.flatnonzero(bad[i])[0])]
                examples.append(f"{str(table[self.id_column].iloc[i])!r} ({column}: {table[column].iloc[i]})")
            raise DataError(
                f"{len(bad_rows)} record(s) of {self.path} have missing, NaN or infinite targets, e.g. "
                f"{', '.join(examples)}. Fix the table, or set nan_targets: drop to leave those records out."
            )
        if len(bad_rows):
            rank_zero_info(f"IsoformExpression: dropped {len(bad_rows)} records with NaN/inf targets")
            keep = np.ones(len(table), dtype=bool)
            keep[bad_rows] = False
            table, values = table[keep].reset_index(drop=True), values[keep]
        return table, values.astype(np.float32)

    def _assign_splits(self, table: pd.DataFrame) -> np.ndarray:
        if self.split_column in table.columns:
            raw = table[self.split_column].astype(str).str.strip().str.lower()
            unknown = sorted(set(raw) - set(_SPLIT_ALIASES))
            if unknown:
                raise DataError(
                    f"column {self.split_column!r} of {self.path} holds {', '.join(map(repr, unknown[:5]))}; "
                    f"use train, val or test."
                )
            return raw.map(_SPLIT_ALIASES).to_numpy()
        if self.gene_column is not None and self.gene_column not in table.columns:
            raise DataError(
                f"{self.path} has neither a {self.split_column!r} column nor the gene column "
                f"{self.gene_column!r} to split by; add one, or set gene_column: null to split by record."
            )
        keys = table[self.gene_column if self.gene_column is not None else self.id_column].astype(str)
        cache = {k: _gene_split(k, self.split_seed, self.val_fraction, self.test_fraction) for k in keys.unique()}
        return keys.map(cache).to_numpy()

    # tokenizers -----------------------------------------------------------------------------------
    def attach_tokenizers(self, tokenizers: Mapping[str, Tokenizer]) -> None:
        """Uses ``tokenizers`` (one per modality) in the collate function, after checking every sequence.

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
        assert self._splits is not None
        for modality, tokenizer in tokenizers.items():
            key = f"{modality}:{tokenizer!r}"
            if key in self._validated:
                continue
            self._validate(modality, tokenizer)
            self._validated.add(key)
        self._collate = MultiModalCollate(tokenizers)

    def _validate(self, modality: str, tokenizer: Tokenizer) -> None:
        assert self._splits is not None
        problems = []
        count = 0
        for records in self._splits.values():
            for rid, sequence in zip(records.ids, records.sequences[modality], strict=True):
                try:
                    tokenizer.validate(sequence)
                except InvalidSequenceError as exc:
                    count += 1
                    if len(problems) < 3:
                        problems.append(f"  record {rid!r}: {exc.reason}")
        if count:
            column = self.modalities[modality]
            raise DataError(
                f"{count} {modality} sequence(s) (column {column!r} of {self.path}) cannot be read by "
                f"{tokenizer.name}:\n" + "\n".join(problems)
            )

    # loaders --------------------------------------------------------------------------------------
    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        if self._collate is None:
            raise RuntimeError(
                "IsoformExpression has no tokenizers: a task attaches its backbones' tokenizers in its "
                "setup(); outside a Trainer call `datamodule.attach_tokenizers(task.tokenizers())` first."
            )
        assert self._splits is not None
        if split == "all":
            from torch.utils.data import ConcatDataset

            dataset: Dataset = ConcatDataset([self._splits[s] for s in _SPLITS])
        else:
            dataset = self._splits[split]
        if len(dataset) == 0:
            raise DataError(
                f"the {split!r} split of {self.path} is empty; fill the {self.split_column!r} column or "
                f"raise val_fraction/test_fraction."
            )
        return DataLoader(
            dataset,
            batch_size=self.batch_size if shuffle else self.eval_batch_size,
            shuffle=shuffle,
            num_workers=self.num_workers,
            collate_fn=self._collate,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)

    def predict_dataloader(self) -> DataLoader:
        return self._loader(self.predict_split, shuffle=False)

    def target_stats(self) -> tuple[np.ndarray, np.ndarray]:
        """Mean and standard deviation of each target over the training split."""
        self.setup()
        assert self._splits is not None
        targets = self._splits["train"].targets
        if targets is None or len(targets) == 0:
            raise DataError(f"the training split of {self.path} has no targets to standardise with")
        std = targets.std(axis=0)
        return targets.mean(axis=0), np.where(std > 0, std, 1.0)

    def split_ids(self, split: str) -> Sequence[str]:
        """Record ids of one split (after :meth:`setup`)."""
        self.setup()
        assert self._splits is not None
        return list(self._splits[split].ids)
