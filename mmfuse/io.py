"""Atomic file writing (a crash never leaves a half-written file in place of a good one), YAML read safely,
and how saved weights differ from a model's.

Every YAML file a user gives mmfuse (configs, search spaces) is read by :func:`load_yaml`: plain values only
(YAML's safe loader: a ``!!python/...`` tag is refused), a key written twice in one mapping refused (naming
the key and both lines) instead of the last one silently winning, and aliases (``*name``) limited: a file
whose aliases stand for more than :data:`ALIAS_LIMIT` values (a "billion laughs" bomb) is refused at once,
before anything expands it.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

from mmfuse.errors import ConfigError

__all__ = [
    "ALIAS_LIMIT",
    "YamlError",
    "YamlRefusedError",
    "atomic_path",
    "check_yaml",
    "describe_mismatch",
    "load_yaml",
    "read_yaml",
    "state_dict_mismatch",
]

#: the most values a YAML file's aliases may stand for, beyond those it writes out
ALIAS_LIMIT = 100_000


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


# YAML ---------------------------------------------------------------------------------------------
class YamlError(ConfigError, yaml.YAMLError):
    """A YAML text mmfuse cannot read: not YAML, or refused (:class:`YamlRefusedError`)."""


class YamlRefusedError(YamlError):
    """YAML mmfuse refuses to read: a key written twice, aliases that expand too far or refer to themselves,
    a tag such as ``!!python/object``."""


_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml's parser where PyYAML has it
_MERGE = "tag:yaml.org,2002:merge"


def load_yaml(text: str, source: str = "") -> Any:
    """The value of the YAML ``text`` (plain values only), checked as :func:`check_yaml` checks it; ``source``
    (a file name, ``--option``) starts the messages.

    Examples:
        >>> load_yaml("trainer: {max_epochs: 3}")
        {'trainer': {'max_epochs': 3}}
        >>> load_yaml("max_epochs: 1\\nmax_epochs: 1000", "x.yaml")
        Traceback (most recent call last):
        ...
        mmfuse.io.YamlRefusedError: x.yaml:2: key 'max_epochs' is written twice (lines 1 and 2): the second would ...
    """
    loader = _Loader(text)
    try:
        node = _compose(loader, source)
        if node is None:
            return None
        _check(node, source)
        try:
            return loader.construct_document(node)
        except yaml.MarkedYAMLError as exc:
            raise _refused(exc, source) from None
        except ValueError as exc:  # a number Python will not convert (over 4,300 digits)
            raise YamlError(f"{_prefix(source)}not a value mmfuse reads: {exc}") from None
    finally:
        loader.dispose()


def check_yaml(text: str, source: str = "") -> None:
    """Raises :class:`YamlError` if ``text`` is not YAML, writes a key twice in one mapping, refers to itself
    through an alias, or holds aliases that stand for more than :data:`ALIAS_LIMIT` values; nothing is built."""
    loader = _Loader(text)
    try:
        node = _compose(loader, source)
        if node is not None:
            _check(node, source)
    finally:
        loader.dispose()


def read_yaml(path: str | Path) -> Any:
    """The YAML file ``path``, read by :func:`load_yaml` (its messages name the file)."""
    return load_yaml(Path(path).read_text(), str(path))


def _prefix(source: str, line: int | None = None) -> str:
    """``'<source>:<line>: '``; ``''`` without a source (the messages name their lines themselves)."""
    if not source:
        return ""
    return f"{source}:{line}: " if line is not None else f"{source}: "


def _refused(exc: yaml.MarkedYAMLError, source: str) -> YamlError:
    mark = exc.problem_mark or exc.context_mark
    line = mark.line + 1 if mark is not None else None
    problem = exc.problem or str(exc)
    if "could not determine a constructor for the tag" in problem:
        quoted = re.search(r"'([^']+)'", problem)
        tag = (quoted.group(1) if quoted else problem).replace("tag:yaml.org,2002:", "!!")
        return YamlRefusedError(f"{_prefix(source, line)}the tag {tag!r} is not allowed: configs hold plain values "
                         f"(mappings, lists, text, numbers, true/false, null), read by YAML's safe loader")  # fmt: skip
    at = f" (line {line})" if line is not None and not source else ""
    return YamlError(f"{_prefix(source, line)}not valid YAML: {problem}{at}")


def _compose(loader: Any, source: str) -> Any:
    try:
        return loader.get_single_node()
    except yaml.MarkedYAMLError as exc:
        raise _refused(exc, source) from None
    except yaml.YAMLError as exc:
        raise YamlError(f"{_prefix(source)}not valid YAML: {exc}") from None


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [item for pair in node.value for item in pair]
    return []


def _check(root: yaml.Node, source: str) -> None:
    """Duplicate keys, and the number of values the aliases stand for, counted on the composed nodes (an alias
    is the node it names, reached twice), so a bomb is refused before anything expands it."""
    seen: set[int] = set()
    todo: list[tuple[yaml.Node, str]] = [(root, "")]
    while todo:  # every distinct node once, with the first path that reaches it
        node, path = todo.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, yaml.MappingNode):
            _check_keys(node, path, source)
            todo += [(value, f"{path}.{_key(key)}".lstrip(".")) for key, value in node.value]
            todo += [(key, path) for key, _ in node.value if not isinstance(key, yaml.ScalarNode)]
        elif isinstance(node, yaml.SequenceNode):
            todo += [(item, f"{path}[{i}]") for i, item in enumerate(node.value)]
    expanded = _expanded_size(root, source)
    if expanded - len(seen) > ALIAS_LIMIT:
        raise YamlRefusedError(
            f"{_prefix(source)}its aliases (*name) stand for {expanded:,} values, {expanded - len(seen):,} more "
            f"than it writes out ({len(seen):,}); mmfuse refuses over {ALIAS_LIMIT:,} (a YAML bomb would "
            f"exhaust the memory): write the repeated values out, or repeat fewer"
        )


def _key(node: yaml.Node) -> str:
    return str(node.value) if isinstance(node, yaml.ScalarNode) else "<key>"


def _check_keys(node: yaml.MappingNode, path: str, source: str) -> None:
    first: dict[tuple[str, str], int] = {}
    for key, _ in node.value:
        if not isinstance(key, yaml.ScalarNode) or key.tag == _MERGE:
            continue  # keys merged in by `<<: *base` may be replaced: that is what a merge is for
        line = key.start_mark.line + 1
        previous = first.get((key.tag, key.value))
        if previous is not None:
            lines = f"lines {previous} and {line}" if previous != line else f"line {line}"
            raise YamlRefusedError(f"{_prefix(source, line)}key {f'{path}.{key.value}'.lstrip('.')!r} is written twice "
                            f"({lines}): the second would silently replace the first; keep one")  # fmt: skip
        first[key.tag, key.value] = line


def _expanded_size(root: yaml.Node, source: str) -> int:
    """How many values ``root`` holds with every alias written out (computed once per node, without
    expanding); an alias inside the node it names is refused (a config cannot be infinite)."""
    sizes: dict[int, int] = {}
    open_: set[int] = set()  # the nodes being counted: the ancestors of the one popped
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, done = stack.pop()
        if done:
            open_.discard(id(node))
            sizes[id(node)] = 1 + sum(sizes[id(child)] for child in _children(node))
            continue
        if id(node) in sizes:
            continue
        open_.add(id(node))
        stack.append((node, True))
        for child in _children(node):
            if id(child) in open_:
                line = child.start_mark.line + 1
                raise YamlRefusedError(f"{_prefix(source, line)}an alias refers to the value that holds it: a config "
                                f"cannot be infinite; write the value out")  # fmt: skip
            if id(child) not in sizes:
                stack.append((child, False))
    return sizes[id(root)]
