"""Poolings against plain computations on unpadded rows."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from mmfuse.adapters.pooling import (
    POOLINGS,
    AttentionPooling,
    Pooling,
    first_token,
    masked_adaptive_avg_pool,
    masked_max,
    masked_mean,
)

X = torch.tensor([[[1.0, -2.0], [3.0, 4.0], [100.0, 100.0]], [[5.0, 6.0], [-7.0, 8.0], [9.0, -1.0]]])
MASK = torch.tensor([[True, True, False], [True, True, True]])


def test_mean_max_first_token_ignore_padding():
    torch.testing.assert_close(masked_mean(X, MASK), torch.tensor([[2.0, 1.0], [7 / 3, 13 / 3]]))
    torch.testing.assert_close(masked_max(X, MASK), torch.tensor([[3.0, 4.0], [9.0, 8.0]]))
    torch.testing.assert_close(first_token(X, MASK), torch.tensor([[1.0, -2.0], [5.0, 6.0]]))
    late = torch.tensor([[False, True, True], [True, True, True]])  # first unmasked token, not position 0
    torch.testing.assert_close(first_token(X, late)[0], torch.tensor([3.0, 4.0]))


@pytest.mark.parametrize("kind", POOLINGS)
def test_rows_without_tokens_pool_to_zero(kind):
    pool = Pooling(kind, dim=2)
    out = pool(X, torch.tensor([[False] * 3, [True] * 3]))
    assert out[0].abs().sum() == 0 and out[1].abs().sum() > 0


def test_attention_pooling_is_a_softmax_weighted_mean():
    pool = AttentionPooling(2)
    scores = pool.score(X[0, :2]).squeeze(-1)
    expected = (torch.softmax(scores, 0).unsqueeze(-1) * X[0, :2]).sum(0)
    torch.testing.assert_close(pool(X, MASK)[0], expected)
    with torch.no_grad():  # equal scores: the plain mean
        pool.score.weight.zero_()
    torch.testing.assert_close(pool(X, MASK), masked_mean(X, MASK))


def test_unknown_pooling_is_named():
    with pytest.raises(ValueError, match="unknown pooling 'sum'; choose one of mean, max, cls, attention"):
        Pooling("sum", 2)  # type: ignore[arg-type]


@pytest.mark.parametrize("length", [1, 3, 7, 16, 23])
@pytest.mark.parametrize("size", [1, 4, 5])
def test_masked_adaptive_pool_equals_torch_on_each_unpadded_row(length, size):
    x = torch.randn(2, 30, 3)
    mask = torch.zeros(2, 30, dtype=torch.bool)
    mask[0, :length] = True
    mask[1, :] = True
    out = masked_adaptive_avg_pool(x, mask, size)
    for row, n in ((0, length), (1, 30)):
        expected = F.adaptive_avg_pool1d(x[row, :n].T.unsqueeze(0), size)[0].T
        torch.testing.assert_close(out[row], expected)
    assert masked_adaptive_avg_pool(x, torch.zeros_like(mask), size).abs().sum() == 0
