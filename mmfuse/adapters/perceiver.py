"""Perceiver resampler (Flamingo): a fixed number of learned latents read the tokens."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

import torch
from torch import Tensor, nn

from mmfuse.adapters.base import Features, FusionAdapter
from mmfuse.adapters.layers import CrossAttention, FeedForward, projection
from mmfuse.adapters.pooling import Pooling, PoolingKind
from mmfuse.errors import ConfigError
from mmfuse.registry import ADAPTERS

__all__ = ["PerceiverResampler"]


class _Resampler(nn.Module):
    """``depth`` layers of: latents attend to [tokens; latents], then feed-forward (Flamingo, Alg. 1)."""

    def __init__(
        self, dim: int, num_latents: int, depth: int, num_heads: int, head_dim: int, ff_mult: int, dropout: float
    ) -> None:
        super().__init__()
        self.latents = nn.Parameter(torch.randn(num_latents, dim) * 0.02)
        self.layers = nn.ModuleList(
            nn.ModuleDict(
                {
                    "norm_tokens": nn.LayerNorm(dim),
                    "norm_latents": nn.LayerNorm(dim),
                    "attn": CrossAttention(dim, dim, num_heads, head_dim, dropout),
                    "norm_ff": nn.LayerNorm(dim),
                    "ff": FeedForward(dim, ff_mult, dropout),
                }
            )
            for _ in range(depth)
        )
        self.norm = nn.LayerNorm(dim)

    def forward(self, tokens: Tensor, mask: Tensor) -> Tensor:
        batch = tokens.shape[0]
        latents = self.latents.unsqueeze(0).expand(batch, -1, -1)
        latent_mask = torch.ones(batch, latents.shape[1], dtype=torch.bool, device=mask.device)
        context_mask = torch.cat([mask, latent_mask], dim=1)
        for layer in self.layers:
            normed = layer["norm_latents"](latents)
            context = torch.cat([layer["norm_tokens"](tokens), normed], dim=1)
            latents = latents + layer["attn"](normed, context, context_mask)
            latents = latents + layer["ff"](layer["norm_ff"](latents))
        return self.norm(latents)


@ADAPTERS.register()
class PerceiverResampler(FusionAdapter):
    """Learned latents cross-attend to the tokens (Flamingo's perceiver resampler), then are pooled.

    Tokens are projected to ``dim`` (``x'_m = W_m LN(x_m) + e_m``, with a learned modality embedding
    ``e_m``). ``num_latents`` learned latents ``z`` then run ``depth`` layers of
    ``z ← z + MHA(LN(z), [LN(x'); LN(z)])`` and ``z ← z + FF(LN(z))``, keys masked where the tokens
    are padding or absent, and are pooled to one vector.

    ``mode: joint`` resamples all modalities' tokens together (one set of latents; output ``(B, dim)``);
    ``mode: per_modality`` gives each modality its own resampler and concatenates the pooled results
    in sorted order (output ``(B, dim · n_modalities)``; an absent modality contributes zeros).
    IsoFormer's aggregation ablation compares both.

    Args:
        input_dims: embedding width of each modality (given by the task).
        dim: width of latents and projected tokens.
        num_latents: number of learned latents (output tokens before pooling).
        depth: resampler layers.
        num_heads: attention heads.
        head_dim: width of each head.
        ff_mult: feed-forward expansion.
        mode: ``joint`` or ``per_modality`` (see above).
        dropout: dropout on attention weights, in feed-forwards and on the output.
        pooling: how the latents are pooled (``cls`` reads the first latent).
    """

    def __init__(
        self,
        input_dims: Mapping[str, int],
        dim: int = 256,
        num_latents: int = 32,
        depth: int = 2,
        num_heads: int = 8,
        head_dim: int = 64,
        ff_mult: int = 4,
        mode: Literal["joint", "per_modality"] = "joint",
        dropout: float = 0.0,
        pooling: PoolingKind = "mean",
    ) -> None:
        super().__init__(input_dims)
        if mode not in ("joint", "per_modality"):
            raise ConfigError(f"mode must be 'joint' or 'per_modality', not {mode!r}")
        self.dim, self.mode = dim, mode
        self.projections = nn.ModuleDict({m: projection(d, dim) for m, d in self.input_dims.items()})
        self.modality_embeddings = nn.ParameterDict({m: nn.Parameter(torch.randn(dim) * 0.02) for m in self.modalities})
        groups = ["joint"] if mode == "joint" else self.modalities
        self.resamplers = nn.ModuleDict(
            {g: _Resampler(dim, num_latents, depth, num_heads, head_dim, ff_mult, dropout) for g in groups}
        )
        self.pools = nn.ModuleDict({g: Pooling(pooling, dim) for g in groups})
        self.dropout = nn.Dropout(dropout)

    @property
    def output_dim(self) -> int:
        return self.dim * len(self.resamplers)

    def fuse(self, features: Features) -> Tensor:
        tokens = {m: self.projections[m](x) + self.modality_embeddings[m] for m, (x, _) in features.items()}
        masks = {m: mask for m, (_, mask) in features.items()}
        if self.mode == "joint":
            x = torch.cat([tokens[m] for m in self.modalities], dim=1)
            mask = torch.cat([masks[m] for m in self.modalities], dim=1)
            latents = self.resamplers["joint"](x, mask)
            all_latents = torch.ones(latents.shape[:2], dtype=torch.bool, device=mask.device)
            return self.dropout(self.pools["joint"](latents, all_latents))
        pooled = []
        for m in self.modalities:
            latents = self.resamplers[m](tokens[m], masks[m])
            present = masks[m].any(dim=1, keepdim=True)
            all_latents = present.expand(-1, latents.shape[1])  # an absent modality pools to zeros
            pooled.append(self.pools[m](latents, all_latents))
        return self.dropout(torch.cat(pooled, dim=-1))
