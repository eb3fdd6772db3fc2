"""The backbone interface: a pretrained sequence encoder of one modality.

A backbone knows its modality, its embedding width and its tokenizer, and maps a tokenized batch to
per-token embeddings plus a mask. Freezing is handled here once for every backbone.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import Tensor, nn

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


class Backbone(nn.Module, ABC):
    """Base class of sequence encoders.

    Subclasses build their model in ``__init__``, set :attr:`tokenizer`, implement :attr:`embed_dim`
    and :meth:`encode`, and call ``self._finish_init(freeze)`` last.

    Args:
        modality: the modality this encoder reads (``"dna"``, ``"rna"``, ``"protein"``, …); it is
            informative: the task keys backbones by the modality names of the data.
        freeze: keep all weights fixed (no gradients) and the module in eval mode (dropout off,
            BatchNorm statistics fixed) even while the rest of the model trains.
    """

    tokenizer: Tokenizer
    #: whether a sequence's embeddings are the same alone and padded in a batch (attention masks
    #: padding); Enformer's convolutions and unmasked attention see the padding, so it is not.
    padding_invariant: bool = True

    def __init__(self, modality: str, freeze: bool = False) -> None:
        super().__init__()
        self.modality = modality
        self._freeze_requested = freeze
        self.frozen = False

    def _finish_init(self) -> None:
        # from_pretrained() returns modules in eval mode; training must see dropout as configured.
        self.train()
        if self._freeze_requested:
            self.freeze()

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
        return super().train(mode and not self.frozen)

    def extra_repr(self) -> str:
        return f"modality={self.modality!r}, embed_dim={self.embed_dim}, frozen={self.frozen}"
