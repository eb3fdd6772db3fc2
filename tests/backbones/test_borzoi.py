from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from borzoi_pytorch import Borzoi as ReferenceBorzoi
from borzoi_pytorch.config_borzoi import BorzoiConfig

from mmfuse.backbones.borzoi import BORZOI_PRESETS, Borzoi, save_borzoi
from mmfuse.backbones.finetune import FineTuning, LoraOptions
from mmfuse.backbones.presets import WeightsNotFoundError
from mmfuse.errors import ConfigError
from mmfuse.tokenizers import InvalidSequenceError

DNA = ["ACGTTGCA" * 32, "GATTACA" * 20]  # 256 bp and 140 bp; bins are 32 bp


def _reference() -> ReferenceBorzoi:
    return ReferenceBorzoi(BorzoiConfig(**BORZOI_PRESETS["tiny"].config)).eval()


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> tuple[ReferenceBorzoi, str]:
    """A tiny borzoi-pytorch model and the directory :func:`save_borzoi` wrote it to."""
    torch.manual_seed(0)
    reference = _reference()
    return reference, str(save_borzoi(reference, tmp_path_factory.mktemp("borzoi")))


def _expected(reference: ReferenceBorzoi, one_hot: torch.Tensor, bins_to_return: int = -1) -> torch.Tensor:
    """borzoi-pytorch's own embeddings ``(B, bins, D)`` of a channel-first one-hot ``(B, 4, L)``."""
    reference.crop.target_length = bins_to_return
    for module in reference.modules():
        if hasattr(module, "positions"):
            module.positions = None  # cached for the first length it saw
    with torch.no_grad():
        return reference.get_embs_after_crop(one_hot).transpose(1, 2)


def _one_hot(ids: torch.Tensor) -> torch.Tensor:
    """``(B, 4, L)``, channel-first as borzoi-pytorch reads it."""
    return F.one_hot(ids, 4).float().transpose(1, 2)


def _batch(ids: torch.Tensor) -> dict[str, torch.Tensor]:
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids, dtype=torch.bool)}


