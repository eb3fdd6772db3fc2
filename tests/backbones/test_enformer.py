from __future__ import annotations

import pytest
import torch
from enformer_pytorch import Enformer as ReferenceEnformer
from enformer_pytorch.config_enformer import EnformerConfig

from mmfuse.backbones import ENFORMER_PRESETS, Enformer
from mmfuse.backbones.enformer import save_enformer
from mmfuse.errors import CheckpointMismatchError, ConfigError

DNA = ["ACGTTGCA" * 32, "GATTACA" * 20]  # 256 bp and 140 bp; tiny bins are 32 bp


def _reference() -> ReferenceEnformer:
    return ReferenceEnformer(EnformerConfig(**ENFORMER_PRESETS["tiny"].config)).eval()


def test_saved_checkpoint_gives_the_embeddings_of_enformer_pytorch(tmp_path):
    reference = _reference()
    save_enformer(reference, tmp_path)
    ours = Enformer("tiny", source=str(tmp_path)).eval()
    x = torch.randint(0, 4, (2, 512))
    expected = reference(x, return_only_embeddings=True)
    out = ours({"input_ids": x, "attention_mask": torch.ones_like(x, dtype=torch.bool)})
    torch.testing.assert_close(out.embeddings, expected, atol=1e-5, rtol=1e-5)
    assert out.embeddings.shape == (2, 512 // 32, 96) and out.mask.all()


def test_checkpoint_with_every_alias_loads(tmp_path):
    # the hub file was written by torch.save(state_dict()): shared tensors under both names
    reference = _reference()
    torch.save(reference.state_dict(), tmp_path / "pytorch_model.bin")
    reference.config.to_json_file(str(tmp_path / "config.json"))
    ours = Enformer("tiny", source=str(tmp_path)).eval()
    x = torch.randint(0, 4, (1, 256))
    torch.testing.assert_close(
        ours({"input_ids": x, "attention_mask": torch.ones_like(x, dtype=torch.bool)}).embeddings,
        reference(x, return_only_embeddings=True),
    )


def test_mismatched_checkpoint_names_the_tensors(tmp_path):
    reference = _reference()
    state = reference.state_dict()
    dropped = ("transformer.0.0.fn.1.to_q", "_trunk.4.0.0.fn.1.to_q")  # both names of one tensor
    state = {k: v for k, v in state.items() if not k.startswith(dropped) and not k.startswith("_trunk.1.0.")}
    state["stem.0.weight"] = torch.zeros(3, 3)
    torch.save(state, tmp_path / "pytorch_model.bin")
    reference.config.to_json_file(str(tmp_path / "config.json"))
    expected = r"1 missing \(e.g. .*to_q.weight\); 1 mis-shaped \(e.g. stem.0.weight"
    with pytest.raises(CheckpointMismatchError, match=expected):
        Enformer("tiny", source=str(tmp_path))


def test_one_hot_and_index_inputs_agree():
    backbone = Enformer("tiny").eval()
    batch = backbone.tokenizer(["ACGTN" * 40])
    one_hot = torch.nn.functional.one_hot(batch["input_ids"].clamp(max=3), 4).float()
    one_hot[batch["input_ids"] == 4] = 0.0  # N is an all-zero column
    torch.testing.assert_close(
        backbone({"one_hot": one_hot}).embeddings, backbone(batch).embeddings, atol=1e-6, rtol=1e-6
    )


def test_mask_marks_bins_that_hold_sequence_and_crop_keeps_the_centre():
    backbone = Enformer("tiny").eval()
    out = backbone(backbone.tokenizer(DNA))
    assert out.mask.sum(1).tolist() == [8, 5]  # 256 / 32 and ceil(140 / 32)
    cropped = Enformer("tiny", crop_bins=4)
    cropped.load_state_dict(backbone.state_dict())
    cropped.eval()
    out_c = cropped(cropped.tokenizer(DNA))
    torch.testing.assert_close(out_c.embeddings, out.embeddings[:, 2:6])
    assert out_c.mask.tolist() == out.mask[:, 2:6].tolist()
    with pytest.raises(ConfigError, match="crop_bins=16 is more than the 8 bins"):
        Enformer("tiny", crop_bins=16)(backbone.tokenizer(DNA))


def test_tf_gamma_needs_the_full_window():
    backbone = Enformer("tiny", use_tf_gamma=True)
    with pytest.raises(ConfigError, match="needs 49,152 bp inputs; this batch is 256 bp"):
        backbone(backbone.tokenizer(["ACGT" * 64]))


def test_unreachable_weights_explain_how_to_work_offline():
    from mmfuse.backbones.presets import WeightsNotFoundError

    with pytest.raises(WeightsNotFoundError, match=r"hf download EleutherAI/enformer-official-rough --local-dir DIR"):
        Enformer("enformer_official_rough")  # the hub is off in tests and nothing is cached


def test_local_directory_without_weights(tmp_path):
    from mmfuse.backbones.presets import WeightsNotFoundError

    _reference().config.to_json_file(str(tmp_path / "config.json"))
    with pytest.raises(WeightsNotFoundError, match=r"holds none of model.safetensors, pytorch_model.bin"):
        Enformer("tiny", source=str(tmp_path))


def test_official_preset_describes_the_published_model():
    preset = ENFORMER_PRESETS["enformer_official_rough"]
    assert preset.source == "EleutherAI/enformer-official-rough" and preset.embed_dim == 3072
    assert preset.config["use_tf_gamma"] is True


@pytest.mark.parametrize("length", [512, 511])  # odd lengths take the library's code
def test_attention_pooling_gives_the_library_values_and_gradients(length):
    from enformer_pytorch.modeling_enformer import AttentionPool

    from mmfuse.backbones.enformer import _pool_pairs

    pool = AttentionPool(8)
    with torch.no_grad():
        pool.to_attn_logits.weight.normal_(0, 0.5)
    x = torch.randn(2, 8, length, requires_grad=True)
    expected = pool(x)
    grads_expected = torch.autograd.grad((expected * expected).sum(), [x, pool.to_attn_logits.weight])
    out = _pool_pairs(pool, x)
    grads = torch.autograd.grad((out * out).sum(), [x, pool.to_attn_logits.weight])
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-6)
    for got, want in zip(grads, grads_expected, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
    pools = [m for m in Enformer("tiny").modules() if isinstance(m, AttentionPool)]
    assert pools and all(m.forward.func is _pool_pairs for m in pools)
    import copy
    import pickle

    backbone = Enformer("tiny").eval()
    batch = backbone.tokenizer(["ACGT" * 64])
    for clone in (copy.deepcopy(backbone), pickle.loads(pickle.dumps(backbone))):  # e.g. spawned processes
        torch.testing.assert_close(clone(batch).embeddings, backbone(batch).embeddings)
        assert all(m.forward.args[0] is m for m in clone.modules() if isinstance(m, AttentionPool))
