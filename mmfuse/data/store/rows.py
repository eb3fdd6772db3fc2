"""Records read by row from a :class:`~mmfuse.data.store.records.RecordStore`, in the process that reads them.

:class:`RecordReader` knows, per store row, which modalities are present and how long each sequence
is once cropped (two small arrays computed in blocks over the store, never a list of sequences); it
reads a record's sequences when the record is indexed, cutting DNA windows from the genome and
applying the crop there. :class:`SplitRecords` is one split's ``Dataset``; :class:`SequenceView`
one modality of some splits, read lazily (what the embedding cache fills itself from).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Literal, Protocol

import numpy as np
from torch.utils.data import Dataset

from mmfuse.data.genomics.windows import WindowReader
from mmfuse.data.store.mapped import RecordStore, numeric_mask

__all__ = ["DerivedSequences", "KeyedSequences", "RecordReader", "SequenceView", "SplitRecords", "crop_sequence"]

Crop = Literal["center", "end", "start", "error"]


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


class ColumnStats:
    """Per row of one sequence column: present (not null, not blank), length, and cells that are not text."""

    def __init__(self, store: RecordStore, column: str) -> None:
        import pyarrow as pa
        import pyarrow.compute as pc

        n = len(store)
        self.present = np.zeros(n, dtype=bool)
        self.lengths = np.zeros(n, dtype=np.int64)
        self.not_text = np.zeros(n, dtype=bool)
        for start, block in store.blocks(column):
            stop = start + len(block)
            if not (pa.types.is_string(block.type) or pa.types.is_large_string(block.type)):
                self.not_text[start:stop] = ~np.asarray(block.is_null().to_numpy(zero_copy_only=False), dtype=bool)
                continue
            blank = pc.match_substring_regex(block, r"^\s*$").fill_null(True)  # no copy of the strings
            self.present[start:stop] = ~np.asarray(blank.to_numpy(zero_copy_only=False), dtype=bool)
            self.lengths[start:stop] = pc.utf8_length(block).fill_null(0).to_numpy(zero_copy_only=False)
            self.not_text[start:stop] = numeric_mask(block)
        self.present &= ~self.not_text
        pa.default_memory_pool().release_unused()


class DerivedSequences(Protocol):
    """A modality whose sequence is produced from a store row when the record is read, not stored as text
    (a TF's protein looked up by its key, a cell's string from its sparse expression row).

    ``present``, ``lengths`` and ``not_text`` are ``(N,)`` arrays by store row, as :class:`ColumnStats`
    gives them for a text column; ``source`` says where the sequences come from, for messages.
    """

    present: np.ndarray
    lengths: np.ndarray
    not_text: np.ndarray
    source: str

    def __call__(self, row: int) -> str: ...

    def checked_rows(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(positions in rows, how many records each stands for)``: the rows a tokenizer must check
        itself (e.g. one per distinct key)."""
        ...


