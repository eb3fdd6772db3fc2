from __future__ import annotations

import pickle
import random

import pytest
import torch
from transformers import EsmTokenizer

from mmfuse.backbones import ESM2, Enformer, NucleotideTransformer
from mmfuse.tokenizers import ESM_VOCAB, NT_VOCAB, CharTokenizer, InvalidSequenceError, KmerTokenizer


def _vocab_file(tmp_path, tokens):
    path = tmp_path / "vocab.txt"
    path.write_text("\n".join(tokens) + "\n")
    return path


def _random(alphabet: str, rng: random.Random, lo: int, hi: int) -> str:
    return "".join(rng.choice(alphabet) for _ in range(rng.randint(lo, hi)))


def test_esm_tokenizer_matches_transformers(tmp_path):
    reference = EsmTokenizer(str(_vocab_file(tmp_path, ESM_VOCAB)))
    ours = ESM2("tiny").tokenizer
    rng = random.Random(0)
    proteins = [_random("ACDEFGHIKLMNPQRSTVWYXBZUO", rng, 1, 60) for _ in range(20)]
    expected = reference(proteins, padding=True, return_tensors="pt")
    got = ours(proteins)
    assert torch.equal(got["input_ids"], expected["input_ids"])
    assert torch.equal(got["attention_mask"], expected["attention_mask"].bool())
    assert len(ESM_VOCAB) == 33


def test_nt_tokenizer_matches_transformers_with_the_hub_vocabulary(tmp_path):
    # the hub tokenizer of NT v2 is EsmTokenizer over this vocabulary, without an end token
    reference = EsmTokenizer(str(_vocab_file(tmp_path, NT_VOCAB)), eos_token=None)
    ours = KmerTokenizer()
    rng = random.Random(1)
    dna = [_random("ACGT", rng, 1, 40) + _random("ACGTN", rng, 0, 15) + _random("ACGT", rng, 0, 20) for _ in range(30)]
    expected = reference(dna, padding=True, return_tensors="pt")
    got = ours(dna)
    assert torch.equal(got["input_ids"], expected["input_ids"])
    assert torch.equal(got["attention_mask"], expected["attention_mask"].bool())


def test_nt_token_ids_are_the_published_ones():
    # values shown by the hub tokenizer of InstaDeepAI/nucleotide-transformer-v2-50m-multi-species
    tok = KmerTokenizer()
    assert len(NT_VOCAB) == 4107
    assert tok.encode("A").tolist() == [3, 4102]
    assert [tok.encode(b).tolist()[1] for b in "ATCGN"] == [4102, 4103, 4104, 4105, 4106]
    assert tok.encode("AAAAAA").tolist() == [3, 6]
    assert tok.encode("AAAAAAT").tolist() == [3, 6, 4103]
    # greedy 6-mers inside each N-free run; leftovers and N as single nucleotides
    assert [NT_VOCAB[i] for i in tok.encode("GGGGGGGNAAAAAAAC")] == ["<cls>", "GGGGGG", "G", "N", "AAAAAA", "A", "C"]


def test_rna_is_read_as_dna_and_lowercase_as_uppercase():
    tok = KmerTokenizer()
    assert tok.encode("acguuu").tolist() == tok.encode("ACGTTT").tolist()
    enformer = Enformer("tiny").tokenizer
    assert enformer(["acgtn"])["input_ids"].tolist() == [[0, 1, 2, 3, 4]]


def test_esm_drops_a_trailing_stop():
    tok = ESM2("tiny").tokenizer
    assert tok.encode("MKV*").tolist() == tok.encode("MKV").tolist()


@pytest.mark.parametrize(
    "tokenizer, good, bad, pattern",
    [
        (KmerTokenizer(), "ACGT", "ACGTRACGT", r"letter 'R' at position 4 .* not in the alphabet ACGTUN"),
        (KmerTokenizer(), "ACGT", "ACGT ACGT", r"letter ' ' at position 4"),
        (ESM2("tiny").tokenizer, "MK", "MKTJAY", r"letter 'J' at position 3 .* alphabet LAGVSERTIDPKQNFYMHWCXBUZO"),
        (ESM2("tiny").tokenizer, "MK", "MK*AY", r"letter '\*' at position 2"),
        (Enformer("tiny").tokenizer, "ACGT", "ACGTé", r"letter 'é' at position 4"),
        (KmerTokenizer(), "ACGT", "", r"the sequence is empty"),
        (KmerTokenizer(max_tokens=4), "AAAAAAT", "A" * 19,
         r"19 nucleotides make 5 tokens, more than NucleotideTransformer"),
        (CharTokenizer("ESM2", "AC", [0, 1], 1, max_tokens=5, bos_id=2, eos_id=3), "AC", "ACAC",
         r"4 letters is longer than ESM2 accepts \(3 letters\)"),
    ],
)  # fmt: skip
def test_bad_sequences_raise_with_position_and_fix(tokenizer, good, bad, pattern):
    with pytest.raises(InvalidSequenceError, match=pattern) as info:
        tokenizer([good, bad])
    assert info.value.index == 1
    assert info.value.reason in str(info.value)
    with pytest.raises(InvalidSequenceError):
        tokenizer.validate(bad)
    tokenizer.validate(good)


@pytest.mark.parametrize("backbone", [ESM2, NucleotideTransformer, Enformer])
def test_tokenizers_survive_pickling(backbone):
    # DataLoader workers started with spawn receive the collate function (and tokenizers) pickled
    tokenizer = backbone("tiny").tokenizer
    clone = pickle.loads(pickle.dumps(tokenizer))
    sequence = "MKV" if backbone is ESM2 else "ACGTACGTAC"
    assert torch.equal(clone([sequence])["input_ids"], tokenizer([sequence])["input_ids"])
