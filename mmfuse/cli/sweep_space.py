"""The search space of ``mmfuse sweep``: config keys with a range or choices, read from YAML and checked
against ``mmfuse fit``'s parser before any trial runs (see :mod:`mmfuse.cli.sweep`)."""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mmfuse.cli.runs import config_error, set_key
from mmfuse.errors import ConfigError

__all__ = ["Param", "check_space", "copy_with", "load_space"]

_SECTIONS = ("trainer", "model", "data", "seed_everything", "optimizer", "lr_scheduler", "ckpt_path")


@dataclass(frozen=True)
class Param:
    """One key of the search space: a float or integer range, or choices."""

    key: str
    low: float | int | None = None
    high: float | int | None = None
    log: bool = False
    step: float | int | None = None
    choices: tuple[Any, ...] | None = None

    @property
    def labels(self) -> list[Any]:
        """What Optuna records for each choice: the value itself if plain, a component's ``class_path``
        (numbered if two choices share one), else the choice as JSON."""
        labels: list[Any] = []
        for i, choice in enumerate(self.choices or ()):
            if choice is None or isinstance(choice, bool | int | float | str):
                label = choice
            elif isinstance(choice, Mapping) and "class_path" in choice:
                label = str(choice["class_path"])
            else:
                label = json.dumps(choice, sort_keys=True)
            labels.append(f"{label}#{i}" if label in labels else label)
        return labels

    def suggest(self, trial: Any) -> Any:
        """The value trial ``trial`` takes (sampled by the study's sampler)."""
        if self.choices is not None:
            label = trial.suggest_categorical(self.key, self.labels)
            return self.choices[self.labels.index(label)]
        if isinstance(self.low, int) and isinstance(self.high, int) and not isinstance(self.step, float):
            return trial.suggest_int(self.key, self.low, self.high, step=self.step or 1, log=self.log)
        return trial.suggest_float(self.key, float(self.low), float(self.high), step=self.step, log=self.log)

    def value_of(self, params: Mapping[str, Any]) -> Any:
        """The config value of a recorded trial's parameters."""
        recorded = params[self.key]
        return self.choices[self.labels.index(recorded)] if self.choices is not None else recorded

    def examples(self) -> list[Any]:
        """Values the space check parses: every choice, or the low end of the range."""
        return list(self.choices) if self.choices is not None else [self.low]


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def load_space(path: str | Path) -> list[Param]:
    """The search space in the YAML file ``path`` (refused, naming the key, if a spec cannot work)."""
    from mmfuse.io import read_yaml

    file = Path(path)
    if not file.is_file():
        raise ConfigError(
            f"search space {str(path)!r} does not exist; write one key per line, e.g. "
            f"'model.init_args.optimizer.init_args.lr: {{low: 1.0e-4, high: 1.0e-2, log: true}}'"
        )
    raw = read_yaml(file)  # not YAML, a key written twice, an alias bomb: refused naming the file and line
    if not isinstance(raw, dict) or not raw:
        raise ConfigError(f"search space {path} must map config keys to ranges or choices; it holds {raw!r}")
    params = []
    for key, spec in raw.items():
        where = f"search space {path}, key {key!r}"
        if not isinstance(key, str) or key.split(".")[0] not in _SECTIONS:
            raise ConfigError(
                f"{where}: keys are dotted config keys under {', '.join(_SECTIONS[:3])} (e.g. "
                f"model.init_args.optimizer.init_args.lr)"
            )
        if not isinstance(spec, dict):
            raise ConfigError(f"{where}: give {{low: …, high: …}} or {{choices: [...]}}, not {spec!r}")
        unknown = sorted(set(spec) - {"low", "high", "log", "step", "choices"})
        if unknown:
            raise ConfigError(f"{where}: unknown field(s) {unknown}; a key takes low, high, log, step, or choices")
        if "choices" in spec:
            choices = spec["choices"]
            if set(spec) != {"choices"}:
                raise ConfigError(f"{where}: choices cannot be combined with low/high/log/step")
            if not isinstance(choices, list) or not choices:
                raise ConfigError(f"{where}: choices must be a non-empty list, not {choices!r}")
            params.append(Param(key, choices=tuple(choices)))
            continue
        if "low" not in spec or "high" not in spec:
            raise ConfigError(f"{where}: a range needs both low and high")
        low, high, step, log = spec["low"], spec["high"], spec.get("step"), spec.get("log", False)
        if not _number(low) or not _number(high):
            raise ConfigError(f"{where}: low and high must be numbers, not {low!r} and {high!r}")
        if low > high:
            raise ConfigError(f"{where}: low ({low}) is greater than high ({high})")
        if not isinstance(log, bool):
            raise ConfigError(f"{where}: log is true or false, not {log!r}")
        if log and low <= 0:
            raise ConfigError(f"{where}: a log range needs low > 0, not {low}")
        if step is not None and (not _number(step) or step <= 0):
            raise ConfigError(f"{where}: step must be a positive number, not {step!r}")
        if step is not None and log:
            raise ConfigError(f"{where}: step and log cannot be combined (Optuna samples a log range continuously)")
        params.append(Param(key, low, high, log, step))
    return params


def _arg(value: Any) -> str:
    """``value`` as a command-line value: strings as they are (component names), the rest as JSON."""
    return value if isinstance(value, str) else json.dumps(value)


def check_space(cli: Any, config_file: Path, params: Sequence[Param], extra: Sequence[str] = ()) -> None:
    """Parses the config with each key's values (every choice, the low end of a range) with ``mmfuse fit``'s
    parser, then with every key at its first value together, so a key, value or combination it refuses is
    refused here, before any trial runs."""
    for param in params:
        for value in param.examples():
            error = config_error(cli, config_file, [*extra, f"--{param.key}", _arg(value)])
            if error is not None:
                shown = json.dumps(value) if param.choices is not None else value
                raise ConfigError(f"search space key {param.key!r} = {shown}: {error}")
    together = [
        arg for p in sorted(params, key=lambda p: p.key.count(".")) for arg in (f"--{p.key}", _arg(p.examples()[0]))
    ]
    error = config_error(cli, config_file, [*extra, *together]) if len(params) > 1 else None
    if error is not None:
        raise ConfigError(f"the search space's keys at their first values together: {error}")


def copy_with(config: Mapping[str, Any], values: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of ``config`` with each dotted key of ``values`` set (choices first, so a key inside a chosen
    component applies to it)."""
    out = copy.deepcopy(dict(config))
    for key in sorted(values, key=lambda k: k.count(".")):
        set_key(out, key, values[key])
    return out