class KeyedSequences:
    """One modality's sequences looked up by a key per store row: each distinct sequence held once.

    Args:
        codes: ``(N,)`` index into ``values`` per store row (``-1``: absent).
        values: the distinct sequences (a TF's protein per TF).
        source: where they come from, for messages.

    Examples:
        >>> keyed = KeyedSequences(np.array([1, 0, 1, -1]), ["MKT", "MA"], "proteins.fa")
        >>> keyed(0), keyed.lengths.tolist(), keyed.present.tolist()
        ('MA', [2, 3, 2, 0], [True, True, True, False])
    """

    def __init__(self, codes: np.ndarray, values: Sequence[str], source: str) -> None:
        self.codes = np.asarray(codes, dtype=np.int32)
        self.values, self.source = [*values, ""], source  # codes of -1 read the last: ""
        lengths = np.array([len(v) for v in self.values], dtype=np.int64)
        self.lengths = lengths[self.codes]
        self.present = np.array([bool(v.strip()) for v in self.values], dtype=bool)[self.codes]
        self.not_text = np.zeros(len(self.codes), dtype=bool)

    def __call__(self, row: int) -> str:
        return self.values[self.codes[row]]

    def checked_rows(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        _, first, counts = np.unique(self.codes[rows], return_index=True, return_counts=True)
        return first, counts


class RecordReader:
    """Reads a record's id and sequences by store row (see the module docstring).

    Args:
        store: the records.
        id_column: the store column holding record ids.
        columns: ``{modality: store column}`` of the sequences held in the table.
        windows: the genome windows and their modality, if DNA is cut from a genome.
        present: ``(N, M)`` whether store row ``n`` has modality ``m`` (the order of :attr:`modalities`).
        lengths: ``(N, M)`` letters of each sequence as read (after the crop).
        crops: ``{modality: (max_length, policy)}`` applied when a sequence is read.
        derived: ``{modality: sequences produced from the row}`` (:class:`DerivedSequences`).

    The modalities, in the order of ``present``'s columns: ``columns``, ``derived``, the windows'.
    """

    def __init__(self, store: RecordStore, id_column: str, columns: Mapping[str, str],
                 windows: tuple[str, WindowReader] | None, present: np.ndarray, lengths: np.ndarray,
                 crops: Mapping[str, tuple[int, Crop]],
                 derived: Mapping[str, DerivedSequences] | None = None) -> None:  # fmt: skip
        self.store, self.id_column, self.columns, self.windows = store, id_column, dict(columns), windows
        self.derived = dict(derived or {})
        self.modalities = [*self.columns, *self.derived, *([windows[0]] if windows else [])]
        self.present, self.lengths, self.crops = present, lengths, dict(crops)
        self._reads = 0

    def record_id(self, row: int) -> str:
        return str(self.store.value(self.id_column, row))

    def sequence(self, modality: str, row: int, record_id: str | None = None) -> str | None:
        """The sequence of ``modality`` at store row ``row`` (cropped), or ``None`` where it is absent."""
        j = self.modalities.index(modality)
        if not self.present[row, j]:
            return None
        if self.windows is not None and modality == self.windows[0]:
            sequence = self.windows[1](row, record_id if record_id is not None else self.record_id(row))
        elif modality in self.derived:
            sequence = self.derived[modality](row)
        else:
            sequence = self.store.value(self.columns[modality], row)
            self._reads += 1
            if self._reads % 16 == 0:  # let the pages read so far leave this process's resident memory
                self.store.release()  # (a random read maps ~200 kB of the file; this costs ~0.5 us a read)
        crop = self.crops.get(modality)
        return crop_sequence(sequence, crop[0], crop[1]) if crop else sequence


class SplitRecords(Dataset):
    """One split: store rows read as records ``{"id", "sequences", "target"}`` when indexed."""

    def __init__(self, reader: RecordReader, rows: np.ndarray, labels: np.ndarray | None) -> None:
        self.reader, self.rows, self.labels = reader, np.asarray(rows, dtype=np.int64), labels

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict[str, Any]:
        row = int(self.rows[i])
        rid = self.reader.record_id(row)
        item: dict[str, Any] = {
            "id": rid, "sequences": {m: self.reader.sequence(m, row, rid) for m in self.reader.modalities}
        }
        if self.labels is not None:
            item["target"] = self.labels[i]
        return item

    @property
    def ids(self) -> list[str]:
        """The records' ids, in order (read from the store on each call)."""
        return [self.reader.record_id(int(row)) for row in self.rows]

    @property
    def sequences(self) -> dict[str, SequenceView]:
        """``{modality: lazy sequences, None where absent}`` in record order."""
        return {m: SequenceView(self.reader, m, self.rows, keep_absent=True) for m in self.reader.modalities}

    def lengths(self) -> np.ndarray:
        """``(N,)`` letters per record, summed over modalities, as read (for length bucketing)."""
        return self.reader.lengths[self.rows].sum(axis=1)


class SequenceView(Sequence):
    """The sequences of one modality at some store rows, read when indexed or iterated.

    Args:
        reader: the records.
        modality: the modality.
        rows: store rows, in order.
        keep_absent: keep rows lacking the modality (as ``None``); else they are left out.
    """

    def __init__(self, reader: RecordReader, modality: str, rows: np.ndarray, keep_absent: bool = False) -> None:
        self.reader, self.modality = reader, modality
        j = reader.modalities.index(modality)
        self.rows = rows if keep_absent else rows[reader.present[rows, j]]
        self.lengths = reader.lengths[self.rows, j]

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: Any) -> Any:
        if isinstance(i, slice):
            return [self[k] for k in range(*i.indices(len(self)))]
        return self.reader.sequence(self.modality, int(self.rows[i]))

    def __iter__(self) -> Iterator[str | None]:
        for row in self.rows:
            yield self.reader.sequence(self.modality, int(row))
        self.reader.store.release()
