"""Cross-validation folds of the table data modules: grouped by gene, disjoint, covering, the same from
every kind of source and in every row order."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mmfuse.data import DataError, IsoformExpression, SequenceClassification
from mmfuse.data.samples.isoform import make_sample_table
from mmfuse.data.splits import fold_of
from mmfuse.errors import ConfigError

SPLITS = ("train", "val", "test")


@pytest.fixture(scope="module")
def table() -> pd.DataFrame:
    return make_sample_table(30, seed=3)


def _folds(make, folds: int = 3) -> list[dict[str, list[str]]]:
    out = []
    for fold in range(folds):
        dm = make(fold)
        dm.setup("fit")
        out.append({s: list(dm.split_ids(s)) for s in SPLITS})
    return out


def _check(folds: list[dict[str, list[str]]], table: pd.DataFrame) -> None:
    gene = dict(zip(table.transcript_id, table.gene_id, strict=True))
    tested = [set(f["test"]) for f in folds]
    assert set().union(*tested) == set(table.transcript_id), "every record is tested once"
    assert sum(map(len, tested)) == len(table), "no record is tested twice"
    sizes = [len({gene[r] for r in t}) for t in tested]
    assert max(sizes) - min(sizes) <= 1, sizes  # folds of equal size in genes
    for f in folds:
        assert f["val"] and f["train"]
        genes = {s: {gene[r] for r in f[s]} for s in SPLITS}
        assert not genes["test"] & (genes["train"] | genes["val"]), "a gene straddles folds"
        assert not genes["train"] & genes["val"]
        assert sorted(f["train"] + f["val"] + f["test"]) == sorted(table.transcript_id)


def test_folds_group_isoforms_of_a_gene_and_ignore_row_order_and_split_column(table, tmp_path):
    assert table.gene_id.value_counts().max() > 1, "the sample has genes with several isoforms"
    table.to_csv(tmp_path / "t.csv", index=False)
    shuffled = table.sample(frac=1.0, random_state=0).assign(split="test")  # a split column folds ignore
    shuffled.to_parquet(tmp_path / "shuffled.parquet")
    folds = _folds(lambda i: IsoformExpression(str(tmp_path / "t.csv"), split={"folds": 3, "fold": i}))
    _check(folds, table)
    again = _folds(lambda i: IsoformExpression(str(tmp_path / "shuffled.parquet"), split={"folds": 3, "fold": i}))
    assert [{s: sorted(f[s]) for s in SPLITS} for f in again] == [{s: sorted(f[s]) for s in SPLITS} for f in folds]


def test_folds_of_a_datasets_directory_and_of_a_genome_backed_table(table, tmp_path):
    datasets = pytest.importorskip("datasets")
    datasets.Dataset.from_pandas(table, preserve_index=False).save_to_disk(str(tmp_path / "ds"))
    table.to_csv(tmp_path / "t.csv", index=False)
    from_file = _folds(lambda i: IsoformExpression(str(tmp_path / "t.csv"), split={"folds": 3, "fold": i}))
    from_datasets = _folds(lambda i: IsoformExpression(str(tmp_path / "ds"), split={"folds": 3, "fold": i}))
    assert from_datasets == from_file
    rng = np.random.default_rng(0)
    (tmp_path / "g.fa").write_text(">chr1\n" + "".join(rng.choice(list("ACGT"), 4000)) + "\n")
    coords = table.drop(columns=["DNA"]).assign(contig="chr1", strand="+", tss=rng.integers(100, 3900, len(table)))
    coords.to_parquet(tmp_path / "coords.parquet")
    genome = {"fasta": str(tmp_path / "g.fa"), "window": 64, "contig_column": "contig", "tss_column": "tss"}
    from_genome = _folds(
        lambda i: IsoformExpression(
            source={"path": str(tmp_path / "coords.parquet"), "genome": genome},
            modalities={"rna": "RNA", "protein": "Protein"}, split={"folds": 3, "fold": i},
        )
    )
    assert from_genome == from_file
    _check(from_genome, table)


def test_classification_folds_and_folds_by_record(table, tmp_path):
    table.to_csv(tmp_path / "t.csv", index=False)
    folds = _folds(lambda i: SequenceClassification(
        str(tmp_path / "t.csv"), label_column="expression_level", split={"folds": 4, "fold": i},
    ), folds=4)  # fmt: skip
    assert sorted(r for f in folds for r in f["test"]) == sorted(table.transcript_id)
    by_record = _folds(lambda i: IsoformExpression(
        str(tmp_path / "t.csv"), split={"group": None, "folds": 3, "fold": i},
    ))
    sizes = [len(f["test"]) for f in by_record]
    assert max(sizes) - min(sizes) <= 1 and sum(sizes) == len(table)


def test_fold_of_deals_keys_out_evenly_and_depends_on_the_seed():
    keys = [f"g{i}" for i in range(10)]
    folds = fold_of(keys, 3, seed=0)
    assert sorted(np.bincount(list(folds.values()))) == [3, 3, 4]
    assert fold_of(list(reversed(keys)), 3, seed=0) == folds
    assert fold_of(keys, 3, seed=1) != folds


@pytest.mark.parametrize(("options", "message"), [
    ({"folds": 1}, "`split.folds` must be a whole number of at least 2, not 1"),
    ({"folds": 3, "fold": 3}, "`split.fold` must be one of 0 … 2 (the fold that tests), not 3"),
    ({"folds": 3, "fold": -1}, "`split.fold` must be one of 0 … 2"),
])  # fmt: skip
def test_bad_fold_options_are_refused(options, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        IsoformExpression("sample", split=options)


def test_more_folds_than_genes_is_refused(tmp_path):
    make_sample_table(3, seed=0).to_csv(tmp_path / "t.csv", index=False)
    dm = IsoformExpression(str(tmp_path / "t.csv"), split={"folds": 5})
    with pytest.raises(DataError, match=r"t.csv has 3 genes \('gene_id'\), fewer than the 5 folds asked for"):
        dm.setup("fit")


def test_cells_fold_by_their_group_so_a_perturbation_never_straddles_folds():
    from mmfuse.data import CellClassification
    from mmfuse.data.samples.cells import make_cell_sample

    obs = make_cell_sample(90, 0)[2].set_index("cell_id")
    tested = []
    for fold in range(3):
        split = {"group": "perturbation", "folds": 3, "fold": fold}
        dm = CellClassification("sample", sample={"size": 90}, split=split)
        dm.setup("fit")
        test = set(dm.split_ids("test"))
        others = set(dm.split_ids("train")) | set(dm.split_ids("val"))
        assert test and not test & others
        groups = set(obs.loc[sorted(test), "perturbation"])
        assert not groups & set(obs.loc[sorted(others), "perturbation"])  # whole perturbations held out
        tested.append(test)
    assert set().union(*tested) == set(obs.index) and sum(map(len, tested)) == len(obs)


@pytest.mark.parametrize("group", ["contig", "tf"])
def test_tf_binding_folds_hold_out_whole_contigs_or_tfs(group):
    from mmfuse.data import TFBinding

    tested = []
    for fold in range(3):
        dm = TFBinding("sample", sample={"size": 48}, split={"group": group, "folds": 3, "fold": fold})
        dm.setup("fit")
        table = dm.records().frame(["id", "split", "label", group])
        held = set(table.loc[table.split == "test", group])
        assert held and not held & set(table.loc[table.split != "test", group])
        for split in ("train", "test"):  # each split keeps bound and unbound records
            assert set(table.loc[table.split == split, "label"]) == {"bound", "unbound"}
        assert set(dm.split_ids("test")) == set(table.loc[table.split == "test", "id"])
        tested.append(held)
    assert sum(map(len, tested)) == len(set().union(*tested))  # each group tests in one fold only


def test_tf_binding_refuses_a_split_group_it_cannot_hold_out():
    from mmfuse.data import TFBinding

    with pytest.raises(ConfigError, match="`split.group` is contig or tf"):
        TFBinding("sample", split={"group": "gene_id"})


@pytest.mark.parametrize("kind", ["split column", "gene", "named groups", "folds"])
def test_categorical_columns_split_as_their_text(kind):
    """setup reads few-valued columns as categoricals: every rule splits them as it splits the same text
    (blank and missing genes included), so the records' splits do not depend on how the column was read."""
    from mmfuse.data.splits import SplitRule, per_value

    table = pd.DataFrame({
        "id": [f"r{i}" for i in range(60)],
        "gene": [f"g{i % 12}" if i % 10 else (" " if i % 20 else None) for i in range(60)],
        "split": [[" Train", "VALID", "test"][i % 3] for i in range(60)],
    })  # fmt: skip
    category = table.astype({"gene": "category", "split": "category"})
    rule = SplitRule("split" if kind == "split column" else "", "gene", "id", 0.2, 0.2, 7, "t.csv")
    if kind == "named groups":
        rule = SplitRule("", "gene", "id", 0.2, 0.2, 7, "t.csv", val_groups=("g1",), test_groups=("g2", "g3"))
    if kind == "folds":
        rule = SplitRule("", "gene", "id", 0.2, 0.2, 7, "t.csv", folds=3, fold=1)
    plain, grouped = rule.assign(table), rule.assign(category)
    np.testing.assert_array_equal(plain[0], grouped[0])
    assert plain[1] == grouped[1] and set(plain[0]) == {"train", "val", "test"}
    assert list(per_value(category["gene"], str)[:3]) == ["nan", "g1", "g2"]  # as astype(str) writes a missing value
