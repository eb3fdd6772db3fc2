"""Hints for a config the ``mmfuse`` parser refused, built from mmfuse's own structured data.

When jsonargparse rejects a config, its message is a deep tree of every type it tried. The hints here
do not read that text: they re-read the config as the user gave it (the YAML of ``--config`` and the
``--key value`` overrides), walk it next to the constructor signatures it targets (``inspect``, dataclass
fields of typed groups) and the registries, and name, for each problem found, what to write instead:

- a ``class_path`` that neither a registry, the expected base class's subclasses nor an import knows:
  the registry's "Unknown backbone 'ESM3'. Known backbones: … Did you mean 'ESM2'?";
- a key a class does not take: "'hiden_dim' is not an option of ConcatFusion; did you mean
  'hidden_dim'? (ConcatFusion takes: …)";
- a key a class now takes inside one of its typed groups (an option of the previous layout): "'freeze'
  is now an option of finetune: write `finetune: {freeze: true}`", or inside a registered component it
  takes: "'loss' is an option of the objective: write `objective: {class_path: Regression, …}`";
- a misspelled top-level section.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import types
import typing
from collections import abc
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from mmfuse.data.options import renamed_hint
from mmfuse.io import load_yaml
from mmfuse.registry import REGISTRIES, Registry, suggest, suggest_name

__all__ = ["MOVED_MODULES", "SECTIONS", "config_hints", "moved_module", "user_config"]

#: the top-level keys of a subcommand's config (the parser may have more: they are added to these)
SECTIONS = (
    "seed_everything",
    "trainer",
    "model",
    "data",
    "predictions",
    "ckpt_path",
    "optimizer",
    "lr_scheduler",
    "config",
)
_SUBCOMMANDS = ("fit", "validate", "test", "predict")
_CLASS_KEYS = ("class_path", "init_args", "dict_kwargs", "__path__")
_LABELS = {"LightningDataModule": "data module (data.class_path)", "FusionTask": "task (model.class_path)"}
_LISTED = 15  # a class with more parameters is not listed in full ("the Trainer takes: …" would be 40)


# the config as the user gave it -----------------------------------------------------------------
def user_config(args: Sequence[str]) -> dict[str, Any]:
    """The subcommand's config in ``args``: its ``--config`` files merged, then its ``--key value`` overrides.

    Examples:
        >>> user_config(["fit", "--trainer.max_epochs=3", "--model.init_args.adapter", "{class_path: X}"])
        {'trainer': {'max_epochs': 3}, 'model': {'init_args': {'adapter': {'class_path': 'X'}}}}
    """
    args = list(args)
    start = next((i + 1 for i, arg in enumerate(args) if arg in _SUBCOMMANDS), 0)
    config: dict[str, Any] = {}
    i = start
    while i < len(args):
        arg, i = args[i], i + 1
        if arg == "-c":
            arg = "--config"
        if not arg.startswith("--"):
            continue
        key, has_value, value = arg[2:].partition("=")
        if not has_value:
            if i == len(args) or args[i].startswith("--") or args[i] in ("-c", "-h"):
                continue  # a flag: --print_config, --help
            value, i = args[i], i + 1
        if key == "config":
            _merge(config, _read_config(value))
        elif key not in ("print_config", "help") and not key.endswith("+"):  # `+=` appends to a list
            _set(config, key.split("."), _yaml(value))
    return config


def _yaml(text: str) -> Any:
    try:
        return load_yaml(text)
    except yaml.YAMLError:
        return text


def _read_config(value: str) -> dict[str, Any]:
    """A ``--config`` value: a YAML file, or YAML text; ``{}`` for what cannot be read."""
    path = Path(value).expanduser()
    try:
        loaded = load_yaml(path.read_text(), value) if path.is_file() else _yaml(value)
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return {}
    return loaded if isinstance(loaded, dict) else {}


def _merge(into: dict[str, Any], update: Mapping[str, Any]) -> None:
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        else:
            into[key] = value


def _set(config: dict[str, Any], keys: list[str], value: Any) -> None:
    node = config
    for key in keys[:-1]:
        if not isinstance(node.get(key), dict):
            node[key] = {}
        node = node[key]
    existing = node.get(keys[-1])
    if isinstance(existing, dict) and isinstance(value, str) and "class_path" in existing:
        if existing["class_path"] != value:  # another class: the old one's arguments no longer apply
            node[keys[-1]] = {"class_path": value}
    elif isinstance(existing, dict) and isinstance(value, Mapping):
        _merge(existing, value)
    else:
        node[keys[-1]] = value


# signatures --------------------------------------------------------------------------------------
def _parameters(cls: Any) -> list[str] | None:
    """The options ``cls`` takes (a dataclass's fields, a constructor's parameters); ``None``: any."""
    if dataclasses.is_dataclass(cls):
        return [f.name for f in dataclasses.fields(cls) if f.init]
    try:
        parameters = inspect.signature(cls).parameters.values()
    except (TypeError, ValueError):
        return None
    if any(p.kind is p.VAR_KEYWORD for p in parameters):
        return None  # forwards what it does not know: nothing to check
    return [p.name for p in parameters if p.kind is not p.VAR_POSITIONAL]


def _annotations(cls: Any) -> dict[str, Any]:
    """The resolved type of each option of ``cls`` (empty where the annotations do not resolve)."""
    try:
        return typing.get_type_hints(cls if dataclasses.is_dataclass(cls) else cls.__init__)
    except Exception:  # a name imported only for type checkers, a forward reference, a C extension
        return {}


def _classes(annotation: Any, containers: bool = True) -> list[type]:
    """The classes a value of type ``annotation`` may be built from: through unions, callables and (if
    ``containers``) the items of lists and mappings.

    Examples:
        >>> _classes(dict[str, Path] | None)
        [<class 'pathlib.Path'>]
        >>> _classes(dict[str, Path] | None, containers=False)
        []
    """
    origin = typing.get_origin(annotation)
    if origin is not None:
        if not containers and origin not in (typing.Union, types.UnionType, abc.Callable):
            return []
        found = []
        for arg in typing.get_args(annotation):
            found += _classes(arg, containers) if not isinstance(arg, list) else []  # a callable's argument types
        return found
    if inspect.isclass(annotation) and annotation.__module__ != "builtins":
        return [annotation]
    return []


def _subclasses(base: type) -> list[type]:
    found, todo = [], [base]
    while todo:
        for sub in todo.pop().__subclasses__():
            if sub not in found:
                found.append(sub)
                todo.append(sub)
    return found


def _init_args(node: Mapping[str, Any]) -> dict[str, Any]:
    """A ``class_path`` node's arguments: its ``init_args`` and those written beside ``class_path``."""
    init_args = node.get("init_args")
    return {
        **(init_args if isinstance(init_args, Mapping) else {}),
        **{k: v for k, v in node.items() if k not in _CLASS_KEYS},
    }


