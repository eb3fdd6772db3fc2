"""MulT: directional cross-modal transformers between every pair of modalities (Tsai et al. 2019)."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn

from mmfuse.adapters.base import Features, FusionAdapter
from mmfuse.adapters.layers import CrossAttention, FeedForward, TransformerBlock, projection
from mmfuse.adapters.pooling import Pooling, PoolingKind
from mmfuse.registry import ADAPTERS

__all__ = ["MulTFusion"]


class _CrossModalLayer(nn.Module):
    """``Z ← Z + CM(LN(Z), LN(X_source))``, then ``Z ← Z + FF(LN(Z))`` (pre-norm, as MulT)."""

    def __init__(self, dim: int, num_heads: int, head_dim: int, ff_mult: int, dropout: float) -> None:
        super().__init__()
        self.norm_q, self.norm_kv, self.norm_ff = nn.LayerNorm(dim), nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = CrossAttention(dim, dim, num_heads, head_dim, dropout)
        self.ff = FeedForward(dim, ff_mult, dropout)

    def forward(self, z: Tensor, source: Tensor, source_mask: Tensor) -> Tensor:
        z = z + self.attn(self.norm_q(z), self.norm_kv(source), source_mask)
        return z + self.ff(self.norm_ff(z))


@ADAPTERS.register()
class MulTFusion(FusionAdapter):
    """Multimodal transformer: each modality's tokens are reinforced by every other modality in turn.

    Every modality is projected to ``dim``. For each target modality ``α`` and each other modality ``β``,
    a stack of ``num_layers`` cross-modal layers lets ``α``'s tokens attend to ``β``'s (``β → α``); the
    streams into ``α`` are concatenated along the features, passed through ``self_layers`` self-attention
    blocks and pooled, and the targets are concatenated. With one modality its tokens go through the
    self-attention blocks alone. Output: ``(B, dim · max(M − 1, 1) · M)``.

    Args:
        input_dims: embedding width of each modality (given by the task).
        dim: width every modality is projected to.
        num_layers: cross-modal layers of each directed pair.
        self_layers: self-attention blocks over each target's concatenated streams.
        num_heads: attention heads.
        head_dim: width of each head.
        ff_mult: feed-forward expansion.
        dropout: dropout on attention weights, in the feed-forwards and on the output.
        pooling: how each target's tokens are pooled: ``mean``, ``max``, ``cls`` or ``attention``.

    Examples:
        >>> import torch
        >>> fuse = MulTFusion({"dna": 8, "protein": 4}, dim=16, num_heads=2, head_dim=8)
        >>> x = {"dna": (torch.randn(2, 5, 8), torch.ones(2, 5, dtype=torch.bool)),
        ...      "protein": (torch.randn(2, 3, 4), torch.ones(2, 3, dtype=torch.bool))}
        >>> fuse(x).shape  # two targets, each one stream of 16
        torch.Size([2, 32])
    """

    def __init__(
        self,
        input_dims: Mapping[str, int],
        dim: int = 64,
        num_layers: int = 2,
        self_layers: int = 1,
        num_heads: int = 4,
        head_dim: int = 16,
        ff_mult: int = 4,
        dropout: float = 0.0,
        pooling: PoolingKind = "mean",
    ) -> None:
        super().__init__(input_dims)
        self.dim = dim
        self.projections = nn.ModuleDict({m: projection(d, dim) for m, d in self.input_dims.items()})
        self.pairs = [(target, source) for target in self.modalities for source in self.modalities if source != target]
        self.cross = nn.ModuleDict(
            {
                f"{source}__{target}": nn.ModuleList(
                    _CrossModalLayer(dim, num_heads, head_dim, ff_mult, dropout) for _ in range(num_layers)
                )
                for target, source in self.pairs
            }
        )
        width = dim * max(len(self.modalities) - 1, 1)
        self.self_attention = nn.ModuleDict(
            {
                m: nn.ModuleList(
                    TransformerBlock(width, num_heads, head_dim, ff_mult, dropout) for _ in range(self_layers)
                )
                for m in self.modalities
            }
        )
        self.norms = nn.ModuleDict({m: nn.LayerNorm(width) for m in self.modalities})
        self.pools = nn.ModuleDict({m: Pooling(pooling, width) for m in self.modalities})
        self.dropout = nn.Dropout(dropout)
        self._width = width

    @property
    def output_dim(self) -> int:
        return self._width * len(self.modalities)

    def fuse(self, features: Features) -> Tensor:
        tokens = {m: self.projections[m](features[m][0]) for m in self.modalities}
        masks = {m: features[m][1] for m in self.modalities}
        pooled = []
        for target in self.modalities:
            streams = []
            for source in self.modalities:
                if source == target:
                    continue
                z = tokens[target]
                for layer in self.cross[f"{source}__{target}"]:
                    z = layer(z, tokens[source], masks[source])
                streams.append(z)
            x = torch.cat(streams, dim=-1) if streams else tokens[target]
            for block in self.self_attention[target]:
                x = block(x, masks[target])
            pooled.append(self.pools[target](self.norms[target](x), masks[target]))
        return self.dropout(torch.cat(pooled, dim=-1))
