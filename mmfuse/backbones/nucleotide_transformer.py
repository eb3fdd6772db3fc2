"""Nucleotide Transformer v2 DNA/RNA encoders (Dalla-Torre et al., Nature Methods 2024)."""

from __future__ import annotations

from typing import Any

from mmfuse.backbones._hf import EsmFamilyBackbone
from mmfuse.backbones.presets import Preset, preset_table
from mmfuse.registry import BACKBONES
from mmfuse.tokenizers import NT_VOCAB, KmerTokenizer

__all__ = ["NT_PRESETS", "NucleotideTransformer"]

_PAPER = "Dalla-Torre et al. 2024, Nature Methods 22:287, https://doi.org/10.1038/s41592-024-02523-z"
_LICENSE = "CC BY-NC-SA 4.0"
_COMMON = dict(
    vocab_size=len(NT_VOCAB),
    pad_token_id=1,
    mask_token_id=2,
    position_embedding_type="rotary",
    token_dropout=False,
    emb_layer_norm_before=False,
    layer_norm_eps=1e-12,
    hidden_dropout_prob=0.0,
    attention_probs_dropout_prob=0.0,
    max_position_embeddings=2050,
    add_bias_fnn=False,
    tie_word_embeddings=False,
)


def _nt(name: str, width: int, layers: int, heads: int, source: str | None) -> Preset:
    config = dict(_COMMON, hidden_size=width, num_hidden_layers=layers, num_attention_heads=heads,
                  intermediate_size=4 * width)  # fmt: skip
    return Preset(name=name, source=source, config=config, embed_dim=width, max_tokens=2048, modality="dna",
                  license=_LICENSE, paper=_PAPER)  # fmt: skip


#: Named NT v2 checkpoints; ``tiny`` is a randomly initialised 2-layer model for tests and the quickstart.
NT_PRESETS = preset_table(
    _nt("tiny", 32, 2, 4, None),
    _nt("nt_v2_50m_multi_species", 512, 12, 16, "InstaDeepAI/nucleotide-transformer-v2-50m-multi-species"),
    _nt("nt_v2_100m_multi_species", 512, 22, 16, "InstaDeepAI/nucleotide-transformer-v2-100m-multi-species"),
    _nt("nt_v2_250m_multi_species", 768, 24, 16, "InstaDeepAI/nucleotide-transformer-v2-250m-multi-species"),
    _nt("nt_v2_500m_multi_species", 1024, 29, 16, "InstaDeepAI/nucleotide-transformer-v2-500m-multi-species"),
)


@BACKBONES.register()
class NucleotideTransformer(EsmFamilyBackbone):
    """Nucleotide Transformer v2: one embedding per 6-mer token, plus ``<cls>``.

    RNA is read as DNA (``U`` becomes ``T``), as IsoFormer does for transcripts. The offline tokenizer
    cuts non-overlapping 6-mers and falls back to single nucleotides, like the hub tokenizer.

    Args:
        preset: a name from ``NT_PRESETS`` (``tiny``, ``nt_v2_50m_multi_species`` …); ``None``:
            ``nt_v2_50m_multi_species``.
        source: load weights from this hub id or local directory instead of the preset's hub id. The
            hub's custom code is never run: the architecture is rebuilt here.
        pretrained: load weights; ``False`` builds the architecture (of ``source`` if given, else of
            the preset) with random weights. Presets without weights (``tiny``) are always random.
        modality: the modality name this encoder reads (``dna`` or ``rna``; ``None``: ``rna``).
        finetune: which weights train (:class:`~mmfuse.backbones.finetune.FineTuning`; LoRA's default
            targets: ``query``, ``value``).
        max_length: longest accepted input, in tokens including ``<cls>`` (default 2,048, ~12 kb).

    Examples:
        >>> backbone = NucleotideTransformer("tiny", modality="rna")
        >>> out = backbone(backbone.tokenizer(["AUGGCCAUUGUAAUGGGCCGC"]))
        >>> tuple(out.embeddings.shape)  # <cls>, three 6-mers, three single nucleotides
        (1, 7, 32)
    """

    cls_token = True
    presets = NT_PRESETS
    default_preset = "nt_v2_50m_multi_species"
    default_modality = "rna"
    vocab = NT_VOCAB

    def _model_classes(self) -> tuple[Any, Any]:
        from mmfuse.backbones._ntv2_model import NTv2Config, NTv2Model

        return NTv2Model, NTv2Config

    def _make_tokenizer(self, max_length: int | None) -> KmerTokenizer:
        return KmerTokenizer("NucleotideTransformer", 6, max_length or self.preset.max_tokens)
