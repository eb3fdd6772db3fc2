"""What Enformer and Borzoi share: one-hot DNA in, one embedding per bin out, cropped to the centre.

Both read DNA over ``ACGTN`` tokenized to indices, or a one-hot tensor ``(B, L, 4)`` given as
``{"one_hot": ...}``; both return bins of ``bin_size`` bp masked where they hold only padding, and keep
the ``crop_bins`` central bins when asked. Both checkpoints are ``config.json`` plus a state dict
(:mod:`mmfuse.backbones._weights`). An architecture supplies :meth:`~DnaTrunkBackbone._from_config`,
:meth:`~DnaTrunkBackbone._prepare`, :meth:`~DnaTrunkBackbone._ids_to_one_hot` and
:meth:`~DnaTrunkBackbone._embed`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from mmfuse.backbones._weights import bin_mask, center_crop, load_config_and_weights, read_config
from mmfuse.backbones.base import BackboneOutput
from mmfuse.backbones.builder import PretrainedBackbone
from mmfuse.backbones.finetune import FineTuning
from mmfuse.tokenizers import CharTokenizer

__all__ = ["DnaTrunkBackbone"]


class DnaTrunkBackbone(PretrainedBackbone):
    """A DNA track model's trunk; the constructor is shared, its arguments documented on each subclass."""

    padding_invariant = False
    lora_targets: ClassVar[tuple[str, ...]] = ("to_q", "to_k", "to_v", "to_out")
    default_modality = "dna"
    #: the longest sequence accepted when ``max_length`` is not set: twice the official models' input. Their
    #: attention is quadratic in the bins, so a chromosome-sized cell would end in an out-of-memory error
    #: after minutes; the data module refuses it when it checks the sequences, naming the record
    default_max_length: ClassVar[int]
    #: bp per output bin, set by :meth:`_prepare`
    bin_size: int

    def __init__(
        self,
        preset: str | None = None,
        source: str | None = None,
        pretrained: bool = True,
        modality: str | None = None,
        finetune: FineTuning | None = None,
        crop_bins: int | None = None,
        max_length: int | None = None,
    ) -> None:
        super().__init__(modality or self.default_modality, finetune)
        self._build_model(preset, source, pretrained)
        self.crop_bins = crop_bins
        self._prepare()
        name = type(self).__name__
        limit = max_length or self.default_max_length
        self.tokenizer = CharTokenizer(name, "ACGTN", [0, 1, 2, 3, 4], pad_id=-1, max_tokens=limit)
        #: the one-hot input, through a module so attributions can be taken there (:meth:`input_layer`)
        self.one_hot = nn.Identity()
        self._finish_init()

    def _load_pretrained(self, source: str, revision: str | None) -> nn.Module:
        return load_config_and_weights(source, self._from_config, type(self).__name__, revision)

    def _read_config(self, source: str, revision: str | None) -> dict[str, Any]:
        return read_config(source, revision)

    def _prepare(self) -> None:
        """Adapts the built :attr:`model` for embeddings (drops track heads) and sets :attr:`bin_size`."""
        raise NotImplementedError

    def _ids_to_one_hot(self, ids: Tensor) -> Tensor:
        """``(B, L)`` token ids (``-1`` padding) to a ``(B, L, 4)`` float one-hot."""
        raise NotImplementedError

    def _embed(self, one_hot: Tensor) -> Tensor:
        """``(B, L, 4)`` one-hot to ``(B, ceil(L / bin_size), D)`` embeddings."""
        raise NotImplementedError

    def blocks(self) -> list[nn.Module]:
        """The transformer layers (attention + feed-forward), input side first."""
        return list(self.model.transformer)

    def input_layer(self) -> nn.Module:
        """The ``(B, L, 4)`` one-hot input."""
        return self.one_hot

    def encode(self, batch: Mapping[str, Tensor]) -> BackboneOutput:
        if "one_hot" in batch:
            one_hot = batch["one_hot"].float()
            base_mask = batch.get("attention_mask")
            if base_mask is None:
                base_mask = torch.ones(one_hot.shape[:2], dtype=torch.bool, device=one_hot.device)
        else:
            one_hot = self._ids_to_one_hot(batch["input_ids"])
            base_mask = batch["attention_mask"]
        embeddings = self._embed(self.one_hot(one_hot))
        mask = bin_mask(base_mask, self.bin_size)  # a bin is real if any base in it is
        if self.crop_bins is not None:
            name = type(self).__name__
            embeddings = center_crop(embeddings, self.crop_bins, name, self.bin_size)
            mask = center_crop(mask, self.crop_bins, name, self.bin_size)
        return BackboneOutput(embeddings, mask)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", bin_size={self.bin_size}, crop_bins={self.crop_bins}"
