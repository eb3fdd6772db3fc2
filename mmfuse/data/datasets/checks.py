"""What can be wrong with a table, and the one clear message that says how to fix it.

:class:`TableChecks` holds the checks of :class:`~mmfuse.data.datasets.table.TableDataModule` that run on the
small per-record arrays (columns present, sequences present, lengths, values that are not text),
never on the sequences themselves: missing columns, numbers in a sequence column, crops counted,
missing modalities masked or refused, an empty split explained.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from lightning.pytorch.utilities import rank_zero_info

from mmfuse.data.errors import DataError
from mmfuse.data.store.records import ROW_ID, RecordStore
from mmfuse.data.store.rows import Crop, RecordReader

__all__ = ["TableChecks"]

#: keep the middle of DNA (around the TSS), the 3' end of RNA (3'UTR, as IsoFormer), a protein's N-terminus
_DEFAULT_CROP: dict[str, Crop] = {"dna": "center", "rna": "end", "protein": "start"}
_KEPT = {"center": "the middle", "end": "the 3' end", "start": "the 5' end"}
_KEPT_PROTEIN = {"center": "the middle", "end": "the C-terminus", "start": "the N-terminus"}


class TableChecks:
    """The checks and messages of table data modules.

    Mixed into :class:`~mmfuse.data.datasets.table.TableDataModule`.
    """

    path: str
    id_column: str
    gene_column: str | None
    split_column: str
    modalities: dict[str, str]
    served: list[str]
    genome_windows: Any
    crop: dict[str, Crop]
    missing_modalities: str
    crop_counts: dict[str, int]
    absent_counts: dict[str, int]
    _split_by: str | None
    _stats: dict[str, Any]
    _label_option: str

    def _check_columns(self, names: Sequence[str], needs_labels: bool) -> None:
        options = {self.id_column: "`id_column`"} | {c: f"`modalities.{m}`" for m, c in self.modalities.items()}
        if self.genome_windows is not None:
            options |= {c: "`genome`'s coordinate columns" for c in self.genome_windows.columns}
        if needs_labels:
            options |= {c: f"`{self._label_option}`" for c in self._label_columns() if c not in options}
        options.pop(ROW_ID, None)
        missing = [c for c in options if c not in names]
        if missing:
            named = list(dict.fromkeys(options[c] for c in missing))
            hint = ""
            if self.id_column in missing:
                hint = " (id_column: null numbers the records by file and row)"
            if self.genome_windows is None and any(options[c].startswith("`modalities.") for c in missing):
                if {"chr", "strand", "start", "end"} <= set(names):
                    hint += "; the table gives coordinates: set `genome: GENOME.fa` to cut DNA from the genome"
            raise DataError(
                f"{self.path} lacks column(s) {', '.join(map(repr, missing[:5]))}"
                f"{' …' if len(missing) > 5 else ''}. Its columns are: {', '.join(map(str, names[:40]))}. "
                f"Set the data module's {' and '.join(named)} to the table's column names, or add the column(s)"
                f"{hint}."
            )

    def _unique_columns(self, table: pd.DataFrame) -> str:
        """`` (columns with unique values: a, b)``: the columns that could be ids, or ``""``."""
        skip = {self.id_column, "__row__", *self.modalities.values(), *self._label_columns()}
        found = [str(c) for c in table.columns if c not in skip and table[c].notna().all() and table[c].is_unique]
        return f" (columns with unique values: {', '.join(found[:5])})" if found else ""

    def _check_text(self, store: RecordStore, rows: np.ndarray, ids: list[str]) -> None:
        """Refuses values that are neither text nor missing (numbers: the modality mapped to a wrong column)."""
        for modality, stats in self._stats.items():
            odd = np.flatnonzero(stats.not_text[rows])
            if len(odd):
                name = self.modalities[modality]
                column = store.column(name)
                examples = ", ".join(f"{ids[i]!r} ({store.cell(column, int(rows[i]))})" for i in odd[:3])
                raise DataError(
                    f"column {name!r} of {self.path}, the {modality} sequences, holds {len(odd)} value(s) that are "
                    f"not text, e.g. {examples}. Map {modality} to the column holding its sequences in `modalities`."
                )

    def _count_crops(self, reader: RecordReader, rows: np.ndarray) -> None:
        """Counts and logs the sequences ``max_lengths`` crops, per modality (they are cut when read)."""
        self.crop_counts = {}
        for modality, (limit, policy) in reader.crops.items():
            if self.genome_windows is not None and modality == self.genome_windows.modality:
                n = len(rows) if self.genome_windows.window > limit else 0
            else:
                n = int((self._stats[modality].lengths[rows] > limit).sum())
            self.crop_counts[modality] = n
            if n:
                unit, kept = ("aa", _KEPT_PROTEIN) if modality == "protein" else ("nt", _KEPT)
                unit = unit if modality in _DEFAULT_CROP else "letters"
                rank_zero_info(
                    f"{type(self).__name__}: cropped {n} {modality} sequences to {limit:,} {unit} "
                    f"(kept {kept[policy]})"
                )

    def _check_missing(self, ids: list[str], present: np.ndarray) -> np.ndarray:
        """Applies ``missing_modalities`` (``present``: ``(N, M)`` by :attr:`served`); returns which records to keep."""
        absent = ~present
        self.absent_counts = {m: int(absent[:, j].sum()) for j, m in enumerate(self.served)}
        keep = np.ones(len(ids), dtype=bool)
        if not any(self.absent_counts.values()):
            return keep
        summary = ", ".join(f"{n} lack {m}" for m, n in self.absent_counts.items() if n)
        if self.missing_modalities == "error":
            examples = "; ".join(
                f"{m}: {', '.join(repr(ids[i]) for i in np.flatnonzero(absent[:, j])[:3])}"
                for j, m in enumerate(self.served) if self.absent_counts[m]
            )
            raise DataError(
                f"records of {self.path} have empty sequences ({summary}; e.g. {examples}). Fill them, or "
                f"set missing_modalities: mask to train with those modalities marked absent."
            )
        nothing = np.flatnonzero(absent.all(axis=1))
        keep[nothing] = False
        dropped = ""
        if len(nothing):  # e.g. non-coding transcripts in a protein-only model
            examples = ", ".join(repr(ids[i]) for i in nothing[:3])
            dropped = f"; dropped {len(nothing)} with none of {sorted(self.served)} (e.g. {examples})"
        rank_zero_info(f"{type(self).__name__}: {summary} (marked absent: missing_modalities is 'mask'){dropped}")
        return keep

    def _crop_hint(self, modality: str, limit: int) -> str:
        """How to crop sequences of ``modality`` that are longer than a tokenizer's ``limit`` letters."""
        policy = self.crop[modality]
        kept = (_KEPT_PROTEIN if modality == "protein" else _KEPT).get(policy)
        how = f" (crop: {policy} keeps {kept})" if kept else f", crop: {{{modality}: start}}` (or center, end)"
        written = f"`lengths: {{max: {{{modality}: {limit}}}" + ("}`" if kept else "")
        return (
            f"\nTo crop the too long ones when the data is read, set the data module's "
            f"{written}{how}; they are counted in crop_counts."
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
