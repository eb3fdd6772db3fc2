"""ContextEmbedding: a learned embedding per category name (tests/backbones/test_backbones.py runs the contract)."""

from __future__ import annotations

import pickle

import pytest
import torch

from mmfuse.backbones import ContextEmbedding, FineTuning
from mmfuse.backbones.context import CategoryTokenizer
from mmfuse.errors import ConfigError
from mmfuse.registry import BACKBONES
from mmfuse.tokenizers import InvalidSequenceError, Tokenizer

CELLS = ["HepG2", "K562", "MCF-7"]


def test_registered_without_presets():
    assert BACKBONES.get("ContextEmbedding") is ContextEmbedding
    assert ContextEmbedding.presets == {}
    assert isinstance(ContextEmbedding(CELLS).tokenizer, Tokenizer)


def test_each_category_reads_its_own_rows_of_the_table():
    backbone = ContextEmbedding(CELLS, embed_dim=4, tokens=2)
    batch = backbone.tokenizer([" MCF-7", "K562 ", "MCF-7"])  # surrounding whitespace is stripped
    assert batch["input_ids"].tolist() == [[4, 5], [2, 3], [4, 5]]
    assert batch["attention_mask"].all()
    out = backbone(batch)
    assert out.embeddings.shape == (3, 2, 4) and out.mask.shape == (3, 2) and out.mask.all()
    weight = backbone.embedding.weight
    torch.testing.assert_close(out.embeddings[0], weight[4:6])
    torch.testing.assert_close(out.embeddings[1], weight[2:4])
    assert weight.shape == (len(CELLS) * 2, 4) and backbone.embed_dim == 4


def test_only_the_rows_of_the_batch_get_gradients():
    backbone = ContextEmbedding(CELLS, embed_dim=4)
    backbone(backbone.tokenizer(["K562", "K562"])).embeddings.sum().backward()
    grad = backbone.embedding.weight.grad
    assert torch.equal(grad[1], torch.full((4,), 2.0))  # two records, d(sum)/dw = 1 each
    assert not grad[[0, 2]].any()


def test_unknown_category_names_the_known_ones_and_the_closest():
    tokenizer = ContextEmbedding(CELLS).tokenizer
    with pytest.raises(InvalidSequenceError) as info:
        tokenizer(["K562", "hepg2"])
    assert info.value.index == 1
    assert info.value.reason.startswith(
        "'hepg2' is not among the 3 context categories ContextEmbedding knows ('HepG2', 'K562', 'MCF-7'). "
        "Did you mean 'HepG2'?"
    )
    assert "set `unknown: shared`" in info.value.reason
    with pytest.raises(InvalidSequenceError, match="the context is empty"):
        tokenizer.validate("  ")
    with pytest.raises(InvalidSequenceError, match="'A549' is not among.*context categories"):
        tokenizer.validate("A549")
    many = CategoryTokenizer("ContextEmbedding", [f"cell{i}" for i in range(30)], kind="tissue")
    with pytest.raises(InvalidSequenceError, match=r"30 tissue categories .*'cell11', … \(18 more\)"):
        many.validate("liver")


def test_shared_unknown_maps_every_unseen_name_to_one_embedding():
    backbone = ContextEmbedding(CELLS, embed_dim=3, tokens=2, unknown="shared")
    assert backbone.embedding.weight.shape == ((len(CELLS) + 1) * 2, 3)
    out = backbone(backbone.tokenizer(["A549", "GM12878", "HepG2"]))
    torch.testing.assert_close(out.embeddings[0], backbone.embedding.weight[6:8])
    torch.testing.assert_close(out.embeddings[1], out.embeddings[0])
    assert not torch.equal(out.embeddings[2], out.embeddings[0])
    with pytest.raises(InvalidSequenceError, match="empty"):
        backbone.tokenizer.validate("")  # an empty name is an error whatever the policy


def test_frozen_embeddings_do_not_train():
    backbone = ContextEmbedding(CELLS, finetune=FineTuning(freeze=True))
    assert backbone.frozen and not backbone.embedding.weight.requires_grad
    assert not backbone(backbone.tokenizer(["HepG2"])).embeddings.requires_grad


def test_tokenizer_pickles_for_dataloader_workers():
    tokenizer = ContextEmbedding(CELLS, tokens=3, unknown="shared").tokenizer
    copy = pickle.loads(pickle.dumps(tokenizer))
    assert copy(["MCF-7", "X"])["input_ids"].tolist() == tokenizer(["MCF-7", "X"])["input_ids"].tolist()
    assert copy(["MCF-7", "X"])["input_ids"].tolist() == [[6, 7, 8], [9, 10, 11]]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"categories": []}, "ContextEmbedding needs `categories`"),
        ({"categories": "HepG2"}, "ContextEmbedding needs `categories`"),
        ({"categories": ["HepG2", " "]}, r"`categories` item 1 is ' '"),
        ({"categories": ["HepG2", "K562", " HepG2"]}, r"lists \['HepG2'\] more than once"),
        ({"categories": CELLS, "tokens": 0}, "`tokens` must be a positive whole number, not 0"),
        ({"categories": CELLS, "embed_dim": 2.5}, "`embed_dim` must be a positive whole number, not 2.5"),
        ({"categories": CELLS, "unknown": "skip"}, "`unknown` must be 'error' or 'shared'"),
    ],
)
def test_bad_options_are_config_errors(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        ContextEmbedding(**kwargs)