def _flow(value: Any) -> str:
    return yaml.safe_dump(value, default_flow_style=True, sort_keys=False, width=10_000).strip()


#: modules of mmfuse before the command surface moved (issue 33): where their classes are now
MOVED_MODULES = {
    "mmfuse.tasks.embed": "mmfuse.analysis.embed",
    "mmfuse.tasks.explain": "mmfuse.analysis.explain",
    "mmfuse.tasks.attribution": "mmfuse.analysis.attribution",
    "mmfuse.tasks.variants": "mmfuse.analysis.variants",
    "mmfuse.tasks.contribution": "mmfuse.analysis.contribution",
    "mmfuse.tasks": "mmfuse.training",
    "mmfuse.checkpoints": "mmfuse.training.checkpoints",
    "mmfuse.sweep": "mmfuse.cli.sweep",
    "mmfuse.sweep_space": "mmfuse.cli.sweep_space",
    "mmfuse.cv": "mmfuse.cli.cv",
    "mmfuse.runs": "mmfuse.cli.runs",
    "mmfuse.letter_messages": "mmfuse.tokenizers.letters",
}


def moved_module(module: str) -> str | None:
    """Where the classes of mmfuse's former module ``module`` are now (``mmfuse.tasks.heads`` →
    ``mmfuse.training.heads``); ``None`` for a module that did not move."""
    for old, new in MOVED_MODULES.items():
        if module == old or module.startswith(old + "."):
            return new + module[len(old) :]
    return None


