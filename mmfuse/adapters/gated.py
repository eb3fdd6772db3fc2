"""Attention-weighted fusion: one learned weight per modality and sample, the weights readable afterwards."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn

from mmfuse.adapters.base import Features, FusionAdapter
from mmfuse.adapters.layers import projection
from mmfuse.adapters.pooling import Pooling, PoolingKind
from mmfuse.registry import ADAPTERS

__all__ = ["GatedFusion"]


@ADAPTERS.register()
class GatedFusion(FusionAdapter):
    """Weighs each modality per sample by a learned gated-attention score, then sums (modality attention).

    Each modality is projected to ``hidden_dim`` and pooled to ``p_m``; a gated-attention score
    ``s_m = wᵀ(tanh(V p_m) ⊙ σ(U p_m)) + c_m`` (shared ``w, V, U``; a bias ``c_m`` per modality) is turned
    into weights by a softmax over the modalities the sample has, and ``z = Σ_m a_m p_m``. Output:
    ``(B, hidden_dim)``. After each call, :attr:`modality_weights` holds the weights ``(B, M)`` (modalities
    in sorted order), which ``mmfuse predict --predictions.modality_weights true`` writes beside the
    predictions: which modality each prediction leaned on.

    Args:
        input_dims: embedding width of each modality (given by the task).
        hidden_dim: common width each modality is projected to, and the output's.
        gate_dim: width of the gated-attention scorer (``V``, ``U``).
        layer_norm: normalise each modality's tokens before projecting.
        pooling: how each modality's tokens are pooled: ``mean``, ``max``, ``cls`` or ``attention``.
        dropout: dropout on the fused vector.

    Examples:
        >>> import torch
        >>> fuse = GatedFusion({"dna": 8, "protein": 4}, hidden_dim=16)
        >>> x = {"dna": (torch.randn(2, 5, 8), torch.ones(2, 5, dtype=torch.bool)),
        ...      "protein": (torch.randn(2, 3, 4), torch.tensor([[True] * 3, [False] * 3]))}
        >>> fuse(x).shape, fuse.modality_weights[1].tolist()  # the second sample has no protein
        (torch.Size([2, 16]), [1.0, 0.0])
    """

    def __init__(
        self,
        input_dims: Mapping[str, int],
        hidden_dim: int = 256,
        gate_dim: int = 128,
        layer_norm: bool = True,
        pooling: PoolingKind = "mean",
        dropout: float = 0.0,
    ) -> None:
        super().__init__(input_dims)
        self.hidden_dim = hidden_dim
        self.projections = nn.ModuleDict({m: projection(d, hidden_dim, layer_norm) for m, d in self.input_dims.items()})
        self.pools = nn.ModuleDict({m: Pooling(pooling, hidden_dim) for m in self.modalities})
        self.value = nn.Linear(hidden_dim, gate_dim)
        self.gate = nn.Linear(hidden_dim, gate_dim)
        self.score = nn.Linear(gate_dim, 1, bias=False)
        self.modality_bias = nn.Parameter(torch.zeros(len(self.modalities)))
        self.dropout = nn.Dropout(dropout)
        #: the weights of the last call, ``(B, M)`` in :attr:`modalities` order (detached)
        self.modality_weights: Tensor | None = None

    @property
    def output_dim(self) -> int:
        return self.hidden_dim

    def fuse(self, features: Features) -> Tensor:
        pooled = torch.stack(
            [self.pools[m](self.projections[m](features[m][0]), features[m][1]) for m in self.modalities], dim=1
        )  # (B, M, H)
        present = torch.stack([features[m][1].any(dim=1) for m in self.modalities], dim=1)  # (B, M)
        scores = self.score(torch.tanh(self.value(pooled)) * torch.sigmoid(self.gate(pooled))).squeeze(-1)
        scores = (scores + self.modality_bias).float().masked_fill(~present, float("-inf"))
        # a sample with no modality at all gets zero weights (not the NaN of a softmax over nothing)
        weights = torch.softmax(scores.masked_fill(~present.any(dim=1, keepdim=True), 0.0), dim=1)
        weights = weights.masked_fill(~present, 0.0).to(pooled.dtype)
        self.modality_weights = weights.detach()
        return self.dropout((weights.unsqueeze(-1) * pooled).sum(dim=1))
