"""Factorized bilinear pooling of pairs of modalities: MFB, and its higher-order cascade MFH (Yu et al.)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mmfuse.adapters.base import Features, FusionAdapter
from mmfuse.adapters.layers import projection
from mmfuse.adapters.pooling import Pooling, PoolingKind
from mmfuse.errors import ConfigError
from mmfuse.registry import ADAPTERS

__all__ = ["BilinearFusion"]

_EPS = 1e-3  # the slope of the normalisation near 0 is at most 1 / (2·√ε) ≈ 16


def _signed_sqrt(x: Tensor) -> Tensor:
    """MFB's power normalisation ``sign(x)·√|x|``, shifted by ε so its slope stays bounded near 0 (unbounded, a
    bfloat16 rounding of ``x`` near 0 moved the gradients by 40 %: tests/test_precision.py)."""
    return torch.sign(x) * (torch.sqrt(x.abs() + _EPS) - _EPS**0.5)


@ADAPTERS.register()
class BilinearFusion(FusionAdapter):
    """Multi-modal factorized bilinear pooling (MFB) of every pair of modalities, ``order`` > 1 for MFH.

    Each modality is projected to ``hidden_dim`` and pooled to ``p_m``. For a pair ``(a, b)``, the bilinear
    form ``z_j = p_aᵀ W_j p_b`` of every output ``j`` is factored with rank ``factor``:
    ``z = SumPool_factor(U p_a ⊙ V p_b)``, then power- and L2-normalised. MFH chains ``order`` such
    blocks, each multiplying in the previous block's expanded product, and concatenates their outputs.
    The output concatenates the pooled modalities (``unimodal``) and every pair's ``z``:
    ``(B, hidden_dim · M + out_dim · order · pairs)``.

    Args:
        input_dims: embedding width of each modality (given by the task).
        hidden_dim: width each modality is projected and pooled to.
        out_dim: width of each pair's bilinear output (per order).
        factor: rank ``k`` of the factorization (MFB: 5).
        order: MFB blocks in the cascade (1: MFB, 2 or more: MFH).
        pairs: the modality pairs fused, e.g. ``[[rna, protein]]``; default every pair.
        unimodal: also put each pooled modality ``p_m`` in the output (needed with one modality).
        layer_norm: normalise each modality's tokens before projecting.
        pooling: how each modality's tokens are pooled: ``mean``, ``max``, ``cls`` or ``attention``.
        dropout: dropout on the expanded products (as MFB) and on the output.

    Examples:
        >>> import torch
        >>> fuse = BilinearFusion({"dna": 8, "protein": 4}, hidden_dim=16, out_dim=8, factor=2)
        >>> x = {"dna": (torch.randn(2, 5, 8), torch.ones(2, 5, dtype=torch.bool)),
        ...      "protein": (torch.randn(2, 3, 4), torch.ones(2, 3, dtype=torch.bool))}
        >>> fuse(x).shape  # 2 × 16 unimodal + 8 for the pair
        torch.Size([2, 40])
    """

    def __init__(
        self,
        input_dims: Mapping[str, int],
        hidden_dim: int = 64,
        out_dim: int = 64,
        factor: int = 5,
        order: int = 1,
        pairs: Sequence[Sequence[str]] | None = None,
        unimodal: bool = True,
        layer_norm: bool = True,
        pooling: PoolingKind = "mean",
        dropout: float = 0.0,
    ) -> None:
        super().__init__(input_dims)
        if pairs is None:
            chosen = [(a, b) for i, a in enumerate(self.modalities) for b in self.modalities[i + 1 :]]
        else:
            chosen = [tuple(p) for p in pairs]
            bad = [p for p in chosen if len(p) != 2 or p[0] == p[1] or not set(p) <= set(self.modalities)]
            if bad:
                raise ConfigError(f"BilinearFusion pairs must be two different modalities of {self.modalities}: {bad}")
        if not chosen and not unimodal:
            raise ConfigError("BilinearFusion has nothing to output: no pair of modalities and unimodal: false")
        if order < 1 or factor < 1:
            raise ConfigError(f"BilinearFusion needs order and factor of at least 1, not {order} and {factor}")
        self.pairs = [(str(a), str(b)) for a, b in chosen]
        self.hidden_dim, self.out_dim, self.factor, self.order, self.unimodal = (
            hidden_dim,
            out_dim,
            factor,
            order,
            unimodal,
        )
        self.projections = nn.ModuleDict({m: projection(d, hidden_dim, layer_norm) for m, d in self.input_dims.items()})
        self.pools = nn.ModuleDict({m: Pooling(pooling, hidden_dim) for m in self.modalities})
        expanded = out_dim * factor
        self.left = nn.ModuleDict(
            {f"{a}__{b}": nn.ModuleList(nn.Linear(hidden_dim, expanded) for _ in range(order)) for a, b in self.pairs}
        )
        self.right = nn.ModuleDict(
            {f"{a}__{b}": nn.ModuleList(nn.Linear(hidden_dim, expanded) for _ in range(order)) for a, b in self.pairs}
        )
        self.dropout = nn.Dropout(dropout)

    @property
    def output_dim(self) -> int:
        return self.hidden_dim * len(self.modalities) * self.unimodal + self.out_dim * self.order * len(self.pairs)

    def fuse(self, features: Features) -> Tensor:
        pooled = {m: self.pools[m](self.projections[m](features[m][0]), features[m][1]) for m in self.modalities}
        present = {m: features[m][1].any(dim=1, keepdim=True) for m in self.modalities}
        out = [pooled[m] for m in self.modalities] if self.unimodal else []
        batch = next(iter(pooled.values())).shape[0]
        # the bilinear blocks act on one vector per sample (cheap) and the power normalisation's slope grows
        # without bound near 0, so they run in float32 even under autocast: bfloat16 products there moved the
        # gradients by 40 % (tests/test_precision.py)
        with torch.autocast(pooled[self.modalities[0]].device.type, enabled=False):
            out += self._pairs({m: p.float() for m, p in pooled.items()}, present, batch)
        return self.dropout(torch.cat(out, dim=-1))

    def _pairs(self, pooled: dict[str, Tensor], present: dict[str, Tensor], batch: int) -> list[Tensor]:
        out = []
        for a, b in self.pairs:
            key = f"{a}__{b}"
            previous: Tensor | None = None
            for left, right in zip(self.left[key], self.right[key], strict=True):
                product = self.dropout(left(pooled[a]) * right(pooled[b]))  # (B, out_dim · factor)
                product = product if previous is None else product * previous  # MFH: the cascade
                previous = product
                z = product.view(batch, self.out_dim, self.factor).sum(dim=-1)
                z = F.normalize(_signed_sqrt(z), dim=-1)
                out.append(torch.where(present[a] & present[b], z, torch.zeros_like(z)))
        return out
