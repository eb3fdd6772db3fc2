"""Named registries of components: backbones, fusion adapters, heads and objectives.

A :class:`Registry` maps a component name (its class name, which is also what YAML configs write as
``class_path``) to the class. Built-in components register themselves with a decorator when their
module is imported; third-party packages add components through the entry-point groups
``mmfuse.backbones``, ``mmfuse.adapters``, ``mmfuse.heads`` and ``mmfuse.objectives``, which are loaded
lazily, on the first lookup or listing. A plugin that fails to import is recorded with its
distribution's name and reported, without breaking the other components. :func:`suggest_name` is
mmfuse's one "did you mean" matcher.

This module imports nothing from mmfuse (see ARCHITECTURE.md).

Examples:
    >>> reg = Registry("widget")
    >>> @reg.register()
    ... class Spanner:
    ...     pass
    >>> reg.get("Spanner") is Spanner
    True
"""

from __future__ import annotations

import difflib
import functools
import importlib
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from importlib import metadata
from typing import Any, TypeVar

__all__ = [
    "ADAPTERS",
    "BACKBONES",
    "HEADS",
    "OBJECTIVES",
    "REGISTRIES",
    "ComponentEntry",
    "DuplicateComponentError",
    "PluginLoadError",
    "Registry",
    "UnknownComponentError",
    "suggest",
    "suggest_name",
]

T = TypeVar("T")

BUILTIN_SOURCE = "mmfuse (built-in)"


