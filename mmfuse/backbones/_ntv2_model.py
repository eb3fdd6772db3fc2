"""Nucleotide Transformer v2 written with transformers' ESM classes (imported lazily: heavy).

NT v2 is ESM with rotary embeddings whose feed-forward is a bias-free SwiGLU: one dense layer of
width ``2 * intermediate_size`` whose halves ``a, b`` give ``silu(a) * b``, then a bias-free
projection back. The hub checkpoints ship that as custom code; here it is built from
``EsmModel`` by swapping the feed-forward, so the hub weight names and shapes load unchanged
(``esm.encoder.layer.N.intermediate.dense.weight`` of shape ``(2 * intermediate, hidden)``).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn
from transformers import EsmConfig, EsmModel

__all__ = ["NTv2Config", "NTv2Model"]


class NTv2Config(EsmConfig):
    """``EsmConfig`` plus ``add_bias_fnn`` (bias in the feed-forward; ``False`` for NT v2)."""

    def __init__(self, add_bias_fnn: bool = False, **kwargs) -> None:
        super().__init__(**kwargs)
        self.add_bias_fnn = add_bias_fnn


class _SwiGLU(nn.Module):
    def __init__(self, config: NTv2Config) -> None:
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, 2 * config.intermediate_size, bias=config.add_bias_fnn)

    def forward(self, hidden_states: Tensor) -> Tensor:
        gate, value = self.dense(hidden_states).chunk(2, dim=-1)
        return F.silu(gate) * value


class NTv2Model(EsmModel):
    """``EsmModel`` with NT v2's gated feed-forward in every layer."""

    config_class = NTv2Config

    def __init__(self, config: NTv2Config, add_pooling_layer: bool = True) -> None:
        super().__init__(config, add_pooling_layer=add_pooling_layer)
        for layer in self.encoder.layer:
            layer.intermediate = _SwiGLU(config)
            layer.output.dense = nn.Linear(config.intermediate_size, config.hidden_size, bias=config.add_bias_fnn)
        self.post_init()  # initialise the swapped layers like the rest
