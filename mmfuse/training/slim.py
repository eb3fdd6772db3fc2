"""Slim checkpoints: fixed backbone weights left out when saving, and every checkpoint checked before loading.

A LoRA run of a 650M-parameter model changes a few megabytes of weights; the rest comes back from the
backbones' weight sources when the model is rebuilt, so a checkpoint stores only what training
changed and names those sources (``mmfuse_reloaded_weights``). Loading checks the target names and the
weights against the model built from the config, with a message saying what differs and what to do.
Usable without a Trainer: the task's checkpoint hooks call these functions.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import Tensor, nn

from mmfuse.errors import CheckpointMismatchError, NonFiniteError
from mmfuse.io import state_dict_mismatch

__all__ = ["check_checkpoint", "reloadable_keys", "trim_checkpoint", "upgrade_state_dict"]

#: the task's state-dict prefixes before the model layer of issue 15 (``backbones.*`` → ``model.backbones.*``)
_LEGACY_PREFIXES = {"backbones.": "model.backbones.", "adapter.": "model.adapter.", "head.": "model.head.",
                    "target_mean": "objective.target_mean", "target_std": "objective.target_std"}  # fmt: skip


def reloadable_keys(backbones: Mapping[str, nn.Module], prefix: str = "model.backbones.") -> set[str]:
    """State-dict keys a checkpoint leaves out because the backbones' weight sources give them back."""
    return {f"{prefix}{m}.{k}" for m, b in backbones.items() for k in b.fixed_state_keys()}


def trim_checkpoint(checkpoint: dict[str, Any], backbones: Mapping[str, nn.Module]) -> None:
    """Removes the reloadable weights from ``checkpoint["state_dict"]`` and records their sources."""
    omitted = reloadable_keys(backbones)
    if not omitted:
        return
    state = checkpoint["state_dict"]
    for key in omitted:
        state.pop(key, None)
    checkpoint["mmfuse_reloaded_weights"] = {m: b.weights_source for m, b in backbones.items() if b.fixed_state_keys()}


def upgrade_state_dict(state: dict[str, Any]) -> None:
    """Renames, in place, the keys of a checkpoint written before the model layer had a ``model`` level."""
    if any(k.startswith(("model.", "objective.")) for k in state):
        return
    for key in list(state):
        for old, new in _LEGACY_PREFIXES.items():
            if key.startswith(old):
                state[new + key[len(old) :]] = state.pop(key)
                break


def _names(names: list[str]) -> str:
    return ", ".join(names[:4]) + (", …" if len(names) > 4 else "")


def _target_difference(saved: list[str], given: list[str]) -> str:
    """How the checkpoint's targets differ from the data module's, briefly."""
    if len(saved) != len(given):
        return (f"it was trained with {len(saved)} targets ({_names(saved)}), the data module gives "
                f"{len(given)} ({_names(given)})")  # fmt: skip
    differ = [i for i, (a, b) in enumerate(zip(saved, given, strict=True)) if a != b]
    first = differ[0]
    return (f"it was trained with target_names {_names(saved)}; target {first} is {saved[first]!r} in the "
            f"checkpoint but {given[first]!r} in the data module ({len(differ)} differ)")  # fmt: skip


def check_checkpoint(checkpoint: dict[str, Any], module: nn.Module, target_names: list[str]) -> None:
    """Raises :class:`CheckpointMismatchError` unless ``checkpoint`` fits ``module`` (a task) and its targets.

    Upgrades the state dict of an older checkpoint first (:func:`upgrade_state_dict`).
    """
    upgrade_state_dict(checkpoint.get("state_dict", {}))
    diverged = [k for k, v in checkpoint.get("state_dict", {}).items()
                if isinstance(v, Tensor) and v.is_floating_point() and not bool(v.isfinite().all())]  # fmt: skip
    if diverged:
        raise NonFiniteError(
            f"the checkpoint holds NaN or infinite weights ({len(diverged)} tensors, e.g. {', '.join(diverged[:3])}): "
            f"the run that wrote it diverged; use an earlier checkpoint"
        )
    from mmfuse.hub.load import REFERENCES_KEY, check_references

    check_references(module.model.backbones, checkpoint.get(REFERENCES_KEY))  # an export's fixed weights
    expected = module.state_dict()
    reloaded = checkpoint.get("mmfuse_reloaded_weights")
    if reloaded:  # fixed backbone weights come from their sources, not from the checkpoint
        omitted = reloadable_keys(module.model.backbones)
        expected = {k: v for k, v in expected.items() if k not in omitted}
    saved = checkpoint.get("hyper_parameters", {}).get("target_names")
    other_targets = saved is not None and list(saved) != target_names
    problem = _target_difference(list(saved), target_names) if other_targets else None  # the clearer cause first
    problem = problem or state_dict_mismatch(expected, checkpoint.get("state_dict", {}))
    if problem:
        sources = f" (its fixed backbone weights come from {reloaded})" if reloaded else ""
        raise CheckpointMismatchError(
            f"the checkpoint{sources} does not fit the model built from this config: {problem}. Use the "
            f"config the checkpoint was trained with (saved beside it as config.yaml)"
            + (", or give the data the trained targets, in that order (the data module's target columns / classes)."
               if other_targets else ".")  # fmt: skip
        )
