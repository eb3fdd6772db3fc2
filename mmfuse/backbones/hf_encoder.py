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
from mmfuse.backbones.hf_tokenizer import ALPHABETS, HFTokenizer
from mmfuse.backbones.hf_tokenizer import spaced_letters as spaced_letters_of
from mmfuse.backbones.presets import Preset, get_preset, is_local, preset_table, weights_error
from mmfuse.errors import ConfigError
from mmfuse.registry import BACKBONES

__all__ = ["HF_PRESETS", "MODEL_TYPES", "HFTokenizer", "HuggingFaceEncoder", "ModelTypeSpec"]


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
        max_tokens: the default input limit of architectures without absolute positions (T5's relative
            positions have none; attention memory grows with its square, so mmfuse sets one).
    """

    hidden_size: str = "hidden_size"
    layers: str | None = "encoder.layer"
    lora_targets: tuple[str, ...] = ("query", "value")
    unused: tuple[str, ...] = ("pooler",)
    position_offset: int = 0
    max_tokens: int | None = None


_ROBERTA = ModelTypeSpec(position_offset=2)
_T5 = ModelTypeSpec("d_model", "encoder.block", ("q", "v"), (), max_tokens=2048)

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
    # encoder-decoder checkpoints: only the encoder is built (:data:`_ENCODERS`)
    "t5": _T5,
    "mt5": _T5,
    "umt5": _T5,
}

#: the encoder-only class of each encoder-decoder ``model_type`` (``AutoModel`` would build the decoder too)
_ENCODERS = {"t5": "T5EncoderModel", "mt5": "MT5EncoderModel", "umt5": "UMT5EncoderModel"}

#: ProtTrans' mapping of the rare and ambiguous residues (selenocysteine, Glx, pyrrolysine, Asx) to X
_PROTTRANS_LETTERS = {"U": "X", "Z": "X", "O": "X", "B": "X"}
_PROTTRANS_PAPER = "Elnaggar et al. 2022, IEEE TPAMI, doi:10.1109/TPAMI.2021.3095381"

#: checkpoints whose tokenizers need more than ``AutoTokenizer`` (letters spaced, letters mapped), as data
HF_PRESETS = preset_table(
    Preset(name="prot_bert", source="Rostlab/prot_bert", embed_dim=1024, max_tokens=2048, modality="protein",
           config={"letter_map": _PROTTRANS_LETTERS}, license="not stated on the model card (ProtTrans code: AFL-3.0)",
           paper=_PROTTRANS_PAPER),
    Preset(name="prot_t5_xl_u50", source="Rostlab/prot_t5_xl_half_uniref50-enc", embed_dim=1024, max_tokens=2048,
           modality="protein", config={"letter_map": _PROTTRANS_LETTERS},
           license="not stated on the model card (ProtTrans code: AFL-3.0)", paper=_PROTTRANS_PAPER),
    Preset(name="splicebert_1024nt", source=None, embed_dim=512, max_tokens=1026, modality="rna",
           config={"letter_map": {"U": "T"}, "download": "https://doi.org/10.5281/zenodo.7995778"},
           license="weights CC BY 4.0 (Zenodo), code BSD-3-Clause",
           paper="Chen et al. 2024, Briefings in Bioinformatics 25(3) bbae163, doi:10.1093/bib/bbae163"),
)  # fmt: skip

#: what is assumed of a model type missing from :data:`MODEL_TYPES`
_FALLBACK = ModelTypeSpec(layers=None, lora_targets=(), unused=())

#: ``model_max_length`` of tokenizers that do not know their model's limit (``int(1e30)``)
_NO_LIMIT = 10**9


def _model_class(config: Any) -> Any:
    """``AutoModel``, or for an encoder-decoder checkpoint the class of its encoder alone."""
    import transformers

    model_type = str(getattr(config, "model_type", ""))
    if model_type in _ENCODERS:  # an encoder saved alone says is_encoder_decoder: false
        return getattr(transformers, _ENCODERS[model_type])
    if not getattr(config, "is_encoder_decoder", False):
        return transformers.AutoModel
    raise ConfigError(
        f"{model_type!r} is an encoder-decoder architecture whose encoder-only class mmfuse does not know "
        f"(known: {', '.join(sorted(_ENCODERS))}); save its encoder alone (model.get_encoder().save_pretrained)"
    )


def _model_name(source: str) -> str:
    return Path(source).expanduser().name if is_local(source) else source


@BACKBONES.register()
class HuggingFaceEncoder(Backbone):
    """Any Hugging Face encoder model (BERT, RoBERTa, ESM, DeBERTa-v2, ModernBERT, …) with its tokenizer.

    The model is built with ``AutoModel`` and the tokenizer with ``AutoTokenizer``; the embeddings are
    a hidden state of the model, one vector per token (special tokens included). Model types listed in
    :data:`MODEL_TYPES` support every fine-tuning option; others load and embed, and need
    ``lora.targets`` for LoRA (``train_last_layers`` and ``gradient_checkpointing`` are unavailable).

    Weights are loaded in float32; the trainer's ``precision`` decides the compute dtype.

    Checkpoints that read one letter per token separated by spaces (ProtBert, ProtT5, SpliceBERT) are
    detected from their vocabulary and given spaced letters (``spaced_letters``); the data keeps its
    sequences unspaced. Encoder-decoder checkpoints (T5: ProtT5, Ankh) build their encoder only.

    Args:
        source: hub id (``"zhihan1996/DNABERT-S"``) or a local directory written by
            ``save_pretrained`` (or ``hf download ID --local-dir DIR``), the way to work offline;
            with ``preset``, where to read that preset's checkpoint instead of its hub id.
        modality: the modality name this encoder reads (default: the preset's, else ``dna``).
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
        preset: a checkpoint of :data:`HF_PRESETS` (``prot_bert``, ``prot_t5_xl_u50``,
            ``splicebert_1024nt``): its hub id, modality, length limit and letter mapping.
        spaced_letters: separate letters by spaces before tokenizing (``None``: detected from the
            vocabulary, which maps unspaced letters to its unknown token).
        letter_map: letters replaced before tokenizing (default: the preset's; ProtTrans models write
            U, Z, O and B as X, SpliceBERT reads RNA with T).

    Examples:
        A YAML config::

            backbones:
              dna:
                class_path: HuggingFaceEncoder
                init_args:
                  source: /data/models/DNABERT-S
                  finetune: {lora: {r: 8}}
    """

    presets = HF_PRESETS

    def __init__(
        self,
        source: str | None = None,
        modality: str | None = None,
        revision: str | None = None,
        trust_remote_code: bool = False,
        max_length: int | None = None,
        layer: int = -1,
        pretrained: bool = True,
        finetune: FineTuning | None = None,
        preset: str | None = None,
        spaced_letters: bool | None = None,
        letter_map: dict[str, str] | None = None,
    ) -> None:
        known = get_preset(HF_PRESETS, preset, "HuggingFaceEncoder") if preset is not None else None
        super().__init__(modality or (known.modality if known else "dna"), finetune)
        from transformers import AutoConfig, AutoTokenizer

        source = self._source(source, known)
        self.source = source
        self.layer = layer
        remote: dict[str, Any] = {"trust_remote_code": True} if trust_remote_code else {}
        try:
            tokenizer = AutoTokenizer.from_pretrained(source, revision=revision, **remote)
            config = AutoConfig.from_pretrained(source, revision=revision, **remote)
            model_class = _model_class(config)
            if pretrained:
                model = model_class.from_pretrained(source, revision=revision, dtype=torch.float32, **remote)
            elif hasattr(model_class, "from_config"):  # AutoModel
                model = model_class.from_config(config, dtype=torch.float32, **remote)
            else:  # an encoder-only class, built in float32 whatever dtype its config was saved with
                model = model_class(config).to(torch.float32)
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
        letters = dict(letter_map if letter_map is not None else (known.config.get("letter_map", {}) if known else {}))
        name = _model_name(source)
        if spaced_letters is None:  # detected: one letter per token, separated by spaces (ProtBert, ProtT5)
            probe = ALPHABETS.get(self.modality, "").translate(str.maketrans(letters))
            spaced_letters = spaced_letters_of(tokenizer, probe)
        if max_length is None and known is not None and known.max_tokens is not None:
            positions = self._positions()  # the checkpoint read may have fewer positions than the preset's
            max_length = min(known.max_tokens, positions) if positions else known.max_tokens
        self.tokenizer = HFTokenizer(tokenizer, name, self._max_tokens(tokenizer, max_length), spaced_letters, letters)
        self._finish_init()

    @staticmethod
    def _source(source: str | None, known: Preset | None) -> str:
        if source is not None:
            return source
        if known is None:
            raise ConfigError("HuggingFaceEncoder needs a `source` (a hub id or a local directory) or a `preset`")
        if known.source is None:
            raise ConfigError(
                f"the weights of preset {known.name!r} are not on the Hugging Face hub: download them from "
                f"{known.config.get('download')}, unpack them, and set `source` to the model's directory"
            )
        return known.source

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

    def _positions(self) -> int | None:
        """The tokens the checkpoint's position embeddings can read, if it has absolute positions."""
        positions = getattr(self.model.config, "max_position_embeddings", None)
        fits = isinstance(positions, int) and positions > self.spec.position_offset
        return positions - self.spec.position_offset if fits else None

    def _max_tokens(self, tokenizer: Any, max_length: int | None) -> int:
        if max_length is not None:
            return max_length
        limit = getattr(tokenizer, "model_max_length", None)
        if isinstance(limit, int) and 0 < limit < _NO_LIMIT:
            return limit
        positions = self._positions()
        if positions is not None:
            return positions
        if self.spec.max_tokens is not None:
            return self.spec.max_tokens
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

    def input_layer(self) -> nn.Module:
        """The token embeddings."""
        return self.model.get_input_embeddings()

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
