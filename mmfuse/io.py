"""Atomic file writing (a crash never leaves a half-written file in place of a good one), and how saved
weights differ from a model's."""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

__all__ = ["atomic_path", "describe_mismatch", "state_dict_mismatch"]


@contextmanager
def atomic_path(path: str | Path, durable: bool = False) -> Iterator[Path]:
    """Yields a temporary path beside ``path``; renames it onto ``path`` if the block succeeds.

    The temporary file lies in ``path``'s directory, so the rename is atomic (a file copied from
    another file system is not). If the block raises, or the process dies, ``path`` keeps its
    previous content. ``durable`` flushes the file to disk before the rename (and the directory
    after it), so a power loss cannot leave the new name pointing at unwritten blocks.

    Examples:
        >>> import tempfile
        >>> target = Path(tempfile.mkdtemp()) / "out.txt"
        >>> with atomic_path(target) as tmp:
        ...     _ = tmp.write_text("done")
        >>> target.read_text()
        'done'
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        yield tmp
        if durable:
            _fsync(tmp)
        os.replace(tmp, path)
        if durable:
            _fsync(path.parent)
    finally:
        if tmp.exists():
            tmp.unlink()


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError:  # some file systems cannot sync a directory
        pass
    finally:
        os.close(fd)


def describe_mismatch(missing: Sequence[str], unexpected: Sequence[str], wrong_shape: Sequence[str]) -> str | None:
    """A one-line summary of a state-dict mismatch, or ``None`` when everything fits."""
    parts = [
        f"{len(items)} {label} (e.g. {', '.join(list(items)[:3])})"
        for label, items in (("missing", missing), ("unexpected", unexpected), ("mis-shaped", wrong_shape))
        if items
    ]
    return "; ".join(parts) or None


def state_dict_mismatch(expected: Mapping[str, Any], given: Mapping[str, Any]) -> str | None:
    """How ``given`` differs from ``expected`` (names and shapes), or ``None`` if it fits."""
    missing = sorted(set(expected) - set(given))
    unexpected = sorted(set(given) - set(expected))
    wrong_shape = [
        f"{k}: saved {tuple(given[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in sorted(set(expected) & set(given))
        if hasattr(given[k], "shape") and tuple(given[k].shape) != tuple(expected[k].shape)
    ]
    return describe_mismatch(missing, unexpected, wrong_shape)
