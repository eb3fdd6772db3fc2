"""GatedSumFusion: each modality pooled, projected and weighted by a learned gate, then summed."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn

from mmfuse.adapters import FusionAdapter
from mmfuse.adapters.base import Features
from mmfuse.adapters.pooling import masked_mean


class GatedSumFusion(FusionAdapter):
    """``z = Σ_m present_m · σ(g_m(p_m)) ⊙ W_m p_m`` with ``p_m`` the masked mean of modality ``m``'s tokens.

    An absent modality (all tokens masked) adds nothing. Output: ``(B, hidden_dim)``.

    Args:
        input_dims: embedding width of each modality (given by the task).
        hidden_dim: width of the fused vector.
    """

    def __init__(self, input_dims: Mapping[str, int], hidden_dim: int = 64) -> None:
        super().__init__(input_dims)
        self.hidden_dim = hidden_dim
        self.values = nn.ModuleDict({m: nn.Linear(d, hidden_dim) for m, d in self.input_dims.items()})
        self.gates = nn.ModuleDict({m: nn.Linear(d, hidden_dim) for m, d in self.input_dims.items()})

    @property
    def output_dim(self) -> int:
        return self.hidden_dim

    def fuse(self, features: Features) -> Tensor:
        total = None
        for m in self.modalities:
            x, mask = features[m]
            pooled = masked_mean(x, mask)
            present = mask.any(dim=1, keepdim=True).to(pooled.dtype)
            term = torch.sigmoid(self.gates[m](pooled)) * self.values[m](pooled) * present
            total = term if total is None else total + term
        return total
