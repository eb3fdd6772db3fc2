"""Shared loading and forward code for encoders built on transformers' ESM classes (ESM2, NT v2)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from torch import Tensor, nn

from mmfuse.backbones.base import Backbone, BackboneOutput
from mmfuse.backbones.presets import Preset, is_local, weights_error
from mmfuse.errors import ConfigError
from mmfuse.tokenizers import check_vocab_file

__all__ = ["EsmFamilyBackbone"]


class EsmFamilyBackbone(Backbone):
    """An ESM-architecture encoder from transformers; subclasses give presets, tokenizer, model class."""

    model: nn.Module
    lora_targets = ("query", "value")

    def _build(
        self,
        model_cls: Any,
        config_cls: Any,
        preset: Preset,
        source: str | None,
        pretrained: bool,
        vocab: tuple[str, ...],
    ) -> None:
        """Loads ``source`` (or the preset's hub id) or builds the preset's architecture at random."""
        name = type(self).__name__
        src = source or preset.source
        revision = preset.revision if source is None else None
        try:
            if pretrained and src is not None:
                model = model_cls.from_pretrained(src, revision=revision, add_pooling_layer=False)
            else:
                if source is not None:  # the architecture of a given checkpoint, without its weights
                    config = config_cls.from_pretrained(source)
                else:
                    config = config_cls(**preset.config)
                model = model_cls(config, add_pooling_layer=False)
        except OSError as exc:
            raise weights_error(src or preset.name, exc) from exc
        if pretrained and src is not None and is_local(src):
            check_vocab_file(Path(src).expanduser() / "vocab.txt", vocab, name)
        if model.config.vocab_size != len(vocab):
            raise ConfigError(
                f"{name} checkpoint {src!r} has a vocabulary of {model.config.vocab_size} tokens, but the "
                f"built-in {name} tokenizer has {len(vocab)}; it is another model family."
            )
        # The contact-prediction head is never used for embeddings; unused parameters break DDP.
        model.contact_head = None
        self.model = model
        self.weights_source = src if pretrained and src is not None else None

    def blocks(self) -> list[nn.Module]:
        """The transformer layers, input side first."""
        return list(self.model.encoder.layer)

    @property
    def embed_dim(self) -> int:
        return int(self.model.config.hidden_size)

    def encode(self, batch: Mapping[str, Tensor]) -> BackboneOutput:
        mask = batch["attention_mask"].bool()
        out = self.model(input_ids=batch["input_ids"], attention_mask=mask)
        return BackboneOutput(out.last_hidden_state, mask)
