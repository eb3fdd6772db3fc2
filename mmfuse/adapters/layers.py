"""Attention and feed-forward building blocks shared by the adapters.

The attention here takes queries and keys of different widths (each modality keeps its own) and is
safe for samples that have no key at all (an absent modality): their attention term is exactly zero,
as IsoFormer zeroes the cross-attention term of a missing modality.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["CrossAttention", "FeedForward", "TransformerBlock", "projection"]


def projection(in_dim: int, out_dim: int, layer_norm: bool = True) -> nn.Sequential:
    """``Linear(LN(x))``: how adapters bring a backbone's tokens to their width. The layer norm comes
    first because backbones' embeddings differ widely in scale."""
    return nn.Sequential(nn.LayerNorm(in_dim) if layer_norm else nn.Identity(), nn.Linear(in_dim, out_dim))


class CrossAttention(nn.Module):
    """Multi-head attention of query tokens ``(B, Lq, q_dim)`` over context tokens ``(B, Lk, kv_dim)``.

    ``softmax(Q Kᵀ / √head_dim + mask) V``, with ``Q = x W_q``, ``K = c W_k``, ``V = c W_v`` projected to
    ``num_heads × head_dim`` and the result projected back to ``q_dim``. Masked context tokens get no
    weight; a sample without any unmasked context token gets a zero output.

    Args:
        q_dim: query width.
        kv_dim: context width.
        num_heads: attention heads.
        head_dim: width of each head.
        dropout: dropout on the attention weights (training only).
    """

    def __init__(self, q_dim: int, kv_dim: int, num_heads: int = 8, head_dim: int = 64, dropout: float = 0.0) -> None:
        super().__init__()
        inner = num_heads * head_dim
        self.num_heads, self.head_dim, self.dropout = num_heads, head_dim, dropout
        self.to_q = nn.Linear(q_dim, inner, bias=False)
        self.to_kv = nn.Linear(kv_dim, 2 * inner, bias=False)
        self.to_out = nn.Linear(inner, q_dim)

    def forward(self, x: Tensor, context: Tensor, context_mask: Tensor) -> Tensor:
        b, lq, _ = x.shape
        lk = context.shape[1]
        q = self.to_q(x).view(b, lq, self.num_heads, self.head_dim).transpose(1, 2)
        k, v = self.to_kv(context).view(b, lk, 2, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        has_context = context_mask.any(dim=1)  # (B,)
        # a sample without context attends to its (zeroed) padding, then its term is zeroed
        attend = (context_mask | ~has_context.unsqueeze(1))[:, None, None, :]
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=attend, dropout_p=self.dropout if self.training else 0.0
        )
        out = self.to_out(out.transpose(1, 2).reshape(b, lq, -1))
        return out * has_context[:, None, None].to(out.dtype)


class FeedForward(nn.Sequential):
    """``Linear(dim, mult·dim) → GELU → Dropout → Linear(mult·dim, dim)``."""

    def __init__(self, dim: int, mult: int = 4, dropout: float = 0.0) -> None:
        super().__init__(nn.Linear(dim, dim * mult), nn.GELU(), nn.Dropout(dropout), nn.Linear(dim * mult, dim))


class TransformerBlock(nn.Module):
    """A pre-norm transformer encoder block over masked tokens: self-attention, then feed-forward.

    Args:
        dim: token width.
        num_heads: attention heads.
        head_dim: width of each head.
        ff_mult: feed-forward expansion.
        dropout: dropout on attention weights and in the feed-forward.
    """

    def __init__(
        self, dim: int, num_heads: int = 8, head_dim: int = 64, ff_mult: int = 4, dropout: float = 0.0
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = CrossAttention(dim, dim, num_heads, head_dim, dropout)
        self.norm2 = nn.LayerNorm(dim)
        self.ff = FeedForward(dim, ff_mult, dropout)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        h = self.norm1(x)
        x = x + self.attn(h, h, mask)
        return x + self.ff(self.norm2(x))
