from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest
import torch

from mmfuse.backbones import ESM2, NucleotideTransformer
from mmfuse.data import DataError, SequenceClassification
from mmfuse.errors import ConfigError


def _write(table: pd.DataFrame, path) -> str:
    table.to_csv(path, index=False)
    return str(path)


def _labelled(small_table: pd.DataFrame, labels) -> pd.DataFrame:
    table = small_table.copy()
    table["label"] = [labels[i % len(labels)] for i in range(len(table))]
    return table


def _all_labels(dm: SequenceClassification) -> dict[str, int]:
    """``{record id: class index}`` over all splits."""
    return {rid: int(label) for s in ("train", "val", "test")
            for rid, label in zip(dm.split_ids(s), dm.split_labels(s), strict=True)}  # fmt: skip


def test_default_classes_are_the_sorted_labels_and_index_the_records(small_table, tmp_path):
    table = _labelled(small_table, ["nucleus", "cytosol", "membrane"])
    dm = SequenceClassification(_write(table, tmp_path / "t.csv"))
    assert dm.target_names == ["cytosol", "membrane", "nucleus"]
    dm.setup("fit")
    classes = ["cytosol", "membrane", "nucleus"]
    expected = {rid: classes.index(label) for rid, label in zip(table.transcript_id, table.label, strict=True)}
    assert _all_labels(dm) == expected
    assert dm.split_labels("train").dtype == np.int64


def test_given_classes_set_the_order(small_table, tmp_path):
    table = _labelled(small_table, ["nucleus", "cytosol", "membrane"])
    dm = SequenceClassification(_write(table, tmp_path / "t.csv"), classes=["nucleus", "membrane", "cytosol"])
    dm.setup("fit")
    assert dm.target_names == ["nucleus", "membrane", "cytosol"]
    labels = _all_labels(dm)
    assert labels[table.transcript_id[0]] == 0 and labels[table.transcript_id[1]] == 2  # nucleus, cytosol


def test_numeric_labels_sort_numerically_and_read_as_written(small_table, tmp_path):
    table = _labelled(small_table, ["10", "2", "1", "007"])
    table.loc[5, "label"] = np.nan  # a gap would make pandas read the column as floats (2.0)
    dm = SequenceClassification(_write(table, tmp_path / "t.csv"), missing_labels="drop")
    assert dm.target_names == ["1", "2", "007", "10"]
    parquet = tmp_path / "t.parquet"
    _labelled(small_table, [3.0, 1.0, 20.0]).to_parquet(parquet)
    assert SequenceClassification(str(parquet)).target_names == ["1", "3", "20"]


def test_unknown_label_names_the_record_the_label_and_the_classes(small_table, tmp_path):
    table = _labelled(small_table, ["a", "b"])
    table.loc[4, "label"] = "c"
    dm = SequenceClassification(_write(table, tmp_path / "t.csv"), classes=["a", "b"])
    expected = rf"1 record\(s\) .* not among the classes \['a', 'b'\], e.g. '{table.transcript_id[4]}' \('c'\)"
    with pytest.raises(DataError, match=expected):
        dm.setup("fit")


def test_missing_labels_are_an_error_naming_records_or_dropped_and_counted(small_table, tmp_path, caplog):
    table = _labelled(small_table, ["a", "b"])
    table.loc[[2, 7], "label"] = [np.nan, "  "]
    path = _write(table, tmp_path / "t.csv")
    expected = rf"2 record\(s\) .* no label in column 'label', e.g. '{table.transcript_id[2]}', "
    with pytest.raises(DataError, match=expected + rf"'{table.transcript_id[7]}'.*missing_labels: drop"):
        SequenceClassification(path).setup("fit")
    dm = SequenceClassification(path, missing_labels="drop")
    with caplog.at_level(logging.INFO):
        dm.setup("fit")
    kept = _all_labels(dm)
    assert len(kept) == len(table) - 2 and table.transcript_id[2] not in kept and table.transcript_id[7] not in kept
    assert "dropped 2 records without a label" in caplog.text


def test_fewer_than_two_classes_is_refused(small_table, tmp_path):
    path = _write(_labelled(small_table, ["only"]), tmp_path / "t.csv")
    with pytest.raises(DataError, match=r"holds 1 distinct label\(s\) \('only'\); a classifier needs at least 2"):
        _ = SequenceClassification(path).target_names
    with pytest.raises(ConfigError, match="at least 2 distinct class names"):
        SequenceClassification(path, classes=["only"])
    with pytest.raises(ConfigError, match="at least 2 distinct class names"):
        SequenceClassification(path, classes=["a", "a"])


def test_target_names_before_setup_read_the_table_once(small_table, tmp_path, monkeypatch):
    path = _write(_labelled(small_table, ["x", "y"]), tmp_path / "t.csv")
    reads = []
    import mmfuse.data.datasets.table as module

    real = module.open_records
    monkeypatch.setattr(module, "open_records", lambda *a, **k: reads.append(a) or real(*a, **k))
    dm = SequenceClassification(path)
    assert reads == []  # the constructor reads nothing
    assert dm.target_names == ["x", "y"]
    dm.setup("fit")
    assert dm.target_names == ["x", "y"] and len(reads) == 1
    # given classes: nothing is read for them
    assert SequenceClassification(path, classes=["y", "x"]).target_names == ["y", "x"] and len(reads) == 1


def test_predicting_a_table_without_labels_needs_the_classes(small_table, tmp_path):
    path = _write(small_table, tmp_path / "t.csv")  # no `label` column
    with pytest.raises(DataError, match=r"no label column 'label' to take the classes from.*`classes`"):
        _ = SequenceClassification(path).target_names
    dm = SequenceClassification(path, classes=["a", "b"])
    dm.setup("predict")
    assert dm.split_labels("train") is None and len(dm.split_ids("train")) > 0


def test_sample_expression_levels_give_int64_batches():
    levels = ["low", "medium", "high"]
    modalities = {"rna": "RNA", "protein": "Protein"}
    dm = SequenceClassification(
        "sample", modalities=modalities, label_column="expression_level", classes=levels, loader={"batch_size": 4},
        sample={"size": 30},
    )
    dm.attach_tokenizers({"rna": NucleotideTransformer("tiny").tokenizer, "protein": ESM2("tiny").tokenizer})
    batch = next(iter(dm.train_dataloader()))
    assert batch["target"].dtype == torch.int64 and batch["target"].shape == (4,)
    counts = dm.class_counts("train")
    assert list(counts) == levels and sum(counts.values()) == len(dm.split_ids("train"))
    assert min(counts.values()) > 0.2 * sum(counts.values())  # tertiles: roughly balanced
    assert dm.hparams["label_column"] == "expression_level"
