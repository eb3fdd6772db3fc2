"""The fusion-adapter contract for every registered adapter and every subset of modalities."""

from __future__ import annotations

import itertools

import pytest
import torch

from mmfuse.adapters import ConcatFusion, FusionAdapter, masked_mean
from mmfuse.registry import ADAPTERS

DIMS = {"dna": 12, "rna": 8, "protein": 6}
LENGTHS = {"dna": 7, "rna": 5, "protein": 4}
SUBSETS = [s for r in (1, 2, 3) for s in itertools.combinations(sorted(DIMS), r)]


def _features(modalities, batch=3):
    features = {}
    for m in modalities:
        x = torch.randn(batch, LENGTHS[m], DIMS[m], requires_grad=True)
        mask = torch.ones(batch, LENGTHS[m], dtype=torch.bool)
        mask[1, LENGTHS[m] // 2 :] = False  # a padded sample
        features[m] = (x, mask)
    return features


@pytest.mark.parametrize("name", ADAPTERS.names())
@pytest.mark.parametrize("modalities", SUBSETS, ids="+".join)
def test_adapter_contract(name, modalities):
    adapter = ADAPTERS.get(name)({m: DIMS[m] for m in modalities})
    assert isinstance(adapter, FusionAdapter)
    adapter.eval()
    features = _features(modalities)
    out = adapter(features)
    assert out.shape == (3, adapter.output_dim)
    out.sum().backward()
    for m in modalities:
        grad = features[m][0].grad
        assert grad is not None and grad[features[m][1]].abs().sum() > 0, f"no gradient reaches {m}"
        assert grad[~features[m][1]].abs().sum() == 0, f"padding of {m} influences the output"
    # whatever stands in padded positions, the output stays the same
    garbage = {m: (x.detach().masked_fill(~mask[..., None], 1e4), mask) for m, (x, mask) in features.items()}
    torch.testing.assert_close(adapter(garbage), out.detach())


def test_masked_mean_ignores_padding():
    x = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [100.0, 100.0]]])
    mask = torch.tensor([[True, True, False]])
    torch.testing.assert_close(masked_mean(x, mask), torch.tensor([[2.0, 3.0]]))
    assert masked_mean(x, torch.zeros_like(mask)).abs().sum() == 0


def test_concat_projects_pools_and_concatenates_in_sorted_order():
    fuse = ConcatFusion({"rna": 4, "dna": 2}, hidden_dim=3, layer_norm=False)
    features = {"dna": (torch.randn(2, 5, 2), torch.ones(2, 5, dtype=torch.bool)),
                "rna": (torch.randn(2, 3, 4), torch.ones(2, 3, dtype=torch.bool))}  # fmt: skip
    out = fuse(features)
    expected = torch.cat([fuse.projections[m](features[m][0]).mean(1) for m in ("dna", "rna")], dim=-1)
    torch.testing.assert_close(out, expected)
    with pytest.raises(KeyError, match=r"built for \['dna', 'rna'\] but got no features for \['rna'\]"):
        fuse({"dna": features["dna"]})
