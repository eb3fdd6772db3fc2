"""Low-rank multimodal tensor fusion (LMF): the outer product of the modalities, in factored form."""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from torch import Tensor, nn

from mmfuse.adapters.base import Features, FusionAdapter
from mmfuse.adapters.layers import projection
from mmfuse.adapters.pooling import Pooling, PoolingKind
from mmfuse.registry import ADAPTERS

__all__ = ["LowRankTensorFusion"]


@ADAPTERS.register()
class LowRankTensorFusion(FusionAdapter):
    """Tensor fusion of the pooled modalities with rank-``rank`` factors (Liu et al. 2018).

    Each modality is projected to ``hidden_dim`` and pooled to ``p_m``, then extended with a 1,
    ``ẑ_m = [p_m; 1]``, so that the outer product ``⊗_m ẑ_m`` holds every unimodal, bimodal, … term.
    A linear map of that tensor to ``fused_dim`` is kept in factored form,
    ``h = Σ_r λ_r ⊙_m (ẑ_m W_m^(r)) + b``, which costs ``rank · Σ_m (hidden_dim + 1) · fused_dim``
    weights instead of ``Π_m (hidden_dim + 1) · fused_dim``. A modality a sample lacks drops out of the
    product (its factor is 1). Output: ``(B, fused_dim)``.

    Args:
        input_dims: embedding width of each modality (given by the task).
        hidden_dim: width each modality is projected and pooled to.
        fused_dim: width of the fused vector (the output's).
        rank: rank of the factored weight tensor.
        layer_norm: normalise each modality's tokens before projecting.
        pooling: how each modality's tokens are pooled: ``mean``, ``max``, ``cls`` or ``attention``.
        dropout: dropout on the fused vector.

    Examples:
        >>> import torch
        >>> fuse = LowRankTensorFusion({"dna": 8, "protein": 4}, hidden_dim=16, fused_dim=32, rank=2)
        >>> x = {"dna": (torch.randn(2, 5, 8), torch.ones(2, 5, dtype=torch.bool)),
        ...      "protein": (torch.randn(2, 3, 4), torch.ones(2, 3, dtype=torch.bool))}
        >>> fuse(x).shape
        torch.Size([2, 32])
    """

    def __init__(
        self,
        input_dims: Mapping[str, int],
        hidden_dim: int = 64,
        fused_dim: int = 256,
        rank: int = 4,
        layer_norm: bool = True,
        pooling: PoolingKind = "mean",
        dropout: float = 0.0,
    ) -> None:
        super().__init__(input_dims)
        self.hidden_dim, self.fused_dim, self.rank = hidden_dim, fused_dim, rank
        self.projections = nn.ModuleDict({m: projection(d, hidden_dim, layer_norm) for m, d in self.input_dims.items()})
        self.pools = nn.ModuleDict({m: Pooling(pooling, hidden_dim) for m in self.modalities})
        # factors of the product: each of unit scale at initialisation, whatever the number of modalities
        std = 1.0 / math.sqrt(hidden_dim + 1)
        self.factors = nn.ParameterDict(
            {m: nn.Parameter(torch.randn(rank, hidden_dim + 1, fused_dim) * std) for m in self.modalities}
        )
        self.rank_weights = nn.Parameter(torch.full((rank,), 1.0 / rank))
        self.bias = nn.Parameter(torch.zeros(fused_dim))
        self.dropout = nn.Dropout(dropout)

    @property
    def output_dim(self) -> int:
        return self.fused_dim

    def fuse(self, features: Features) -> Tensor:
        product: Tensor | None = None
        for m in self.modalities:
            x, mask = features[m]
            pooled = self.pools[m](self.projections[m](x), mask)  # (B, H)
            extended = torch.cat([pooled, torch.ones_like(pooled[:, :1])], dim=-1)  # (B, H + 1)
            factor = torch.einsum("bd,rdo->bro", extended, self.factors[m])  # (B, rank, fused_dim)
            present = mask.any(dim=1).view(-1, 1, 1)
            factor = torch.where(present, factor, torch.ones_like(factor))  # absent: out of the product
            product = factor if product is None else product * factor
        assert product is not None
        fused = torch.einsum("r,bro->bo", self.rank_weights, product) + self.bias
        return self.dropout(fused)
