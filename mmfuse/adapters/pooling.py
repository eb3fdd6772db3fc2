"""Pooling of token embeddings under a padding mask."""

from __future__ import annotations

from torch import Tensor

__all__ = ["masked_mean"]


def masked_mean(x: Tensor, mask: Tensor) -> Tensor:
    """Mean of ``x`` ``(B, L, D)`` over the positions where ``mask`` ``(B, L)`` is true.

    A row without any true position pools to zeros.

    Examples:
        >>> import torch
        >>> masked_mean(torch.tensor([[[1.0], [3.0], [100.0]]]), torch.tensor([[True, True, False]]))
        tensor([[2.]])
    """
    weights = mask.to(x.dtype).unsqueeze(-1)
    return (x * weights).sum(1) / weights.sum(1).clamp(min=1.0)