# the walk ----------------------------------------------------------------------------------------
class _Walk:
    """Checks a config against the classes it names; :attr:`hints` collects what it finds, in order."""

    def __init__(self, registries: Mapping[str, Registry]) -> None:
        self.registries = registries
        self.hints: list[str] = []

    def value(self, value: Any, bases: list[type], parameter: str = "") -> None:
        """``value``, given to ``parameter``, whose type names the classes ``bases``."""
        if isinstance(value, Mapping) and isinstance(value.get("class_path"), str):
            cls = self._resolve(value["class_path"], bases, parameter)
            if cls is not None:
                self.options(_init_args(value), cls, cls.__name__)
        elif isinstance(value, Mapping):
            group = next((b for b in bases if dataclasses.is_dataclass(b)), None)
            if group is not None:
                self.options(value, group, group.__name__)
            else:  # a mapping of components (backbones by modality)
                for item in value.values():
                    self.value(item, bases, parameter)
        elif isinstance(value, list):
            for item in value:
                self.value(item, bases, parameter)

    def options(self, options: Mapping[str, Any], cls: Any, label: str) -> None:
        """The options given to ``cls`` (called ``label`` in messages) and, through them, what they name."""
        known = _parameters(cls)
        if known is None:
            return
        annotations = _annotations(cls)
        unknown = [key for key in options if key not in known]
        moved = self._moved(unknown, options, cls, annotations)
        for key in unknown:
            renamed = renamed_hint(key, options[key], set(known)) if not any(key in k for k, _ in moved) else None
            if renamed is not None:
                moved.append(([key], renamed))
            elif not any(key in keys for keys, _ in moved):
                close = suggest_name(key, known)
                hint = f"; did you mean '{close}'?" if close else ""
                takes = f" ({cls.__name__} takes: {', '.join(known)})" if known and len(known) <= _LISTED else ""
                self.hints.append(f"'{key}' is not an option of {label}{hint}{takes}")
        self.hints += [hint for _, hint in moved]
        for key, value in options.items():
            if key in known:
                self.value(value, _classes(annotations.get(key)), key)

    def _moved(self, unknown: list[str], options: Mapping[str, Any], cls: Any, annotations: dict[str, Any]) -> list:
        """``(keys, hint)`` for the unknown keys that ``cls`` takes inside one of its typed parameters: a
        dataclass group (``finetune: {freeze: true}``), else a registered component it takes
        (``objective: {class_path: Regression, init_args: {loss: huber}}``)."""
        moved, components = [], []
        for parameter, annotation in annotations.items():
            for base in _classes(annotation, containers=False):
                if dataclasses.is_dataclass(base):
                    keys = [k for k in unknown if k in (_parameters(base) or ())]
                    if keys:
                        written = _flow({parameter: {k: options[k] for k in keys}})[1:-1]
                        moved.append((keys, f"{_subject(keys, 'now ')} of {parameter}: write `{written}`"))
                        unknown = [k for k in unknown if k not in keys]
                else:
                    components += self._components_taking(unknown, parameter, base)
        components = [c for c in components if not set(c[3]) - set(unknown)]
        if components:
            top = max(c[0] for c in components)
            best = [c for c in components if c[0] == top]
            name = suggest_name(cls.__name__, [c[2] for c in best]) or best[0][2]  # RegressionTask: Regression
            _, parameter, name, keys = next(c for c in best if c[2] == name)
            written = _flow({parameter: {"class_path": name, "init_args": {k: options[k] for k in keys}}})[1:-1]
            moved.append((keys, f"{_subject(keys)} of the {parameter}: write `{written}`"))
        return moved

    def _components_taking(self, unknown: list[str], parameter: str, base: type) -> Iterator[tuple]:
        """``(score, parameter, name, keys)`` for each registered subclass of ``base`` taking some ``unknown``
        keys; the best takes the most of them, then is the closest subclass of ``base``, then is of the
        registry named like ``parameter``."""
        for registry in self._registries_of([base], parameter):
            for entry in registry.entries():
                keys = [k for k in unknown if k in (_parameters(entry.obj) or ())]
                if keys and inspect.isclass(entry.obj):
                    mro = entry.obj.__mro__
                    depth = mro.index(base) if base in mro else len(mro)
                    yield (len(keys), -depth, _is_kind(parameter, registry)), parameter, entry.name, keys

    def _registries_of(self, bases: list[type], parameter: str = "", name: str = "") -> list[Registry]:
        """The registries holding subclasses of one of ``bases``: first the one named like ``parameter``
        (``head``: heads), then those holding a name close to ``name``."""
        bases_ = tuple(bases)
        found = [
            r for r in self.registries.values()
            if bases_ and any(inspect.isclass(e.obj) and issubclass(e.obj, bases_) for e in r.entries())
        ]  # fmt: skip
        close = [r for r in found if name and suggest_name(name, r.names())]
        return sorted(found, key=lambda r: (not _is_kind(parameter, r), r not in close))

    def _resolve(self, name: str, bases: list[type], parameter: str) -> Any:
        """The class ``class_path: name`` names, as jsonargparse would find it; ``None`` (and a hint) if none."""
        for registry in self.registries.values():
            if name in registry:
                return registry.get(name)
        module, _, short = name.rpartition(".")
        if module:
            try:
                return getattr(importlib.import_module(module), short)
            except (ImportError, AttributeError):
                pass
            moved = moved_module(module)
            if moved is not None:
                self.hints.append(f"{name!r}: mmfuse's {module} is now {moved}; write `{moved}.{short}` (or `{short}`)")
                return None
        for base in bases:
            for sub in [base, *_subclasses(base)]:
                if sub.__name__ == short:
                    return sub
        self.hints += [h for h in [self._unknown(short, bases, parameter)] if h]
        return None

    def _unknown(self, name: str, bases: list[type], parameter: str) -> str | None:
        """The registry's message for an unknown ``name``; else the names of the subclasses of ``bases``."""
        registries = self._registries_of(bases, parameter, name)
        if registries:
            return registries[0].unknown_message(name)
        if not bases:
            return suggest(name)
        known = sorted({sub.__name__ for base in bases for sub in [base, *_subclasses(base)]} - {""})
        known = [k for k in known if not k.startswith("_")]
        close = suggest_name(name, known)
        if close is None and len(known) > _LISTED:
            return None
        known = [k for k in known if k != "LightningDataModule"]  # the base itself is not a data module to use
        listed = f" Known: {', '.join(known)}." if len(known) <= _LISTED else ""
        label = _LABELS.get(bases[0].__name__, bases[0].__name__)
        return f"Unknown {label} {name!r}.{listed}" + (f" Did you mean {close!r}?" if close else "")


