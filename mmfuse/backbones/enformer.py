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

from mmfuse.backbones._weights import (
    bin_mask,
    center_crop,
    load_config_and_weights,
    read_config,
    save_config_and_weights,
)
from mmfuse.backbones.base import Backbone, BackboneOutput
from mmfuse.backbones.finetune import LoraOptions
from mmfuse.backbones.presets import Preset, get_preset
from mmfuse.errors import ConfigError
from mmfuse.registry import BACKBONES
from mmfuse.tokenizers import CharTokenizer

__all__ = ["ENFORMER_PRESETS", "Enformer", "load_enformer", "save_enformer"]

_PAPER = "Avsec et al. 2021, Nature Methods 18:1196, https://doi.org/10.1038/s41592-021-01252-x"
#: bins of the official model's transformer (196,608 bp / 128 bp): the only length its
#: TensorFlow-exact positional features (``use_tf_gamma``) are defined for
_TF_GAMMA_BINS = 1536

ENFORMER_PRESETS = {
    p.name: p
    for p in (
        Preset(
            "tiny", None,
            dict(dim=48, depth=1, heads=2, attn_dim_key=16, num_downsamples=5, dim_divisible_by=8,
                 output_heads=dict(human=8), target_length=-1, dropout_rate=0.1),
            embed_dim=96, modality="dna", license="MIT", paper=_PAPER,
        ),
        Preset(
            "enformer_official_rough", "EleutherAI/enformer-official-rough",
            dict(dim=1536, depth=11, heads=8, output_heads=dict(human=5313, mouse=1643), target_length=896,
                 use_tf_gamma=True),
            embed_dim=3072, modality="dna", license="Apache-2.0", paper=_PAPER,
        ),
    )
}  # fmt: skip


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
class Enformer(Backbone):
    """Enformer trunk: one embedding (width ``2 * dim``) per bin of ``2 ** num_downsamples`` bp.

    Input is DNA over ``ACGTN`` (``N`` is an all-zero one-hot), tokenized to indices, or a one-hot
    tensor ``(B, L, 4)`` given as ``{"one_hot": ...}``. Sequences shorter than the longest of the batch
    are padded with uniform (0.25) one-hot columns, as enformer-pytorch does; bins holding only
    padding are masked. Enformer's attention sees those bins, so give equal-length windows (the usual
    TSS-centred design) when exact embeddings matter.

    Args:
        preset: a name from ``ENFORMER_PRESETS`` (``tiny``, ``enformer_official_rough``).
        source: load weights from this hub id or local directory (``config.json`` + weights).
        pretrained: load weights; ``False`` builds the architecture with random weights.
        modality: the modality name this encoder reads.
        freeze: keep the weights fixed and BatchNorm statistics frozen (eval mode).
        train_last_layers: train only the last N transformer layers (and what follows them).
        lora: adapt with LoRA (default targets: the attention projections ``to_q``, ``to_k``,
            ``to_v``, ``to_out``); only the LoRA matrices train.
        gradient_checkpointing: recompute layer activations in the backward pass (less memory).
        crop_bins: keep only this many central bins (Enformer's ``target_length``; 896 for the
            official model on 196,608 bp). ``None`` keeps every bin.
        use_tf_gamma: TensorFlow-exact positional features of the official port; they exist only for
            196,608 bp inputs. ``None`` takes the preset's value.
        max_length: longest accepted sequence in bp (``None``: unlimited).

    Examples:
        >>> backbone = Enformer("tiny")
        >>> out = backbone(backbone.tokenizer(["ACGT" * 64]))  # 256 bp, 32 bp bins
        >>> tuple(out.embeddings.shape)
        (1, 8, 96)
    """

    presets = ENFORMER_PRESETS
    padding_invariant = False
    lora_targets = ("to_q", "to_k", "to_v", "to_out")

    def __init__(
        self,
        preset: str = "enformer_official_rough",
        source: str | None = None,
        pretrained: bool = True,
        modality: str = "dna",
        freeze: bool = False,
        train_last_layers: int | None = None,
        lora: LoraOptions | None = None,
        gradient_checkpointing: bool = False,
        crop_bins: int | None = None,
        use_tf_gamma: bool | None = None,
        max_length: int | None = None,
    ) -> None:
        super().__init__(modality, freeze, train_last_layers, lora, gradient_checkpointing)
        from enformer_pytorch.modeling_enformer import Attention

        record = get_preset(ENFORMER_PRESETS, preset, "Enformer")
        self.preset = record
        src = source or record.source
        revision = record.revision if source is None else None
        if pretrained and src is not None:
            model = load_enformer(src, revision)
            self.weights_source = src
        elif source is not None:  # the architecture of a given checkpoint, without its weights
            model = _build(read_config(source))
        else:
            model = _build(record.config)
        model.set_target_length(-1)  # cropping is done here, on embeddings and mask alike
        _fast_attention_pools(model)
        model._heads = nn.ModuleDict()  # the tracks heads are unused; unused parameters break DDP
        tf_gamma = record.config.get("use_tf_gamma", False) if use_tf_gamma is None else use_tf_gamma
        for module in model.modules():
            if isinstance(module, Attention):
                module.use_tf_gamma = tf_gamma
        self.use_tf_gamma = tf_gamma
        self.model = model
        self.crop_bins = crop_bins
        self.bin_size = 2**model.config.num_downsamples
        self.tokenizer = CharTokenizer("Enformer", "ACGTN", [0, 1, 2, 3, 4], pad_id=-1, max_tokens=max_length)
        self._finish_init()

    @property
    def embed_dim(self) -> int:
        return 2 * int(self.model.config.dim)

    def blocks(self) -> list[nn.Module]:
        """The transformer layers (attention + feed-forward), input side first."""
        return list(self.model.transformer)

    def encode(self, batch: Mapping[str, Tensor]) -> BackboneOutput:
        from enformer_pytorch.data import seq_indices_to_one_hot

        if "one_hot" in batch:
            one_hot = batch["one_hot"].float()
            base_mask = batch.get("attention_mask")
            if base_mask is None:
                base_mask = torch.ones(one_hot.shape[:2], dtype=torch.bool, device=one_hot.device)
        else:
            one_hot = seq_indices_to_one_hot(batch["input_ids"])
            base_mask = batch["attention_mask"]
        length = one_hot.shape[1]
        n_bins = -(-length // self.bin_size)
        if self.use_tf_gamma and n_bins != _TF_GAMMA_BINS:
            raise ConfigError(
                f"Enformer with use_tf_gamma=True (the official port's exact positional features) needs "
                f"{_TF_GAMMA_BINS * self.bin_size:,} bp inputs; this batch is {length:,} bp. Give "
                f"windows of that length or set use_tf_gamma: false."
            )
        embeddings = self.model(one_hot, return_only_embeddings=True)
        mask = bin_mask(base_mask, self.bin_size)
        if self.crop_bins is not None:
            embeddings = center_crop(embeddings, self.crop_bins, "Enformer", self.bin_size)
            mask = center_crop(mask, self.crop_bins, "Enformer", self.bin_size)
        return BackboneOutput(embeddings, mask)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", bin_size={self.bin_size}, crop_bins={self.crop_bins}"
