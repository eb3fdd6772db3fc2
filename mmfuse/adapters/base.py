"""The fusion-adapter interface: per-modality token embeddings in, one representation out."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping

from torch import Tensor, nn

__all__ = ["Features", "FusionAdapter"]

#: ``{modality: (embeddings (B, L_m, D_m), mask (B, L_m))}``
Features = Mapping[str, tuple[Tensor, Tensor]]


class FusionAdapter(nn.Module, ABC):
    """Base class of fusion adapters.

    Adapters are built by the task once the backbones exist: their first constructor argument is
    ``input_dims`` (``{modality: D_m}``), which YAML never repeats. In a config an adapter is written
    with its remaining options only::

        adapter:
          class_path: ConcatFusion
          init_args: {hidden_dim: 256}

    Args:
        input_dims: embedding width of each modality, keyed like the backbones.
    """

    def __init__(self, input_dims: Mapping[str, int]) -> None:
        super().__init__()
        if not input_dims:
            raise ValueError("a fusion adapter needs at least one modality")
        self.input_dims = dict(input_dims)

    @property
    @abstractmethod
    def output_dim(self) -> int:
        """Width of the fused representation."""

    @abstractmethod
    def forward(self, features: Features) -> Tensor:
        """Fuses ``{modality: (embeddings (B, L_m, D_m), mask (B, L_m))}`` into ``(B, output_dim)``."""
