"""HuggingFaceEncoder: tiny random checkpoints of every table entry, compared with transformers itself."""

from __future__ import annotations

import copy
import pickle

import pytest
import torch
import transformers

from mmfuse.backbones.finetune import FineTuning, LoraOptions, lora_parameters
from mmfuse.backbones.hf_encoder import MODEL_TYPES, HuggingFaceEncoder
from mmfuse.backbones.presets import WeightsNotFoundError
from mmfuse.errors import ConfigError
from mmfuse.tokenizers import InvalidSequenceError, Tokenizer

DNA = ["ACGTNACGGTAC", "TTGA"]
PROTEINS = ["MKTAYIAKQRQ", "MVL"]
#: model types whose tiny tokenizers differ: WordPiece (fast), byte-level BPE (fast), ESM (slow)
TOKENIZER_KINDS = ["bert", "roberta", "esm"]


def _sequences(model_type: str) -> list[str]:
    return PROTEINS if model_type == "esm" else DNA


def _reference(source, sequences, **kwargs):
    model = transformers.AutoModel.from_pretrained(source).eval()
    tokens = transformers.AutoTokenizer.from_pretrained(source)(sequences, padding=True, return_tensors="pt")
    return model(**tokens, **kwargs), tokens["attention_mask"].bool()


@pytest.mark.parametrize("model_type", sorted(MODEL_TYPES))
def test_embeddings_and_layers_match_transformers(model_type, tiny_hf):
    source = tiny_hf(model_type)
    sequences = _sequences(model_type)
    ours = HuggingFaceEncoder(str(source))
    assert ours.model_type == model_type and ours.embed_dim == 32 and len(ours.blocks()) == 2
    assert ours.weights_source == str(source) and all(m.training for m in ours.modules())
    expected, mask = _reference(source, sequences, output_hidden_states=True)
    out = ours.eval()(ours.tokenizer(sequences))
    assert torch.equal(out.mask, mask)
    torch.testing.assert_close(out.embeddings[mask], expected.last_hidden_state[mask], atol=1e-5, rtol=1e-5)
    first = HuggingFaceEncoder(str(source), layer=1).eval()
    out = first(first.tokenizer(sequences))
    torch.testing.assert_close(out.embeddings[mask], expected.hidden_states[1][mask], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("model_type", sorted(MODEL_TYPES))
def test_lora_trains_the_table_targets_as_many_weights_as_peft_counts(model_type, tiny_hf):
    from peft import LoraConfig, get_peft_model

    source = str(tiny_hf(model_type))
    backbone = HuggingFaceEncoder(source, finetune=FineTuning(lora=LoraOptions(r=2, alpha=4, dropout=0.0)))
    trainable = [n for n, p in backbone.named_parameters() if p.requires_grad]
    assert trainable and trainable == lora_parameters(backbone)
    targets = list(MODEL_TYPES[model_type].lora_targets)
    model = copy.deepcopy(HuggingFaceEncoder(source).model)
    reference = get_peft_model(model, LoraConfig(r=2, lora_alpha=4, target_modules=targets))
    ours = sum(p.numel() for p in backbone.parameters() if p.requires_grad)
    assert ours == reference.get_nb_trainable_parameters()[0]


@pytest.mark.parametrize("model_type", sorted(MODEL_TYPES))
def test_train_last_layer_leaves_only_the_last_layer_and_what_follows_trainable(model_type, tiny_hf):
    backbone = HuggingFaceEncoder(str(tiny_hf(model_type)), finetune=FineTuning(train_last_layers=1))
    *earlier, last = backbone.blocks()
    trainable = {id(p) for p in backbone.parameters() if p.requires_grad}
    assert {id(p) for p in last.parameters()} <= trainable
    assert not trainable & {id(p) for b in earlier for p in b.parameters()}
    assert not trainable & {id(p) for p in backbone.model.embeddings.parameters()}


@pytest.mark.parametrize("model_type", TOKENIZER_KINDS)
def test_tokenizer_refuses_unknown_letters_empty_and_long_sequences(model_type, tiny_hf):
    backbone = HuggingFaceEncoder(str(tiny_hf(model_type)), max_length=8)
    tokenizer = backbone.tokenizer
    assert isinstance(tokenizer, Tokenizer) and tokenizer.name == tiny_hf(model_type).name
    good = _sequences(model_type)[1]
    with pytest.raises(InvalidSequenceError, match=r"sequence 1 of the batch: letter '!' at position 2"):
        tokenizer([good, good[:2] + "!" + good[2:]])
    with pytest.raises(InvalidSequenceError, match="letter '!' at position 2"):
        tokenizer.validate(good[:2] + "!" + good[2:])
    with pytest.raises(InvalidSequenceError, match="empty"):
        tokenizer.validate("")
    with pytest.raises(InvalidSequenceError, match=r"12 letters make 14 tokens, more than .* \(8 tokens\)"):
        tokenizer(["A" * 12 if model_type != "esm" else "M" * 12])
    tokenizer.validate(good)
    batch = tokenizer([good, good[:2]])
    assert batch["attention_mask"].dtype == torch.bool and batch["input_ids"].dtype == torch.long
    assert batch["attention_mask"].sum(1).tolist() == [len(good) + 2, 4]


@pytest.mark.parametrize("model_type", TOKENIZER_KINDS)
def test_tokenizer_survives_pickling_for_dataloader_workers(model_type, tiny_hf):
    tokenizer = HuggingFaceEncoder(str(tiny_hf(model_type))).tokenizer
    copy_ = pickle.loads(pickle.dumps(tokenizer))
    sequences = _sequences(model_type)
    for key, value in tokenizer(sequences).items():
        assert torch.equal(copy_(sequences)[key], value)


def test_max_length_defaults_to_the_positions_the_model_has(tiny_hf):
    assert HuggingFaceEncoder(str(tiny_hf("bert"))).tokenizer.max_length == 256
    assert HuggingFaceEncoder(str(tiny_hf("roberta"))).tokenizer.max_length == 256  # 258 minus padding_idx + 1


def test_trust_remote_code_is_passed_only_when_set(tiny_bert_dir, monkeypatch):
    calls = []
    original = transformers.AutoModel.from_pretrained

    def spy(*args, **kwargs):
        calls.append(kwargs)
        return original(*args, **kwargs)

    monkeypatch.setattr(transformers.AutoModel, "from_pretrained", spy)
    HuggingFaceEncoder(str(tiny_bert_dir))
    HuggingFaceEncoder(str(tiny_bert_dir), trust_remote_code=True)
    assert "trust_remote_code" not in calls[0] and calls[1]["trust_remote_code"] is True


def test_pretrained_false_builds_the_architecture_with_random_weights(tiny_bert_dir):
    loaded = HuggingFaceEncoder(str(tiny_bert_dir))
    torch.manual_seed(1)  # the checkpoint was drawn with the tests' seed 0
    random = HuggingFaceEncoder(str(tiny_bert_dir), pretrained=False)
    assert random.weights_source is None and random.embed_dim == loaded.embed_dim
    key = "model.encoder.layer.0.attention.self.query.weight"
    assert not torch.equal(random.state_dict()[key], loaded.state_dict()[key])


def test_unknown_model_type_embeds_and_asks_for_lora_targets(tiny_bert_dir, monkeypatch, sequences):
    monkeypatch.delitem(MODEL_TYPES, "bert")
    backbone = HuggingFaceEncoder(str(tiny_bert_dir))
    out = backbone(backbone.tokenizer(sequences["dna"]))
    assert out.embeddings.shape[-1] == backbone.embed_dim == 32 and backbone.blocks() == []
    with pytest.raises(ConfigError, match=r"model_type 'bert'.*set lora.targets.*'query'"):
        HuggingFaceEncoder(str(tiny_bert_dir), finetune=FineTuning(lora=LoraOptions()))
    with pytest.raises(ConfigError, match=r"model_type 'bert'.*train_last_layers"):
        HuggingFaceEncoder(str(tiny_bert_dir), finetune=FineTuning(train_last_layers=1))
    adapted = HuggingFaceEncoder(str(tiny_bert_dir), finetune=FineTuning(lora=LoraOptions(targets=["query"])))
    assert lora_parameters(adapted)


def test_bad_layer_and_missing_checkpoint_are_explained(tiny_bert_dir, tmp_path):
    with pytest.raises(ConfigError, match=r"layer 3 does not exist.*2 layers"):
        HuggingFaceEncoder(str(tiny_bert_dir), layer=3)
    with pytest.raises(WeightsNotFoundError, match="could not load weights"):
        HuggingFaceEncoder(str(tmp_path / "missing"))
