"""What can be wrong with a table, and the one clear message that says how to fix it.

:class:`RecordChecks` holds the checks a :class:`~mmfuse.data.datasets.table.TableDataModule` composes (built
from its options for each ``setup``). They run on the small per-record arrays (ids, columns present,
sequences present, lengths, values that are not text), never on the sequences themselves: missing or
repeated ids, missing columns, numbers in a sequence column, crops counted, missing modalities masked or
refused, an empty split explained.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from lightning.pytorch.utilities import rank_zero_info

from mmfuse.data.errors import DataError
from mmfuse.data.store.records import ROW_ID, RecordStore
from mmfuse.data.store.rows import Crop, RecordReader
from mmfuse.errors import ConfigError

__all__ = ["DEFAULT_CROP", "RecordChecks", "check_length_options", "check_modality_options", "crop_hint", "fill_hint",
           "validates"]  # fmt: skip

#: keep the middle of DNA (around the TSS), the 3' end of RNA (3'UTR, as IsoFormer), a protein's N-terminus
DEFAULT_CROP: dict[str, Crop] = {"dna": "center", "rna": "end", "protein": "start"}
_KEPT = {"center": "the middle", "end": "the 3' end", "start": "the 5' end"}
_KEPT_PROTEIN = {"center": "the middle", "end": "the C-terminus", "start": "the N-terminus"}


class RecordChecks:
    """The checks and messages of one table data module's records.

    Args:
        owner: the data module's name, in log lines.
        path: the table, in messages.
        id_column: the id column (``ROW_ID``: records named by file and row).
        modalities: ``{modality: column}`` of the modalities read from columns.
        served: every modality a record carries (columns, derived, the genome's), in reader order.
        genome_windows: the genome DNA is cut from, or ``None``.
        crop: the crop policy per served modality.
        missing_modalities: ``mask`` or ``error``.
    """

    def __init__(self, owner: str, path: str, id_column: str, modalities: Mapping[str, str], served: Sequence[str],
                 genome_windows: Any, crop: Mapping[str, Crop], missing_modalities: str) -> None:  # fmt: skip
        self.owner, self.path, self.id_column = owner, path, id_column
        self.modalities, self.served = dict(modalities), list(served)
        self.genome_windows, self.crop, self.missing_modalities = genome_windows, dict(crop), missing_modalities

    def columns(self, names: Sequence[str], labels: Sequence[str], label_option: str) -> None:
        """Refuses a table lacking a named column (``labels``: the label columns it needs, named by
        ``label_option`` in the message)."""
        options = {self.id_column: "`id_column`"} | {c: f"`modalities.{m}`" for m, c in self.modalities.items()}
        if self.genome_windows is not None:
            options |= {c: "`genome`'s coordinate columns" for c in self.genome_windows.columns}
        options |= {c: f"`{label_option}`" for c in labels if c not in options}
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

    def ids(self, table: pd.DataFrame, labels: Sequence[str]) -> np.ndarray:
        """Every record's id as text (an object array, one string per record, made once), after refusing
        missing or blank ids and ids that occur twice (the repeated ones are listed only when there are some)."""
        column = table[self.id_column]
        ids = column.astype(str)
        missing = column.isna().to_numpy() | (ids.str.len() == 0).to_numpy() | ids.str.isspace().to_numpy()
        if missing.any():
            raise DataError(
                f"{int(missing.sum())} records of {self.path} have no id in column {self.id_column!r} (the first at "
                f"data row {int(np.flatnonzero(missing)[0]) + 1}); give every record an id, or set "
                f"source: {{id_column: null}} to name records by file and row"
            )
        if not ids.is_unique:
            duplicated = ids[ids.duplicated()].unique()
            raise DataError(
                f"{len(duplicated)} ids occur more than once in column {self.id_column!r} of {self.path} "
                f"(e.g. {', '.join(map(repr, duplicated[:3]))}); ids must be unique. Make them unique (drop "
                f"repeated rows, or rename the ids), or set id_column to a column with one value per record"
                f"{self.unique_columns(table, labels)}."
            )
        return ids.to_numpy(dtype=object)

    def unique_columns(self, table: pd.DataFrame, labels: Sequence[str]) -> str:
        """`` (columns with unique values: a, b)``: the columns that could be ids, or ``""``."""
        skip = {self.id_column, "__row__", *self.modalities.values(), *labels}
        found = [str(c) for c in table.columns if c not in skip and table[c].notna().all() and table[c].is_unique]
        return f" (columns with unique values: {', '.join(found[:5])})" if found else ""

    def text(self, stats: Mapping[str, Any], store: RecordStore, rows: np.ndarray, ids: Sequence[str]) -> None:
        """Refuses values that are neither text nor missing (numbers: the modality mapped to a wrong column);
        ``stats``: each modality's :class:`~mmfuse.data.store.rows.ColumnStats`."""
        for modality, column_stats in stats.items():
            odd = np.flatnonzero(column_stats.not_text[rows])
            if len(odd):
                name = self.modalities[modality]
                column = store.column(name)
                examples = ", ".join(f"{ids[i]!r} ({store.cell(column, int(rows[i]))})" for i in odd[:3])
                raise DataError(
                    f"column {name!r} of {self.path}, the {modality} sequences, holds {len(odd)} value(s) that are "
                    f"not text, e.g. {examples}. Map {modality} to the column holding its sequences in `modalities`."
                )

    def crops(self, reader: RecordReader, stats: Mapping[str, Any], rows: np.ndarray) -> dict[str, int]:
        """Counts and logs the sequences ``lengths.max`` crops, per modality (they are cut when read)."""
        counts = {}
        for modality, (limit, policy) in reader.crops.items():
            if self.genome_windows is not None and modality == self.genome_windows.modality:
                n = len(rows) if self.genome_windows.window > limit else 0
            else:
                n = int((stats[modality].lengths[rows] > limit).sum())
            counts[modality] = n
            if n:
                unit, kept = ("aa", _KEPT_PROTEIN) if modality == "protein" else ("nt", _KEPT)
                unit = unit if modality in DEFAULT_CROP else "letters"
                rank_zero_info(f"{self.owner}: cropped {n} {modality} sequences to {limit:,} {unit} "
                               f"(kept {kept[policy]})")  # fmt: skip
        return counts

    def missing(self, ids: Sequence[str], present: np.ndarray) -> tuple[np.ndarray, dict[str, int]]:
        """Applies ``missing_modalities`` (``present``: ``(N, M)`` by ``served``); returns which records to keep
        and how many lack each modality."""
        absent = ~present
        counts = {m: int(absent[:, j].sum()) for j, m in enumerate(self.served)}
        keep = np.ones(len(ids), dtype=bool)
        if not any(counts.values()):
            return keep, counts
        summary = ", ".join(f"{n} lack {m}" for m, n in counts.items() if n)
        if self.missing_modalities == "error":
            examples = "; ".join(
                f"{m}: {', '.join(repr(ids[i]) for i in np.flatnonzero(absent[:, j])[:3])}"
                for j, m in enumerate(self.served) if counts[m]
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
        rank_zero_info(f"{self.owner}: {summary} (marked absent: missing_modalities is 'mask'){dropped}")
        return keep, counts


def crop_hint(modality: str, limit: int, policy: Crop) -> str:
    """How to crop sequences of ``modality`` that are longer than a tokenizer's ``limit`` letters (``policy``:
    the modality's crop policy now)."""
    kept = (_KEPT_PROTEIN if modality == "protein" else _KEPT).get(policy)
    how = f" (crop: {policy} keeps {kept})" if kept else f", crop: {{{modality}: start}}` (or center, end)"
    written = f"`lengths: {{max: {{{modality}: {limit}}}" + ("}`" if kept else "")
    return (
        f"\nTo crop the too long ones when the data is read, set the data module's "
        f"{written}{how}; they are counted in crop_counts."
    )


def fill_hint(split: str, split_by: str | None, split_column: str, too_small: str | None = None) -> str:
    """Why ``split`` is empty and how to give it records (``split_by``: how the records were split, ``None``
    when a split column marked them; ``too_small``: why the table has too few genes to split for fit, see
    :meth:`~mmfuse.data.splits.SplitRule.too_small`, said instead for the splits fit reads)."""
    if too_small is not None and split in ("train", "val"):
        return too_small
    if split == "all":
        return "no record is left: check the options that drop records (missing_modalities, missing labels)."
    if split_by is None:
        fix = f"the table's {split_column!r} column marks no record {split}: mark some"
    elif split == "train":
        fix = f"records are split {split_by}: lower val_fraction and test_fraction"
    else:
        fix = f"records are split {split_by}: raise {split}_fraction"
    skip = {"val": ", or set trainer.limit_val_batches: 0 to train without validation",
            "test": ", or test on another table"}.get(split, "")  # fmt: skip
    return f"{fix}{skip}."


def validates(trainer: Any) -> bool:
    """Whether ``trainer`` (a data module's, ``None`` outside one) runs validation: ``limit_val_batches`` not 0."""
    return trainer is None or trainer.limit_val_batches != 0


def check_length_options(max_lengths: Mapping[str, Any], crop: Mapping[str, Any], served: Sequence[str]) -> None:
    """Refuses ``lengths.max``/``lengths.crop`` naming a modality the records lack, a length that is not a
    positive whole number, or an unknown crop policy (``crop``: the policies after defaults)."""
    for option, keys in (("lengths.max", max_lengths), ("lengths.crop", crop)):
        unknown = sorted(set(keys) - set(served))
        if unknown:
            raise ConfigError(
                f"`{option}` names {unknown}, which are not among the modalities {sorted(served)}; "
                f"use those names (or map the modality to its column in `modalities`)"
            )
    bad = {m: n for m, n in max_lengths.items() if not isinstance(n, int) or isinstance(n, bool) or n < 1}
    if bad:
        raise ConfigError(f"`lengths.max` must be positive whole numbers of letters, not {bad}")
    policies = {m: c for m, c in crop.items() if c not in _KEPT and c != "error"}
    if policies:
        raise ConfigError(f"`lengths.crop` policies are center, end, start or error, not {policies}")


def check_modality_options(modalities: Mapping[str, str], genome: Any, missing_modalities: str) -> None:
    """Refuses no modality at all, DNA both read from a column and cut from the genome, or an unknown
    ``missing_modalities`` policy."""
    if genome is not None and genome.modality in modalities:
        raise ConfigError(
            f"{genome.modality} is both read from column {modalities[genome.modality]!r} and cut from the genome "
            f"{genome.fasta}; remove `modalities.{genome.modality}` to cut it from the genome, or "
            f"`source.genome` to read the column"
        )
    if not modalities and genome is None:
        raise ConfigError("`modalities` is empty: map each modality to its column, e.g. {dna: DNA}")
    if missing_modalities not in ("mask", "error"):
        raise ConfigError(f"`missing_modalities` is 'mask' or 'error', not {missing_modalities!r}")
