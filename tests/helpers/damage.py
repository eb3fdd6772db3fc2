"""The damage the store and cache integrity tests do to a file: the reporter's cases, in place."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

#: every kind :func:`damage` does (``edited`` and ``foreign`` come from the caller)
KINDS = ("truncated", "ff", "emptied", "zeroed", "edited", "foreign")


def damage(path: Path, kind: str, edit: Callable[[bytearray], None], foreign: Callable[[int], bytes]) -> None:
    """Damages ``path``: cut to half (``truncated``), 64 bytes of 0xFF in the middle (``ff``), emptied, zeroed at
    the same size, ``edit``-ed in place (``edited``), or replaced by ``foreign(size)`` (``foreign``)."""
    data = bytearray(path.read_bytes())
    if kind == "truncated":
        data = data[: len(data) // 2]
    elif kind == "ff":
        middle = len(data) // 2
        data[middle : middle + 64] = b"\xff" * 64
    elif kind == "emptied":
        data = bytearray()
    elif kind == "zeroed":
        data = bytearray(len(data))
    elif kind == "edited":
        edit(data)
    elif kind == "foreign":
        data = bytearray(foreign(len(data)))
    else:
        raise ValueError(kind)
    path.write_bytes(bytes(data))
