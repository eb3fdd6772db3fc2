"""Shared code of encoders built on transformers' BERT-like classes (ESM2, NT v2, Geneformer)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

from torch import Tensor, nn

from mmfuse.backbones.base import BackboneOutput
from mmfuse.backbones.builder import PretrainedBackbone
from mmfuse.backbones.finetune import FineTuning
from mmfuse.backbones.presets import is_local
from mmfuse.errors import ConfigError
from mmfuse.tokenizers import Tokenizer, check_vocab_file

__all__ = ["EsmFamilyBackbone", "TransformersBackbone"]


class TransformersBackbone(PretrainedBackbone):
    """A ``transformers`` encoder (``model.encoder.layer``, ``last_hidden_state``) with named presets."""

    lora_targets: ClassVar[tuple[str, ...]] = ("query", "value")

    def blocks(self) -> list[nn.Module]:
        """The transformer layers, input side first."""
        return list(self.model.encoder.layer)

    def input_layer(self) -> nn.Module:
        """The token embeddings."""
        return self.model.get_input_embeddings()

    @property
    def embed_dim(self) -> int:
        return int(self.model.config.hidden_size)

    def encode(self, batch: Mapping[str, Tensor]) -> BackboneOutput:
        mask = batch["attention_mask"].bool()
        out = self.model(input_ids=batch["input_ids"], attention_mask=mask)
        return BackboneOutput(out.last_hidden_state, mask)


class EsmFamilyBackbone(TransformersBackbone):
    """An ESM-architecture encoder; a subclass gives its presets, vocabulary, model classes and tokenizer.

    The constructor is shared: ``preset`` (``None``: :attr:`default_preset`), ``source``, ``pretrained``,
    ``modality`` (``None``: :attr:`default_modality`), ``finetune`` and ``max_length`` are documented
    on each subclass.
    """

    #: the vocabulary of the subclass's built-in tokenizer, checked against the checkpoint's
    vocab: ClassVar[tuple[str, ...]] = ()

    def __init__(
        self,
        preset: str | None = None,
        source: str | None = None,
        pretrained: bool = True,
        modality: str | None = None,
        finetune: FineTuning | None = None,
        max_length: int | None = None,
    ) -> None:
        super().__init__(modality or self.default_modality, finetune)
        plan = self._build_model(preset, source, pretrained)
        name = type(self).__name__
        if plan.pretrained and plan.source is not None and is_local(plan.source):
            check_vocab_file(Path(plan.source).expanduser() / "vocab.txt", self.vocab, name)
        if self.model.config.vocab_size != len(self.vocab):
            raise ConfigError(
                f"{name} checkpoint {plan.source!r} has a vocabulary of {self.model.config.vocab_size} tokens, "
                f"but the built-in {name} tokenizer has {len(self.vocab)}; it is another model family."
            )
        # The contact-prediction head is never used for embeddings; unused parameters break DDP.
        self.model.contact_head = None
        self.tokenizer = self._make_tokenizer(max_length)
        self._finish_init()

    def _model_classes(self) -> tuple[Any, Any]:
        """``(model class, config class)`` of the architecture."""
        raise NotImplementedError

    def _make_tokenizer(self, max_length: int | None) -> Tokenizer:
        raise NotImplementedError

    def _load_pretrained(self, source: str, revision: str | None) -> nn.Module:
        model_cls, _ = self._model_classes()
        return model_cls.from_pretrained(source, revision=revision, add_pooling_layer=False)

    def _read_config(self, source: str, revision: str | None) -> Any:
        _, config_cls = self._model_classes()
        return config_cls.from_pretrained(source, revision=revision)

    def _from_config(self, config: Any) -> nn.Module:
        model_cls, config_cls = self._model_classes()
        if isinstance(config, Mapping):
            config = config_cls(**config)
        return model_cls(config, add_pooling_layer=False)
