from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from mmfuse.backbones import ESM2, Enformer, NucleotideTransformer
from mmfuse.data import GTEX_TISSUES, DataError, IsoformExpression, MultiModalCollate


@pytest.fixture(scope="module")
def tokenizers():
    return {"dna": Enformer("tiny").tokenizer, "rna": NucleotideTransformer("tiny").tokenizer,
            "protein": ESM2("tiny").tokenizer}  # fmt: skip


def _write(table: pd.DataFrame, path) -> str:
    table.to_csv(path, index=False)
    return str(path)


def test_split_by_gene_keeps_isoforms_together_and_is_stable():
    dm = IsoformExpression("sample", sample={"size": 60})
    dm.setup("fit")
    genes = {}
    for split in ("train", "val", "test"):
        for rid in dm.split_ids(split):
            genes.setdefault(rid.split(".")[0], set()).add(split)
    assert all(len(s) == 1 for s in genes.values()), "a gene is in two splits"
    assert {s for v in genes.values() for s in v} == {"train", "val", "test"}
    again = IsoformExpression("sample", sample={"size": 60})
    again.setup("fit")
    assert again.split_ids("test") == dm.split_ids("test")


def test_split_column_is_used(small_table, tmp_path):
    table = small_table.copy()
    table["split"] = ["test" if i % 3 == 0 else "Train" for i in range(len(table))]
    table.loc[1, "split"] = "validation"
    dm = IsoformExpression(_write(table, tmp_path / "t.csv"))
    dm.setup("fit")
    assert dm.split_ids("val") == [table.transcript_id[1]]
    assert len(dm.split_ids("test")) == sum(i % 3 == 0 for i in range(len(table)))
    table.loc[2, "split"] = "holdout"
    with pytest.raises(DataError, match="column 'split' of .* holds 'holdout'; use train, val or test"):
        IsoformExpression(_write(table, tmp_path / "u.csv")).setup("fit")


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".parquet", ".csv.gz"])
def test_reads_csv_tsv_parquet(small_table, tmp_path, suffix):
    path = tmp_path / f"table{suffix}"
    if suffix == ".parquet":
        small_table.to_parquet(path)
    else:
        small_table.to_csv(path, sep="\t" if suffix == ".tsv" else ",", index=False)
    dm = IsoformExpression(str(path))
    dm.setup("fit")
    assert sum(len(dm.split_ids(s)) for s in ("train", "val", "test")) == len(small_table)
    np.testing.assert_allclose(dm.target_stats()[0].shape, (30,))


def test_missing_column_lists_the_columns(small_table, tmp_path):
    path = _write(small_table.drop(columns=["Liver", "Protein"]), tmp_path / "t.csv")
    with pytest.raises(DataError, match=r"lacks column\(s\) 'Protein', 'Liver'.*Its columns are: transcript_id"):
        IsoformExpression(path).setup("fit")


def test_nan_target_names_the_record_or_is_dropped_and_counted(small_table, tmp_path, caplog):
    table = small_table.copy()
    table.loc[3, "Liver"] = np.nan
    path = _write(table, tmp_path / "t.csv")
    expected = rf"1 record\(s\) .* NaN .*'{table.transcript_id[3]}' \(Liver: nan\).*nan_targets: drop"
    with pytest.raises(DataError, match=expected):
        IsoformExpression(path).setup("fit")
    dm = IsoformExpression(path, nan_targets="drop")
    dm.setup("fit")
    kept = [rid for s in ("train", "val", "test") for rid in dm.split_ids(s)]
    assert len(kept) == len(table) - 1 and table.transcript_id[3] not in kept
    predicting = IsoformExpression(path, split={"predict": "all"})  # prediction reads no targets
    predicting.setup("predict")
    assert len([rid for s in ("train", "val", "test") for rid in predicting.split_ids(s)]) == len(table)
    assert predicting.split_labels("train") is None


def test_duplicate_ids_are_refused(small_table, tmp_path):
    table = pd.concat([small_table, small_table.iloc[:2]])
    with pytest.raises(DataError, match="2 ids occur more than once in column 'transcript_id'"):
        IsoformExpression(_write(table, tmp_path / "t.csv")).setup("fit")


def test_bad_sequences_are_reported_with_record_ids_before_training(small_table, tmp_path, tokenizers):
    table = small_table.copy()
    coding = table.index[table.biotype == "protein_coding"]
    i, j = coding[0], coding[1]
    table.loc[i, "Protein"] = table.Protein[i][:10] + "J" + table.Protein[i][11:]
    table.loc[j, "Protein"] = table.Protein[j][:4] + "ä" + table.Protein[j][5:]
    dm = IsoformExpression(_write(table, tmp_path / "t.csv"))
    with pytest.raises(DataError) as info:
        dm.attach_tokenizers(tokenizers)
    message = str(info.value)
    assert "2 protein sequence(s) (column 'Protein'" in message
    assert f"record '{table.transcript_id[i]}': letter 'J' at position 10" in message
    assert f"record '{table.transcript_id[j]}': letter 'ä' at position 4" in message


