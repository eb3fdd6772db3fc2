"""Checkpoints written as ``config.json`` plus a state dict, and the bin helpers of DNA track models.

Enformer and Borzoi are loaded this way rather than with ``from_pretrained``: their PyTorch ports
subclass ``transformers.PreTrainedModel`` in ways transformers 5 cannot save or load.
"""

from __future__ import annotations

import json
import pickle
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mmfuse.backbones.presets import fetch_file
from mmfuse.errors import CheckpointMismatchError, ConfigError
from mmfuse.io import describe_mismatch

__all__ = [
    "bin_mask",
    "center_crop",
    "load_aliased_state_dict",
    "load_config_and_weights",
    "read_config",
    "save_config_and_weights",
]

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


def read_config(source: str, revision: str | None = None) -> dict[str, Any]:
    """The ``config.json`` of a hub id or local directory."""
    return json.loads(fetch_file(source, ("config.json",), revision).read_text())


def _read_state_dict(path: Path) -> dict[str, Tensor]:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise ConfigError(
            f"{path} holds Python objects besides tensors ({str(exc).splitlines()[0]}); mmfuse reads pickled "
            f"weights with torch.load(weights_only=True) and will not run code from them. Use the checkpoint's "
            f"model.safetensors, or, where you trust the file, convert it: "
            f"safetensors.torch.save_file(torch.load(path, weights_only=False), 'model.safetensors')."
        ) from None


def load_aliased_state_dict(module: nn.Module, state_dict: Mapping[str, Tensor], what: str) -> None:
    """Loads ``state_dict`` into ``module`` where one tensor may be reachable under several names.

    Each tensor of the module must be given under at least one of its names; shapes must match.

    Raises:
        CheckpointMismatchError: missing, unexpected or mis-shaped tensors, listed by name.
    """
    own = module.state_dict(keep_vars=True)
    names_of: dict[int, list[str]] = {}
    for name, tensor in own.items():
        names_of.setdefault(id(tensor), []).append(name)
    complete: dict[str, Tensor] = {}
    missing, wrong_shape = [], []
    for names in names_of.values():
        given = next((n for n in names if n in state_dict), None)
        if given is None:
            missing.append(names[0])
            continue
        if tuple(state_dict[given].shape) != tuple(own[given].shape):
            wrong_shape.append(f"{given}: saved {tuple(state_dict[given].shape)} vs model {tuple(own[given].shape)}")
            continue
        complete.update({n: state_dict[given] for n in names})
    problem = describe_mismatch(missing, sorted(set(state_dict) - set(own)), wrong_shape)
    if problem:
        raise CheckpointMismatchError(f"{what} does not match the model built from its config: {problem}.")
    module.load_state_dict(complete, strict=True)


def load_config_and_weights(
    source: str, build: Callable[[dict[str, Any]], nn.Module], what: str, revision: str | None = None
) -> nn.Module:
    """Builds a model with ``build(config)`` from ``source``'s ``config.json`` and loads its weights
    (safetensors, or a ``.bin`` read with ``weights_only=True``); ``what`` names it in errors."""
    model = build(read_config(source, revision))
    weights_path = fetch_file(source, WEIGHT_FILES, revision)
    load_aliased_state_dict(model, _read_state_dict(weights_path), f"{what} checkpoint {weights_path}")
    return model


def save_config_and_weights(model: nn.Module, directory: str | Path) -> Path:
    """Writes ``model.config`` as ``config.json`` and the weights as ``model.safetensors``."""
    from safetensors.torch import save_model

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    model.config.to_json_file(str(directory / "config.json"))
    save_model(model, str(directory / "model.safetensors"))  # keeps one name per shared tensor
    return directory


def bin_mask(base_mask: Tensor, bin_size: int) -> Tensor:
    """``(B, L)`` base mask to ``(B, ceil(L / bin_size))`` bin mask: a bin is real if any base in it is."""
    return F.max_pool1d(base_mask.float()[:, None, :], bin_size, ceil_mode=True)[:, 0].bool()


def center_crop(x: Tensor, bins: int, model: str, bin_size: int) -> Tensor:
    """The central ``bins`` positions of ``x`` ``(B, n, …)``; ``model`` names it in the error."""
    n = x.shape[1]
    if bins > n:
        raise ConfigError(
            f"{model} crop_bins={bins} is more than the {n} bins of this batch ({n * bin_size:,} bp); "
            f"lower crop_bins or give longer windows."
        )
    start = (n - bins) // 2
    return x[:, start : start + bins]
