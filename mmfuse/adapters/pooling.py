"""Pooling of token embeddings under a padding mask: mean, max, first token (CLS), attention.

Every pooling maps ``x`` ``(B, L, D)`` and ``mask`` ``(B, L)`` to ``(B, D)``, ignores masked
positions, and pools a row without any unmasked position (an absent modality) to zeros.

Under mixed precision (bfloat16/float16 activations) the sums, counts and softmaxes are computed in
float32 and the result is returned in the input's dtype: a bfloat16 count is inexact beyond 256
tokens, a float16 sum of a long sequence overflows, and CPU autocast (unlike CUDA's) leaves
``sum`` and ``softmax`` in the low precision. In float32 the math is unchanged.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

from mmfuse.errors import ConfigError

__all__ = [
    "POOLINGS",
    "AttentionPooling",
    "Pooling",
    "PoolingKind",
    "first_token",
    "masked_adaptive_avg_pool",
    "masked_max",
    "masked_mean",
]

PoolingKind = Literal["mean", "max", "cls", "attention"]
POOLINGS: tuple[str, ...] = ("mean", "max", "cls", "attention")


def _accumulation_dtype(x: Tensor) -> torch.dtype:
    """float32 for half-precision ``x`` (its own dtype if wider): where sums and softmaxes run."""
    return torch.promote_types(x.dtype, torch.float32)


def masked_mean(x: Tensor, mask: Tensor) -> Tensor:
    """Mean of ``x`` ``(B, L, D)`` over the positions where ``mask`` ``(B, L)`` is true.

    Examples:
        >>> import torch
        >>> masked_mean(torch.tensor([[[1.0], [3.0], [100.0]]]), torch.tensor([[True, True, False]]))
        tensor([[2.]])
    """
    total = (x * mask.to(x.dtype).unsqueeze(-1)).sum(1, dtype=_accumulation_dtype(x))
    return (total / mask.sum(1, keepdim=True).clamp(min=1)).to(x.dtype)


def masked_max(x: Tensor, mask: Tensor) -> Tensor:
    """Maximum of ``x`` over unmasked positions, per feature.

    Examples:
        >>> import torch
        >>> masked_max(torch.tensor([[[1.0], [3.0], [100.0]]]), torch.tensor([[True, True, False]]))
        tensor([[3.]])
    """
    filled = x.masked_fill(~mask.unsqueeze(-1), torch.finfo(x.dtype).min)
    return filled.max(dim=1).values * mask.any(dim=1, keepdim=True).to(x.dtype)


def first_token(x: Tensor, mask: Tensor) -> Tensor:
    """The first unmasked token of each row: the CLS/BOS token for tokenizers that add one.

    Examples:
        >>> import torch
        >>> first_token(torch.tensor([[[1.0], [3.0]]]), torch.tensor([[True, True]]))
        tensor([[1.]])
    """
    index = mask.to(torch.int8).argmax(dim=1)  # first True (0 for rows without any)
    picked = x[torch.arange(x.shape[0], device=x.device), index]
    return picked * mask.any(dim=1, keepdim=True).to(x.dtype)


class AttentionPooling(nn.Module):
    """Attention pooling (Ilse et al. 2018, attention-based MIL): a learned score per token,
    softmax over unmasked tokens, weighted sum.

    Args:
        dim: token width ``D``.
        hidden_dim: width of the scoring MLP (``tanh`` hidden layer); 0 scores with one linear layer.
    """

    def __init__(self, dim: int, hidden_dim: int = 0) -> None:
        super().__init__()
        if hidden_dim:
            self.score: nn.Module = nn.Sequential(nn.Linear(dim, hidden_dim), nn.Tanh(), nn.Linear(hidden_dim, 1))
        else:
            self.score = nn.Linear(dim, 1)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        any_token = mask.any(dim=1, keepdim=True)
        acc = _accumulation_dtype(x)
        scores = self.score(x).squeeze(-1).to(acc).masked_fill(~mask, float("-inf"))
        scores = scores.masked_fill(~any_token, 0.0)  # rows without tokens: finite, zeroed below
        weights = torch.softmax(scores, dim=1).unsqueeze(-1)
        return ((weights * x.to(acc)).sum(1) * any_token.to(acc)).to(x.dtype)


class Pooling(nn.Module):
    """A pooling chosen by name: ``mean``, ``max``, ``cls`` (first unmasked token) or ``attention``.

    Args:
        kind: which pooling.
        dim: token width (used by ``attention``, which has parameters).

    Examples:
        >>> import torch
        >>> pool = Pooling("max", dim=1)
        >>> pool(torch.tensor([[[1.0], [3.0]]]), torch.tensor([[True, False]]))
        tensor([[1.]])
    """

    def __init__(self, kind: PoolingKind, dim: int) -> None:
        super().__init__()
        if kind not in POOLINGS:
            raise ConfigError(f"unknown pooling {kind!r}; choose one of {', '.join(POOLINGS)}")
        self.kind = kind
        self.attention = AttentionPooling(dim) if kind == "attention" else None

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        if self.attention is not None:
            return self.attention(x, mask)
        return {"mean": masked_mean, "max": masked_max, "cls": first_token}[self.kind](x, mask)

    def extra_repr(self) -> str:
        return self.kind


def masked_adaptive_avg_pool(x: Tensor, mask: Tensor, size: int) -> Tensor:
    """Adaptive average pooling of the unmasked tokens of each row to ``size`` tokens.

    Equals ``F.adaptive_avg_pool1d`` applied to each row's unmasked tokens alone (the bins of a row
    depend on its own length, not on padding). Rows without tokens pool to zeros.

    Args:
        x: ``(B, L, D)``.
        mask: ``(B, L)`` bool.
        size: number of output tokens ``Q``.

    Returns:
        ``(B, Q, D)``.
    """
    n = mask.sum(dim=1, keepdim=True)  # (B, 1)
    rank = mask.long().cumsum(dim=1) - 1  # (B, L): index among the row's unmasked tokens
    i = torch.arange(size, device=x.device).unsqueeze(0)  # (1, Q)
    start = (i * n) // size
    end = ((i + 1) * n + size - 1) // size
    r = rank.unsqueeze(1)  # (B, 1, L)
    inside = (r >= start.unsqueeze(-1)) & (r < end.unsqueeze(-1)) & mask.unsqueeze(1)  # (B, Q, L)
    weights = inside.to(_accumulation_dtype(x))
    weights = weights / weights.sum(-1, keepdim=True).clamp(min=1.0)  # exact counts, then one rounding
    return weights.to(x.dtype) @ x
