"""The backbone contract, checked for every registered backbone (plugins included)."""

from __future__ import annotations

import pytest
import torch

from mmfuse.backbones import Backbone, BackboneOutput, FineTuning
from mmfuse.registry import BACKBONES

#: constructor arguments of backbones without presets (nothing pretrained, e.g. a learned embedding)
NO_PRESETS = {"ContextEmbedding": {"categories": ["HepG2", "K562", "MCF-7"], "embed_dim": 16, "tokens": 2}}
#: constructor arguments giving a small, randomly initialised model of each registered backbone
TINY = {name: NO_PRESETS.get(name, {"preset": "tiny"}) for name in BACKBONES.names()}
#: example inputs of modalities that are names, not sequences (tests/conftest.py has the sequences)
CATEGORIES = {"context": ["MCF-7", "HepG2"]}
#: backbones giving every input the same number of tokens: nothing is padded
FIXED_LENGTH = {"ContextEmbedding"}


def _build(name: str, **kwargs) -> Backbone:
    return BACKBONES.get(name)(**TINY[name], **kwargs)


@pytest.fixture(autouse=True)
def _tiny_hf_checkpoint(tiny_bert_dir) -> None:
    """HuggingFaceEncoder has no presets: it loads a tiny random BERT written to a temporary directory."""
    TINY["HuggingFaceEncoder"] = {"source": str(tiny_bert_dir)}


@pytest.fixture(params=BACKBONES.names())
def name(request) -> str:
    return request.param


@pytest.fixture
def sequences(sequences) -> dict[str, list[str]]:
    return {**sequences, **CATEGORIES}


def test_output_shapes_and_mask(name, sequences):
    backbone = _build(name)
    assert isinstance(backbone, Backbone)
    batch = backbone.tokenizer(sequences[backbone.modality])
    out = backbone(batch)
    assert isinstance(out, BackboneOutput)
    b, length, dim = out.embeddings.shape
    assert (b, dim) == (2, backbone.embed_dim)
    assert out.mask.shape == (b, length) and out.mask.dtype == torch.bool
    assert out.mask[0].all(), "the longest sequence fills the batch"
    if name in FIXED_LENGTH:
        assert out.mask.all()
    else:
        assert 0 < out.mask[1].sum() < length, "the shorter sequence is padded"
    assert torch.isfinite(out.embeddings).all()


@pytest.mark.parametrize("name", [n for n in BACKBONES.names() if BACKBONES.get(n).padding_invariant])
def test_padding_does_not_change_embeddings(name, sequences):
    """Backbones that document ``padding_invariant = False`` (Enformer) are left out."""
    backbone = _build(name).eval()
    long, short = sequences[backbone.modality]
    alone = backbone(backbone.tokenizer([short]))
    padded = backbone(backbone.tokenizer([long, short]))
    n = int(alone.mask.sum())
    torch.testing.assert_close(padded.embeddings[1, :n], alone.embeddings[0, :n], atol=1e-5, rtol=1e-5)


def test_starts_in_training_mode_and_every_weight_gets_a_gradient(name, sequences):
    backbone = _build(name)
    assert all(m.training for m in backbone.modules()), "dropout must be active for fit"
    out = backbone(backbone.tokenizer(sequences[backbone.modality]))
    (out.embeddings * out.mask[..., None]).square().mean().backward()
    missing = [n for n, p in backbone.named_parameters() if p.requires_grad and p.grad is None]
    assert missing == [], f"parameters outside the graph break DDP: {missing[:5]}"


def test_freeze_fixes_weights_and_keeps_eval_mode(name, sequences):
    backbone = _build(name, finetune=FineTuning(freeze=True))
    assert backbone.frozen and not any(p.requires_grad for p in backbone.parameters())
    backbone.train()
    assert not any(m.training for m in backbone.modules()), "a frozen backbone stays in eval mode"
    buffers = {k: v.clone() for k, v in backbone.state_dict().items()}
    out = backbone(backbone.tokenizer(sequences[backbone.modality]))
    assert not out.embeddings.requires_grad
    for key, value in backbone.state_dict().items():  # e.g. BatchNorm running statistics
        assert torch.equal(value, buffers[key]), key


def test_tokenizer_rejects_unknown_letters(name):
    from mmfuse.tokenizers import InvalidSequenceError

    backbone = _build(name)
    # cell encoders read GENE:value lists and context encoders names, not letters: their message names the entry
    match = {"cell": "'!' is not a GENE:value pair", "context": "'!' is not among the"}.get(backbone.modality,
                                                                                          "letter '!'")  # fmt: skip
    with pytest.raises(InvalidSequenceError, match=match):
        backbone.tokenizer(["!"])
