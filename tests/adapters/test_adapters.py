"""The fusion-adapter contract, for every registered adapter, its option variants and every subset of modalities."""

from __future__ import annotations

import itertools

import pytest
import torch

from mmfuse.adapters import FusionAdapter
from mmfuse.registry import ADAPTERS, BUILTIN_SOURCE

BUILTINS = [e.name for e in ADAPTERS.entries() if e.source == BUILTIN_SOURCE]

DIMS = {"dna": 12, "rna": 8, "protein": 6}
LENGTHS = {"dna": 7, "rna": 5, "protein": 4}
SUBSETS = [s for r in (1, 2, 3) for s in itertools.combinations(sorted(DIMS), r)]
SMALL = {"hidden_dim": 16, "num_heads": 2, "head_dim": 4}

#: option variants per built-in adapter (a function of the modalities, small sizes for speed);
#: an adapter not listed is tested with its defaults
VARIANTS = {
    "ConcatFusion": [lambda ms: {"hidden_dim": 16}, lambda ms: {"hidden_dim": 16, "pooling": "attention"}],
    "TokenConcatFusion": [
        lambda ms: {**SMALL, "num_layers": 2},
        lambda ms: {**SMALL, "pooling": "cls"},
        lambda ms: {**SMALL, "num_layers": 0, "pooling": "max"},
    ],
    "CrossAttentionFusion": [
        lambda ms: {"num_heads": 2, "head_dim": 4, "num_layers": 2},
        lambda ms: {"num_heads": 2, "head_dim": 4, "queries": [ms[0]], "norm": "post", "pooling": "attention"},
        lambda ms: {"num_heads": 2, "head_dim": 4, "norm": "none", "feed_forward": False, "pooling": "cls"},
        lambda ms: {"num_heads": 2, "head_dim": 4, "queries": [ms[-1]]},  # pre-norm, keys-only modalities
    ],
    "PerceiverResampler": [
        lambda ms: {"dim": 16, "num_latents": 3, "num_heads": 2, "head_dim": 4},
        lambda ms: {
            "dim": 16,
            "num_latents": 3,
            "num_heads": 2,
            "head_dim": 4,
            "mode": "per_modality",
            "pooling": "attention",
        },  # fmt: skip
    ],
    "CAbstractor": [
        lambda ms: {"hidden_dim": 16, "num_queries": 3},
        lambda ms: {"hidden_dim": 16, "num_queries": 9, "kernel_size": 5, "depth": 1, "pooling": "max"},
    ],
    "GatedFusion": [
        lambda ms: {"hidden_dim": 16, "gate_dim": 8},
        lambda ms: {"hidden_dim": 16, "gate_dim": 4, "pooling": "attention", "layer_norm": False},
    ],
    "LowRankTensorFusion": [
        lambda ms: {"hidden_dim": 8, "fused_dim": 12, "rank": 3},
        lambda ms: {"hidden_dim": 8, "fused_dim": 6, "rank": 1, "pooling": "max", "layer_norm": False},
    ],
    "MulTFusion": [
        lambda ms: {"dim": 8, "num_heads": 2, "head_dim": 4, "num_layers": 1},
        lambda ms: {"dim": 8, "num_heads": 2, "head_dim": 4, "num_layers": 2, "self_layers": 0, "pooling": "attention"},
    ],
    "QFormer": [
        lambda ms: {"dim": 8, "num_queries": 3, "num_layers": 2, "num_heads": 2, "head_dim": 4},
        lambda ms: {
            "dim": 8,
            "num_queries": 2,
            "num_layers": 3,
            "cross_attention_every": 2,
            "num_heads": 2,
            "head_dim": 4,
            "pooling": "none",
        },
    ],
    "BilinearFusion": [
        lambda ms: {"hidden_dim": 8, "out_dim": 4, "factor": 3},
        lambda ms: {
            "hidden_dim": 8,
            "out_dim": 4,
            "factor": 2,
            "order": 2,
            "pooling": "max",
            "pairs": [list(ms[::-1][:2])] if len(ms) > 1 else [],
        },
        lambda ms: {"hidden_dim": 8, "out_dim": 4, "factor": 2, "unimodal": len(ms) == 1},
    ],
    "InteractionFusion": [
        lambda ms: SMALL,
        lambda ms: {**SMALL, "pairs": [list(ms[::-1][:2])] if len(ms) > 1 else [], "pooling": "attention"},
    ],
}

CASES = [
    pytest.param(name, i, modalities, id=f"{name}[{i}]-{'+'.join(modalities)}")
    for name in ADAPTERS.names()
    for i in range(len(VARIANTS.get(name, [dict])))
    for modalities in SUBSETS
]


def _build(name: str, variant: int, modalities) -> FusionAdapter:
    options = VARIANTS.get(name, [lambda ms: {}])[variant](list(modalities))
    adapter = ADAPTERS.get(name)({m: DIMS[m] for m in modalities}, **options)
    assert isinstance(adapter, FusionAdapter)
    return adapter.eval()


