"""An auxiliary contrastive alignment objective between two modalities (CLIP-style InfoNCE).

The task adds ``weight · L_align`` to its objective's loss: each sample's two modalities (RNA and its
protein, say) are pooled from the backbones' tokens, projected to a common space and normalised, and
the loss asks each sample's pair to be more similar than its pairings with the other samples of the
batch, in both directions. Under DDP the embeddings of every process are gathered (with their
gradients), so the negatives are those of the global batch and the loss is the one a single process
would compute on the joined batch (``tests/training/test_alignment.py`` runs two gloo processes).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mmfuse.adapters.pooling import masked_mean
from mmfuse.errors import ConfigError

__all__ = ["AlignmentOptions", "ContrastiveAlignment", "gather_with_grad"]


@dataclass
class AlignmentOptions:
    """The contrastive alignment of a task (``alignment:`` of ``model.init_args``).

    Args:
        modalities: the two modalities aligned, e.g. ``[rna, protein]``.
        weight: its weight in the training loss (``loss = objective + weight · alignment``).
        dim: width of the common space both are projected to.
        temperature: initial softmax temperature ``τ`` (CLIP: 0.07).
        learn_temperature: learn ``τ`` (as CLIP, clamped to ``τ ≥ 0.01``), or keep it fixed.
    """

    modalities: tuple[str, str] | list[str]
    weight: float = 0.1
    dim: int = 128
    temperature: float = 0.07
    learn_temperature: bool = True


def gather_with_grad(x: Tensor) -> Tensor:
    """``x`` of every process concatenated along the first dimension, differentiably (the gradient of
    each process's part goes back to it); ``x`` itself without ``torch.distributed``."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return x
    from torch.distributed.nn.functional import all_gather

    return torch.cat(all_gather(x), dim=0)


class ContrastiveAlignment(nn.Module):
    """Symmetric InfoNCE between two modalities' pooled, projected and normalised embeddings.

    ``u_i = normalize(W_a LN(mean_a(x_i)))``, ``v_i`` likewise, logits ``s_ij = u_iᵀ v_j / τ`` over the
    samples that have both modalities, ``L = (CE(s, diag) + CE(sᵀ, diag)) / 2``. A batch with fewer than
    two such samples gives 0.

    Args:
        options: the modalities, width and temperature (:class:`AlignmentOptions`).
        input_dims: the width of each modality's backbone embeddings.
        gather: joins the embeddings of every process (:func:`gather_with_grad`).
    """

    def __init__(self, options: AlignmentOptions, input_dims: Mapping[str, int],
                 gather: Callable[[Tensor], Tensor] = gather_with_grad) -> None:  # fmt: skip
        super().__init__()
        pair = list(options.modalities)
        if len(pair) != 2 or pair[0] == pair[1]:
            raise ConfigError(f"alignment.modalities must name two different modalities, not {pair}")
        unknown = [m for m in pair if m not in input_dims]
        if unknown:
            raise ConfigError(f"alignment.modalities names {unknown}, which have no backbone ({sorted(input_dims)})")
        if not options.temperature > 0 or not options.weight >= 0 or options.dim < 1:
            raise ConfigError(
                f"alignment needs temperature > 0, weight >= 0 and dim >= 1, not {options.temperature}, "
                f"{options.weight} and {options.dim}"
            )
        self.modalities, self.weight, self.gather = pair, float(options.weight), gather
        self.projections = nn.ModuleDict(
            {m: nn.Sequential(nn.LayerNorm(input_dims[m]), nn.Linear(input_dims[m], options.dim)) for m in pair}
        )
        scale = torch.tensor(math.log(1.0 / options.temperature))
        if options.learn_temperature:
            self.log_scale = nn.Parameter(scale)
        else:
            self.register_buffer("log_scale", scale)

    def forward(self, features: Mapping[str, tuple[Tensor, Tensor]]) -> Tensor:
        """The loss of a batch's ``{modality: (embeddings (B, L, D), mask (B, L))}`` (every process's)."""
        a, b = self.modalities
        embedded = []
        for m in (a, b):
            x, mask = features[m]
            pooled = masked_mean(x.float().masked_fill(~mask.unsqueeze(-1), 0.0), mask)
            embedded.append(F.normalize(self.projections[m](pooled), dim=-1))
        both = features[a][1].any(dim=1) & features[b][1].any(dim=1)
        u, v, both = self.gather(embedded[0]), self.gather(embedded[1]), self.gather(both)
        if int(both.sum()) < 2:  # no negatives: nothing to contrast (kept in the graph for DDP)
            return (u.sum() + v.sum() + self.log_scale) * 0.0
        u, v = u[both], v[both]
        scale = self.log_scale.clamp(max=math.log(100.0)).exp()  # τ ≥ 0.01, as CLIP
        logits = scale * u @ v.T
        target = torch.arange(len(u), device=u.device)
        return (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2
