"""The backbone interface: a pretrained sequence encoder of one modality.

A backbone knows its modality, its embedding width and its tokenizer, and maps a tokenized batch to
per-token embeddings plus a mask. Freezing is handled here once for every backbone.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor, nn

from mmfuse.backbones.finetune import FineTuning, apply_lora, enable_gradient_checkpointing, freeze_all_but_last
from mmfuse.backbones.presets import Preset
from mmfuse.tokenizers import Tokenizer

__all__ = ["Backbone", "BackboneOutput"]


@dataclass
class BackboneOutput:
    """Per-token embeddings of a batch.

    Attributes:
        embeddings: ``(B, L, D)`` float tensor.
        mask: ``(B, L)`` bool tensor, ``True`` where a token holds sequence (not padding).
    """

    embeddings: Tensor
    mask: Tensor


#: torch's batch-norm layers (their common base class is private)
_BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm, nn.LazyBatchNorm1d,
                 nn.LazyBatchNorm2d, nn.LazyBatchNorm3d)  # fmt: skip


class Backbone(nn.Module, ABC):
    """Base class of sequence encoders.

    Subclasses build their model in ``__init__``, set :attr:`tokenizer`, implement :attr:`embed_dim`
    and :meth:`encode`, and call ``self._finish_init()`` last. Backbones with named checkpoints
    derive from :class:`~mmfuse.backbones.builder.PretrainedBackbone`, which finds and loads them.

    Args:
        modality: the modality this encoder reads (``"dna"``, ``"rna"``, ``"protein"``, …); it is
            informative: the task keys backbones by the modality names of the data.
        finetune: which weights train (:class:`~mmfuse.backbones.finetune.FineTuning`: ``freeze``,
            ``train_last_layers``, ``lora``, ``gradient_checkpointing``); ``None``: all of them.

    Subclasses list their repeated layers in :meth:`blocks` and the linear layers LoRA adapts by
    default in :attr:`lora_targets`; the fine-tuning options then work without further code. BatchNorm
    layers whose weights are all fixed stay in eval mode, so their statistics never move.
    """

    tokenizer: Tokenizer
    #: whether a sequence's embeddings are the same alone and padded in a batch (attention masks
    #: padding); Enformer's convolutions and unmasked attention see the padding, so it is not.
    padding_invariant: bool = True
    #: whether the first token summarises the sequence (a CLS token; ``None``: ask the tokenizer)
    cls_token: ClassVar[bool | None] = None
    #: the named checkpoints of this architecture (``preset: <name>`` in YAML)
    presets: ClassVar[Mapping[str, Preset]] = {}
    #: names (suffixes) of the linear layers LoRA adapts by default
    lora_targets: ClassVar[tuple[str, ...]] = ()
    #: hub id or directory the weights were loaded from; ``None`` for random weights. Checkpoints of
    #: runs that keep a loaded backbone's weights fixed store only what trains (the rest is reloaded).
    weights_source: str | None = None

    def __init__(self, modality: str, finetune: FineTuning | None = None) -> None:
        super().__init__()
        self.modality = modality
        #: the fine-tuning options, applied by :meth:`_finish_init`
        self.finetune = finetune or FineTuning()
        self.frozen = False

    def _finish_init(self) -> None:
        """Applies :attr:`finetune`; subclasses call it last in ``__init__``."""
        options = self.finetune
        # from_pretrained() returns modules in eval mode; training must see dropout as configured.
        self.train()
        if options.freeze:
            self.freeze()
        if options.train_last_layers is not None:
            freeze_all_but_last(self, self.blocks(), options.train_last_layers)
        if options.lora is not None:
            apply_lora(self, options.lora, self.lora_targets)
        if options.gradient_checkpointing:
            enable_gradient_checkpointing(self.blocks())
        if not self.frozen and not any(p.requires_grad for p in self.parameters()):
            self.freeze()  # e.g. train_last_layers: 0; then run without building a graph
        self.train()

    def unwrapped(self) -> Backbone:
        """The backbone that computes the embeddings: itself, or the one a wrapper (the embedding cache) holds."""
        return self

    def fixed_state_keys(self) -> set[str]:
        """State-dict keys a checkpoint need not store: fixed weights (and the buffers of modules
        whose weights are all fixed) of a backbone loaded from :attr:`weights_source`, which gives
        them back when the model is rebuilt. Empty for randomly initialised backbones."""
        if self.weights_source is None:
            return set()
        keys = set()
        for prefix, module in self.named_modules():
            fixed = not any(p.requires_grad for p in module.parameters())
            dot = f"{prefix}." if prefix else ""
            keys |= {dot + n for n, p in module.named_parameters(recurse=False) if not p.requires_grad}
            if fixed:
                keys |= {dot + n for n, _ in module.named_buffers(recurse=False)}
        persistent = set(self.state_dict())
        return keys & persistent

    def blocks(self) -> Sequence[nn.Module]:
        """The backbone's repeated layers (transformer blocks), input side first."""
        return []

    def input_layer(self) -> nn.Module | None:
        """The module whose output ``(B, L, d)`` is each token's input representation (token embeddings, a
        one-hot), which ``mmfuse explain`` attributes to; ``None``: this backbone cannot be explained."""
        return None

    @property
    @abstractmethod
    def embed_dim(self) -> int:
        """Width ``D`` of the embeddings."""

    @abstractmethod
    def encode(self, batch: Mapping[str, Tensor]) -> BackboneOutput:
        """Embeds a tokenized batch (the tokenizer's output moved to the device)."""

    def forward(self, batch: Mapping[str, Tensor]) -> BackboneOutput:
        """Embeds a tokenized batch; a frozen backbone runs without building a graph."""
        if self.frozen:
            with torch.no_grad():
                return self.encode(batch)
        return self.encode(batch)

    def freeze(self) -> None:
        """Fixes every weight and keeps the module in eval mode from now on."""
        self.requires_grad_(False)
        self.frozen = True
        super().train(False)

    def train(self, mode: bool = True) -> Backbone:
        # A frozen backbone stays in eval mode so dropout and BatchNorm statistics do not move.
        super().train(mode and not self.frozen)
        if mode and not self.frozen:
            for module in self.modules():  # fixed BatchNorm layers keep their statistics
                if isinstance(module, _BATCH_NORMS) and not any(
                    p.requires_grad for p in module.parameters()
                ):
                    module.eval()
        return self

    def extra_repr(self) -> str:
        return f"modality={self.modality!r}, embed_dim={self.embed_dim}, frozen={self.frozen}"
