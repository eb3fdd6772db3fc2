"""Any Hugging Face encoder, through ``AutoModel`` and ``AutoTokenizer``, from a hub id or a directory.

Architectures differ only in a few attribute names (where the layers live, what the attention
projections are called); :data:`MODEL_TYPES` records them per ``model_type``, as open_clip does,
so fine-tuning options (LoRA, ``train_last_layers``, gradient checkpointing) work without per-model
code. Model types not in the table still load and embed; the fine-tuning options that need the
table then ask for ``lora.targets``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from mmfuse.backbones.base import Backbone, BackboneOutput
from mmfuse.backbones.finetune import FineTuning
from mmfuse.backbones.presets import is_local, weights_error
from mmfuse.errors import ConfigError
from mmfuse.registry import BACKBONES
from mmfuse.tokenizers import InvalidSequenceError

__all__ = ["MODEL_TYPES", "HFTokenizer", "HuggingFaceEncoder", "ModelTypeSpec"]


@dataclass(frozen=True)
class ModelTypeSpec:
    """Where one Hugging Face architecture keeps what mmfuse needs.

    Attributes:
        hidden_size: name of the config attribute holding the embedding width.
        layers: dotted path, from the ``AutoModel``, to the list of transformer layers (``None``:
            unknown, so ``train_last_layers`` and gradient checkpointing are unavailable).
        lora_targets: names of the linear layers LoRA adapts by default.
        unused: sub-modules never used for per-token embeddings (poolers, contact heads); they are
            removed because parameters without gradients break DDP.
        position_offset: positions the model reserves before the first token (RoBERTa and ESM
            number positions from ``padding_idx + 1``).
    """

    hidden_size: str = "hidden_size"
    layers: str | None = "encoder.layer"
    lora_targets: tuple[str, ...] = ("query", "value")
    unused: tuple[str, ...] = ("pooler",)
    position_offset: int = 0


_ROBERTA = ModelTypeSpec(position_offset=2)

#: Attribute names per ``config.model_type``, each checked against tiny models of transformers 5.
MODEL_TYPES: dict[str, ModelTypeSpec] = {
    "bert": ModelTypeSpec(),
    "roberta": _ROBERTA,
    "xlm-roberta": _ROBERTA,
    "camembert": _ROBERTA,
    "esm": ModelTypeSpec(unused=("pooler", "contact_head"), position_offset=2),
    "distilbert": ModelTypeSpec("dim", "transformer.layer", ("q_lin", "v_lin"), ()),
    "electra": ModelTypeSpec(unused=()),
    "deberta-v2": ModelTypeSpec(lora_targets=("query_proj", "value_proj"), unused=()),
    "mpnet": ModelTypeSpec(lora_targets=("q", "v")),
    "modernbert": ModelTypeSpec(layers="layers", lora_targets=("Wqkv",), unused=()),
}

#: what is assumed of a model type missing from :data:`MODEL_TYPES`
_FALLBACK = ModelTypeSpec(layers=None, lora_targets=(), unused=())

#: ``model_max_length`` of tokenizers that do not know their model's limit (``int(1e30)``)
_NO_LIMIT = 10**9


def _model_name(source: str) -> str:
    return Path(source).expanduser().name if is_local(source) else source


class HFTokenizer:
    """A Hugging Face tokenizer behind mmfuse's :class:`~mmfuse.tokenizers.Tokenizer` protocol.

    Pads to the batch's longest sequence, returns a bool attention mask and refuses what the model
    cannot read: empty sequences, sequences over ``max_length`` tokens and letters that the
    vocabulary maps to the unknown token (or drops). Picklable, so DataLoader workers can run it.

    Args:
        tokenizer: the ``transformers`` tokenizer.
        name: model name used in error messages.
        max_length: longest accepted encoding, in tokens including special tokens.
    """

    def __init__(self, tokenizer: Any, name: str, max_length: int) -> None:
        self.tokenizer = tokenizer
        self.name = name
        self.max_length = max_length

    def __call__(self, sequences: Sequence[str]) -> dict[str, Tensor]:
        """Encodes and pads ``sequences`` to ``{"input_ids": (B, L), "attention_mask": (B, L)}``."""
        sequences = list(sequences)
        for i, sequence in enumerate(sequences):
            if not sequence:
                raise InvalidSequenceError(self._empty(), i)
        enc = self.tokenizer(
            sequences, padding="longest", truncation=False, return_tensors="pt",
            return_attention_mask=True, return_token_type_ids=False, verbose=False,
        )  # fmt: skip
        ids, mask = enc["input_ids"].long(), enc["attention_mask"].bool()
        unk = self.tokenizer.unk_token_id
        suspect = mask.sum(1) > self.max_length
        if unk is not None:
            suspect |= (mask & (ids == unk)).any(1)
        for i in suspect.nonzero().flatten().tolist():
            self._check(sequences[i], i)
        return {"input_ids": ids, "attention_mask": mask}

    def validate(self, sequence: str) -> None:
        """Raises :class:`InvalidSequenceError` if ``sequence`` cannot be encoded."""
        self._check(sequence, None)

    def _empty(self) -> str:
        return "the sequence is empty; drop the record or provide a sequence"

    def _check(self, sequence: str, index: int | None) -> None:
        if not sequence:
            raise InvalidSequenceError(self._empty(), index)
        fast = bool(getattr(self.tokenizer, "is_fast", False))
        enc = self.tokenizer(sequence, truncation=False, return_offsets_mapping=fast, verbose=False)
        ids: list[int] = enc["input_ids"]
        unk = self.tokenizer.unk_token_id
        if fast:
            offsets: list[tuple[int, int]] = enc["offset_mapping"]
            bad = next((s for (s, e), i in zip(offsets, ids, strict=True) if i == unk and e > s), None)
            if bad is None:  # byte-level vocabularies without an unknown token drop letters instead
                covered = [False] * len(sequence)
                for s, e in offsets:
                    covered[s:e] = [True] * (e - s)
                bad = next((p for p, c in enumerate(sequence) if not covered[p] and not c.isspace()), None)
            if bad is not None:
                raise InvalidSequenceError(self._bad_letter(sequence, bad), index)
        elif unk is not None and unk in ids:
            # slow tokenizers give no offsets: find the first letter that alone maps to the unknown token
            for pos, char in enumerate(sequence):
                if unk in self.tokenizer(char, add_special_tokens=False, verbose=False)["input_ids"]:
                    raise InvalidSequenceError(self._bad_letter(sequence, pos), index)
            raise InvalidSequenceError(
                f"{self.name}'s tokenizer maps part of the sequence to its unknown token "
                f"{self.tokenizer.unk_token!r}; fix or remove the record.",
                index,
            )
        if len(ids) > self.max_length:
            raise InvalidSequenceError(
                f"{len(sequence)} letters make {len(ids)} tokens, more than {self.name} accepts "
                f"({self.max_length} tokens). Crop the sequence in the data (or raise the backbone's "
                f"max_length if the model allows it).",
                index,
            )

    def _bad_letter(self, sequence: str, pos: int) -> str:
        context = sequence[max(0, pos - 5) : pos + 6]
        return (
            f"letter {sequence[pos]!r} at position {pos} (…{context}…) is not in the vocabulary of "
            f"{self.name}. Replace it (unknown bases are usually written N, unknown residues X) or remove "
            f"the record."
        )

    def __repr__(self) -> str:
        return f"HFTokenizer({self.name!r}, max_length={self.max_length})"


@BACKBONES.register()
class HuggingFaceEncoder(Backbone):
    """Any Hugging Face encoder model (BERT, RoBERTa, ESM, DeBERTa-v2, ModernBERT, …) with its tokenizer.

    The model is built with ``AutoModel`` and the tokenizer with ``AutoTokenizer``; the embeddings are
    a hidden state of the model, one vector per token (special tokens included). Model types listed in
    :data:`MODEL_TYPES` support every fine-tuning option; others load and embed, and need
    ``lora.targets`` for LoRA (``train_last_layers`` and ``gradient_checkpointing`` are unavailable).

    Weights are loaded in float32; the trainer's ``precision`` decides the compute dtype.

    Args:
        source: hub id (``"zhihan1996/DNABERT-S"``) or a local directory written by
            ``save_pretrained`` (or ``hf download ID --local-dir DIR``), the way to work offline.
        modality: the modality name this encoder reads.
        revision: hub revision (commit, branch or tag) to pin.
        trust_remote_code: allow checkpoints whose architecture is defined by Python files in the
            checkpoint; this **runs code from the checkpoint** on this machine, so only set it for
            sources you trust. Not passed to ``transformers`` unless set.
        max_length: longest accepted input, in tokens including special tokens (default: the
            tokenizer's ``model_max_length`` if it names one, else the config's
            ``max_position_embeddings``).
        layer: which hidden state to return: ``-1`` the last layer's output, ``0`` the token
            embeddings, ``k`` the output of layer ``k``. Layers after it still run and get no gradient
            (keep them out of training with ``finetune: {freeze: true}`` or DDP's ``find_unused_parameters``).
        pretrained: load the weights; ``False`` builds the checkpoint's architecture with random ones.
        finetune: which weights train (:class:`~mmfuse.backbones.finetune.FineTuning`; LoRA's default
            targets come from :data:`MODEL_TYPES`, e.g. ``query``, ``value``).

    Examples:
        A YAML config::

            backbones:
              dna:
                class_path: HuggingFaceEncoder
                init_args:
                  source: /data/models/DNABERT-S
                  finetune: {lora: {r: 8}}
    """

    def __init__(
        self,
        source: str,
        modality: str = "dna",
        revision: str | None = None,
        trust_remote_code: bool = False,
        max_length: int | None = None,
        layer: int = -1,
        pretrained: bool = True,
        finetune: FineTuning | None = None,
    ) -> None:
        super().__init__(modality, finetune)
        from transformers import AutoConfig, AutoModel, AutoTokenizer

        self.source = source
        self.layer = layer
        remote: dict[str, Any] = {"trust_remote_code": True} if trust_remote_code else {}
        try:
            tokenizer = AutoTokenizer.from_pretrained(source, revision=revision, **remote)
            if pretrained:
                model = AutoModel.from_pretrained(source, revision=revision, dtype=torch.float32, **remote)
            else:
                config = AutoConfig.from_pretrained(source, revision=revision, **remote)
                model = AutoModel.from_config(config, dtype=torch.float32, **remote)
        except OSError as exc:
            raise weights_error(source, exc) from exc
        config = model.config
        self.model_type: str = str(getattr(config, "model_type", "") or "")
        self.spec = MODEL_TYPES.get(self.model_type, _FALLBACK)
        for name in self.spec.unused:  # never used for embeddings; gradient-less parameters break DDP
            if isinstance(getattr(model, name, None), nn.Module):
                setattr(model, name, None)
        self.model = model
        if pretrained:
            self.weights_source = source
        self._embed_dim = self._read_embed_dim(config)
        self._check_layer(config)
        self._check_finetuning()
        self.lora_targets = self.spec.lora_targets  # type: ignore[misc]  # per instance: depends on the checkpoint
        self.tokenizer = HFTokenizer(tokenizer, _model_name(source), self._max_tokens(tokenizer, max_length))
        self._finish_init()

    # -- construction helpers -----------------------------------------------------------------

    def _read_embed_dim(self, config: Any) -> int:
        width = getattr(config, self.spec.hidden_size, None)
        if not isinstance(width, int):
            raise ConfigError(
                f"the config of {self.source!r} (model_type {self.model_type!r}) has no integer "
                f"{self.spec.hidden_size!r}; add its model_type to mmfuse.backbones.hf_encoder.MODEL_TYPES."
            )
        return width

    def _check_layer(self, config: Any) -> None:
        n = getattr(config, "num_hidden_layers", None)
        if isinstance(n, int) and not -(n + 1) <= self.layer <= n:
            raise ConfigError(
                f"layer {self.layer} does not exist in {self.source!r}: it has {n} layers, so layer is "
                f"between {-(n + 1)} and {n} (0: the token embeddings, -1: the last layer)."
            )

    def _check_finetuning(self) -> None:
        if self.spec is not _FALLBACK:
            return
        known = ", ".join(sorted(MODEL_TYPES))
        if self.finetune.lora is not None and not self.finetune.lora.targets:
            linear = sorted({n.rsplit(".", 1)[-1] for n, m in self.model.named_modules() if isinstance(m, nn.Linear)})
            raise ConfigError(
                f"HuggingFaceEncoder knows no default LoRA targets for model_type {self.model_type!r} "
                f"(known: {known}); set lora.targets to names of its linear layers, e.g. from {linear}."
            )
        if self.finetune.train_last_layers is not None or self.finetune.gradient_checkpointing:
            raise ConfigError(
                f"HuggingFaceEncoder does not know where model_type {self.model_type!r} keeps its layers "
                f"(known: {known}), which finetune.train_last_layers and finetune.gradient_checkpointing "
                f"need; use finetune.freeze, or finetune.lora with lora.targets set, instead."
            )

    def _max_tokens(self, tokenizer: Any, max_length: int | None) -> int:
        if max_length is not None:
            return max_length
        limit = getattr(tokenizer, "model_max_length", None)
        if isinstance(limit, int) and 0 < limit < _NO_LIMIT:
            return limit
        positions = getattr(self.model.config, "max_position_embeddings", None)
        if isinstance(positions, int) and positions > self.spec.position_offset:
            return positions - self.spec.position_offset
        raise ConfigError(
            f"neither the tokenizer nor the config of {self.source!r} states a maximum length; set max_length."
        )

    # -- the Backbone API -----------------------------------------------------------------------

    @property
    def embed_dim(self) -> int:
        return self._embed_dim

    def blocks(self) -> Sequence[nn.Module]:
        if self.spec.layers is None:
            return []
        module: Any = self.model
        for part in self.spec.layers.split("."):
            module = getattr(module, part)
        return list(module)

    def encode(self, batch: Mapping[str, Tensor]) -> BackboneOutput:
        """Embeds a batch: ``(B, L)`` ids and mask to ``(B, L, D)`` embeddings of hidden state ``layer``."""
        mask = batch["attention_mask"].bool()
        # integer masks: some architectures compute ``1 - mask``, which bool tensors do not support
        kwargs = {"output_hidden_states": True} if self.layer != -1 else {}
        out = self.model(input_ids=batch["input_ids"], attention_mask=mask.long(), **kwargs)
        embeddings = out.last_hidden_state if self.layer == -1 else out.hidden_states[self.layer]
        return BackboneOutput(embeddings, mask)

    def extra_repr(self) -> str:
        return f"source={self.source!r}, model_type={self.model_type!r}, " + super().extra_repr()
