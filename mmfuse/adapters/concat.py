"""Late fusion by concatenation, as in ModelGenerator's concat aggregation and IsoFormer's baseline."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn

from mmfuse.adapters.base import Features, FusionAdapter
from mmfuse.adapters.pooling import masked_mean
from mmfuse.registry import ADAPTERS

__all__ = ["ConcatFusion"]


@ADAPTERS.register()
class ConcatFusion(FusionAdapter):
    """Projects each modality to ``hidden_dim``, mean-pools its tokens and concatenates modalities.

    Output: ``(B, hidden_dim * n_modalities)``, modalities in sorted-name order.

    Args:
        input_dims: embedding width of each modality (given by the task).
        hidden_dim: common width each modality is projected to.
        dropout: dropout on the fused vector.
        layer_norm: normalise each modality's tokens before projecting (embeddings of different
            backbones have very different scales).

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
    ) -> None:
        super().__init__(input_dims)
        self.hidden_dim = hidden_dim
        self.modalities = sorted(self.input_dims)
        self.projections = nn.ModuleDict(
            {
                m: nn.Sequential(nn.LayerNorm(d) if layer_norm else nn.Identity(), nn.Linear(d, hidden_dim))
                for m, d in self.input_dims.items()
            }
        )
        self.dropout = nn.Dropout(dropout)

    @property
    def output_dim(self) -> int:
        return self.hidden_dim * len(self.modalities)

    def forward(self, features: Features) -> Tensor:
        missing = [m for m in self.modalities if m not in features]
        if missing:
            raise KeyError(f"ConcatFusion was built for {self.modalities} but got no features for {missing}")
        pooled = [masked_mean(self.projections[m](features[m][0]), features[m][1]) for m in self.modalities]
        return self.dropout(torch.cat(pooled, dim=-1))
