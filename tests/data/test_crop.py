"""Length policies per modality: cropping in setup, counts, and the `error` policy."""

from __future__ import annotations

import logging

import pandas as pd
import pytest

from mmfuse.backbones import ESM2
from mmfuse.data import DataError, IsoformExpression, SequenceClassification
from mmfuse.data.datasets.table import crop_sequence
from mmfuse.errors import ConfigError

SPLITS = ("train", "val", "test")


@pytest.mark.parametrize(
    ("sequence", "n", "policy", "expected"),
    [
        ("ABCDEFGHIJ", 4, "center", "DEFG"),  # 6 to drop (even): 3 at the start, 3 at the end
        ("ABCDEFGHIJ", 5, "center", "CDEFG"),  # 5 to drop (odd): 2 at the start, 3 at the end
        ("ABCDEFGHIJ", 9, "center", "ABCDEFGHI"),  # 1 to drop: at the end
        ("ABCDEFGHIJ", 4, "end", "GHIJ"),
        ("ABCDEFGHIJ", 4, "start", "ABCD"),
        ("ABCDEFGHIJ", 4, "error", "ABCDEFGHIJ"),
        ("ABCD", 4, "center", "ABCD"),
    ],
)
def test_crop_sequence(sequence, n, policy, expected):
    assert crop_sequence(sequence, n, policy) == expected


def _table() -> pd.DataFrame:
    return pd.DataFrame({
        "transcript_id": ["t0", "t1", "t2", "t3"],
        "gene_id": ["g0", "g1", "g2", "g3"],
        "split": ["train", "train", "val", "test"],
        "DNA": ["AACCGGTTAC", "ACGT", "ACGTACGTA", "ACG"],
        "RNA": ["ACGUACGUAC", "AC", "UUUUUGGGGG", "ACGUAC"],
        "Protein": ["MKTAYIAKQR", "", "MKV", "MVLSPADKTNW"],
        "label": ["a", "b", "a", "b"],
    })  # fmt: skip


def _sequences(dm, modality: str) -> dict[str, str | None]:
    return {rid: seq for s in SPLITS for rid, seq in zip(dm._splits[s].ids, dm._splits[s].sequences[modality],
                                                              strict=True)}  # fmt: skip


def test_default_policies_crop_dna_center_rna_end_protein_start(tmp_path, caplog):
    path = tmp_path / "t.csv"
    _table().to_csv(path, index=False)
    dm = SequenceClassification(str(path), lengths={"max": {"dna": 5, "rna": 4, "protein": 4}})
    with caplog.at_level(logging.INFO):
        dm.setup("fit")
    # 10 → 5: 5 to drop, 2 at the start (AA|CCGGT|TAC); 9 → 5: 4 to drop, 2 at the start (AC|GTACG|TA)
    assert _sequences(dm, "dna") == {"t0": "CCGGT", "t1": "ACGT", "t2": "GTACG", "t3": "ACG"}
    assert _sequences(dm, "rna") == {"t0": "GUAC", "t1": "AC", "t2": "GGGG", "t3": "GUAC"}
    assert _sequences(dm, "protein") == {"t0": "MKTA", "t1": None, "t2": "MKV", "t3": "MVLS"}
    assert dm.crop_counts == {"dna": 2, "rna": 3, "protein": 2}
    assert "SequenceClassification: cropped 3 rna sequences to 4 nt (kept the 3' end)" in caplog.text
    assert "cropped 2 dna sequences to 5 nt (kept the middle)" in caplog.text
    assert "cropped 2 protein sequences to 4 aa (kept the N-terminus)" in caplog.text


def test_chosen_policies_and_unlimited_modalities(tmp_path):
    path = tmp_path / "t.csv"
    _table().to_csv(path, index=False)
    dm = SequenceClassification(str(path), lengths={"max": {"rna": 6}, "crop": {"rna": "start", "dna": "end"}})
    dm.setup("fit")
    assert _sequences(dm, "rna") == {"t0": "ACGUAC", "t1": "AC", "t2": "UUUUUG", "t3": "ACGUAC"}
    assert _sequences(dm, "dna")["t0"] == "AACCGGTTAC"  # no max_length: left whole
    assert dm.crop_counts == {"rna": 2}


def test_crop_counts_over_a_large_sample_logged_with_thousands(caplog):
    dm = IsoformExpression("sample", lengths={"max": {"rna": 1_000}}, sample={"size": 12})
    with caplog.at_level(logging.INFO):
        dm.setup("fit")
    lengths = [len(s) for split in SPLITS for s in dm._splits[split].sequences["rna"]]
    assert max(lengths) == 1_000 and dm.crop_counts["rna"] == sum(n == 1_000 for n in lengths) > 0
    assert (
        f"IsoformExpression: cropped {dm.crop_counts['rna']} rna sequences to 1,000 nt (kept the 3' end)" in caplog.text
    )


def test_error_policy_leaves_sequences_for_the_tokenizer_to_reject(tmp_path):
    path = tmp_path / "t.csv"
    _table().to_csv(path, index=False)
    dm = SequenceClassification(
        str(path), modalities={"protein": "Protein"}, lengths={"max": {"protein": 4}, "crop": {"protein": "error"}},
    )  # fmt: skip
    dm.setup("fit")
    assert _sequences(dm, "protein")["t3"] == "MVLSPADKTNW" and dm.crop_counts == {}
    tokenizer = ESM2("tiny").tokenizer
    tokenizer.max_tokens = 10  # 8 letters plus <cls> and <eos>
    with pytest.raises(DataError) as info:
        dm.attach_tokenizers({"protein": tokenizer})
    message = str(info.value)
    assert "2 protein sequence(s) (column 'Protein'" in message
    assert "record 't0': 10 letters is longer than" in message and "record 't3': 11 letters" in message


def test_crop_options_are_checked():
    with pytest.raises(ConfigError, match=r"`lengths.max` names \['cell'\]"):
        IsoformExpression(lengths={"max": {"cell": 3}})
    with pytest.raises(ConfigError, match=r"`lengths.crop` names \['cell'\]"):
        IsoformExpression(lengths={"crop": {"cell": "end"}})
    with pytest.raises(ConfigError, match="positive whole numbers"):
        IsoformExpression(lengths={"max": {"rna": 0}})
