from __future__ import annotations

import pytest
import torch
from transformers import EsmConfig, EsmForMaskedLM, EsmModel, EsmTokenizer

from mmfuse.backbones import ESM2, ESM2_PRESETS
from mmfuse.backbones.presets import WeightsNotFoundError
from mmfuse.errors import ConfigError
from mmfuse.tokenizers import ESM_VOCAB

PROTEINS = ["MKTAYIAKQRQISFVKSHFSRQ", "MVLSPADKTNVKAAW", "MW"]


def _save_checkpoint(directory, model_class=EsmForMaskedLM):
    """A tiny randomly initialised ESM2 saved like the hub checkpoints (EsmForMaskedLM, vocab.txt)."""
    config = EsmConfig(**ESM2_PRESETS["tiny"].config)
    model = model_class(config)
    model.save_pretrained(directory)
    (directory / "vocab.txt").write_text("\n".join(ESM_VOCAB))
    return directory


def test_local_checkpoint_gives_the_embeddings_of_transformers(tmp_path):
    source = _save_checkpoint(tmp_path)
    ours = ESM2(preset="tiny", source=str(source))
    assert all(m.training for m in ours.modules()), "from_pretrained() returns eval mode; fit needs train mode"
    ours.eval()
    reference = EsmModel.from_pretrained(source, add_pooling_layer=False).eval()
    tokens = EsmTokenizer(str(source / "vocab.txt"))(PROTEINS, padding=True, return_tensors="pt")
    expected = reference(**tokens).last_hidden_state
    out = ours(ours.tokenizer(PROTEINS))
    mask = tokens["attention_mask"].bool()
    assert torch.equal(out.mask, mask)
    torch.testing.assert_close(out.embeddings[mask], expected[mask], atol=1e-5, rtol=1e-5)


def test_vocabulary_mismatch_is_refused(tmp_path):
    source = _save_checkpoint(tmp_path)
    (source / "vocab.txt").write_text("\n".join(reversed(ESM_VOCAB)))
    with pytest.raises(ConfigError, match="does not hold the ESM2 vocabulary.*first difference at token 0"):
        ESM2(preset="tiny", source=str(source))


def test_presets_build_the_named_architecture_without_weights():
    backbone = ESM2("esm2_t6_8M_UR50D", pretrained=False)
    assert backbone.embed_dim == 320 and len(backbone.model.encoder.layer) == 6
    assert 7_000_000 < sum(p.numel() for p in backbone.parameters()) < 8_000_000
    assert backbone.tokenizer.max_tokens == 1024


def test_unknown_preset_suggests_the_closest():
    with pytest.raises(ConfigError, match=r"Unknown ESM2 preset 'esm2_t6_8M'.*Did you mean 'esm2_t6_8M_UR50D'"):
        ESM2("esm2_t6_8M")


def test_unreachable_weights_explain_how_to_work_offline(tmp_path):
    with pytest.raises(WeightsNotFoundError, match=r"hf download facebook/esm2_t6_8M_UR50D --local-dir DIR"):
        ESM2("esm2_t6_8M_UR50D")  # the hub is off in tests (HF_HUB_OFFLINE=1) and nothing is cached


def test_max_length_counts_residues():
    backbone = ESM2("tiny", max_length=5)
    backbone.tokenizer(["MKTAY"])
    with pytest.raises(ValueError, match="6 letters is longer than ESM2 accepts \\(5 letters\\)"):
        backbone.tokenizer(["MKTAYI"])