def test_empty_sequences_are_absent_modalities_or_an_error(small_table, tmp_path, tokenizers):
    table = small_table.copy()
    noncoding = table.transcript_id[table.biotype != "protein_coding"].tolist()
    table.loc[3, "RNA"] = "  "  # blank counts as missing
    path = _write(table, tmp_path / "t.csv")
    dm = IsoformExpression(path)
    dm.attach_tokenizers(tokenizers)  # empty sequences are not handed to tokenizers
    assert dm.absent_counts == {"dna": 0, "rna": 1, "protein": len(noncoding)}
    with pytest.raises(DataError) as info:
        IsoformExpression(path, missing_modalities="error").setup("fit")
    message = str(info.value)
    assert f"{len(noncoding)} lack protein" in message and repr(noncoding[0]) in message
    assert "set missing_modalities: mask" in message
    table.loc[3, ["DNA", "Protein"]] = ""
    dm = IsoformExpression(_write(table, tmp_path / "u.csv"))
    dm.setup("fit")
    kept = [rid for s in ("train", "val", "test") for rid in dm.split_ids(s)]
    assert len(kept) == len(table) - 1 and table.transcript_id[3] not in kept  # nothing left to read
    protein_only = IsoformExpression(path, modalities={"protein": "Protein"})
    protein_only.setup("fit")
    kept = {rid for s in ("train", "val", "test") for rid in protein_only.split_ids(s)}
    assert len(kept) == len(table) - len(noncoding) and not kept & set(noncoding)


def test_modalities_must_have_columns(tokenizers):
    dm = IsoformExpression("sample", modalities={"rna": "RNA"}, sample={"size": 10})
    with pytest.raises(DataError, match=r"reads modalities \['dna', 'protein', 'rna'\].*add \['dna', 'protein'\]"):
        dm.attach_tokenizers(tokenizers)


def test_loaders_need_tokenizers_then_give_batches(tokenizers):
    dm = IsoformExpression("sample", loader={"batch_size": 4}, sample={"size": 60})
    dm.setup("fit")
    with pytest.raises(RuntimeError, match="attach_tokenizers"):
        dm.train_dataloader()
    dm.attach_tokenizers(tokenizers)
    batch = next(iter(dm.val_dataloader()))
    assert len(batch["ids"]) == 4 and batch["target"].shape == (4, 30) and batch["target"].dtype == torch.float32
    assert set(batch["inputs"]) == {"dna", "rna", "protein"}
    assert batch["inputs"]["dna"]["input_ids"].shape == (4, 1024)
    assert dm.target_names == list(GTEX_TISSUES)


def test_collate_names_the_record_of_a_bad_sequence(tokenizers):
    collate = MultiModalCollate({"protein": tokenizers["protein"]})
    records = [{"id": "ok", "sequences": {"protein": "MKV"}}, {"id": "ENST01.2", "sequences": {"protein": "MK#"}}]
    with pytest.raises(DataError, match=r"record 'ENST01.2', protein sequence: letter '#' at position 2"):
        collate(records)
    batch = collate(records[:1])
    assert "target" not in batch and batch["ids"] == ["ok"]


def test_target_stats_come_from_the_training_split():
    dm = IsoformExpression("sample", sample={"size": 30})
    dm.setup("fit")
    mean, std = dm.target_stats()
    train = dm.split_labels("train")
    np.testing.assert_allclose(mean, train.mean(0), rtol=1e-6)
    np.testing.assert_allclose(std, train.std(0), rtol=1e-6)


def test_tokenization_runs_in_dataloader_workers(tokenizers):
    import os
    import pickle

    dm = IsoformExpression("sample", loader={"batch_size": 4, "num_workers": 2}, sample={"size": 60})
    dm.attach_tokenizers(tokenizers)
    pickle.loads(pickle.dumps(dm._collate))  # spawn-started workers receive it pickled
    seen = []

    class Spy(type(tokenizers["protein"])):
        def __call__(self, sequences):
            seen.append(os.getpid())
            return super().__call__(sequences)

    spy = Spy.__new__(Spy)
    spy.__dict__.update(tokenizers["protein"].__dict__)
    dm._collate.tokenizers["protein"] = spy
    batches = list(dm.val_dataloader())
    assert sum(len(b["ids"]) for b in batches) == len(dm.split_ids("val"))
    assert batches[0]["inputs"]["protein"]["input_ids"].dtype == torch.int64
    assert seen == [], "tokenized in the main process (the spy records only in the process that runs it)"
