from __future__ import annotations

import json
import os
import pickle

import numpy as np
import pytest
import torch
from transformers import BertConfig, BertForMaskedLM, BertModel

from mmfuse.backbones.geneformer import GENEFORMER_PRESETS, Geneformer, RankValueTokenizer, read_dictionary
from mmfuse.errors import ConfigError
from mmfuse.tokenizers import InvalidSequenceError

# token ids and medians of a hand-checked example: A..E with ids 10..14
TOKENS = {"<pad>": 0, "<mask>": 1, "<cls>": 2, "<eos>": 3, "A": 10, "B": 11, "C": 12, "D": 13, "E": 14}
MEDIANS = {"A": 1.0, "B": 4.0, "C": 0.5, "D": 2.0, "E": 1.0}


def _tokenizer(max_genes: int = 10, special_tokens: bool = False) -> RankValueTokenizer:
    return RankValueTokenizer("gf", TOKENS, MEDIANS, max_genes, special_tokens)


def test_rank_value_encoding_by_hand():
    # counts 4, 8, 1, 6, 0 (total 19): count / median = A 4, B 2, C 2, D 3; E is not expressed.
    # Order: A (4), D (3), then the tie B = C (2) in the order given.
    tok = _tokenizer()
    assert tok.encode("A:4; B:8; C:1; D:6; E:0").tolist() == [10, 13, 11, 12]
    assert tok.encode({"C": 1, "B": 8, "D": 6, "A": 4}).tolist() == [10, 13, 12, 11], "ties keep the given order"
    assert tok.encode("A:40;B:80;C:10;D:60").tolist() == [10, 13, 11, 12], "per-cell scale does not change ranks"
    assert _tokenizer(max_genes=2).encode("A:4; B:8; C:1; D:6").tolist() == [10, 13], "top genes are kept"
    v2 = _tokenizer(max_genes=2, special_tokens=True)
    assert v2.encode(" A : 4 ;B:8;C:1;D:6;").tolist() == [2, 10, 13, 3], "<cls> genes <eos>; whitespace tolerated"


def test_unknown_genes_are_skipped_and_duplicates_summed():
    tok = _tokenizer()
    assert tok.encode("X:100; A:1; Y:5; C:1").tolist() == [12, 10]  # C 2 > A 1
    assert tok.encode("A:1; C:1; A:2").tolist() == [10, 12]  # A 3 > C 2


@pytest.mark.parametrize(
    ("cell", "message"),
    [
        ("A:4; B:x", r"entry 'B:x': the value is not a number"),
        ("A:4; B:-1", r"entry 'B:-1': expression must be a finite number ≥ 0"),
        ("A:4; B:nan", r"entry 'B:nan'"),
        ("A:4; B", r"entry 'B' is not a GENE:value pair"),
        ("A:4; :3", r"entry ':3' is not a GENE:value pair"),
        ("A:1:2", r"entry 'A:1:2' is not a GENE:value pair"),
        ("X:3; Y:1; A:0", r"no expressed gene .* \(3 genes given, 2 not in the token/median dictionaries, 1 with zero"),
    ],
)
def test_bad_cells_name_the_entry(cell, message):
    tok = _tokenizer()
    with pytest.raises(InvalidSequenceError, match=message):
        tok.validate(cell)
    with pytest.raises(InvalidSequenceError, match="sequence 1 of the batch"):
        tok(["A:1", cell])


def test_tokenizer_pads_with_the_pad_token_and_survives_pickling():
    tok = pickle.loads(pickle.dumps(_tokenizer(special_tokens=True)))
    batch = tok(["A:4; B:8; D:6", "C:1"])
    assert batch["input_ids"].tolist() == [[2, 10, 13, 11, 3], [2, 12, 3, 0, 0]]
    assert batch["input_ids"].dtype == torch.long and batch["attention_mask"].dtype == torch.bool
    assert batch["attention_mask"].sum(1).tolist() == [5, 3]


def test_restricted_unpickler_reads_dicts_with_numpy_numbers(tmp_path):
    path = tmp_path / "medians.pkl"
    data = {"ENSG00000000003": np.float32(1.5), "ENSG00000000005": np.float64(0.25), "n": 3, "flag": True}
    path.write_bytes(pickle.dumps(data))
    assert read_dictionary(path) == {"ENSG00000000003": 1.5, "ENSG00000000005": 0.25, "n": 3, "flag": True}
    (tmp_path / "d.json").write_text(json.dumps({"A": 1}))
    assert read_dictionary(tmp_path / "d.json") == {"A": 1}


class _Exploit:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


@pytest.mark.parametrize("payload", [{"A": _Exploit()}, {"A": np.array([1.0])}, {"A": np.str_("x")}])
def test_restricted_unpickler_refuses_other_objects(tmp_path, payload):
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps(payload))
    with pytest.raises(ConfigError, match=rf"cannot read '{path}'"):
        read_dictionary(path)


def test_restricted_unpickler_names_the_refused_global(tmp_path):
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps({"A": _Exploit()}))
    with pytest.raises(ConfigError, match=r"asks for (posix|nt|os)\.system.*refuses"):
        read_dictionary(path)


def _save_checkpoint(directory):
    """A tiny random Geneformer saved like the hub checkpoints (BertForMaskedLM), with JSON dictionaries."""
    config = BertConfig(**GENEFORMER_PRESETS["tiny"].config)
    BertForMaskedLM(config).save_pretrained(directory)
    tokens = {"<pad>": 0, "<mask>": 1, "<cls>": 2, "<eos>": 3} | {f"ENSG{i:011d}": 4 + i for i in range(50)}
    medians = {f"ENSG{i:011d}": 0.5 + i / 10 for i in range(50)}
    (directory / "tokens.json").write_text(json.dumps(tokens))
    (directory / "medians.json").write_text(json.dumps(medians))
    return directory