def _is_kind(parameter: str, registry: Registry) -> bool:
    return parameter in (registry.kind, f"{registry.kind}s")


def _subject(keys: list[str], now: str = "") -> str:
    """``'freeze' is now an option``, ``'freeze' and 'lora' are now options``."""
    quoted = [f"'{k}'" for k in keys]
    if len(quoted) == 1:
        return f"{quoted[0]} is {now}an option"
    return f"{', '.join(quoted[:-1])} and {quoted[-1]} are {now}options"


def config_hints(
    config: Mapping[str, Any],
    sections: Mapping[str, Any],
    registries: Mapping[str, Registry] = REGISTRIES,
) -> list[str]:
    """One line per problem found in ``config`` (a subcommand's config, as :func:`user_config` reads it).

    Args:
        config: the config as the user wrote it.
        sections: the top-level keys a config may have, each with the class its value configures
            (``None`` for a plain value): ``{"trainer": Trainer, "model": FusionTask, "seed_everything": None}``.
        registries: where ``class_path`` names are looked up (default: mmfuse's registries).
    """
    walk = _Walk(registries)
    for key, value in config.items():
        if key not in sections:
            close = suggest_name(key, list(sections))
            walk.hints.append(
                f"'{key}' is not a section of the config" + (f"; did you mean '{close}'?" if close else "")
            )
        elif sections[key] is not None and isinstance(value, Mapping):
            cls = sections[key]
            if "class_path" in value:
                walk.value(value, [cls])
            else:
                walk.options(value, cls, f"the {cls.__name__}")
    return list(dict.fromkeys(walk.hints))
