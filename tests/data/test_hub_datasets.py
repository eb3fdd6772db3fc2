"""Hugging Face data sets (hub ids, save_to_disk and data-file directories) and column presets; no network."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mmfuse.data import GTEX_TISSUES, DataError, IsoformExpression, SequenceClassification
from mmfuse.data.datasets.isoform import COLUMN_PRESETS
from mmfuse.data.samples.isoform import make_sample_table

datasets = pytest.importorskip("datasets")

SPLITS = ("train", "val", "test")


@pytest.fixture(scope="module")
def table() -> pd.DataFrame:
    return make_sample_table(12, seed=1)


def _all_ids(dm) -> list[str]:
    return [rid for s in SPLITS for rid in dm.split_ids(s)]


def test_dataset_dict_directory_keeps_its_splits(table, tmp_path):
    thirds = np.array_split(np.arange(len(table)), 3)
    parts = {name: datasets.Dataset.from_pandas(table.iloc[rows], preserve_index=False)
             for name, rows in zip(("train", "validation", "test"), thirds, strict=True)}  # fmt: skip
    datasets.DatasetDict(parts).save_to_disk(str(tmp_path / "dd"))
    dm = IsoformExpression(str(tmp_path / "dd"))
    dm.setup("fit")
    for split, rows in zip(SPLITS, thirds, strict=True):
        assert dm.split_ids(split) == table.transcript_id.iloc[rows].tolist()
    np.testing.assert_allclose(dm.split_labels("val"), table[list(GTEX_TISSUES)].iloc[thirds[1]].to_numpy(), rtol=1e-6)


def test_single_split_directory_splits_by_gene(table, tmp_path):
    datasets.Dataset.from_pandas(table, preserve_index=False).save_to_disk(str(tmp_path / "ds"))
    dm = IsoformExpression(str(tmp_path / "ds"))
    dm.setup("fit")
    from_csv = IsoformExpression(str(_csv(table, tmp_path / "t.csv")))
    from_csv.setup("fit")
    for split in SPLITS:  # the same split by gene as the same table read from a file
        assert dm.split_ids(split) == from_csv.split_ids(split)
    assert sorted(_all_ids(dm)) == sorted(table.transcript_id)


def test_directory_of_data_files_is_read_with_load_dataset(table, tmp_path):
    folder = tmp_path / "files"
    folder.mkdir()
    table.iloc[:20].to_csv(folder / "train.csv", index=False)
    table.iloc[20:].to_csv(folder / "test.csv", index=False)
    dm = SequenceClassification(str(folder), label_column="expression_level", split={"val_fraction": 0.0})
    dm.setup("fit")
    assert dm.split_ids("train") == table.transcript_id.iloc[:20].tolist()
    assert dm.split_ids("test") == table.transcript_id.iloc[20:].tolist() and dm.split_ids("val") == []
    assert dm.target_names == ["high", "low", "medium"]
    # no file is named for validation: val_fraction of the training genes validate, whole genes at a time
    carved = SequenceClassification(str(folder), label_column="expression_level", split={"val_fraction": 0.3})
    carved.setup("fit")
    train, val = carved.split_ids("train"), carved.split_ids("val")
    assert val and sorted(train + val) == sorted(table.transcript_id.iloc[:20])
    gene = dict(zip(table.transcript_id, table.gene_id, strict=True))
    assert not {gene[r] for r in train} & {gene[r] for r in val}


def test_unknown_split_names_are_refused(table, tmp_path):
    parts = {name: datasets.Dataset.from_pandas(table.iloc[:5], preserve_index=False) for name in ("train", "holdout")}
    datasets.DatasetDict(parts).save_to_disk(str(tmp_path / "dd"))
    with pytest.raises(DataError, match=r"\['holdout'\] cannot be read as train, validation or test"):
        IsoformExpression(str(tmp_path / "dd")).setup("fit")


def test_unreachable_hub_id_explains_the_download(monkeypatch):
    calls = []

    def offline(path, **kwargs):
        calls.append((path, kwargs))
        raise ConnectionError(f"Couldn't reach '{path}' on the Hub (LocalEntryNotFoundError)")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    dm = IsoformExpression(source={"path": "InstaDeepAI/multi_omics_transcript_expression", "revision": "v1"})
    with pytest.raises(DataError) as info:
        dm.setup("fit")
    message = str(info.value)
    assert calls == [("InstaDeepAI/multi_omics_transcript_expression", {"revision": "v1"})]
    assert (
        "cannot load the Hugging Face data set 'InstaDeepAI/multi_omics_transcript_expression' at revision 'v1'"
        in message
    )
    assert "ConnectionError: Couldn't reach" in message
    assert "`hf download InstaDeepAI/multi_omics_transcript_expression --repo-type dataset --local-dir DIR" in message
    assert "set `path: DIR`" in message


def test_offline_hub_gives_the_download_hint():
    # tests/conftest.py switches the hub off (HF_HUB_OFFLINE=1): the real datasets code path fails fast
    with pytest.raises(DataError, match=r"hf download nobody/no-such-data-set --repo-type dataset --local-dir DIR"):
        IsoformExpression("nobody/no-such-data-set").setup("fit")


def test_missing_table_file_is_not_taken_for_a_hub_id(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        IsoformExpression("data/table.csv").setup("fit")


def test_modelgenerator_preset_reads_its_names_and_numbers_the_records(table, tmp_path):
    names = COLUMN_PRESETS["modelgenerator"]
    renamed = table.rename(columns={"DNA": names.modalities["dna"], "RNA": names.modalities["rna"],
                                    "Protein": names.modalities["protein"],
                                    **dict(zip(GTEX_TISSUES, names.target_columns, strict=True))})  # fmt: skip
    dm = IsoformExpression(
        str(_csv(renamed.drop(columns=["transcript_id", "gene_id"]), tmp_path / "t.csv")), columns="modelgenerator",
    )  # fmt: skip
    assert dm.modalities == names.modalities and dm.target_names == list(names.target_columns)
    dm.setup("fit")
    assert sorted(_all_ids(dm), key=lambda r: int(r.split(":")[1])) == [f"t.csv:{i}" for i in range(len(table))]
    targets = table[list(GTEX_TISSUES)].to_numpy(dtype=np.float32)
    for split in SPLITS:  # ids FILE:ROW join back to the table's rows
        rows = [int(r.split(":")[1]) for r in dm.split_ids(split)]
        np.testing.assert_array_equal(dm.split_labels(split), targets[rows])


def test_modelgenerator_preset_names():
    preset = COLUMN_PRESETS["modelgenerator"]
    assert preset.modalities == {"dna": "dna_seq", "rna": "rna_seq", "protein": "protein_seq"}
    assert preset.target_columns[0] == "labels_0" and preset.target_columns[-1] == "labels_29"
    assert (preset.id_column, preset.gene_column) == (None, None)  # the published files have neither


def test_explicit_options_override_the_preset():
    dm = IsoformExpression(
        source={"id_column": "tid"}, columns="modelgenerator", modalities={"rna": "mrna"}, target_columns=["a", "b"],
        split={"group": None},
    )  # fmt: skip
    assert dm.modalities == {"rna": "mrna"} and dm.target_names == ["a", "b"]
    assert (dm.id_column, dm.gene_column) == ("tid", None)


def _csv(table: pd.DataFrame, path):
    table.to_csv(path, index=False)
    return path
