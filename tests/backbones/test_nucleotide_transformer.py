from __future__ import annotations

import json

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from mmfuse.backbones import NT_PRESETS, NucleotideTransformer
from mmfuse.tokenizers import NT_VOCAB

RNA = ["AUGGCCAUUGUAAUGGGCCGCUGAAAGGGUGCCCGAUAG", "ACGUNAC"]


def test_feed_forward_has_the_hub_names_and_shapes():
    model = NucleotideTransformer("tiny").model
    hidden, inner = model.config.hidden_size, model.config.intermediate_size
    weights = model.state_dict()
    assert weights["encoder.layer.0.intermediate.dense.weight"].shape == (2 * inner, hidden)
    assert weights["encoder.layer.0.output.dense.weight"].shape == (hidden, inner)
    assert "encoder.layer.0.intermediate.dense.bias" not in weights
    assert "encoder.layer.0.output.dense.bias" not in weights


def test_feed_forward_is_swiglu_with_the_gate_first():
    # the hub code: x1, x2 = dense(x).split(half); silu(x1) * x2
    layer = NucleotideTransformer("tiny").model.encoder.layer[0]
    x = torch.randn(3, 5, layer.intermediate.dense.in_features)
    w = layer.intermediate.dense.weight
    half = w.shape[0] // 2
    expected = F.silu(x @ w[:half].T) * (x @ w[half:].T)
    torch.testing.assert_close(layer.intermediate(x), expected)


def test_hub_layout_checkpoint_loads(tmp_path):
    """A checkpoint laid out like the hub's (EsmForMaskedLM keys, custom-code config) loads offline."""
    reference = NucleotideTransformer("tiny").eval()
    weights = {f"esm.{k}": v.clone() for k, v in reference.model.state_dict().items()}
    hidden = reference.embed_dim
    weights |= {
        "lm_head.dense.weight": torch.randn(hidden, hidden),
        "lm_head.dense.bias": torch.zeros(hidden),
        "lm_head.layer_norm.weight": torch.ones(hidden),
        "lm_head.layer_norm.bias": torch.zeros(hidden),
        "lm_head.decoder.weight": torch.randn(len(NT_VOCAB), hidden),
        "lm_head.bias": torch.zeros(len(NT_VOCAB)),
    }
    save_file(weights, tmp_path / "model.safetensors")
    config = dict(NT_PRESETS["tiny"].config, model_type="esm", architectures=["EsmForMaskedLM"],
                  auto_map={"AutoModelForMaskedLM": "modeling_esm.EsmForMaskedLM"})  # fmt: skip
    (tmp_path / "config.json").write_text(json.dumps(config))
    (tmp_path / "vocab.txt").write_text("\n".join(NT_VOCAB))

    loaded = NucleotideTransformer("tiny", source=str(tmp_path)).eval()
    batch = loaded.tokenizer(RNA)
    torch.testing.assert_close(loaded(batch).embeddings, reference(batch).embeddings, atol=1e-6, rtol=1e-6)


def test_presets_carry_the_published_sizes():
    backbone = NucleotideTransformer("nt_v2_50m_multi_species", pretrained=False)
    assert backbone.embed_dim == 512 and len(backbone.model.encoder.layer) == 12
    n_params = sum(p.numel() for p in backbone.parameters())
    assert 45_000_000 < n_params < 60_000_000, n_params
