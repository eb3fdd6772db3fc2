from __future__ import annotations

import pytest
import torch

from mmfuse.registry import HEADS
from mmfuse.training import Head, LinearHead, MLPHead


@pytest.mark.parametrize("name", HEADS.names())
def test_head_contract(name):
    head = HEADS.get(name)(16, 30)
    assert isinstance(head, Head) and (head.in_dim, head.out_dim) == (16, 30)
    x = torch.randn(4, 16, requires_grad=True)
    out = head(x)
    assert out.shape == (4, 30)
    out.sum().backward()
    assert x.grad is not None and all(p.grad is not None for p in head.parameters())


def test_mlp_layers():
    head = MLPHead(16, 3, hidden_dims=[8, 4], dropout=0.0, activation="relu")
    linears = [m for m in head.modules() if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(16, 8), (8, 4), (4, 3)]
    assert [(m.in_features, m.out_features) for m in MLPHead(16, 3, hidden_dims=[]).modules()
            if isinstance(m, torch.nn.Linear)] == [(16, 3)]  # fmt: skip


def test_linear_head_is_one_linear_read_out_per_target():
    head = LinearHead(5, 30).eval()
    x = torch.randn(2, 5)
    linear = head.net[1]
    torch.testing.assert_close(head(x), x @ linear.weight.T + linear.bias)