def test_saved_checkpoint_gives_the_embeddings_of_borzoi_pytorch(saved):
    reference, directory = saved
    ours = Borzoi("tiny", source=directory).eval()
    assert ours.weights_source == directory
    assert not hasattr(ours.model, "final_joined_convs"), "the track heads are dropped"
    ids = torch.randint(0, 4, (2, 512))
    out = ours(_batch(ids))
    torch.testing.assert_close(out.embeddings, _expected(reference, _one_hot(ids)), atol=1e-5, rtol=1e-5)
    assert out.embeddings.shape == (2, 512 // 32, 32) and out.mask.all()

    # crop_bins=4 keeps the bins of the model's own bins_to_return=4
    cropped = Borzoi("tiny", source=directory, crop_bins=4).eval()
    expected = _expected(reference, _one_hot(ids), bins_to_return=4)
    torch.testing.assert_close(cropped(_batch(ids)).embeddings, expected, atol=1e-5, rtol=1e-5)

    # 300 bp are padded to 384 for the U-Net; ceil(300 / 32) = 10 bins are kept
    ids = ids[:1, :300]
    expected = _expected(reference, F.pad(_one_hot(ids), (0, 84)))[:, :10]
    torch.testing.assert_close(ours(_batch(ids)).embeddings, expected, atol=1e-5, rtol=1e-5)


def test_one_hot_and_index_inputs_agree():
    backbone = Borzoi("tiny").eval()
    batch = backbone.tokenizer(["ACGTN" * 20])
    one_hot = F.one_hot(batch["input_ids"].clamp(max=3), 4).float()
    one_hot[batch["input_ids"] == 4] = 0.0  # N is an all-zero column
    torch.testing.assert_close(backbone({"one_hot": one_hot}).embeddings, backbone(batch).embeddings)


def test_mask_marks_bins_that_hold_sequence_and_crop_keeps_the_centre(saved):
    backbone = Borzoi("tiny", source=saved[1]).eval()
    out = backbone(backbone.tokenizer(DNA))
    assert out.mask.sum(1).tolist() == [8, 5]  # 256 / 32 and ceil(140 / 32)
    cropped = Borzoi("tiny", source=saved[1], crop_bins=4).eval()
    out_c = cropped(cropped.tokenizer(DNA))
    torch.testing.assert_close(out_c.embeddings, out.embeddings[:, 2:6])
    assert out_c.mask.tolist() == out.mask[:, 2:6].tolist()
    with pytest.raises(ConfigError, match="crop_bins=16 is more than the 8 bins"):
        cropped.crop_bins = 16
        cropped(cropped.tokenizer(DNA))


def test_unknown_letters_name_the_sequence():
    backbone = Borzoi("tiny")
    with pytest.raises(InvalidSequenceError, match="letter '!'") as info:
        backbone.tokenizer(["ACGT", "AC!T"])
    assert info.value.index == 1


def test_local_directory_without_weights(tmp_path):
    _reference().config.to_json_file(str(tmp_path / "config.json"))
    with pytest.raises(WeightsNotFoundError, match=r"holds none of model.safetensors, pytorch_model.bin"):
        Borzoi("tiny", source=str(tmp_path))


def test_unreachable_weights_explain_how_to_work_offline():
    with pytest.raises(WeightsNotFoundError, match=r"hf download johahi/borzoi-replicate-0 --local-dir DIR"):
        Borzoi("borzoi_replicate_0")  # the hub is off in tests and nothing is cached


def test_flashzoi_checkpoint_is_refused(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({**BORZOI_PRESETS["tiny"].config, "flashed": True}))
    with pytest.raises(ConfigError, match="Flashzoi checkpoint"):
        Borzoi("tiny", source=str(tmp_path), pretrained=False)


def test_missing_package_names_the_install_command(monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "borzoi_pytorch", None)
    with pytest.raises(ConfigError, match=r'pip install --no-deps "borzoi-pytorch==0.5.1"'):
        Borzoi("tiny")


def test_lora_trains_only_the_attention_adapters():
    backbone = Borzoi("tiny", finetune=FineTuning(lora=LoraOptions(r=2)))
    trainable = [n for n, p in backbone.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    adapted = {n.split(".lora_")[0].rsplit(".", 1)[-1] for n in trainable}
    assert adapted == {"to_q", "to_k", "to_v", "to_out"}
    out = backbone(backbone.tokenizer(DNA))
    out.embeddings.square().mean().backward()
    assert all(p.grad is not None for n, p in backbone.named_parameters() if p.requires_grad)


def test_train_last_layers_and_gradient_checkpointing():
    backbone = Borzoi("tiny", finetune=FineTuning(train_last_layers=1, gradient_checkpointing=True))
    assert len(backbone.blocks()) == 1
    assert not backbone.model.conv_dna.conv_layer.weight.requires_grad
    assert all(p.requires_grad for p in backbone.blocks()[0].parameters())
    out = backbone(backbone.tokenizer(DNA))
    out.embeddings.square().mean().backward()
    assert backbone.blocks()[0][0].fn[1].to_q.weight.grad is not None


def test_replicate_presets_describe_the_published_models():
    for i in range(4):
        preset = BORZOI_PRESETS[f"borzoi_replicate_{i}"]
        assert preset.source == f"johahi/borzoi-replicate-{i}" and preset.embed_dim == 1536
        assert preset.max_tokens == 524_288 and preset.config["dim"] == preset.embed_dim


def test_positional_features_are_computed_once_per_length():
    """borzoi-pytorch caches them; they are renewed only for another length, or after validation under
    inference mode (whose tensors cannot be saved for backward), and give the embeddings of fresh ones."""
    backbone = Borzoi("tiny")
    attention = backbone._attention[0]
    long, short = backbone.tokenizer(DNA[:1]), backbone.tokenizer(DNA[1:])
    backbone(long)
    cached = attention.positions
    backbone(long)
    assert attention.positions is cached, "recomputed for the same length"
    backbone(short)  # 140 bp: padded to 256 bp like the 256 bp sequence, same transformer length
    assert attention.positions is cached
    backbone(backbone.tokenizer(["ACGT" * 100]))  # 400 bp: padded to 512 bp
    assert attention.positions.shape[0] != cached.shape[0]
    with torch.inference_mode():
        backbone(long)
    assert attention.positions.is_inference()
    backbone(long).embeddings.square().mean().backward()  # training again: fresh features
    backbone.eval()
    with torch.no_grad():
        reused = backbone(long).embeddings
        for module in backbone._attention:
            module.positions = None
        torch.testing.assert_close(reused, backbone(long).embeddings, rtol=0, atol=0)
