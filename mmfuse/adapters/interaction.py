"""Late interaction between two modalities (FILIP), as tf-bind-transformer scores DNA against a TF."""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mmfuse.adapters.base import Features, FusionAdapter
from mmfuse.adapters.layers import projection
from mmfuse.adapters.pooling import Pooling, PoolingKind
from mmfuse.errors import ConfigError
from mmfuse.registry import ADAPTERS

__all__ = ["InteractionFusion", "masked_log_avg_exp"]


def masked_log_avg_exp(x: Tensor, mask: Tensor, temperature: Tensor) -> Tensor:
    """``t · log(mean_j exp(x_j / t))`` over the last axis where ``mask`` is true; 0 where none is.

    A smooth maximum: the mean for large ``t``, the maximum as ``t → 0``. Computed in float32 (or
    wider) and returned in ``x``'s dtype: in bfloat16, ``x / t`` near ``1 / t`` = 20 has a resolution of
    0.125 and the final difference of two such numbers cancels most digits, and in float16 a small
    learned ``t`` overflows ``x / t``.

    Examples:
        >>> import torch
        >>> x = torch.tensor([[1.0, 3.0, 50.0]]); m = torch.tensor([[True, True, False]])
        >>> masked_log_avg_exp(x, m, torch.tensor(1e-3)).round(decimals=2)
        tensor([3.])
    """
    acc = torch.promote_types(x.dtype, torch.float32)
    temperature = temperature.to(acc)
    count = mask.sum(-1)
    scaled = (x.to(acc) / temperature).masked_fill(~mask, float("-inf"))
    scaled = scaled.masked_fill(count.unsqueeze(-1) == 0, 0.0)
    out = temperature * (torch.logsumexp(scaled, dim=-1) - torch.log(count.clamp(min=1).to(acc)))
    return (out * (count > 0).to(acc)).to(x.dtype)


class _Interaction(nn.Module):
    """Per-head cosine similarities of each ``first`` token with every ``second`` token, reduced by a
    masked log-average-exp over ``second``: ``(B, L_first, num_heads)``."""

    def __init__(self, first_dim: int, second_dim: int, num_heads: int, head_dim: int, temperature: float) -> None:
        super().__init__()
        self.num_heads, self.head_dim = num_heads, head_dim
        self.to_first = projection(first_dim, num_heads * head_dim)
        self.to_second = projection(second_dim, num_heads * head_dim)
        self.log_temperature = nn.Parameter(torch.tensor(math.log(temperature)))

    def forward(self, first: Tensor, second: Tensor, second_mask: Tensor) -> Tensor:
        b, l1, _ = first.shape
        l2 = second.shape[1]
        a = F.normalize(self.to_first(first).view(b, l1, self.num_heads, self.head_dim), dim=-1)
        c = F.normalize(self.to_second(second).view(b, l2, self.num_heads, self.head_dim), dim=-1)
        sim = torch.einsum("bihd,bjhd->bhij", a, c)  # (B, H, L1, L2), cosine similarities
        mask = second_mask[:, None, None, :].expand_as(sim)
        reduced = masked_log_avg_exp(sim, mask, self.log_temperature.exp())  # (B, H, L1)
        return reduced.transpose(1, 2)


