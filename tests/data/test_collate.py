"""Batching of records with absent modalities."""

from __future__ import annotations

import numpy as np
import torch

from mmfuse.data import MultiModalCollate
from mmfuse.tokenizers import CharTokenizer

TOKENIZER = CharTokenizer("toy", "ACGT", [1, 2, 3, 4], pad_id=0)


def _records(*proteins):
    return [{"id": f"r{i}", "sequences": {"rna": "ACGT"[: i + 1], "protein": p}, "target": np.float32([i])}
            for i, p in enumerate(proteins)]  # fmt: skip


def test_absent_sequences_get_a_stand_in_and_a_presence_flag():
    collate = MultiModalCollate({"rna": TOKENIZER, "protein": TOKENIZER})
    batch = collate(_records("ACGTACGT", None, "GG"))
    assert batch["present"]["protein"].tolist() == [True, False, True]
    assert batch["present"]["rna"].tolist() == [True, True, True]
    ids = batch["inputs"]["protein"]["input_ids"]
    assert ids[1].tolist() == ids[2].tolist() == [3, 3, 0, 0, 0, 0, 0, 0]  # the shortest present sequence
    assert batch["target"].shape == (3, 1)


def test_a_modality_no_record_has_is_left_out():
    batch = MultiModalCollate({"rna": TOKENIZER, "protein": TOKENIZER})(_records(None, None))
    assert set(batch["inputs"]) == {"rna"}
    assert batch["present"]["protein"].tolist() == [False, False]
    assert torch.equal(batch["present"]["rna"], torch.tensor([True, True]))


class _ListTokenizer:
    """A tokenizer returning plain lists (as an embedding cache's does): keys and sequences."""

    name = "lists"

    def __call__(self, sequences):
        return {"keys": [f"k{s}" for s in sequences], "sequences": list(sequences)}

    def validate(self, sequence):
        pass


def test_a_tokenizer_may_return_lists_and_absent_records_get_the_stand_in():
    batch = MultiModalCollate({"rna": TOKENIZER, "protein": _ListTokenizer()})(_records("ACGTACGT", None, "GG"))
    assert batch["inputs"]["protein"] == {"keys": ["kACGTACGT", "kGG", "kGG"], "sequences": ["ACGTACGT", "GG", "GG"]}
    assert batch["present"]["protein"].tolist() == [True, False, True]
    assert batch["inputs"]["rna"]["input_ids"].shape == (3, 3)
    assert set(batch) == {"ids", "inputs", "present", "target"}


def test_a_list_tokenizer_of_a_modality_no_record_has_is_left_out():
    batch = MultiModalCollate({"rna": TOKENIZER, "protein": _ListTokenizer()})(_records(None, None))
    assert set(batch["inputs"]) == {"rna"}
    assert batch["present"]["protein"].tolist() == [False, False]
