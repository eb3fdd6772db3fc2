"""HuggingFaceEncoder: tiny random checkpoints of every table entry, compared with transformers itself."""

from __future__ import annotations

import copy
import pickle
import re

import pytest
import torch
import transformers

from mmfuse.backbones.finetune import FineTuning, LoraOptions, lora_parameters
from mmfuse.backbones.hf_encoder import HF_PRESETS, MODEL_TYPES, HuggingFaceEncoder
from mmfuse.backbones.presets import WeightsNotFoundError
from mmfuse.errors import ConfigError
from mmfuse.tokenizers import InvalidSequenceError, Tokenizer

DNA = ["ACGTNACGGTAC", "TTGA"]
PROTEINS = ["MKTAYIAKQRQ", "MVL"]
#: model types whose tiny tokenizers differ: WordPiece (fast), byte-level BPE (fast), ESM (slow)
TOKENIZER_KINDS = ["bert", "roberta", "esm"]


#: model types whose tiny vocabularies hold residues one per token, spaced (ProtT5's)
SPACED = {"t5", "mt5", "umt5"}


def _sequences(model_type: str) -> list[str]:
    return PROTEINS if model_type == "esm" or model_type in SPACED else DNA


def _reference(source, sequences, **kwargs):
    """transformers' own output, used as the model cards say: ProtT5's letters spaced, its encoder alone."""
    config = transformers.AutoConfig.from_pretrained(source)
    encoder = {"t5": "T5EncoderModel", "mt5": "MT5EncoderModel", "umt5": "UMT5EncoderModel"}.get(config.model_type)
    model = getattr(transformers, encoder or "AutoModel").from_pretrained(source).eval()
    texts = [" ".join(s) for s in sequences] if config.model_type in SPACED else sequences
    tokens = transformers.AutoTokenizer.from_pretrained(source)(texts, padding=True, return_tensors="pt")
    tokens.pop("token_type_ids", None)
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
    assert not trainable & {id(p) for p in backbone.model.get_input_embeddings().parameters()}


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


# --- letter-per-token checkpoints and their presets (ProtBert, ProtT5, SpliceBERT) -----------------

#: per preset: sequences as a table holds them (rare residues, RNA with U) and what the model card feeds
#: the checkpoint's own tokenizer (ProtTrans: re.sub(r"[UZOB]", "X", s), spaced; SpliceBERT: U→T, spaced)
CARD_USAGE = {
    "prot_bert": (["MKTAYIAKQRQUZ", "MVLOB"], lambda s: " ".join(re.sub(r"[UZOB]", "X", s))),
    "prot_t5_xl_u50": (["MKTAYIAKQRQUZ", "MVLOB"], lambda s: " ".join(re.sub(r"[UZOB]", "X", s))),
    "splicebert_1024nt": (["ACGUUAGCNNAU", "GGCU"], lambda s: " ".join(s.replace("U", "T"))),
}


@pytest.fixture(scope="module")
def preset_dirs(tmp_path_factory):
    from tests.backbones.conftest import make_tiny_preset

    return {name: make_tiny_preset(name, tmp_path_factory.mktemp(name)) for name in CARD_USAGE}


@pytest.mark.parametrize("preset", sorted(CARD_USAGE))
def test_letter_per_token_presets_give_what_the_model_cards_do(preset, preset_dirs):
    source = preset_dirs[preset]
    sequences, card = CARD_USAGE[preset]
    ours = HuggingFaceEncoder(source=str(source), preset=preset).eval()
    assert ours.tokenizer.spaced and ours.modality == HF_PRESETS[preset].modality
    positions = getattr(transformers.AutoConfig.from_pretrained(source), "max_position_embeddings", 10**9)
    assert ours.tokenizer.max_length == min(HF_PRESETS[preset].max_tokens, positions)  # the tiny BERTs have 256
    theirs = transformers.AutoTokenizer.from_pretrained(source)
    expected = theirs([card(s) for s in sequences], padding=True, return_tensors="pt")
    batch = ours.tokenizer(sequences)
    assert torch.equal(batch["input_ids"], expected["input_ids"])
    assert theirs.unk_token_id not in batch["input_ids"]
    config = transformers.AutoConfig.from_pretrained(source)
    model = (transformers.T5EncoderModel if config.model_type == "t5" else transformers.AutoModel)
    reference = model.from_pretrained(source).eval()
    mask = expected["attention_mask"].bool()
    with torch.no_grad():
        want = reference(input_ids=expected["input_ids"], attention_mask=expected["attention_mask"]).last_hidden_state
        got = ours(batch).embeddings
    torch.testing.assert_close(got[mask], want[mask], atol=1e-5, rtol=1e-5)


def test_spacing_is_detected_from_the_vocabulary(preset_dirs, tiny_hf):
    assert HuggingFaceEncoder(str(preset_dirs["prot_bert"]), modality="protein").tokenizer.spaced
    assert HuggingFaceEncoder(str(preset_dirs["prot_t5_xl_u50"]), modality="protein").tokenizer.spaced
    assert not HuggingFaceEncoder(str(tiny_hf("bert"))).tokenizer.spaced  # ## continuations: letters joined
    assert not HuggingFaceEncoder(str(tiny_hf("esm")), modality="protein").tokenizer.spaced


def test_unspaced_letters_are_explained_with_what_the_tokenizer_did(preset_dirs):
    joined = HuggingFaceEncoder(str(preset_dirs["prot_bert"]), modality="protein", spaced_letters=False)
    with pytest.raises(InvalidSequenceError) as error:
        joined.tokenizer(["MKTAYIAKQRQ"])
    message = str(error.value)
    assert "read 'MKTAYIAKQRQ'… as one word and mapped it to its unknown token '[UNK]'" in message
    assert "its letters are in the vocabulary one by one" in message and "`spaced_letters: true`" in message
    spaced = HuggingFaceEncoder(str(preset_dirs["prot_bert"]), modality="protein", letter_map={})
    with pytest.raises(InvalidSequenceError, match=r"letter 'J' at position 2 .* not in the vocabulary"):
        spaced.tokenizer(["MKJA"])


def test_an_encoder_decoder_checkpoint_builds_its_encoder_alone(tiny_hf):
    backbone = HuggingFaceEncoder(str(tiny_hf("mt5")), modality="protein")  # saved whole, encoder and decoder
    assert type(backbone.model).__name__ == "MT5EncoderModel"
    assert not any(name.startswith("decoder") for name, _ in backbone.model.named_parameters())
    out = backbone(backbone.tokenizer(PROTEINS))
    assert out.embeddings.shape[-1] == 32 and torch.isfinite(out.embeddings).all()


def test_a_preset_whose_weights_are_not_on_the_hub_says_where_they_are():
    with pytest.raises(ConfigError, match=r"splicebert_1024nt.* not on the Hugging Face hub: download them from "
                                          r"https://doi.org/10.5281/zenodo.7995778.*set `source`"):  # fmt: skip
        HuggingFaceEncoder(preset="splicebert_1024nt")
    with pytest.raises(ConfigError, match=r"Unknown HuggingFaceEncoder preset 'prot_bertt'.*Did you mean 'prot_bert'"):
        HuggingFaceEncoder(preset="prot_bertt")
