"""Enformer DNA encoder (Avsec et al., Nature Methods 2021) through ``enformer-pytorch``.

Loading does not go through ``Enformer.from_pretrained``: enformer-pytorch 0.8.11 subclasses
``transformers.PreTrainedModel`` in a way transformers 5 cannot save or load (its trunk holds every
layer twice, under ``stem.*`` and ``_trunk.*``). Instead the checkpoint's ``config.json`` builds the
model and its state dict (safetensors, or a ``.bin`` read with ``weights_only=True``) is loaded
tensor by tensor, accepting either name of each shared tensor. :func:`save_enformer` writes the same
layout.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from mmfuse.backbones._dna_trunk import DnaTrunkBackbone
from mmfuse.backbones._weights import load_config_and_weights, save_config_and_weights
from mmfuse.backbones.finetune import FineTuning
from mmfuse.backbones.presets import Preset, preset_table
from mmfuse.errors import ConfigError
from mmfuse.registry import BACKBONES

__all__ = ["ENFORMER_PRESETS", "Enformer", "load_enformer", "save_enformer"]

_PAPER = "Avsec et al. 2021, Nature Methods 18:1196, https://doi.org/10.1038/s41592-021-01252-x"
#: bins of the official model's transformer (196,608 bp / 128 bp): the only length its
#: TensorFlow-exact positional features (``use_tf_gamma``) are defined for
_TF_GAMMA_BINS = 1536

ENFORMER_PRESETS = preset_table(
    Preset(
        name="tiny", source=None,
        config=dict(dim=48, depth=1, heads=2, attn_dim_key=16, num_downsamples=5, dim_divisible_by=8,
             output_heads=dict(human=8), target_length=-1, dropout_rate=0.1),
        embed_dim=96, modality="dna", license="MIT", paper=_PAPER,
    ),
    Preset(
        name="enformer_official_rough", source="EleutherAI/enformer-official-rough",
        config=dict(dim=1536, depth=11, heads=8, output_heads=dict(human=5313, mouse=1643), target_length=896,
             use_tf_gamma=True),
        embed_dim=3072, modality="dna", license="Apache-2.0", paper=_PAPER,
    ),
)  # fmt: skip


def load_enformer(source: str, revision: str | None = None) -> nn.Module:
    """An ``enformer_pytorch.Enformer`` with weights from a hub id or a local directory."""
    return load_config_and_weights(source, _build, "Enformer", revision)


def _build(config: Mapping[str, Any]) -> nn.Module:
    from enformer_pytorch import Enformer as _Enformer
    from enformer_pytorch.config_enformer import EnformerConfig

    return _Enformer(EnformerConfig(**config))


def _pool_pairs(self: nn.Module, x: Tensor) -> Tensor:
    """enformer-pytorch's ``AttentionPool.forward`` for pools of two, without its softmax over a last axis
    of size 2 (slow): ``softmax([a, b])[0] = sigmoid(a - b)``, and the 1×1 convolution of the pooled
    view is a 1×1 convolution of the sequence. Same values and gradients (to float rounding),
    about 2.7× faster on CPU; odd lengths and other pool sizes take the library's code."""
    from enformer_pytorch.modeling_enformer import AttentionPool

    b, d, n = x.shape
    if n % 2 or self.pool_size != 2:
        return AttentionPool.forward(self, x)
    logits = nn.functional.conv1d(x, self.to_attn_logits.weight.squeeze(-1))
    pairs, scores = x.view(b, d, n // 2, 2), logits.view(b, d, n // 2, 2)
    first = torch.sigmoid(scores[..., 0] - scores[..., 1])
    return pairs[..., 1] + first * (pairs[..., 0] - pairs[..., 1])


def _fast_attention_pools(model: nn.Module) -> None:
    from enformer_pytorch.modeling_enformer import AttentionPool

    for module in model.modules():
        if isinstance(module, AttentionPool):
            # parameters and state-dict keys unchanged; a partial of a module-level function pickles
            module.forward = functools.partial(_pool_pairs, module)


#: writes an ``enformer_pytorch.Enformer`` as ``config.json`` + ``model.safetensors``
save_enformer = save_config_and_weights


@BACKBONES.register()
class Enformer(DnaTrunkBackbone):
    """Enformer trunk: one embedding (width ``2 * dim``) per bin of ``2 ** num_downsamples`` bp.

    Input is DNA over ``ACGTN`` (``N`` is an all-zero one-hot), tokenized to indices, or a one-hot
    tensor ``(B, L, 4)`` given as ``{"one_hot": ...}``. Sequences shorter than the longest of the batch
    are padded with uniform (0.25) one-hot columns, as enformer-pytorch does; bins holding only
    padding are masked. Enformer's attention sees those bins, so give equal-length windows (the usual
    TSS-centred design) when exact embeddings matter.

    Args:
        preset: a name from ``ENFORMER_PRESETS`` (``tiny``, ``enformer_official_rough``); ``None``:
            ``enformer_official_rough``.
        source: load weights from this hub id or local directory (``config.json`` + weights).
        pretrained: load weights; ``False`` builds the architecture (of ``source`` if given, else of
            the preset) with random weights.
        modality: the modality name this encoder reads (``None``: ``dna``).
        finetune: which weights train (:class:`~mmfuse.backbones.finetune.FineTuning`; ``freeze`` also
            fixes the BatchNorm statistics; LoRA's default targets: the attention projections
            ``to_q``, ``to_k``, ``to_v``, ``to_out``).
        crop_bins: keep only this many central bins (Enformer's ``target_length``; 896 for the
            official model on 196,608 bp). ``None`` keeps every bin.
        use_tf_gamma: TensorFlow-exact positional features of the official port; they exist only for
            196,608 bp inputs. ``None`` takes the preset's value.
        max_length: longest accepted sequence in bp (``None``: 393,216, twice the official 196,608 bp
            window; longer sequences are refused naming the record, before training).

    Examples:
        >>> backbone = Enformer("tiny")
        >>> out = backbone(backbone.tokenizer(["ACGT" * 64]))  # 256 bp, 32 bp bins
        >>> tuple(out.embeddings.shape)
        (1, 8, 96)
    """

    default_max_length = 2 * 196_608

    presets = ENFORMER_PRESETS
    default_preset = "enformer_official_rough"

    def __init__(
        self,
        preset: str | None = None,
        source: str | None = None,
        pretrained: bool = True,
        modality: str | None = None,
        finetune: FineTuning | None = None,
        crop_bins: int | None = None,
        use_tf_gamma: bool | None = None,
        max_length: int | None = None,
    ) -> None:
        super().__init__(preset, source, pretrained, modality, finetune, crop_bins, max_length)
        from enformer_pytorch.modeling_enformer import Attention

        # a flag of the attention modules, outside the weights the fine-tuning options act on
        tf_gamma = self.preset.config.get("use_tf_gamma", False) if use_tf_gamma is None else use_tf_gamma
        for module in self.model.modules():
            if isinstance(module, Attention):
                module.use_tf_gamma = tf_gamma
        self.use_tf_gamma = tf_gamma

    def _from_config(self, config: Mapping[str, Any]) -> nn.Module:
        return _build(config)

    def _prepare(self) -> None:
        self.model.set_target_length(-1)  # cropping is done here, on embeddings and mask alike
        _fast_attention_pools(self.model)
        self.model.add_heads()  # no tracks heads: they are unused, and unused parameters break DDP
        self.bin_size = 2**self.model.config.num_downsamples

    @property
    def embed_dim(self) -> int:
        return 2 * int(self.model.config.dim)

    def _ids_to_one_hot(self, ids: Tensor) -> Tensor:
        from enformer_pytorch.data import seq_indices_to_one_hot

        return seq_indices_to_one_hot(ids)

    def _embed(self, one_hot: Tensor) -> Tensor:
        length = one_hot.shape[1]
        if self.use_tf_gamma and -(-length // self.bin_size) != _TF_GAMMA_BINS:
            raise ConfigError(
                f"Enformer with use_tf_gamma=True (the official port's exact positional features) needs "
                f"{_TF_GAMMA_BINS * self.bin_size:,} bp inputs; this batch is {length:,} bp. Give "
                f"windows of that length or set use_tf_gamma: false."
            )
        return self.model(one_hot, return_only_embeddings=True)
