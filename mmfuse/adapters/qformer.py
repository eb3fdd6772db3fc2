"""A Q-Former (BLIP-2): learned queries that talk among themselves and read the modalities' tokens."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

import torch
from torch import Tensor, nn

from mmfuse.adapters.base import Features, FusionAdapter
from mmfuse.adapters.layers import CrossAttention, FeedForward, projection
from mmfuse.adapters.pooling import Pooling, PoolingKind
from mmfuse.errors import ConfigError
from mmfuse.registry import ADAPTERS

__all__ = ["QFormer"]


class _QFormerLayer(nn.Module):
    """Self-attention among the queries, cross-attention to the tokens (in some layers), feed-forward."""

    def __init__(self, dim: int, num_heads: int, head_dim: int, ff_mult: int, dropout: float, cross: bool) -> None:
        super().__init__()
        self.norm_self = nn.LayerNorm(dim)
        self.self_attn = CrossAttention(dim, dim, num_heads, head_dim, dropout)
        self.norm_q = nn.LayerNorm(dim) if cross else None
        self.cross_attn = CrossAttention(dim, dim, num_heads, head_dim, dropout) if cross else None
        self.norm_ff = nn.LayerNorm(dim)
        self.ff = FeedForward(dim, ff_mult, dropout)

    def forward(self, q: Tensor, query_mask: Tensor, context: Tensor, context_mask: Tensor) -> Tensor:
        h = self.norm_self(q)
        q = q + self.self_attn(h, h, query_mask)
        if self.cross_attn is not None and self.norm_q is not None:
            q = q + self.cross_attn(self.norm_q(q), context, context_mask)
        return q + self.ff(self.norm_ff(q))


@ADAPTERS.register()
class QFormer(FusionAdapter):
    """BLIP-2's querying transformer: ``num_queries`` learned queries, in ``num_layers`` pre-norm layers of
    self-attention among the queries, cross-attention to every modality's tokens (every
    ``cross_attention_every``-th layer, from the first) and a feed-forward, then pooled.

    The modalities' tokens are projected to ``dim``, tagged with a learned modality embedding and joined
    into one context the queries read (padding and absent modalities masked). Unlike the
    :class:`~mmfuse.adapters.PerceiverResampler`, whose latents only cross-attend, the queries exchange
    what they read between cross-attention layers. Output: ``(B, dim)``, or ``(B, num_queries · dim)`` with
    ``pooling: none`` (every query kept, in order).

    Args:
        input_dims: embedding width of each modality (given by the task).
        dim: width of the queries and of the projected tokens.
        num_queries: learned queries.
        num_layers: layers.
        cross_attention_every: a cross-attention in every this many layers (BLIP-2: 2), from the first.
        num_heads: attention heads.
        head_dim: width of each head.
        ff_mult: feed-forward expansion.
        dropout: dropout on attention weights, in the feed-forwards and on the output.
        pooling: how the queries are pooled: ``mean``, ``max``, ``cls`` (the first query), ``attention``,
            or ``none`` (concatenated).

    Examples:
        >>> import torch
        >>> fuse = QFormer({"dna": 8, "protein": 4}, dim=16, num_queries=4, num_heads=2, head_dim=8)
        >>> x = {"dna": (torch.randn(2, 5, 8), torch.ones(2, 5, dtype=torch.bool)),
        ...      "protein": (torch.randn(2, 3, 4), torch.ones(2, 3, dtype=torch.bool))}
        >>> fuse(x).shape
        torch.Size([2, 16])
    """

    def __init__(
        self,
        input_dims: Mapping[str, int],
        dim: int = 64,
        num_queries: int = 8,
        num_layers: int = 2,
        cross_attention_every: int = 1,
        num_heads: int = 4,
        head_dim: int = 16,
        ff_mult: int = 4,
        dropout: float = 0.0,
        pooling: PoolingKind | Literal["none"] = "mean",
    ) -> None:
        super().__init__(input_dims)
        if num_queries < 1 or num_layers < 1 or cross_attention_every < 1:
            raise ConfigError(
                f"QFormer needs num_queries, num_layers and cross_attention_every of at least 1, not "
                f"{num_queries}, {num_layers} and {cross_attention_every}"
            )
        self.dim, self.num_queries = dim, num_queries
        self.projections = nn.ModuleDict({m: projection(d, dim) for m, d in self.input_dims.items()})
        self.modality_embeddings = nn.ParameterDict({m: nn.Parameter(torch.randn(dim) * 0.02) for m in self.modalities})
        self.queries = nn.Parameter(torch.randn(num_queries, dim) * 0.02)
        self.layers = nn.ModuleList(
            _QFormerLayer(dim, num_heads, head_dim, ff_mult, dropout, cross=i % cross_attention_every == 0)
            for i in range(num_layers)
        )
        self.context_norm = nn.LayerNorm(dim)
        self.norm = nn.LayerNorm(dim)
        self.pool = None if pooling == "none" else Pooling(pooling, dim)
        self.dropout = nn.Dropout(dropout)

    @property
    def output_dim(self) -> int:
        return self.dim * (self.num_queries if self.pool is None else 1)

    def fuse(self, features: Features) -> Tensor:
        tokens = [self.projections[m](features[m][0]) + self.modality_embeddings[m] for m in self.modalities]
        context = self.context_norm(torch.cat(tokens, dim=1))
        context_mask = torch.cat([features[m][1] for m in self.modalities], dim=1)
        batch = context.shape[0]
        q = self.queries.to(context.dtype).expand(batch, -1, -1)
        query_mask = torch.ones(batch, self.num_queries, dtype=torch.bool, device=context.device)
        for layer in self.layers:
            q = layer(q, query_mask, context, context_mask)
        q = self.norm(q)
        out = q.reshape(batch, -1) if self.pool is None else self.pool(q, query_mask)
        return self.dropout(out)
