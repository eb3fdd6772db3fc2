"""Fine-tuning set-ups written once for every backbone: LoRA, partial freezing, gradient checkpointing.

:class:`FineTuning` is the one typed group of these options every backbone takes (``finetune:`` in
YAML); :meth:`Backbone._finish_init <mmfuse.backbones.base.Backbone._finish_init>` applies it. A backbone
names its repeated layers (:meth:`Backbone.blocks`) and the modules LoRA adapts by default
(:attr:`Backbone.lora_targets`); everything else here works on any backbone from those two facts.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from mmfuse.errors import ConfigError

__all__ = [
    "FineTuning",
    "LoraOptions",
    "apply_lora",
    "enable_gradient_checkpointing",
    "freeze_all_but_last",
    "lora_parameters",
]


@dataclass
class LoraOptions:
    """LoRA (Hu et al. 2021, https://arxiv.org/abs/2106.09685) through ``peft``.

    Args:
        r: rank of the update ``B A``.
        alpha: scaling numerator: the update is scaled by ``alpha / r`` (``alpha / √r`` with rsLoRA).
        dropout: dropout on the LoRA branch's input.
        targets: names (suffixes) of the linear layers to adapt; default: the backbone's
            ``lora_targets`` (ESM2/NT: ``query``, ``value``; Enformer: its attention projections).
        rslora: rank-stabilised scaling (Kalajdzievski 2023, https://arxiv.org/abs/2312.03732).
    """

    r: int = 8
    alpha: float = 16.0
    dropout: float = 0.05
    targets: list[str] | None = None
    rslora: bool = False


@dataclass
class FineTuning:
    """How a backbone's weights train: ``finetune: {freeze: true}`` under a backbone's ``init_args``.

    At most one of ``freeze``, ``train_last_layers`` and ``lora`` may be set; ``gradient_checkpointing``
    combines with any of them. Left out (``None``), the whole backbone trains.

    Args:
        freeze: keep all weights fixed (no gradients) and the module in eval mode (dropout off,
            BatchNorm statistics fixed) even while the rest of the model trains.
        train_last_layers: train only the last N layers (:meth:`~mmfuse.backbones.base.Backbone.blocks`)
            and what follows them (final norms); everything before stays fixed. ``0`` trains nothing.
        lora: adapt the backbone with LoRA (:class:`LoraOptions`; default targets: the backbone's
            ``lora_targets``); its own weights stay fixed and only the LoRA matrices train.
        gradient_checkpointing: recompute each layer's activations in the backward pass instead of
            storing them (less memory, about a third more compute).

    Examples:
        >>> FineTuning(lora=LoraOptions(r=4)).lora.r
        4
        >>> FineTuning(freeze=True, train_last_layers=2)
        Traceback (most recent call last):
        ...
        mmfuse.errors.ConfigError: choose one of freeze, train_last_layers and lora for a backbone (given: ...)
    """

    freeze: bool = False
    train_last_layers: int | None = None
    lora: LoraOptions | None = None
    gradient_checkpointing: bool = False

    def __post_init__(self) -> None:
        given = [name for name, value in (("freeze", self.freeze), ("train_last_layers", self.train_last_layers),
                 ("lora", self.lora)) if value not in (False, None)]  # fmt: skip
        if len(given) > 1:
            raise ConfigError(
                f"choose one of freeze, train_last_layers and lora for a backbone (given: {', '.join(given)})"
            )


def apply_lora(module: nn.Module, options: LoraOptions, default_targets: Sequence[str]) -> list[str]:
    """Injects LoRA layers into ``module`` in place and leaves only them trainable.

    Returns:
        The names of the adapted modules.

    Raises:
        ConfigError: no target is given, or no module of ``module`` matches the targets.
    """
    from peft import LoraConfig, inject_adapter_in_model

    targets = list(options.targets or default_targets)
    if not targets:
        raise ConfigError(f"{type(module).__name__} has no default LoRA targets; set lora.targets to module names")
    if options.r < 1:
        raise ConfigError(f"lora.r must be at least 1, not {options.r}")
    names = {name.rsplit(".", 1)[-1] for name, _ in module.named_modules()}
    unknown = [t for t in targets if t not in names]
    if len(unknown) == len(targets):
        raise ConfigError(
            f"LoRA targets {targets} match no module of {type(module).__name__}; its linear layers are named "
            f"{sorted({n.rsplit('.', 1)[-1] for n, m in module.named_modules() if isinstance(m, nn.Linear)})}"
        )
    config = LoraConfig(
        r=options.r, lora_alpha=options.alpha, lora_dropout=options.dropout, target_modules=targets,
        use_rslora=options.rslora, bias="none",
    )  # fmt: skip
    inject_adapter_in_model(config, module)
    for name, parameter in module.named_parameters():
        parameter.requires_grad_("lora_" in name)
    return sorted({n.rsplit(".lora_", 1)[0] for n, _ in module.named_parameters() if ".lora_" in n})


def lora_parameters(module: nn.Module) -> list[str]:
    """Names of the LoRA parameters of ``module``."""
    return [n for n, _ in module.named_parameters() if "lora_" in n]


def freeze_all_but_last(module: nn.Module, blocks: Sequence[nn.Module], n: int) -> None:
    """Freezes every weight of ``module`` except those of the last ``n`` of ``blocks``.

    Embeddings and everything before the blocks stay frozen; modules after them (final norms)
    train with the last blocks.
    """
    if not blocks:
        raise ConfigError(f"{type(module).__name__} does not list its layers; train_last_layers needs them")
    if not 0 <= n <= len(blocks):
        raise ConfigError(f"train_last_layers must be between 0 and {len(blocks)} (the layers it has), not {n}")
    module.requires_grad_(False)
    if n == 0:
        return
    for block in blocks[len(blocks) - n :]:
        block.requires_grad_(True)
    # modules registered after the last block (final layer norms, projections) read its output
    inside_last = {id(m) for m in blocks[-1].modules()}
    past_last = False
    for sub in module.modules():
        if id(sub) in inside_last:
            past_last = True
        elif past_last:
            for parameter in sub.parameters(recurse=False):
                parameter.requires_grad_(True)


def _checkpointed(forward, *args, **kwargs):
    if torch.is_grad_enabled():
        return checkpoint(forward, *args, use_reentrant=False, **kwargs)
    return forward(*args, **kwargs)


def enable_gradient_checkpointing(blocks: Sequence[nn.Module]) -> None:
    """Recomputes each block's activations in the backward pass instead of keeping them.

    Trades about one extra forward pass for activation memory that no longer grows with depth.
    """
    if not blocks:
        raise ConfigError("this backbone does not list its layers; gradient_checkpointing needs them")
    for block in blocks:
        block.forward = functools.partial(_checkpointed, block.forward)  # type: ignore[method-assign]
