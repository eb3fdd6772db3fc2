"""Attention and interaction building blocks against explicit formulas."""

from __future__ import annotations

import math

import pytest
import torch

from mmfuse.adapters import CrossAttentionFusion, InteractionFusion
from mmfuse.adapters.interaction import masked_log_avg_exp
from mmfuse.adapters.layers import CrossAttention


def test_cross_attention_matches_the_formula():
    attn = CrossAttention(q_dim=6, kv_dim=4, num_heads=2, head_dim=3).eval()
    x, c = torch.randn(2, 5, 6), torch.randn(2, 7, 4)
    mask = torch.ones(2, 7, dtype=torch.bool)
    mask[1, 4:] = False
    out = attn(x, c, mask)
    for b in range(2):
        q = attn.to_q(x[b]).view(5, 2, 3).transpose(0, 1)
        k, v = attn.to_kv(c[b]).view(7, 2, 2, 3).permute(1, 2, 0, 3)
        scores = q @ k.transpose(-1, -2) / math.sqrt(3)
        scores = scores.masked_fill(~mask[b], float("-inf"))
        heads = torch.softmax(scores, -1) @ v  # (H, Lq, head_dim)
        expected = attn.to_out(heads.transpose(0, 1).reshape(5, 6))
        torch.testing.assert_close(out[b], expected)


def test_cross_attention_without_context_is_exactly_zero():
    attn = CrossAttention(4, 4, 2, 2)
    out = attn(torch.randn(2, 3, 4), torch.randn(2, 5, 4), torch.tensor([[False] * 5, [True] * 5]))
    assert out[0].abs().sum() == 0 and out[1].abs().sum() > 0


def test_log_avg_exp_runs_from_mean_to_max():
    x = torch.tensor([[0.1, 0.5, 0.3, 9.0]])
    mask = torch.tensor([[True, True, True, False]])
    assert masked_log_avg_exp(x, mask, torch.tensor(1e-4)).item() == pytest.approx(0.5, abs=1e-3)
    assert masked_log_avg_exp(x, mask, torch.tensor(1e4)).item() == pytest.approx(0.3, abs=1e-3)
    t = torch.tensor(0.2)
    expected = 0.2 * math.log(sum(math.exp(v / 0.2) for v in (0.1, 0.5, 0.3)) / 3)
    assert masked_log_avg_exp(x, mask, t).item() == pytest.approx(expected, rel=1e-5)
    assert masked_log_avg_exp(x, torch.zeros_like(mask), t).item() == 0.0


def test_interaction_features_are_similarities_reduced_over_the_second_modality():
    fuse = InteractionFusion({"dna": 4, "protein": 3}, num_heads=2, head_dim=3, include_modalities=False).eval()
    inter = fuse.interactions["dna__protein"]
    a, b = torch.randn(1, 5, 4), torch.randn(1, 6, 3)
    mask = torch.tensor([[True] * 4 + [False] * 2])
    per_token = inter(a, b, mask)  # (1, 5, heads)
    qa = torch.nn.functional.normalize(inter.to_first(a).view(5, 2, 3), dim=-1)
    kb = torch.nn.functional.normalize(inter.to_second(b).view(6, 2, 3), dim=-1)
    t = inter.log_temperature.exp()
    for h in range(2):
        sim = qa[:, h] @ kb[:4, h].T  # (5, 4), padding excluded
        expected = t * (torch.logsumexp(sim / t, dim=1) - math.log(4))
        torch.testing.assert_close(per_token[0, :, h], expected)
    assert fuse.output_dim == fuse.hidden_dim


def test_cross_attention_queries_choose_the_output():
    dims = {"dna": 12, "rna": 8, "protein": 6}
    assert CrossAttentionFusion(dims, num_heads=2, head_dim=4).output_dim == 26
    only_dna = CrossAttentionFusion(dims, queries=["dna"], num_heads=2, head_dim=4)
    assert only_dna.output_dim == 12
    assert set(only_dna.layers[0].attn) == {"dna__protein", "dna__rna"}  # the others are keys only
    with pytest.raises(ValueError, match=r"must name one or more of the modalities .*unknown: \['atac'\]"):
        CrossAttentionFusion(dims, queries=["atac"])


def test_interaction_pairs_are_checked():
    with pytest.raises(ValueError, match=r"pair \['dna', 'dna'\] must name two different modalities"):
        InteractionFusion({"dna": 4, "protein": 3}, pairs=[("dna", "dna")])
    with pytest.raises(ValueError, match=r"pairs repeat \[\['dna', 'protein'\]\]; list each pair once"):
        InteractionFusion({"dna": 4, "protein": 3}, pairs=[("dna", "protein"), ("dna", "protein")])
    with pytest.raises(ValueError, match="nothing to output"):
        InteractionFusion({"dna": 4}, include_modalities=False)
