"""Region overlaps: :class:`IntervalIndex` answers which regions overlap a set of peaks, and
:func:`sample_free` draws regions that pass such a test, reproducibly and without testing a whole
large pool when a few draws suffice (the unbound records of TF binding).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

__all__ = ["IntervalIndex", "outside", "sample_free"]

_ROUNDS = 8  # random draws of candidates before the exhaustive search


class IntervalIndex:
    """Which query intervals overlap any interval of a fixed set (0-based, half-open: touching is not
    overlapping). Per contig it keeps the starts sorted and the running maximum of the ends, so each
    query is one binary search.

    Args:
        contig: ``(n,)`` integer code of each interval's contig.
        start: ``(n,)`` starts.
        end: ``(n,)`` ends.

    Examples:
        >>> index = IntervalIndex(np.array([0, 0]), np.array([10, 50]), np.array([20, 60]))
        >>> index.overlaps(np.array([0, 0, 1]), np.array([19, 20, 10]), np.array([25, 50, 20])).tolist()
        [True, False, False]
    """

    def __init__(self, contig: np.ndarray, start: np.ndarray, end: np.ndarray) -> None:
        self._by_contig: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        for c in np.unique(contig):
            rows = np.flatnonzero(contig == c)
            order = rows[np.argsort(start[rows], kind="stable")]
            self._by_contig[int(c)] = (start[order], np.maximum.accumulate(end[order]))

    def overlaps(self, contig: np.ndarray, start: np.ndarray, end: np.ndarray) -> np.ndarray:
        """``(m,)`` bool: whether each query interval (``contig``, ``start``, ``end``) overlaps one of the set."""
        hit = np.zeros(len(contig), dtype=bool)
        for c in np.unique(contig):
            if int(c) not in self._by_contig:
                continue
            starts, max_end = self._by_contig[int(c)]
            rows = np.flatnonzero(contig == c)
            before = np.searchsorted(starts, end[rows], side="left")  # intervals starting before the query ends
            found = before > 0
            found[found] = max_end[before[found] - 1] > start[rows][found]
            hit[rows] = found
        return hit


def outside(
    index: IntervalIndex, contig: np.ndarray, start: np.ndarray, end: np.ndarray
) -> Callable[[np.ndarray], np.ndarray]:
    """``ids -> bool array``: which of the intervals ``ids`` (rows of ``contig``/``start``/``end``) overlap
    nothing in ``index``."""
    return lambda ids: ~index.overlaps(contig[ids], start[ids], end[ids])


def sample_free(
    rng: np.random.Generator, candidates: np.ndarray, need: int, free: Callable[[np.ndarray], np.ndarray]
) -> np.ndarray:
    """Up to ``need`` distinct ``candidates`` for which ``free`` holds, drawn at random (reproducibly).

    Candidates are drawn in rounds and tested in bulk, so a large pool is never tested whole when
    most of it is free; if the rounds leave some wanted, every remaining candidate is tested.

    Args:
        rng: the random generator (the same state gives the same draw).
        candidates: distinct ids to draw from.
        need: how many to draw.
        free: ``ids -> (len(ids),) bool``, whether each id may be drawn (e.g. :func:`outside`).

    Returns:
        ``min(need, number of free candidates)`` distinct ids, in drawn order.

    Examples:
        >>> picked = sample_free(np.random.default_rng(0), np.arange(100), 5, lambda x: x % 2 == 0)
        >>> len(picked), bool((picked % 2 == 0).all()), len(set(picked.tolist()))
        (5, True, 5)
    """
    picked = np.empty(0, dtype=candidates.dtype)
    if need <= 0 or len(candidates) == 0:
        return picked
    for _ in range(_ROUNDS):
        draw = candidates[rng.integers(0, len(candidates), size=2 * need + 8)]
        _, first = np.unique(draw, return_index=True)
        draw = draw[np.sort(first)]  # distinct, in drawn order
        draw = draw[~np.isin(draw, picked)]
        picked = np.concatenate([picked, draw[free(draw)]])[:need]
        if len(picked) == need:
            return picked
    rest = candidates[~np.isin(candidates, picked)]
    rest = rng.permutation(rest[free(rest)])
    return np.concatenate([picked, rest[: need - len(picked)]])