def _features(modalities, batch=4, requires_grad=False):
    features = {}
    for m in modalities:
        x = torch.randn(batch, LENGTHS[m], DIMS[m], requires_grad=requires_grad)
        mask = torch.ones(batch, LENGTHS[m], dtype=torch.bool)
        mask[1, LENGTHS[m] // 2 :] = False  # a padded sample
        mask[2, 1:] = False  # a sample of one token
        features[m] = (x, mask)
    return features


def _garbage(x: torch.Tensor, where: torch.Tensor, value: float) -> torch.Tensor:
    return x.detach().masked_fill(where.unsqueeze(-1), value)


@pytest.mark.parametrize(("name", "variant", "modalities"), CASES)
def test_shapes_and_gradients(name, variant, modalities):
    adapter = _build(name, variant, modalities)
    features = _features(modalities, requires_grad=True)
    out = adapter(features)
    assert out.shape == (4, adapter.output_dim)
    assert torch.isfinite(out).all()
    (out * torch.randn_like(out)).sum().backward()
    for m, (x, mask) in features.items():
        assert x.grad is not None and x.grad[mask].abs().sum() > 0, f"no gradient reaches {m}"
        assert x.grad[~mask].abs().sum() == 0, f"padding of {m} influences the output"
    # an unused parameter breaks DistributedDataParallel (unless find_unused_parameters is set)
    unused = [n for n, p in adapter.named_parameters() if p.grad is None]
    assert not unused, f"parameters without gradient: {unused}"


@pytest.mark.parametrize(("name", "variant", "modalities"), CASES)
def test_padding_invariance(name, variant, modalities):
    adapter = _build(name, variant, modalities)
    features = _features(modalities)
    reference = adapter(features)
    padded = {}
    for m, (x, mask) in features.items():  # three more padding positions, holding NaN, inf and 1e4
        extra = torch.tensor([float("nan"), float("inf"), 1e4]).view(1, 3, 1).expand(x.shape[0], 3, x.shape[2])
        padded[m] = (torch.cat([_garbage(x, ~mask, float("nan")), extra], 1),
                     torch.cat([mask, torch.zeros(x.shape[0], 3, dtype=torch.bool)], 1))  # fmt: skip
    torch.testing.assert_close(adapter(padded), reference)


@pytest.mark.parametrize(("name", "variant", "modalities"), CASES)
def test_batch_order_equivariance(name, variant, modalities):
    adapter = _build(name, variant, modalities)
    features = _features(modalities)
    order = torch.tensor([2, 0, 3, 1])
    permuted = {m: (x[order], mask[order]) for m, (x, mask) in features.items()}
    torch.testing.assert_close(adapter(permuted), adapter(features)[order])


@pytest.mark.parametrize(("name", "variant", "modalities"), [c for c in CASES if len(c.values[2]) > 1])
def test_absent_modality_is_ignored(name, variant, modalities):
    adapter = _build(name, variant, modalities)
    features = _features(modalities)
    reference = adapter(features)
    for absent in modalities:  # sample 0 lacks one modality; whatever stands in its slot
        outputs = []
        for value in (float("nan"), 1e4, 0.0, -3.0):
            x, mask = features[absent]
            row = torch.zeros_like(mask)
            row[0] = True
            changed = dict(features)
            changed[absent] = (_garbage(x, row, value), mask & ~row)
            outputs.append(adapter(changed))
        for out in outputs[1:]:
            torch.testing.assert_close(out, outputs[0])
        torch.testing.assert_close(outputs[0][1:], reference[1:])  # other samples are untouched
        assert not torch.allclose(outputs[0][0], reference[0]), f"dropping {absent} changed nothing"


#: fixed-seed statistics of each built-in adapter's output (defaults, three modalities): a refactor that
#: changes the math changes these. Update them only for an intended change, and say so in the commit.
GOLDEN = {
    "BilinearFusion": (0.236804, -0.00129112),
    "CAbstractor": (0.144119, -0.00128429),
    "ConcatFusion": (0.354636, 0.00667467),
    "CrossAttentionFusion": (0.542002, 0.021918),
    "GatedFusion": (0.203937, 0.00478344),
    "InteractionFusion": (0.220909, 0.00420959),
    "LowRankTensorFusion": (0.0363351, -2.04109e-05),
    "MulTFusion": (0.664067, -0.000666505),
    "PerceiverResampler": (0.752302, -0.00143212),
    "QFormer": (0.816989, 0.00870663),
    "TokenConcatFusion": (0.370425, -0.000910947),
}


@pytest.mark.parametrize("name", BUILTINS)  # a plugin's golden values live in its own tests
def test_golden_statistics(name):
    assert name in GOLDEN, f"add {name}'s golden statistics to GOLDEN"
    torch.manual_seed(0)
    adapter = ADAPTERS.get(name)(dict(DIMS)).eval()
    torch.manual_seed(1)
    out = adapter(_features(sorted(DIMS)))
    ramp = torch.linspace(-1.0, 1.0, out.numel()).view_as(out)  # position-sensitive, unlike a plain mean
    stats = (out.abs().mean().item(), (out * ramp).mean().item())
    assert stats == pytest.approx(GOLDEN[name], rel=1e-4, abs=1e-6), stats
