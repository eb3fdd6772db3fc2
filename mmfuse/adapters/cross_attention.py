"""Cross-attention fusion as in IsoFormer, and ModelGenerator's one-query-modality variant."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal

import torch
from torch import Tensor, nn

from mmfuse.adapters.base import Features, FusionAdapter
from mmfuse.adapters.layers import CrossAttention, FeedForward
from mmfuse.adapters.pooling import Pooling, PoolingKind
from mmfuse.errors import ConfigError
from mmfuse.registry import ADAPTERS

__all__ = ["CrossAttentionFusion"]


def _norm(dim: int, norm: str) -> nn.Module:
    return nn.LayerNorm(dim) if norm != "none" else nn.Identity()


class _Layer(nn.Module):
    """One block: each query modality attends to every other modality in turn, then feed-forward."""

    def __init__(
        self,
        dims: Mapping[str, int],
        queries: Sequence[str],
        num_heads: int,
        head_dim: int,
        norm: str,
        feed_forward: bool,
        ff_mult: int,
        dropout: float,
    ) -> None:
        super().__init__()
        self.norm = norm
        self.pairs = [(q, k) for q in queries for k in sorted(dims) if k != q]
        self.attn = nn.ModuleDict(
            {f"{q}__{k}": CrossAttention(dims[q], dims[k], num_heads, head_dim, dropout) for q, k in self.pairs}
        )
        # pre-norm: one norm per (query, key) for the query and one per key modality; post-norm: after each sum
        self.q_norms = nn.ModuleDict({f"{q}__{k}": _norm(dims[q], norm) for q, k in self.pairs})
        keys = sorted({k for _, k in self.pairs})  # only modalities attended to (no unused parameters)
        self.kv_norms = nn.ModuleDict({k: _norm(dims[k], norm if norm == "pre" else "none") for k in keys})
        self.ff = nn.ModuleDict({q: FeedForward(dims[q], ff_mult, dropout) for q in queries}) if feed_forward else None
        self.ff_norms = nn.ModuleDict({q: _norm(dims[q], norm) for q in queries}) if feed_forward else None
        self.queries = list(queries)

    def forward(self, states: dict[str, Tensor], masks: dict[str, Tensor]) -> dict[str, Tensor]:
        context = {k: norm(states[k]) for k, norm in self.kv_norms.items()}
        new = dict(states)  # every query reads the layer's input states of the other modalities
        for q, k in self.pairs:
            key = f"{q}__{k}"
            x = new[q]
            if self.norm == "pre":
                x = x + self.attn[key](self.q_norms[key](x), context[k], masks[k])
            else:
                x = self.q_norms[key](x + self.attn[key](x, context[k], masks[k]))
            new[q] = x
        if self.ff is not None and self.ff_norms is not None:
            for q in self.queries:
                x = new[q]
                if self.norm == "pre":
                    new[q] = x + self.ff[q](self.ff_norms[q](x))
                else:
                    new[q] = self.ff_norms[q](x + self.ff[q](x))
        return new


@ADAPTERS.register()
class CrossAttentionFusion(FusionAdapter):
    """Each query modality attends to every other modality in turn; its tokens are then pooled.

    For each layer and each query modality ``q``, in turn over the other modalities ``k`` (sorted):
    ``x_q ← x_q + MHA(LN(x_q), LN(x_k), mask_k)``, then optionally ``x_q ← x_q + FF(LN(x_q))``
    (``norm: pre``; ``post`` normalises after each sum instead; ``none`` uses plain residuals).
    Queries and keys keep their own widths (``D_q``, ``D_k``; attention runs in ``num_heads ×
    head_dim``), so no modality is projected away. All query modalities of a layer read the layer's
    input states. A sample lacking modality ``k`` gets exactly zero from the ``q ← k`` term, as in
    IsoFormer. Output: the pooled tokens of each query modality, concatenated in sorted order,
    ``(B, Σ_q D_q)``.

    ``queries: null`` (every modality queries every other one) is IsoFormer's aggregation;
    ``queries: [dna]`` is the variant where one modality queries the others (ModelGenerator's
    cross-attention fusion, IsoFormer's DNA-centred head).

    Args:
        input_dims: embedding width of each modality (given by the task).
        queries: modalities that act as queries (default: all); the others are only attended to.
        num_layers: stacked blocks.
        num_heads: attention heads.
        head_dim: width of each head.
        norm: ``pre`` (pre-norm), ``post`` (post-norm) or ``none`` (plain residual connections).
        feed_forward: add a feed-forward sub-block to every query modality in every layer.
        ff_mult: feed-forward expansion.
        dropout: dropout on attention weights, in feed-forwards and on the output.
        pooling: how each query modality's tokens are pooled (IsoFormer: ``mean``).
    """

    def __init__(
        self,
        input_dims: Mapping[str, int],
        queries: list[str] | None = None,
        num_layers: int = 1,
        num_heads: int = 8,
        head_dim: int = 64,
        norm: Literal["pre", "post", "none"] = "pre",
        feed_forward: bool = True,
        ff_mult: int = 4,
        dropout: float = 0.0,
        pooling: PoolingKind = "mean",
    ) -> None:
        super().__init__(input_dims)
        if queries is not None:
            unknown = sorted(set(queries) - set(self.modalities))
            if unknown or not queries:
                raise ConfigError(
                    f"queries {list(queries)} must name one or more of the modalities {self.modalities}"
                    + (f"; unknown: {unknown}" if unknown else "")
                )
        self.queries = sorted(set(queries)) if queries is not None else list(self.modalities)
        self.layers = nn.ModuleList(
            _Layer(self.input_dims, self.queries, num_heads, head_dim, norm, feed_forward, ff_mult, dropout)
            for _ in range(num_layers)
        )
        self.pools = nn.ModuleDict({q: Pooling(pooling, self.input_dims[q]) for q in self.queries})
        self.dropout = nn.Dropout(dropout)

    @property
    def output_dim(self) -> int:
        return sum(self.input_dims[q] for q in self.queries)

    def fuse(self, features: Features) -> Tensor:
        states = {m: x for m, (x, _) in features.items()}
        masks = {m: mask for m, (_, mask) in features.items()}
        for layer in self.layers:
            states = layer(states, masks)
        pooled = [self.pools[q](states[q], masks[q]) for q in self.queries]
        return self.dropout(torch.cat(pooled, dim=-1))
