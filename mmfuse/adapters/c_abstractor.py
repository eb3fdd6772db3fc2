"""C-Abstractor (Honeybee), in one dimension: convolutions, adaptive pooling, convolutions, MLP."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn

from mmfuse.adapters.base import Features, FusionAdapter
from mmfuse.adapters.layers import projection
from mmfuse.adapters.pooling import Pooling, PoolingKind, masked_adaptive_avg_pool
from mmfuse.errors import ConfigError
from mmfuse.registry import ADAPTERS

__all__ = ["CAbstractor"]


class _ResBlock(nn.Module):
    """``x + Conv(Dropout(LN(GELU(Conv(LN(x))))))`` over the length, masked positions held at zero before each conv,
    so a token's output depends only on unmasked neighbours (zero padding at sequence ends)."""

    def __init__(self, dim: int, kernel_size: int, dropout: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.conv1 = nn.Conv1d(dim, dim, kernel_size, padding=kernel_size // 2)
        self.norm2 = nn.LayerNorm(dim)
        self.conv2 = nn.Conv1d(dim, dim, kernel_size, padding=kernel_size // 2)
        self.act = nn.GELU()
        self.dropout = nn.Dropout(dropout)

    def _conv(self, conv: nn.Conv1d, x: Tensor, keep: Tensor) -> Tensor:
        return conv((x * keep).transpose(1, 2)).transpose(1, 2)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        keep = mask.unsqueeze(-1).to(x.dtype)
        h = self.act(self._conv(self.conv1, self.norm1(x), keep))
        h = self._conv(self.conv2, self.dropout(self.norm2(h)), keep)
        return (x + h) * keep


class _Abstractor(nn.Module):
    def __init__(self, in_dim: int, dim: int, num_queries: int, depth: int, kernel_size: int, dropout: float) -> None:
        super().__init__()
        self.num_queries = num_queries
        self.proj = projection(in_dim, dim)
        self.before = nn.ModuleList(_ResBlock(dim, kernel_size, dropout) for _ in range(depth))
        self.after = nn.ModuleList(_ResBlock(dim, kernel_size, dropout) for _ in range(depth))
        self.readout = nn.Sequential(nn.Linear(dim, dim), nn.GELU(), nn.Linear(dim, dim))

    def forward(self, x: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        x = self.proj(x) * mask.unsqueeze(-1).to(x.dtype)
        for block in self.before:
            x = block(x, mask)
        x = masked_adaptive_avg_pool(x, mask, self.num_queries)  # (B, Q, dim)
        present = mask.any(dim=1, keepdim=True).expand(-1, self.num_queries)
        for block in self.after:
            x = block(x, present)
        return self.readout(x), present


@ADAPTERS.register()
class CAbstractor(FusionAdapter):
    """Honeybee's C-Abstractor in 1-D, per modality, then fused by concatenation.

    For each modality: ``x'_m = W_m LN(x_m)``; ``depth`` residual convolution blocks
    (``x + Conv(LN(GELU(Conv(LN(x)))))``, kernel ``kernel_size`` along the sequence); adaptive average
    pooling of the unmasked tokens to ``num_queries`` tokens (each sample's bins follow its own
    length, so padding never enters); ``depth`` more residual blocks; an MLP read-out
    (``Linear → GELU → Linear``); pooling of the ``num_queries`` tokens. The modalities' vectors are
    concatenated in sorted order: ``(B, hidden_dim · n_modalities)``; an absent modality gives zeros.
    Convolutions keep locality that a perceiver resampler loses (Honeybee's argument), which matters
    for positional signals such as promoter motifs.

    Args:
        input_dims: embedding width of each modality (given by the task).
        hidden_dim: channel width of the convolutions and the read-out.
        num_queries: tokens each modality is pooled to.
        depth: residual blocks before and after pooling.
        kernel_size: odd convolution width.
        dropout: dropout inside the blocks and on the output.
        pooling: how the ``num_queries`` tokens are pooled to one vector.
    """

    def __init__(
        self,
        input_dims: Mapping[str, int],
        hidden_dim: int = 256,
        num_queries: int = 16,
        depth: int = 2,
        kernel_size: int = 3,
        dropout: float = 0.0,
        pooling: PoolingKind = "mean",
    ) -> None:
        super().__init__(input_dims)
        if kernel_size % 2 != 1:
            raise ConfigError(f"kernel_size must be odd (same-length convolutions), not {kernel_size}")
        if num_queries < 1:
            raise ConfigError(f"num_queries must be at least 1, not {num_queries}")
        self.hidden_dim = hidden_dim
        self.abstractors = nn.ModuleDict(
            {
                m: _Abstractor(d, hidden_dim, num_queries, depth, kernel_size, dropout)
                for m, d in self.input_dims.items()
            }
        )
        self.pools = nn.ModuleDict({m: Pooling(pooling, hidden_dim) for m in self.modalities})
        self.dropout = nn.Dropout(dropout)

    @property
    def output_dim(self) -> int:
        return self.hidden_dim * len(self.modalities)

    def fuse(self, features: Features) -> Tensor:
        pooled = []
        for m in self.modalities:
            queries, present = self.abstractors[m](*features[m])
            pooled.append(self.pools[m](queries, present))
        return self.dropout(torch.cat(pooled, dim=-1))
