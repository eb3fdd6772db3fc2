"""The command line of a Lightning command as jsonargparse reads it: YAML read safely, and every option that a
``--config`` file may set settable on the command line too (``null`` included).

- Every YAML text jsonargparse loads (``--config`` files and texts, option values, sub-configs) goes through
  :func:`mmfuse.io.check_yaml` first (:func:`use_safe_loader`, a parser mode of jsonargparse's ``set_loader``):
  a key written twice, an alias bomb or a ``!!python`` tag is refused. The ``--config`` files are read before
  parsing (:func:`normalise`), so the message names the file and the line, and a top level that is not a
  mapping is named as such.
- jsonargparse hands an option below a component's arguments (``--model.init_args.backbones.dna.init_args.
  crop_bins null``) to the component's parser as the text of its Python value, so ``null`` arrives as the
  string ``'None'``. :func:`normalise` passes such an option as a ``--config`` text in its place instead,
  which jsonargparse reads like a second ``--config`` file: the same value.
- A mapping of components keyed by name (the task's ``backbones``) is replaced as a whole by a later
  ``--config`` (jsonargparse's rule for a ``dict``), so a second config naming one backbone would silently
  drop the others. :func:`normalise` restates the dropped entries after it, in their order (each as the
  sources wrote it, in turn), so a later source changes the backbones it names and keeps the others, as every
  other section of the config is merged.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from mmfuse.errors import ConfigError
from mmfuse.io import YamlError, YamlRefusedError, check_yaml, load_yaml

__all__ = ["PARSER_MODE", "cli_yaml", "normalise", "use_safe_loader"]

#: the jsonargparse parser mode of mmfuse's parsers: YAML, read by :func:`cli_yaml`
PARSER_MODE = "mmfuse_yaml"
_SUBCOMMANDS = ("fit", "validate", "test", "predict")
_CLASS_KEYS = ("class_path", "init_args", "dict_kwargs")
_KINDS = {"list": "a list", "str": "text", "int": "a number", "float": "a number", "bool": "true/false",
          "NoneType": "empty"}  # fmt: skip


class NotAConfigError(yaml.YAMLError):
    """A text of several lines that YAML reads as one string: a file that is not a config (a table)."""


def cli_yaml(text: str) -> Any:
    """jsonargparse's YAML loader, after :func:`mmfuse.io.check_yaml` (duplicate keys, aliases).

    jsonargparse reads a string given for an option that also takes an option group (``source: data.csv``)
    as the path of a config file for it, and would pass the file's text on as the value; a text of several
    lines that is one string is refused here, with an exception jsonargparse treats as "not a config", so the
    option keeps the path as written."""
    check_yaml(text)
    value = _jsonargparse_yaml(text)
    if isinstance(value, str) and "\n" in text.strip():
        raise NotAConfigError("a text of several lines that is one string, not a config")
    return value


def _jsonargparse_yaml(text: str) -> Any:
    """``text`` read as jsonargparse reads YAML (``1e-4`` a number, dates left as text)."""
    from jsonargparse import get_loader

    try:
        return get_loader("yaml")(text)
    except ValueError as exc:  # a number Python will not convert (over 4,300 digits)
        raise YamlError(f"not a value mmfuse reads: {exc}") from None


def use_safe_loader() -> None:
    """Registers :func:`cli_yaml` as the loader of :data:`PARSER_MODE` (jsonargparse's ``set_loader``)."""
    from jsonargparse import set_loader

    set_loader(PARSER_MODE, cli_yaml, exceptions=(yaml.YAMLError,))


# the command line -------------------------------------------------------------------------------
def _tokens(args: Sequence[str], start: int) -> Iterator[tuple[list[str], str | None, str | None]]:
    """``(tokens, key, value)`` for each option from ``args[start]`` on (``key`` ``None``: not an option with
    a value, passed as it is)."""
    i = start
    while i < len(args):
        arg, i = args[i], i + 1
        if arg == "-c":
            arg = "--config"
        if not arg.startswith("--") or arg == "--":
            yield [arg], None, None
            continue
        key, has_value, value = arg[2:].partition("=")
        if has_value:
            yield [args[i - 1]], key, value
        elif i < len(args) and not args[i].startswith("--") and args[i] not in ("-c", "-h"):
            yield [args[i - 1], args[i]], key, args[i]
            i += 1
        else:
            yield [arg], None, None  # a flag: --print_config, --help


def normalise(args: Sequence[str]) -> list[str]:
    """``args`` (after LightningCLI's subcommand, if they start with one) as jsonargparse reads them as meant
    (see the module's description); a :class:`ConfigError` names a ``--config`` file or option whose YAML
    mmfuse refuses."""
    args = list(args)
    start = 1 if args and args[0] in _SUBCOMMANDS else 0
    out, mappings = args[:start], _ComponentMappings()
    for tokens, key, value in _tokens(args, start):
        if key is None or value is None:
            out += tokens
        elif key == "config":
            out += tokens
            config = _config_source(value)
            if config is not None:
                out += mappings.apply(config)
        elif key in ("print_config", "help") or key.endswith((".help", "+")):
            out += tokens
        else:
            parsed = _option_value(key, value)
            config = _nest([k for k in key.split(".") if k], parsed)
            if _mangled(key, parsed):  # given as the --config it means, in its place
                out += ["--config", _flow(config)]
                out += mappings.apply(config)
            else:
                out += tokens
                out += mappings.apply(config, len(_normal(key.split("."))))
    return out


def _config_source(value: str) -> dict[str, Any] | None:
    """A ``--config`` value (a file, or YAML text) read with mmfuse's checks; ``None`` where jsonargparse
    reports the problem itself (a file that does not exist)."""
    if Path(value).expanduser().is_file():
        config, where = _read_file(value), value
    else:
        try:
            config, where = cli_yaml(value), "the --config text"
        except yaml.YAMLError as exc:
            raise (type(exc) if isinstance(exc, YamlError) else YamlError)(f"--config {value!r}: {exc}") from None
        if isinstance(config, str):
            return None  # a path of no file: jsonargparse says so
    if not isinstance(config, dict):
        kind = _KINDS.get(type(config).__name__, type(config).__name__)
        raise ConfigError(
            f"{where}: the config's top level is {kind}; it must be a mapping of options such as trainer:, "
            f"model:, data:"
        )
    return config


def _read_file(value: str) -> Any:
    """The YAML file ``value`` as jsonargparse reads it, after every check of :func:`mmfuse.io.load_yaml`."""
    try:
        text = Path(value).expanduser().read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{value}: cannot be read ({exc}); pass a YAML file") from None
    load_yaml(text, value)  # the messages name the file and the line
    return _jsonargparse_yaml(text)


def _option_value(key: str, value: str) -> Any:
    """The value of ``--key value`` as jsonargparse reads it (text that is no YAML stays text; a file given to
    a section, ``--trainer trainer.yaml``, is read)."""
    path = Path(value).expanduser()
    if "." not in key and path.suffix.lower() in (".yaml", ".yml", ".json") and path.is_file():
        try:
            return _read_file(value)
        except YamlRefusedError:
            raise
        except ConfigError:  # not YAML after all: jsonargparse says what it makes of it
            return value
    try:
        return cli_yaml(value)
    except YamlRefusedError as exc:
        raise YamlRefusedError(f"on the command line: --{key}: {exc}") from None
    except yaml.YAMLError:
        return value


def _mangled(key: str, value: Any) -> bool:
    """Whether jsonargparse would hand ``value`` to a component's parser as its Python text, and read back
    something else (``None`` as ``'None'``): an option two levels below a section (``init_args`` apart)."""
    if isinstance(value, str) or len(_normal(key.split("."))) < 3:
        return False
    try:
        return cli_yaml(str(value)) != value
    except yaml.YAMLError:
        return True


def _normal(keys: Sequence[str]) -> tuple[str, ...]:
    """A key without its ``init_args`` steps (``--model.backbones`` is ``--model.init_args.backbones``)."""
    return tuple(k for k in keys if k != "init_args")


def _nest(keys: Sequence[str], value: Any) -> Any:
    for key in reversed(keys):
        value = {key: value}
    return value


def _flow(config: Any) -> str:
    return yaml.safe_dump(config, default_flow_style=True, sort_keys=False, width=1 << 30).strip()


# mappings of components --------------------------------------------------------------------------
def _is_component(value: Any) -> bool:
    return isinstance(value, Mapping) and isinstance(value.get("class_path"), str)


class _ComponentMappings:
    """The mappings of components keyed by name (``model.init_args.backbones``) the sources so far wrote:
    for each, where it is written, its names in order, and what each source wrote for each name."""

    def __init__(self) -> None:
        self.written: dict[tuple[str, ...], list[str]] = {}  # normal path -> the path as first written
        self.entries: dict[tuple[str, ...], dict[str, list[Any]]] = {}

    def apply(self, config: Any, option_depth: int | None = None) -> list[str]:
        """Records ``config`` (a source's mapping; ``option_depth``: that of a ``--key value`` option, which
        jsonargparse merges into a mapping below it name by name) and returns the ``--config`` texts that
        restate the entries it dropped."""
        restated = []
        for path, written, mapping in list(self._mappings(config, ())):
            if path not in self.entries:
                if mapping and all(_is_component(v) for v in mapping.values()):
                    self.written[path] = written
                    self.entries[path] = {name: [value] for name, value in mapping.items()}
                continue
            entries = self.entries[path]
            for name, value in mapping.items():
                entries.setdefault(name, []).append(value)
            if option_depth is None or option_depth <= len(path):  # the mapping is replaced as a whole
                restated += self._restate(path, [name for name in entries if name not in mapping])
        return restated

    def _mappings(self, config: Any, written: tuple[str, ...]) -> Iterator[tuple[tuple[str, ...], list[str], dict]]:
        """``(normal path, path as written, mapping)`` for each mapping in ``config`` below its sections that is
        not a component's spec: the candidates, and the known mappings of components."""
        if not isinstance(config, Mapping):
            return
        path = _normal(written)
        if path in self.entries or (len(path) >= 2 and written[-1] not in _CLASS_KEYS and not _is_component(config)
                                    and "init_args" not in config):  # fmt: skip
            yield path, list(written), dict(config)
            if path in self.entries:
                return
        for key, value in config.items():
            if key != "dict_kwargs":
                yield from self._mappings(value, (*written, str(key)))

    def _restate(self, path: tuple[str, ...], dropped: list[str]) -> list[str]:
        """``--config`` texts giving back the ``dropped`` entries of ``path``: what each source wrote for them,
        in turn (an entry kept is restated as ``{}``: unchanged)."""
        entries = self.entries[path]
        rounds = max((len(entries[name]) for name in dropped), default=0)
        texts = []
        for i in range(rounds):
            mapping = {
                name: values[i] if name in dropped and i < len(values) else {} for name, values in entries.items()
            }
            texts += ["--config", _flow(_nest(self.written[path], mapping))]
        return texts
