"""The model of an exported directory built from its config, by name from mmfuse's registries only.

A config written by hand or by someone else is untrusted: a ``class_path`` is looked up in the registry of its
role (backbones, adapters, heads, objectives), never imported, so a name no registry holds is refused with the
known names and no module of the directory or of the config runs. Options typed as dataclasses
(``finetune: {freeze: true}``) are built from their mappings as the CLI builds them.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import typing
from collections.abc import Mapping
from typing import Any

from mmfuse.errors import ConfigError
from mmfuse.registry import ADAPTERS, BACKBONES, HEADS, OBJECTIVES, Registry, UnknownComponentError

__all__ = ["build_parts", "component", "default_objective_name"]

#: the objective of each task class when its config names none (the tasks' ``default_objective``)
_TASK_OBJECTIVES = {"RegressionTask": "Regression", "ClassificationTask": "Classification",
                    "TokenClassificationTask": "TokenClassification"}  # fmt: skip


def default_objective_name(task_class_path: str | None) -> str | None:
    """The objective a task class builds when its config names none."""
    return _TASK_OBJECTIVES.get(str(task_class_path or "").rsplit(".", 1)[-1])


def component(registry: Registry, spec: Any, where: str) -> tuple[type, dict[str, Any]]:
    """The registered class and keyword arguments of ``spec`` (``{class_path, init_args}`` or a class name)."""
    if isinstance(spec, str):
        spec = {"class_path": spec}
    if not isinstance(spec, Mapping) or not isinstance(spec.get("class_path"), str):
        raise ConfigError(f"{where} must be {{class_path: <a registered {registry.kind}>, init_args: {{...}}}}, "
                          f"not {spec!r}")  # fmt: skip
    class_path = spec["class_path"]
    name = class_path.rsplit(".", 1)[-1]
    try:
        cls = registry.get(name)
    except UnknownComponentError as exc:
        raise ConfigError(f"{where}: {exc} (a model directory may only name registered components; install the "
                          f"plugin that provides {name!r})") from None  # fmt: skip
    module = class_path.rpartition(".")[0]
    if module and not (cls.__module__ == module or cls.__module__.startswith(module + ".")
                       or module.startswith(cls.__module__)):  # fmt: skip
        raise ConfigError(f"{where}: {class_path!r} is not the registered {registry.kind} {name!r} "
                          f"({cls.__module__}.{cls.__qualname__})")  # fmt: skip
    args = spec.get("init_args") or {}
    if not isinstance(args, Mapping):
        raise ConfigError(f"{where}.init_args must be a mapping, not {type(args).__name__}")
    return cls, _typed(cls, dict(args), where)


def _typed(cls: type, args: dict[str, Any], where: str) -> dict[str, Any]:
    """``args`` with mappings given to dataclass-typed parameters of ``cls`` built as those dataclasses; names the
    constructor does not take are refused."""
    signature = inspect.signature(cls.__init__)
    takes_any = any(p.kind is p.VAR_KEYWORD for p in signature.parameters.values())
    unknown = sorted(set(args) - set(signature.parameters) - {"self"})
    if unknown and not takes_any:
        raise ConfigError(f"{where}: {cls.__name__} takes no option {', '.join(map(repr, unknown))}")
    try:
        hints = typing.get_type_hints(cls.__init__)
    except Exception:  # an annotation that cannot be resolved: leave the values as given
        hints = {}
    return {key: _value(hints.get(key), value, f"{where}.init_args.{key}") for key, value in args.items()}


def _value(hint: Any, value: Any, where: str) -> Any:
    if not isinstance(value, Mapping):
        return value
    for candidate in (hint, *typing.get_args(hint)):
        if dataclasses.is_dataclass(candidate) and isinstance(candidate, type):
            fields = {f.name for f in dataclasses.fields(candidate)}
            unknown = sorted(set(value) - fields)
            if unknown:
                raise ConfigError(f"{where}: {candidate.__name__} has no option {', '.join(map(repr, unknown))}")
            return candidate(**_typed(candidate, dict(value), where))
    return value


def build_parts(config: Mapping[str, Any], where: str) -> dict[str, Any]:
    """The pieces of a :class:`~mmfuse.model.FusionModel` and its objective from a task's ``{class_path,
    init_args}``: ``backbones``, ``adapter`` and ``head`` factories, ``objective`` (built with the target names),
    ``modality_dropout`` and the token head (``token_modality``, ``token_context``)."""
    args = config.get("init_args") or {}
    if not isinstance(args, Mapping):
        raise ConfigError(f"{where}: the model's init_args must be a mapping")
    backbones_spec = args.get("backbones")
    if not isinstance(backbones_spec, Mapping) or not backbones_spec:
        raise ConfigError(f"{where}: the model names no backbones (model.init_args.backbones)")
    backbones = {}
    for modality, spec in backbones_spec.items():
        cls, kwargs = component(BACKBONES, spec, f"{where}: model.init_args.backbones.{modality}")
        backbones[str(modality)] = cls(**kwargs)
    if args.get("embedding_cache") is not None:  # pooled or rounded as in training, computed per batch
        from mmfuse.cache import CacheOptions, cache_backbones

        cache = args["embedding_cache"]
        if not isinstance(cache, Mapping):
            raise ConfigError(f"{where}: model.init_args.embedding_cache must be a mapping")
        options = CacheOptions(**_typed(CacheOptions, {**cache, "directory": None}, where))
        backbones = cache_backbones(backbones, options)
    adapter = head = None
    if args.get("adapter") is not None:
        cls, kwargs = component(ADAPTERS, args["adapter"], f"{where}: model.init_args.adapter")
        adapter = functools.partial(cls, **kwargs)
    head_spec = args.get("head") or "MLPHead"  # the tasks' default head
    cls, kwargs = component(HEADS, head_spec, f"{where}: model.init_args.head")
    head = functools.partial(cls, **kwargs)
    objective_spec = args.get("objective") or default_objective_name(config.get("class_path"))
    if objective_spec is None:
        raise ConfigError(f"{where}: the model names no objective and its task {config.get('class_path')!r} has "
                          f"no default one")  # fmt: skip
    cls, kwargs = component(OBJECTIVES, objective_spec, f"{where}: model.init_args.objective")
    target_names = args.get("target_names")
    if not isinstance(target_names, list) or not target_names:
        raise ConfigError(f"{where}: the model has no target_names")
    objective = cls(list(target_names), **kwargs)
    tokens = objective.token_head(list(backbones))
    return {
        "backbones": backbones, "adapter": adapter, "head": head, "objective": objective,
        "num_outputs": objective.num_outputs, "modality_dropout": float(args.get("modality_dropout") or 0.0),
        "token_modality": tokens[0] if tokens else None, "token_context": tokens[1] if tokens else True,
    }  # fmt: skip
