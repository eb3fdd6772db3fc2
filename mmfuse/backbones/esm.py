"""ESM2 protein language models (Lin et al., Science 2023) through ``transformers.EsmModel``."""

from __future__ import annotations

from typing import Any

from mmfuse.backbones._hf import EsmFamilyBackbone
from mmfuse.backbones.presets import Preset, preset_table
from mmfuse.registry import BACKBONES
from mmfuse.tokenizers import ESM_RESIDUES, ESM_VOCAB, CharTokenizer

__all__ = ["ESM2", "ESM2_PRESETS"]

_PAPER = "Lin et al. 2023, Science 379:1123, https://doi.org/10.1126/science.ade2574"
_COMMON = dict(
    vocab_size=33,
    pad_token_id=1,
    mask_token_id=32,
    position_embedding_type="rotary",
    token_dropout=True,
    emb_layer_norm_before=False,
    layer_norm_eps=1e-5,
    hidden_dropout_prob=0.0,
    attention_probs_dropout_prob=0.0,
    max_position_embeddings=1026,
)


def _esm2(name: str, width: int, layers: int, heads: int, source: str | None) -> Preset:
    config = dict(_COMMON, hidden_size=width, num_hidden_layers=layers, num_attention_heads=heads,
                  intermediate_size=4 * width)  # fmt: skip
    return Preset(name=name, source=source, config=config, embed_dim=width, max_tokens=1024, modality="protein",
                  license="MIT", paper=_PAPER)  # fmt: skip


#: Named ESM2 checkpoints; ``tiny`` is a randomly initialised 2-layer model for tests and the quickstart.
ESM2_PRESETS = preset_table(
    _esm2("tiny", 32, 2, 4, None),
    _esm2("esm2_t6_8M_UR50D", 320, 6, 20, "facebook/esm2_t6_8M_UR50D"),
    _esm2("esm2_t12_35M_UR50D", 480, 12, 20, "facebook/esm2_t12_35M_UR50D"),
    _esm2("esm2_t30_150M_UR50D", 640, 30, 20, "facebook/esm2_t30_150M_UR50D"),
    _esm2("esm2_t33_650M_UR50D", 1280, 33, 20, "facebook/esm2_t33_650M_UR50D"),
)


@BACKBONES.register()
class ESM2(EsmFamilyBackbone):
    """ESM2 protein encoder: one embedding per residue, plus ``<cls>`` and ``<eos>``.

    Args:
        preset: a name from ``ESM2_PRESETS`` (``tiny``, ``esm2_t6_8M_UR50D`` … ``esm2_t33_650M_UR50D``);
            ``None``: ``esm2_t6_8M_UR50D``.
        source: load weights from this hub id or local directory instead of the preset's hub id.
        pretrained: load weights; ``False`` builds the architecture (of ``source`` if given, else of
            the preset) with random weights. Presets without weights (``tiny``) are always random.
        modality: the modality name this encoder reads (``None``: ``protein``).
        finetune: which weights train (:class:`~mmfuse.backbones.finetune.FineTuning`; LoRA's default
            targets: ``query``, ``value``).
        max_length: longest accepted protein, in residues (default: the model's 1,022).

    Examples:
        >>> backbone = ESM2("tiny")
        >>> out = backbone(backbone.tokenizer(["MKTAYIAK", "MV"]))
        >>> tuple(out.embeddings.shape), out.mask.sum(1).tolist()
        ((2, 10, 32), [10, 4])
    """

    cls_token = True
    presets = ESM2_PRESETS
    default_preset = "esm2_t6_8M_UR50D"
    default_modality = "protein"
    vocab = ESM_VOCAB

    def _model_classes(self) -> tuple[Any, Any]:
        from transformers import EsmConfig, EsmModel

        return EsmModel, EsmConfig

    def _make_tokenizer(self, max_length: int | None) -> CharTokenizer:
        index = {tok: i for i, tok in enumerate(ESM_VOCAB)}
        max_tokens = max_length + 2 if max_length is not None else self.preset.max_tokens
        return CharTokenizer(
            "ESM2", ESM_RESIDUES, [index[c] for c in ESM_RESIDUES], pad_id=index["<pad>"],
            max_tokens=max_tokens, bos_id=index["<cls>"], eos_id=index["<eos>"], strip_trailing="*",
        )  # fmt: skip