@ADAPTERS.register()
class InteractionFusion(FusionAdapter):
    """FILIP-style late interaction between pairs of modalities, plus each modality's own pooled tokens.

    For a pair ``(a, b)`` (tf-bind-transformer: ``a`` = DNA bins, ``b`` = TF protein residues), both
    sides are layer-normalised and projected to ``num_heads × head_dim``, L2-normalised per head, and every ``a`` token
    gets, per head ``h``, ``s_ih = τ · log mean_j exp(cos(a_ih, b_jh) / τ)`` over the unmasked ``b``
    tokens ``j`` (a masked log-average-exp with a learned temperature ``τ``). These per-token
    interaction features ``(B, L_a, num_heads)`` are mapped to ``hidden_dim`` (``Linear → GELU``) and
    pooled over ``a``'s tokens. The output concatenates, in order, each modality's pooled projection
    (``include_modalities``, as :class:`ConcatFusion` does) and each pair's pooled interaction:
    ``(B, hidden_dim · (n_modalities + n_pairs))``. If ``b`` is absent for a sample, that pair's part
    is zero.

    Args:
        input_dims: embedding width of each modality (given by the task).
        pairs: ``[[a, b], …]`` modality pairs, ``a`` receiving the interaction features; default:
            every pair of modalities in sorted order.
        hidden_dim: width of each pooled part.
        num_heads: interaction heads.
        head_dim: width of each head's projection.
        temperature: initial temperature ``τ`` of the log-average-exp (learned).
        include_modalities: also output each modality's pooled projection.
        dropout: dropout on the output.
        pooling: pooling over tokens.
    """

    def __init__(
        self,
        input_dims: Mapping[str, int],
        pairs: list[tuple[str, str]] | None = None,
        hidden_dim: int = 256,
        num_heads: int = 8,
        head_dim: int = 64,
        temperature: float = 0.05,
        include_modalities: bool = True,
        dropout: float = 0.0,
        pooling: PoolingKind = "mean",
    ) -> None:
        super().__init__(input_dims)
        if pairs is None:
            pairs = list(itertools.combinations(self.modalities, 2))
        self.pairs = [(str(a), str(b)) for a, b in pairs]
        repeated = sorted({p for p in self.pairs if self.pairs.count(p) > 1})
        if repeated:
            raise ConfigError(f"pairs repeat {[list(p) for p in repeated]}; list each pair once")
        for a, b in self.pairs:
            if a not in self.input_dims or b not in self.input_dims or a == b:
                raise ConfigError(f"pair {[a, b]} must name two different modalities of {self.modalities}")
        if not self.pairs and not include_modalities:
            raise ConfigError("InteractionFusion has no pairs and include_modalities is false: nothing to output")
        if temperature <= 0:
            raise ConfigError(f"temperature must be positive, not {temperature}")
        self.hidden_dim, self.include_modalities = hidden_dim, include_modalities
        self.projections = nn.ModuleDict(
            {m: projection(d, hidden_dim) for m, d in self.input_dims.items()} if include_modalities else {}
        )
        self.interactions = nn.ModuleDict(
            {
                f"{a}__{b}": _Interaction(self.input_dims[a], self.input_dims[b], num_heads, head_dim, temperature)
                for a, b in self.pairs
            }
        )
        self.readouts = nn.ModuleDict(
            {f"{a}__{b}": nn.Sequential(nn.Linear(num_heads, hidden_dim), nn.GELU()) for a, b in self.pairs}
        )
        parts = (self.modalities if include_modalities else []) + [f"{a}__{b}" for a, b in self.pairs]
        self.pools = nn.ModuleDict({p: Pooling(pooling, hidden_dim) for p in parts})
        self.dropout = nn.Dropout(dropout)

    @property
    def output_dim(self) -> int:
        return self.hidden_dim * len(self.pools)

    def fuse(self, features: Features) -> Tensor:
        pooled = []
        if self.include_modalities:
            for m in self.modalities:
                x, mask = features[m]
                pooled.append(self.pools[m](self.projections[m](x), mask))
        for a, b in self.pairs:
            key = f"{a}__{b}"
            (xa, mask_a), (xb, mask_b) = features[a], features[b]
            per_token = self.readouts[key](self.interactions[key](xa, xb, mask_b))  # (B, L_a, hidden)
            per_token = per_token * mask_b.any(dim=1)[:, None, None].to(per_token.dtype)  # b absent: zero
            pooled.append(self.pools[key](per_token, mask_a))
        return self.dropout(torch.cat(pooled, dim=-1))
