"""Fusion by concatenation: of pooled vectors (late fusion) or of token sequences (early fusion)."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn

from mmfuse.adapters.base import Features, FusionAdapter
from mmfuse.adapters.layers import TransformerBlock, projection
from mmfuse.adapters.pooling import Pooling, PoolingKind
from mmfuse.registry import ADAPTERS

__all__ = ["ConcatFusion", "TokenConcatFusion"]


@ADAPTERS.register()
class ConcatFusion(FusionAdapter):
    """Projects each modality to ``hidden_dim``, pools its tokens and concatenates modalities.

    ``z = [pool(W_m LN(x_m)) for m in sorted modalities]``; an absent modality contributes zeros.
    Output: ``(B, hidden_dim · n_modalities)``. This is ModelGenerator's concat aggregation and
    IsoFormer's concatenation baseline.

    Args:
        input_dims: embedding width of each modality (given by the task).
        hidden_dim: common width each modality is projected to.
        dropout: dropout on the fused vector.
        layer_norm: normalise each modality's tokens before projecting (embeddings of different
            backbones have very different scales).
        pooling: how each modality's tokens are pooled: ``mean``, ``max``, ``cls`` or ``attention``.

    Examples:
        >>> import torch
        >>> fuse = ConcatFusion({"dna": 8, "protein": 4}, hidden_dim=16)
        >>> x = {"dna": (torch.randn(2, 5, 8), torch.ones(2, 5, dtype=torch.bool)),
        ...      "protein": (torch.randn(2, 3, 4), torch.ones(2, 3, dtype=torch.bool))}
        >>> fuse(x).shape
        torch.Size([2, 32])
    """

    def __init__(
        self,
        input_dims: Mapping[str, int],
        hidden_dim: int = 256,
        dropout: float = 0.0,
        layer_norm: bool = True,
        pooling: PoolingKind = "mean",
    ) -> None:
        super().__init__(input_dims)
        self.hidden_dim = hidden_dim
        self.projections = nn.ModuleDict({m: projection(d, hidden_dim, layer_norm) for m, d in self.input_dims.items()})
        self.pools = nn.ModuleDict({m: Pooling(pooling, hidden_dim) for m in self.modalities})
        self.dropout = nn.Dropout(dropout)

    @property
    def output_dim(self) -> int:
        return self.hidden_dim * len(self.modalities)

    def fuse(self, features: Features) -> Tensor:
        pooled = [self.pools[m](self.projections[m](features[m][0]), features[m][1]) for m in self.modalities]
        return self.dropout(torch.cat(pooled, dim=-1))


@ADAPTERS.register()
class TokenConcatFusion(FusionAdapter):
    """Early fusion: every modality's tokens in one sequence, attended across by a small transformer.

    Each modality's tokens are projected to ``hidden_dim`` and tagged with a learned modality
    embedding ``e_m``; the sequences are concatenated along the length
    ``T = [W_1 x_1 + e_1; …; W_M x_M + e_M]`` (masks likewise), passed through ``num_layers``
    pre-norm transformer blocks (self-attention across all modalities' tokens, padding and absent
    modalities masked), normalised and pooled. With ``pooling: cls`` a learned fusion token is
    prepended and read out, as in BERT. Output: ``(B, hidden_dim)``.

    Args:
        input_dims: embedding width of each modality (given by the task).
        hidden_dim: token width after projection.
        num_layers: transformer blocks over the joint sequence (0: project, tag and pool only).
        num_heads: attention heads.
        head_dim: width of each head.
        ff_mult: feed-forward expansion of each block.
        dropout: dropout in the blocks and on the output.
        pooling: ``mean``, ``max``, ``cls`` (a learned fusion token) or ``attention``.
    """

    def __init__(
        self,
        input_dims: Mapping[str, int],
        hidden_dim: int = 256,
        num_layers: int = 1,
        num_heads: int = 4,
        head_dim: int = 64,
        ff_mult: int = 4,
        dropout: float = 0.0,
        pooling: PoolingKind = "mean",
    ) -> None:
        super().__init__(input_dims)
        self.hidden_dim = hidden_dim
        self.projections = nn.ModuleDict({m: projection(d, hidden_dim, True) for m, d in self.input_dims.items()})
        self.modality_embeddings = nn.ParameterDict(
            {m: nn.Parameter(torch.randn(hidden_dim) * 0.02) for m in self.modalities}
        )
        self.cls = nn.Parameter(torch.randn(1, 1, hidden_dim) * 0.02) if pooling == "cls" else None
        self.blocks = nn.ModuleList(
            TransformerBlock(hidden_dim, num_heads, head_dim, ff_mult, dropout) for _ in range(num_layers)
        )
        self.norm = nn.LayerNorm(hidden_dim)
        self.pool = Pooling(pooling, hidden_dim)
        self.dropout = nn.Dropout(dropout)

    @property
    def output_dim(self) -> int:
        return self.hidden_dim

    def fuse(self, features: Features) -> Tensor:
        tokens = [self.projections[m](features[m][0]) + self.modality_embeddings[m] for m in self.modalities]
        masks = [features[m][1] for m in self.modalities]
        if self.cls is not None:
            batch = tokens[0].shape[0]
            tokens.insert(0, self.cls.expand(batch, -1, -1))
            masks.insert(0, torch.ones(batch, 1, dtype=torch.bool, device=masks[0].device))
        x, mask = torch.cat(tokens, dim=1), torch.cat(masks, dim=1)
        for block in self.blocks:
            x = block(x, mask)
        return self.dropout(self.pool(self.norm(x), mask))