CELLS = ["ENSG00000000003:3; ENSG00000000005:1.5; ENSG00000000010:8; ENSG00000000041:2", "ENSG00000000007:1"]


def test_local_checkpoint_gives_the_embeddings_of_transformers(tmp_path):
    source = _save_checkpoint(tmp_path)
    ours = Geneformer("tiny", source=str(source), token_dictionary=str(source / "tokens.json"),
                      gene_medians=str(source / "medians.json"))  # fmt: skip
    assert ours.weights_source == str(source)
    assert all(m.training for m in ours.modules())
    ours.eval()
    reference = BertModel.from_pretrained(source, add_pooling_layer=False).eval()
    masked_lm = BertForMaskedLM.from_pretrained(source)
    torch.testing.assert_close(ours.model.encoder.layer[0].attention.self.query.weight,
                               masked_lm.bert.encoder.layer[0].attention.self.query.weight)  # fmt: skip
    batch = ours.tokenizer(CELLS)
    # scaled 3/0.8, 1.5/1.0, 8/1.5, 2/4.6 → genes 10, 3, 5, 41 (ids + 4)
    assert batch["input_ids"][0].tolist() == [2, 14, 7, 9, 45, 3]
    expected = reference(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"].long()).last_hidden_state
    out = ours(batch)
    mask = batch["attention_mask"]
    assert torch.equal(out.mask, mask)
    torch.testing.assert_close(out.embeddings[mask], expected[mask], atol=1e-5, rtol=1e-5)


def test_dictionaries_shipped_with_the_checkpoint_are_found(tmp_path):
    source = _save_checkpoint(tmp_path)
    (source / "tokens.json").rename(source / "token_dictionary.json")
    (source / "medians.json").rename(source / "gene_median_dictionary.json")
    backbone = Geneformer("tiny", source=str(source))
    assert len(backbone.tokenizer.genes) == 50


def test_a_copy_of_the_whole_hub_repository_finds_weights_and_dictionaries(tmp_path, monkeypatch):
    import dataclasses

    files = dict(token_dictionary="geneformer/tokens.json", gene_medians="geneformer/medians.json")
    layout = dataclasses.replace(GENEFORMER_PRESETS["tiny"], subfolder="Geneformer-Tiny", **files)
    monkeypatch.setitem(GENEFORMER_PRESETS, "tiny", layout)
    _save_checkpoint(tmp_path / "Geneformer-Tiny")
    (tmp_path / "geneformer").mkdir()
    for name in ("tokens.json", "medians.json"):
        (tmp_path / "Geneformer-Tiny" / name).rename(tmp_path / "geneformer" / name)
    backbone = Geneformer("tiny", source=str(tmp_path))
    assert backbone.weights_source == str(tmp_path / "Geneformer-Tiny") and len(backbone.tokenizer.genes) == 50


def test_missing_dictionaries_say_which_files_to_give(tmp_path):
    source = _save_checkpoint(tmp_path)
    with pytest.raises(ConfigError, match=r"needs its token dictionary file.*Set `token_dictionary`"):
        Geneformer("tiny", source=str(source))


def test_dictionary_of_another_version_is_refused(tmp_path):
    source = _save_checkpoint(tmp_path)
    (source / "tokens.json").write_text(json.dumps({"<pad>": 0, "<cls>": 2, "<eos>": 3, "G": 20274}))
    with pytest.raises(ConfigError, match=r"'G' the id 20274, outside the model's vocabulary of 104"):
        Geneformer("tiny", source=str(source), token_dictionary=str(source / "tokens.json"),
                   gene_medians=str(source / "medians.json"))  # fmt: skip


def test_presets_build_the_named_architecture_without_weights(tmp_path):
    tokens = tmp_path / "tokens.json"
    tokens.write_text(json.dumps({"<pad>": 0, "<mask>": 1, "<cls>": 2, "<eos>": 3, "G": 4}))
    medians = tmp_path / "medians.json"
    medians.write_text(json.dumps({"G": 1.0}))
    files = dict(token_dictionary=str(tokens), gene_medians=str(medians), pretrained=False)
    v1 = Geneformer("geneformer_v1_6L", **files)
    assert v1.embed_dim == 256 and len(v1.blocks()) == 6 and v1.tokenizer.max_genes == 2048
    assert v1.tokenizer.encode("G:1").tolist() == [4], "V1 has no special tokens"
    v2 = Geneformer("geneformer_v2_104M", **files)
    assert v2.embed_dim == 768 and len(v2.blocks()) == 12 and v2.tokenizer.max_genes == 4094
    assert 100e6 < sum(p.numel() for p in v2.parameters()) < 110e6, "the 104M of the name"
    with pytest.raises(ConfigError, match="max_genes 4095 \\(\\+2 special tokens\\) exceeds the model's 4096"):
        Geneformer("geneformer_v2_104M", max_genes=4095, **files)


def test_lora_adapts_query_and_value():
    from mmfuse.backbones.finetune import FineTuning, LoraOptions

    backbone = Geneformer("tiny", finetune=FineTuning(lora=LoraOptions(r=2)))
    trainable = [n for n, p in backbone.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n and (".query." in n or ".value." in n) for n in trainable)