class UnknownComponentError(KeyError):
    """A component name that no registry knows; the message lists the known names."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class DuplicateComponentError(ValueError):
    """Two different objects registered under one name."""


class PluginLoadError(ImportError):
    """A plugin entry point that could not be imported."""


#: how similar (difflib's ratio, 0 to 1) a known name must be to be suggested
SUGGEST_CUTOFF = 0.6


def _closest(name: str, known: Iterable[str]) -> tuple[float, str] | None:
    """The known name closest to ``name`` and its score (2.0 for a case-insensitive match), if close enough."""
    lowered = name.lower()
    best: tuple[float, str] | None = None
    for candidate in known:
        if candidate.lower() == lowered:
            return 2.0, candidate
        score = difflib.SequenceMatcher(None, lowered, candidate.lower()).ratio()
        if score >= SUGGEST_CUTOFF and (best is None or score > best[0]):
            best = (score, candidate)
    return best


def suggest_name(name: str, known: Sequence[str]) -> str | None:
    """The known name closest to ``name``: a case-insensitive match first, else the most similar.

    mmfuse's one "did you mean" matcher: registries, presets, config options and categories use it.

    Examples:
        >>> suggest_name("enformer", ["Enformer", "Geneformer"])
        'Enformer'
        >>> suggest_name("ESM3", ["ESM2", "Enformer"])
        'ESM2'
        >>> suggest_name("Transformer", ["ESM2"]) is None
        True
    """
    close = _closest(name, known)
    return close[1] if close else None


@dataclass(frozen=True)
class ComponentEntry:
    """One registered component.

    Attributes:
        name: the registered name (the class name).
        obj: the registered class or factory.
        source: where it comes from: ``"mmfuse (built-in)"`` or ``"<distribution> <version>"``.
    """

    name: str
    obj: Any
    source: str


@dataclass(frozen=True)
class _FailedPlugin:
    name: str
    value: str
    source: str
    error: str


def _distribution_of(entry_point: metadata.EntryPoint) -> str:
    dist = getattr(entry_point, "dist", None)
    if dist is None:
        return "unknown distribution"
    return f"{dist.metadata['Name']} {dist.version}"


class Registry:
    """A named collection of components of one kind.

    Args:
        kind: what the registry holds, in the singular (``"backbone"``); used in messages.
        group: the entry-point group scanned for third-party components
            (default ``"mmfuse.<kind>s"``).
        builtins: modules whose import registers the built-in components, imported with the plugins
            (named as strings so this module imports nothing from mmfuse).
    """

    def __init__(self, kind: str, group: str | None = None, builtins: Sequence[str] = ()) -> None:
        self.kind = kind
        self.group = group if group is not None else f"mmfuse.{kind}s"
        self.builtins = tuple(builtins)
        self._entries: dict[str, ComponentEntry] = {}
        self._failed: dict[str, _FailedPlugin] = {}
        self._plugins_loaded = False
        self._loading_source: str | None = None

    # registration -----------------------------------------------------------------------------
    def register(self, name: str | None = None) -> Callable[[T], T]:
        """Decorator registering a class under ``name`` (default: its ``__name__``).

        Raises:
            DuplicateComponentError: another object already holds that name.
        """

        def decorator(obj: T) -> T:
            self.add(name or obj.__name__, obj)  # type: ignore[attr-defined]
            return obj

        return decorator

    def add(self, name: str, obj: Any, source: str | None = None) -> None:
        """Registers ``obj`` under ``name``; registering the same object twice is a no-op."""
        known = self._entries.get(name)
        if known is not None:
            if known.obj is obj:
                return
            raise DuplicateComponentError(
                f"{self.kind} name {name!r} is already registered by {_qualname(known.obj)} "
                f"({known.source}); {_qualname(obj)} cannot take it. Rename one of the two classes "
                f"(or register it under another name)."
            )
        source = source or self._loading_source or _source_of(obj)
        self._entries[name] = ComponentEntry(name, obj, source)

    # lookup -----------------------------------------------------------------------------------
    def get(self, name: str) -> Any:
        """The component registered as ``name``.

        Raises:
            UnknownComponentError: no such name; the message lists known names and the closest.
            PluginLoadError: the name belongs to a plugin that failed to import.
        """
        if name not in self._entries:
            self.load_plugins()
        if name in self._entries:
            return self._entries[name].obj
        if name in self._failed:
            failed = self._failed[name]
            raise PluginLoadError(
                f"{self.kind} {name!r} comes from the plugin {failed.value!r} of {failed.source}, "
                f"which failed to import: {failed.error}. Fix or reinstall that distribution."
            )
        raise UnknownComponentError(self.unknown_message(name))

    def __contains__(self, name: object) -> bool:
        self.load_plugins()
        return name in self._entries

    def names(self) -> list[str]:
        """Sorted names of all registered components, plugins included."""
        self.load_plugins()
        return sorted(self._entries)

    def entries(self) -> Iterator[ComponentEntry]:
        """Registered components in name order."""
        for name in self.names():
            yield self._entries[name]

    def failures(self) -> list[str]:
        """One line per plugin that failed to import."""
        self.load_plugins()
        return [f"{f.name} = {f.value} ({f.source}): {f.error}" for f in self._failed.values()]

    def unknown_message(self, name: str) -> str:
        """The error message for an unknown ``name``."""
        known = self.names()
        message = f"Unknown {self.kind} {name!r}. Known {self.kind}s: {', '.join(known) or '(none)'}."
        close = suggest_name(name, known)
        if close:
            message += f" Did you mean {close!r}?"
        return message

    # plugins ----------------------------------------------------------------------------------
    def load_plugins(self) -> None:
        """Imports the built-in modules and every entry point of :attr:`group`, once.

        Plugin failures are recorded (see :meth:`failures`) and warned about, never raised.
        """
        if self._plugins_loaded:
            return
        self._plugins_loaded = True
        for module in self.builtins:
            importlib.import_module(module)
        for entry_point in metadata.entry_points(group=self.group):
            source = _distribution_of(entry_point)
            self._loading_source = source
            try:
                obj = entry_point.load()
            except Exception as exc:  # a broken plugin must not break the CLI
                error = f"{type(exc).__name__}: {exc}"
                self._failed[entry_point.name] = _FailedPlugin(entry_point.name, entry_point.value, source, error)
                warnings.warn(
                    f"mmfuse: the {self.kind} plugin {entry_point.name!r} ({entry_point.value}) from "
                    f"{source} failed to import and is skipped: {error}",
                    stacklevel=2,
                )
                continue
            finally:
                self._loading_source = None
            # An entry point may name a module (whose import registers its classes) or a class.
            if isinstance(obj, type):
                self.add(obj.__name__, obj, source)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {len(self._entries)} registered)"


def _qualname(obj: Any) -> str:
    return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', repr(obj))}"


@functools.cache
def _packages_distributions() -> dict[str, list[str]]:
    """Top-level module → distributions, read once: scanning every installed distribution takes most of a second."""
    return metadata.packages_distributions()


def _source_of(obj: Any) -> str:
    module = getattr(obj, "__module__", "") or ""
    if module == "mmfuse" or module.startswith("mmfuse."):
        return BUILTIN_SOURCE
    top = module.split(".")[0]
    dists = _packages_distributions().get(top)
    if dists:
        name = dists[0]
        try:
            return f"{name} {metadata.version(name)}"
        except metadata.PackageNotFoundError:
            return name
    return module or "unknown"


BACKBONES = Registry("backbone", builtins=("mmfuse.backbones",))
ADAPTERS = Registry("adapter", builtins=("mmfuse.adapters",))
HEADS = Registry("head", builtins=("mmfuse.training",))
OBJECTIVES = Registry("objective", builtins=("mmfuse.training",))
REGISTRIES: dict[str, Registry] = {
    "backbones": BACKBONES,
    "adapters": ADAPTERS,
    "heads": HEADS,
    "objectives": OBJECTIVES,
}


def suggest(name: str) -> str | None:
    """A hint for an unknown component ``name``, searching every registry.

    Returns the message of the registry holding the closest name (:func:`suggest_name`'s match), a
    message pointing to ``mmfuse components`` if no registry holds a close one, or ``None`` if ``name``
    is registered.
    """
    best: tuple[float, Registry] | None = None
    for registry in REGISTRIES.values():
        if name in registry:
            return None
        close = _closest(name, registry.names())
        if close and (best is None or close[0] > best[0]):
            best = (close[0], registry)
    if best is None:
        return f"Unknown component {name!r}, and no registered name is close; `mmfuse components` lists them."
    return best[1].unknown_message(name)
