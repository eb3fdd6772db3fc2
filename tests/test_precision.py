"""Mixed precision: every adapter and backbone under bfloat16 autocast, and the quickstart trained with
``precision="bf16-mixed"`` (CPU) and ``"16-mixed"`` (CUDA) against ``"32-true"``.

Tolerances come from bfloat16's 8 significant bits: one rounding is off by at most u = 2⁻⁸ ≈ 0.4 %.
Autocast rounds the inputs and weights of every matrix product and convolution and their outputs, a
few roundings in a row that partly average out; anything much larger than a few u means a part ran
in the wrong precision (a count or a sum in bfloat16, an overflow, a mask fill leaking).
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from mmfuse.adapters import FusionAdapter, masked_mean
from mmfuse.adapters.interaction import masked_log_avg_exp
from mmfuse.registry import ADAPTERS, BACKBONES

#: error bound of an adapter's output, relative to its scale: 3e-2 ≈ 8 u. The worst measured on these
#: inputs (five seeds, both embedding dtypes) is 0.8e-2 (CAbstractor: projection, two convolutions, an
#: MLP); the others at most 0.5e-2.
ADAPTER_TOLERANCE = 3e-2
#: bound of the gradient reaching the embeddings, relative to its norm: backward rounds once more per
#: product, and summed gradients cancel; measured at most 1.1e-2 (CAbstractor).
ADAPTER_GRAD_TOLERANCE = 5e-2
#: bound of a backbone's embeddings: tiny presets are a few layers deep (Enformer and Borzoi add a
#: convolution tower, BatchNorm and attention pooling); measured 1.3e-2 (Borzoi), 1.0e-2 (Enformer),
#: below 0.4e-2 for the transformers.
BACKBONE_TOLERANCE = 5e-2

DIMS = {"dna": 12, "rna": 8, "protein": 6}
#: 301 DNA tokens: bfloat16 counts integers exactly only up to 256 (301 rounds to 300)
LENGTHS = {"dna": 301, "rna": 40, "protein": 9}
#: small options per built-in adapter (its attention, pooling and convolution paths); an adapter not
#: listed (a plugin) is tested with its defaults
OPTIONS = {
    "ConcatFusion": {"hidden_dim": 16, "pooling": "attention"},
    "TokenConcatFusion": {"hidden_dim": 16, "num_heads": 2, "head_dim": 8},
    "CrossAttentionFusion": {"num_heads": 2, "head_dim": 8},
    "PerceiverResampler": {"dim": 16, "num_latents": 4, "depth": 1, "num_heads": 2, "head_dim": 8},
    "CAbstractor": {"hidden_dim": 16, "num_queries": 4, "depth": 1},
    "InteractionFusion": {"hidden_dim": 16, "num_heads": 2, "head_dim": 8},
}


def _relative_error(out: torch.Tensor, reference: torch.Tensor) -> float:
    """``max |out - reference| / max |reference|``: the error relative to the output's scale (element by
    element, relative errors mean nothing where the reference is close to zero)."""
    return ((out.float() - reference).abs().max() / reference.abs().max()).item()


def _features(dtype: torch.dtype) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Random embeddings in ``dtype`` (backbones emit float32 or, under autocast, bfloat16), with a
    padded sample, NaN in its padding, and a sample without protein."""
    features = {}
    for m in sorted(DIMS):
        x = torch.randn(4, LENGTHS[m], DIMS[m]) * 3 + 1
        mask = torch.ones(4, LENGTHS[m], dtype=torch.bool)
        mask[1, LENGTHS[m] // 3 :] = False
        if m == "protein":
            mask[2] = False
        features[m] = (x.masked_fill(~mask.unsqueeze(-1), float("nan")).to(dtype), mask)
    return features


def _forward_backward(adapter, features, autocast: bool) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The adapter's output (float32) and the gradients of a fixed projection of it w.r.t. the embeddings;
    without autocast the embeddings are taken in float32 (the same values)."""
    adapter.zero_grad()
    inputs = {m: ((x if autocast else x.float()).detach().requires_grad_(), mask) for m, (x, mask) in features.items()}
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        out = adapter(inputs)
    ramp = torch.linspace(-1.0, 1.0, out.numel()).view_as(out)
    (out.float() * ramp).sum().backward()
    return out.float(), {m: x.grad.float() for m, (x, _) in inputs.items()}


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32-embeddings", "bf16-embeddings"])
@pytest.mark.parametrize("name", ADAPTERS.names())
def test_adapter_under_bf16_autocast_is_finite_and_close_to_fp32(name, dtype):
    adapter = ADAPTERS.get(name)(dict(DIMS), **OPTIONS.get(name, {})).train()
    features = _features(dtype)
    reference, reference_grads = _forward_backward(adapter, features, autocast=False)
    out, grads = _forward_backward(adapter, features, autocast=True)

    assert torch.isfinite(out).all()
    assert all(torch.isfinite(g).all() for g in grads.values())
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in adapter.parameters())
    assert {p.dtype for p in adapter.parameters()} == {torch.float32}, "autocast must not cast the weights"
    error = _relative_error(out, reference)
    assert error < ADAPTER_TOLERANCE, f"{name}: output off by {error:.3g} of its scale"
    flat, flat_reference = (torch.cat([g[m].flatten() for m in sorted(g)]) for g in (grads, reference_grads))
    grad_error = ((flat - flat_reference).norm() / flat_reference.norm()).item()
    assert grad_error < ADAPTER_GRAD_TOLERANCE, f"{name}: embedding gradients off by {grad_error:.3g}"


# ---------------------------------------------------------------------------------------------
# reductions in float32

#: unit roundoff of bfloat16 (8 significant bits): a value rounded once is off by at most this, relatively
BF16_U = 2.0**-8


def test_masked_mean_of_bf16_tokens_is_rounded_once():
    """The sum and the count run in float32, so only the result is rounded: in bfloat16 the sum was
    rounded too and 1,537 tokens counted as 1,536 (0.56 % off here)."""
    x = (torch.randn(8, 1537, 16) + 3).bfloat16()
    mask = torch.ones(8, 1537, dtype=torch.bool)
    mask[1, 1000:] = False
    out = masked_mean(x, mask)
    assert out.dtype == torch.bfloat16
    exact = (x.double() * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
    assert ((out.double() - exact).abs() / exact.abs()).max() <= BF16_U


def test_masked_mean_of_a_long_fp16_sequence_does_not_overflow():
    """6,144 bins (Borzoi's) of values near 20 sum past float16's largest number, 65,504."""
    x = (torch.randn(2, 6144, 4) + 20).half()
    out = masked_mean(x, torch.ones(2, 6144, dtype=torch.bool))
    torch.testing.assert_close(out.double(), x.double().mean(1), atol=0, rtol=2.0**-10)


def test_log_avg_exp_of_bf16_similarities_is_rounded_once():
    """In bfloat16, ``x / t`` (up to 1 / t = 20) had a resolution of 0.125 and the final difference of
    two such numbers cancelled most digits (1.1 % off here); computed in float32 only the result rounds."""
    a, b = (nn.functional.normalize(torch.randn(4, 2, n, 8), dim=-1) for n in (30, 300))
    sim = torch.einsum("bhid,bhjd->bhij", a, b).bfloat16()
    mask = torch.ones(sim.shape, dtype=torch.bool)
    mask[0, :, :, 100:] = False
    temperature = torch.tensor(0.05)
    out = masked_log_avg_exp(sim, mask, temperature)
    assert out.dtype == torch.bfloat16
    exact = masked_log_avg_exp(sim.double(), mask, temperature.double())
    assert ((out.double() - exact).abs() / exact.abs().max()).max() <= BF16_U
    # float16 and a small learned temperature: x / t would overflow
    assert torch.isfinite(masked_log_avg_exp(sim.half(), mask, torch.tensor(1e-5))).all()


class _Probe(FusionAdapter):
    """Records the dtypes :meth:`fuse` is given."""

    def __init__(self, input_dims) -> None:
        super().__init__(input_dims)
        self.scale = nn.Parameter(torch.ones(()))
        self.seen: dict[str, torch.dtype] = {}

    @property
    def output_dim(self) -> int:
        return 1

    def fuse(self, features):
        self.seen = {m: x.dtype for m, (x, _) in features.items()}
        return self.scale * sum(x.float().sum((1, 2)) for x, _ in features.values()).unsqueeze(1)


def test_adapters_get_embeddings_in_their_parameters_dtype():
    """Under autocast Enformer and Borzoi return bfloat16 and the transformers float32; the adapter sees
    float32 (no residual stream rounded to bfloat16), and a bfloat16 model sees bfloat16 throughout."""
    probe = _Probe({"dna": 3, "rna": 2})
    features = {"dna": (torch.randn(2, 4, 3).bfloat16(), torch.ones(2, 4, dtype=torch.bool)),
                "rna": (torch.randn(2, 5, 2), torch.ones(2, 5, dtype=torch.bool))}  # fmt: skip
    probe(features)
    assert probe.seen == {"dna": torch.float32, "rna": torch.float32}
    probe.to(torch.bfloat16)(features)
    assert probe.seen == {"dna": torch.bfloat16, "rna": torch.bfloat16}


# ---------------------------------------------------------------------------------------------
# backbones


@pytest.fixture(scope="module")
def tiny_kwargs(tmp_path_factory) -> dict[str, dict]:
    """Constructor arguments of a small random model of each registered backbone (as in
    tests/backbones/test_backbones.py); HuggingFaceEncoder reads a tiny random BERT from disk."""
    from tests.backbones.conftest import make_tiny_hf
    from tests.backbones.test_backbones import NO_PRESETS

    kwargs = {name: NO_PRESETS.get(name, {"preset": "tiny"}) for name in BACKBONES.names()}
    kwargs["HuggingFaceEncoder"] = {"source": str(make_tiny_hf("bert", tmp_path_factory.mktemp("tiny-bert")))}
    return kwargs


@pytest.mark.parametrize("name", BACKBONES.names())
def test_backbone_under_bf16_autocast_is_finite_and_close_to_fp32(name, tiny_kwargs, sequences):
    from tests.backbones.test_backbones import CATEGORIES

    backbone = BACKBONES.get(name)(**tiny_kwargs[name]).eval()  # dropout off: both runs see the same model
    batch = backbone.tokenizer({**sequences, **CATEGORIES}[backbone.modality])
    with torch.no_grad():
        reference = backbone(batch)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = backbone(batch)
    assert torch.equal(out.mask, reference.mask)
    embeddings, expected = out.embeddings[out.mask], reference.embeddings[reference.mask]
    assert torch.isfinite(embeddings).all()
    error = _relative_error(embeddings, expected)
    assert error < BACKBONE_TOLERANCE, f"{name}: embeddings off by {error:.3g} of their scale"

    backbone.train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = backbone(batch)
    out.embeddings[out.mask].float().square().mean().backward()
    trained = [(n, p) for n, p in backbone.named_parameters() if p.requires_grad]
    assert all(p.dtype == torch.float32 for _, p in trained)
    bad = [n for n, p in trained if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not bad, f"missing or non-finite gradients under autocast: {bad[:5]}"


# ---------------------------------------------------------------------------------------------
# the quickstart, trained

#: Bounds of |bf16-mixed − 32-true| after two epochs of the quickstart on 80 genes (24 AdamW steps),
#: evaluated on its validation split (27 transcripts). The two runs do not follow one trajectory: this
#: training is chaotic enough that rounding noise grows step by step; even float32 against float32 with
#: another thread count (only the order of summation changes) ends 0.025 apart in loss and 0.028 in
#: Spearman. Measured with this set-up for seeds 0–9, bf16-mixed and 32-true differ by 0.5–23 % in
#: validation loss (seed 0, the quickstart's: 1.0 %) and by 0.001–0.041 in mean Spearman (seed 0:
#: 0.041); without validation during fit (another random stream) the worst of ten seeds was 17 % and
#: 0.083. Across seeds the validation loss itself ranges 1.08–2.52 and the Spearman -0.06 to 0.29.
#: The classification quickstart, seeds 0–7: loss 0.2–20 % (seed 0: 0.5 %), accuracy at most one
#: transcript (0.037; seed 0: none). The bounds are about 1.7 times the worst of these runs, so another
#: CPU's rounding should not fail them, while a broken mixed-precision run (weights cast to bfloat16, a
#: loss or metric computed in bfloat16, NaN) lands far outside. Four epochs instead of two widen the
#: gaps (Spearman up to 0.12). On another CPU (an AMD EPYC without AVX-512, where bfloat16 matrix products
#: are not native), seed 0 of the classification quickstart ends 41 % apart in validation loss (1.93 in
#: float32 against 1.13) with accuracy 0.26 against 0.30: a classifier's validation loss, once it
#: overfits, rests on a few confidently wrong transcripts, so its bound is wider; the accuracy bound holds.
VAL_LOSS_RTOL = {"config.yaml": 0.4, "classification.yaml": 0.7}
#: per config: the validation score compared, and its bound (accuracy: four of the 27 transcripts)
SCORES = {"config.yaml": ("val/spearman", 0.15), "classification.yaml": ("val/accuracy", 0.15)}
TRAIN_ARGS = ["--data.init_args.sample.size=80", "--trainer.max_epochs=2", "--trainer.enable_progress_bar=false",
              "--trainer.enable_model_summary=false", "--trainer.num_sanity_val_steps=0"]  # fmt: skip


def _train(config, root, precision: str, accelerator: str) -> tuple[dict[str, float], object]:
    """Fits a quickstart config (its seed, 0) with ``precision``; returns ``trainer.validate``'s metrics
    and the trained model."""
    from mmfuse.cli import MmfuseCLI

    cli = MmfuseCLI(
        ["--config", str(config), *TRAIN_ARGS, f"--trainer.precision={precision}",
         f"--trainer.accelerator={accelerator}", f"--trainer.default_root_dir={root}",
         f"--trainer.logger.init_args.save_dir={root}"],
        run=False,
    )  # fmt: skip
    cli.trainer.fit(cli.model, cli.datamodule)
    logged = {k: float(v) for k, v in cli.trainer.callback_metrics.items() if k.startswith("train/loss")}
    assert logged and all(math.isfinite(v) for v in logged.values()), logged
    results = cli.trainer.validate(cli.model, cli.datamodule, verbose=False)[0]
    return results, cli.model


def _compare_precisions(config, tmp_path, precision: str, accelerator: str, monkeypatch) -> None:
    monkeypatch.setattr("sys.argv", ["mmfuse"])
    full, _ = _train(config, tmp_path / "32-true", "32-true", accelerator)
    mixed, model = _train(config, tmp_path / precision, precision, accelerator)
    # mixed precision: float32 weights (and buffers), low precision only inside autocast
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    assert all(b.dtype in (torch.float32, torch.int64, torch.bool) for b in model.buffers())
    assert all(math.isfinite(v) for v in mixed.values()), mixed
    assert abs(mixed["val/loss"] - full["val/loss"]) < VAL_LOSS_RTOL[config.name] * full["val/loss"], (full, mixed)
    score, bound = SCORES[config.name]
    assert abs(mixed[score] - full[score]) < bound, (full, mixed)


@pytest.mark.slow  # four quickstart trainings: 20 s with bfloat16 matrix units, 80 s without
@pytest.mark.parametrize("name", ["config.yaml", "classification.yaml"], ids=["regression", "classification"])
def test_quickstart_bf16_mixed_trains_like_fp32_on_cpu(name, quickstart, tmp_path, monkeypatch):
    _compare_precisions(quickstart.with_name(name), tmp_path, "bf16-mixed", "cpu", monkeypatch)


_NO_GPU_BF16 = pytest.mark.skipif(torch.cuda.is_available() and not torch.cuda.is_bf16_supported(),
                                  reason="no bfloat16 on this GPU")  # fmt: skip


@pytest.mark.skipif(not torch.cuda.is_available(), reason="16-mixed needs CUDA")
@pytest.mark.parametrize(
    "precision",
    ["16-mixed", pytest.param("bf16-mixed", marks=_NO_GPU_BF16)],
)
@pytest.mark.parametrize("name", ["config.yaml", "classification.yaml"], ids=["regression", "classification"])
def test_quickstart_mixed_precision_trains_like_fp32_on_gpu(name, precision, quickstart, tmp_path, monkeypatch):
    _compare_precisions(quickstart.with_name(name), tmp_path, precision, "gpu", monkeypatch)
