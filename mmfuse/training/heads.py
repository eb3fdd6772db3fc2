"""Prediction heads: a fused representation ``(B, in_dim)`` to outputs ``(B, out_dim)``."""

from __future__ import annotations

from abc import ABC
from collections.abc import Sequence
from typing import Literal

from torch import Tensor, nn

from mmfuse.registry import HEADS

__all__ = ["Head", "LinearHead", "MLPHead"]

_ACTIVATIONS = {"gelu": nn.GELU, "relu": nn.ReLU, "silu": nn.SiLU}


class Head(nn.Module, ABC):
    """Base class of heads. The task gives ``in_dim`` and ``out_dim``; YAML sets the rest.

    Args:
        in_dim: width of the fused representation.
        out_dim: number of outputs (targets).
    """

    def __init__(self, in_dim: int, out_dim: int) -> None:
        super().__init__()
        self.in_dim, self.out_dim = in_dim, out_dim


@HEADS.register()
class MLPHead(Head):
    """A multi-layer perceptron with dropout.

    Args:
        in_dim: width of the fused representation (given by the task).
        out_dim: number of outputs (given by the task).
        hidden_dims: widths of the hidden layers; empty for a single linear layer.
        dropout: dropout before every linear layer.
        activation: non-linearity between layers.

    Examples:
        >>> import torch
        >>> MLPHead(16, 30, hidden_dims=[8])(torch.randn(4, 16)).shape
        torch.Size([4, 30])
    """

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        hidden_dims: Sequence[int] = (256,),
        dropout: float = 0.1,
        activation: Literal["gelu", "relu", "silu"] = "gelu",
    ) -> None:
        super().__init__(in_dim, out_dim)
        layers: list[nn.Module] = []
        width = in_dim
        for hidden in hidden_dims:
            layers += [nn.Dropout(dropout), nn.Linear(width, hidden), _ACTIVATIONS[activation]()]
            width = hidden
        layers += [nn.Dropout(dropout), nn.Linear(width, out_dim)]
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


@HEADS.register()
class LinearHead(Head):
    """One linear layer, i.e. one linear read-out per target (IsoFormer's head after mean pooling).

    Args:
        in_dim: width of the fused representation (given by the task).
        out_dim: number of outputs (given by the task).
        dropout: dropout on the input.
    """

    def __init__(self, in_dim: int, out_dim: int, dropout: float = 0.0) -> None:
        super().__init__(in_dim, out_dim)
        self.net = nn.Sequential(nn.Dropout(dropout), nn.Linear(in_dim, out_dim))

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)
