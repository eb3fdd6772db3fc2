"""Every sequence checked against its tokenizer before training, naming the record, without a list of them.

Tokenizers that say which letters they read and how many always fit (``letters`` and
``max_letters``, as :class:`~mmfuse.tokenizers.CharTokenizer` and
:class:`~mmfuse.tokenizers.KmerTokenizer` do) are checked vectorised: a regular expression over
the records store's Arrow blocks flags sequences with other letters, the stored lengths flag those
that may be too long, and only the flagged ones go through the tokenizer (for its exact message).
Other tokenizers check each sequence, read one at a time. DNA windows cut from a genome are all one
length: the first is checked here; the letters of each are checked when it is cut. Sequences derived
from a row (:class:`~mmfuse.data.store.rows.DerivedSequences`) are checked at the rows they name (one
per TF protein).
"""

from __future__ import annotations

import re

import numpy as np

from mmfuse.data.store.rows import SequenceView
from mmfuse.tokenizers import InvalidSequenceError, Tokenizer

__all__ = ["validate_sequences"]


def _suspects(view: SequenceView, tokenizer: Tokenizer) -> np.ndarray:
    """Positions in ``view`` of the sequences the tokenizer must look at itself."""
    letters = getattr(tokenizer, "letters", None)
    if not letters:
        return np.arange(len(view))
    import pyarrow.compute as pc

    reader = view.reader
    column = reader.columns[view.modality]
    flagged = np.zeros(len(reader.store), dtype=bool)
    pattern = f"[^{re.escape(letters)}]"
    for start, block in reader.store.blocks(column):
        found = pc.match_substring_regex(block, pattern, ignore_case=True).fill_null(False)
        flagged[start : start + len(block)] = found.to_numpy(zero_copy_only=False)
    suspects = flagged[view.rows] | (view.lengths == 0)
    max_letters = getattr(tokenizer, "max_letters", None)
    if max_letters is not None:
        suspects |= view.lengths > max_letters
    return np.flatnonzero(suspects)


def validate_sequences(view: SequenceView, tokenizer: Tokenizer) -> tuple[int, list[str], int | None]:
    """Checks the sequences of ``view`` as ``tokenizer`` reads them.

    Returns:
        How many it rejects, the first three reasons (``  record 'ID': why``) and, for sequences too
        long, about how many letters it accepts (``None`` otherwise).
    """
    reader = view.reader
    windows = reader.windows is not None and view.modality == reader.windows[0]
    derived = reader.derived.get(view.modality)
    weights = None
    if windows:
        positions = np.arange(min(1, len(view)))
    elif derived is not None:
        positions, weights = derived.checked_rows(view.rows)
    else:
        positions = _suspects(view, tokenizer)
    count, problems, limit = 0, [], None
    for k, i in enumerate(positions):
        row = int(view.rows[i])
        rid = reader.record_id(row)
        try:
            tokenizer.validate(reader.sequence(view.modality, row, rid))  # type: ignore[arg-type]
        except InvalidSequenceError as exc:
            if weights is not None:  # records sharing a derived sequence (one protein per TF)
                count += int(weights[k])
            else:
                count += len(view) if windows and exc.limit else 1  # windows share one length
            limit = exc.limit or limit
            if len(problems) < 3:
                problems.append(f"  record {rid!r}: {exc.reason}")
    reader.store.release()
    return count, problems, limit
