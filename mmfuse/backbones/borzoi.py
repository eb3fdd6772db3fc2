"""Borzoi DNA encoder (Linder et al., Nature Genetics 2025) through ``borzoi-pytorch``.

``borzoi-pytorch`` pins ``transformers<5`` in every release, yet 0.5.1's code builds and runs with
transformers 5, so it is installed without its dependencies (``pip install --no-deps
borzoi-pytorch==0.5.1``; ``einops`` and ``intervaltree``, which it imports, are mmfuse dependencies).
As for Enformer, weights are not loaded with ``from_pretrained``: the checkpoint's ``config.json``
builds the model and its state dict (safetensors, or a ``.bin`` read with ``weights_only=True``) is
loaded into it. :func:`save_borzoi` writes the same layout.

The embeddings are those of the library's ``get_embs_after_crop``: the U-Net's output at 32 bp
resolution (width ``dim``, 1536 for the official replicates), before the 1920-wide
``final_joined_convs`` and the track heads, which are dropped (unused parameters break DDP).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mmfuse.backbones._dna_trunk import DnaTrunkBackbone
from mmfuse.backbones._weights import load_config_and_weights, read_config, save_config_and_weights
from mmfuse.backbones.presets import Preset, preset_table
from mmfuse.errors import ConfigError
from mmfuse.registry import BACKBONES

__all__ = ["BORZOI_PRESETS", "Borzoi", "load_borzoi", "save_borzoi"]

_PAPER = "Linder et al. 2025, Nature Genetics 57:949, https://doi.org/10.1038/s41588-024-02053-6"
_INSTALL = 'pip install --no-deps "borzoi-pytorch==0.5.1"'
#: bp per output bin: the U-Net returns to the resolution of its fifth pooling
BIN_SIZE = 32
#: total downsampling before the transformer; the U-Net's skip connections need inputs that are
#: multiples of it, so shorter batches are padded (with all-zero columns) up to the next multiple
_DOWNSAMPLING = 128
#: modules of the checkpoint past the embeddings (track heads), dropped after loading
_HEADS = ("final_joined_convs", "human_head", "mouse_head")


def _replicate(i: int) -> Preset:
    return Preset(
        name=f"borzoi_replicate_{i}", source=f"johahi/borzoi-replicate-{i}",
        config=dict(dim=1536, depth=8, heads=8, attn_dim_key=64, attn_dim_value=192, bins_to_return=6144),
        embed_dim=1536, max_tokens=524_288, modality="dna", license="Apache-2.0", paper=_PAPER,
    )  # fmt: skip


BORZOI_PRESETS = preset_table(
    Preset(
        name="tiny", source=None,
        config=dict(dim=32, depth=1, heads=2, attn_dim_key=8, attn_dim_value=16, bins_to_return=4,
             enable_human_head=False),
        embed_dim=32, modality="dna", license="Apache-2.0", paper=_PAPER,
    ),
    *(_replicate(i) for i in range(4)),  # human, 524,288 bp in, 32 bp bins
)  # fmt: skip


def _import_borzoi():
    try:
        from borzoi_pytorch import Borzoi as _Borzoi
        from borzoi_pytorch.config_borzoi import BorzoiConfig
    except ImportError as exc:
        raise ConfigError(
            f"the Borzoi backbone needs borzoi-pytorch, installed without its dependencies (it pins "
            f"transformers<5, which mmfuse does not use): {_INSTALL}  ({type(exc).__name__}: {exc})"
        ) from exc
    return _Borzoi, BorzoiConfig


def _build(config: Mapping[str, Any], what: str = "this checkpoint") -> nn.Module:
    _Borzoi, BorzoiConfig = _import_borzoi()
    return _Borzoi(BorzoiConfig(**_no_flashzoi(config, what)))


def _no_flashzoi(config: Mapping[str, Any], what: str) -> Mapping[str, Any]:
    if config.get("flashed"):
        raise ConfigError(
            f"{what} is a Flashzoi checkpoint: its attention needs flash-attn (CUDA only), which mmfuse "
            f"does not support; use a Borzoi replicate (preset borzoi_replicate_0 … _3)"
        )
    return config


def load_borzoi(source: str, revision: str | None = None) -> nn.Module:
    """A ``borzoi_pytorch.Borzoi`` with weights from a hub id or a local directory."""
    return load_config_and_weights(source, lambda config: _build(config, source), "Borzoi", revision)


#: writes a ``borzoi_pytorch.Borzoi`` as ``config.json`` + ``model.safetensors``
save_borzoi = save_config_and_weights


@BACKBONES.register()
class Borzoi(DnaTrunkBackbone):
    """Borzoi trunk: one embedding (width ``dim``) per 32 bp bin, before the track heads.

    Input is DNA over ``ACGTN`` (``N`` is an all-zero one-hot), tokenized to indices, or a one-hot
    tensor ``(B, L, 4)`` given as ``{"one_hot": ...}`` (the same layout as Enformer's; it is turned
    channel-first, ``(B, 4, L)``, for borzoi-pytorch). Padding, both between sequences of a batch and
    up to the next multiple of 128 bp the U-Net needs, is all-zero like ``N``; bins past the
    longest sequence are dropped, so a batch of longest length ``L`` gives ``ceil(L / 32)`` bins, and
    bins holding only padding are masked. Convolutions, BatchNorm and attention see the padding, so
    give equal-length windows (the official models read 524,288 bp) when exact embeddings matter.

    Args:
        preset: a name from ``BORZOI_PRESETS`` (``tiny``, ``borzoi_replicate_0`` … ``_3``); ``None``:
            ``borzoi_replicate_0``.
        source: load weights from this hub id or local directory (``config.json`` + weights).
        pretrained: load weights; ``False`` builds the architecture (of ``source`` if given, else of
            the preset) with random weights.
        modality: the modality name this encoder reads (``None``: ``dna``).
        finetune: which weights train (:class:`~mmfuse.backbones.finetune.FineTuning`; ``freeze`` also
            fixes the BatchNorm statistics; ``train_last_layers`` trains the last N transformer layers
            and the upsampling U-Net after them; LoRA's default targets: the attention projections
            ``to_q``, ``to_k``, ``to_v``, ``to_out``).
        crop_bins: keep only this many central bins (Borzoi's ``bins_to_return``: 6,144 of the 16,384
            bins of a 524,288 bp input for the official models). ``None`` keeps every bin.
        max_length: longest accepted sequence in bp (``None``: 1,048,576, twice the official 524,288 bp
            window; longer sequences are refused naming the record, before training).

    Examples:
        >>> backbone = Borzoi("tiny")
        >>> out = backbone(backbone.tokenizer(["ACGT" * 64]))  # 256 bp, 32 bp bins
        >>> tuple(out.embeddings.shape)
        (1, 8, 32)
    """

    presets = BORZOI_PRESETS
    default_preset = "borzoi_replicate_0"
    bin_size = BIN_SIZE
    default_max_length = 2 * 524_288

    def _load_pretrained(self, source: str, revision: str | None) -> nn.Module:
        return load_borzoi(source, revision)

    def _read_config(self, source: str, revision: str | None) -> Mapping[str, Any]:
        return _no_flashzoi(read_config(source, revision), source)

    def _from_config(self, config: Mapping[str, Any]) -> nn.Module:
        return _build(config, f"preset {self.preset.name}")

    def _prepare(self) -> None:
        from borzoi_pytorch.pytorch_borzoi_transformer import Attention

        self.model.crop.target_length = -1  # cropping is done here, on embeddings and mask alike
        for name in _HEADS:  # the tracks heads are unused, and unused parameters break DDP
            if hasattr(self.model, name):
                delattr(self.model, name)
        self._attention = [m for m in self.model.modules() if isinstance(m, Attention)]

    @property
    def embed_dim(self) -> int:
        return int(self.model.config.dim)

    def _ids_to_one_hot(self, ids: Tensor) -> Tensor:
        # N (4) and padding (-1) match no base: all-zero columns, as Borzoi encodes N
        return (ids[..., None] == torch.arange(4, device=ids.device)).float()

    def _embed(self, one_hot: Tensor) -> Tensor:
        length = one_hot.shape[1]
        x = F.pad(one_hot.transpose(1, 2), (0, -length % _DOWNSAMPLING))  # (B, 4, L')
        self._refresh_positions(x)
        n_bins = -(-length // self.bin_size)
        return self.model.get_embs_after_crop(x).transpose(1, 2)[:, :n_bins]  # (B, bins, D)

    def _refresh_positions(self, x: Tensor) -> None:
        """Drops the attention layers' cached positional features where they no longer fit ``x``.

        borzoi-pytorch computes them on its first call and keeps them; recomputing them at every step
        would be wasted work, so they are dropped only for another length or device, or when they were
        made under inference mode (validation) and training needs them for backward.
        """
        rows = 2 * (x.shape[-1] // _DOWNSAMPLING) - 1  # one per relative distance in the transformer
        training = not torch.is_inference_mode_enabled()
        for attention in self._attention:
            cached = attention.positions
            if cached is not None and (
                cached.shape[0] != rows or cached.device != x.device or (training and cached.is_inference())
            ):
                attention.positions = None
