from __future__ import annotations

import logging
import sys

import numpy as np
import pandas as pd
import pytest

from mmfuse.backbones import ESM2, Geneformer
from mmfuse.data import CellClassification, DataError
from mmfuse.data.datasets import single_cell as sc
from mmfuse.data.files import h5ad as cell_matrix
from mmfuse.data.samples.cells import CONTROL, MARKERS, REGULATORS, make_cell_sample, regulator_protein
from mmfuse.errors import ConfigError

try:  # a dependency of mmfuse, but the dense tables and the sample do without it
    import anndata
    from scipy import sparse
except ImportError:  # pragma: no cover
    anndata = sparse = None
needs_anndata = pytest.mark.skipif(anndata is None, reason="reading .h5ad files needs anndata")

# 5 cells × 4 genes: integer counts, a fractional value, a cell without any expressed gene
COUNTS = np.array([[3, 0, 1, 0], [0, 7, 0, 2], [0, 0, 0, 0], [1, 1, 1, 1], [12, 0, 0, 4]], dtype=np.float32)
GENES = ["G0001", "G0002", "G0003", "G0007"]
STRINGS = ["G0001:3;G0003:1", "G0002:7;G0007:2", "", "G0001:1;G0002:1;G0003:1;G0007:1", "G0001:12;G0007:4"]
LABELS = ["T cell", "B cell", "T cell", "B cell", "T cell"]


def _adata(X=COUNTS, **obs_columns) -> anndata.AnnData:
    obs = pd.DataFrame({"cell_type": LABELS, **obs_columns}, index=[f"bc{i}" for i in range(X.shape[0])])
    var = pd.DataFrame({"ensembl_id": [f"ENSG{i:011d}" for i in range(len(GENES))]}, index=GENES)
    return anndata.AnnData(X=X, obs=obs, var=var)


def _write(adata: anndata.AnnData, tmp_path, name: str = "cells.h5ad") -> str:
    path = tmp_path / name
    adata.write_h5ad(path)
    return str(path)


def _cells(dm: CellClassification, modality: str = "cell") -> dict[str, str | None]:
    """``{cell id: sequence}`` over all splits."""
    dm.setup("fit")
    assert dm._splits is not None
    return {rid: seq for records in dm._splits.values()
            for rid, seq in zip(records.ids, records.sequences[modality], strict=True)}  # fmt: skip


# ---------------------------------------------------------------------------------------------
# the cell string


@needs_anndata
def test_cell_strings_keep_counts_whole_and_write_other_values_compactly():
    matrix = np.array([[3, 0, 1.5, 0.1], [0, 0, 0, 0], [2e6, 1 / 3, 0, 7.0000001]])
    strings = sc.cell_strings(matrix, ["A", "B", "C", "D"], ["c1", "c2", "c3"])
    assert strings == ["A:3;C:1.5;D:0.1", "", "A:2000000;B:0.333333;D:7"]
    assert sc.cell_strings(sparse.csr_matrix(matrix), ["A", "B", "C", "D"], ["c1", "c2", "c3"]) == strings
    assert sc.cell_strings(matrix, ["A", None, "", "D"], ["c1", "c2", "c3"])[2] == "A:2000000;D:7", "no id: left out"
    matrix[2, 1] = -0.5
    with pytest.raises(DataError, match=r"cell 'c3' has the expression value -0.5 for gene 'B'.*raw counts"):
        sc.cell_strings(sparse.csr_matrix(matrix), ["A", "B", "C", "D"], ["c1", "c2", "c3"])


@needs_anndata
@pytest.mark.parametrize(("value", "fix"), [(-1.0, "raw counts"), (np.nan, "fill missing values with 0"),
                                            (np.inf, "raw counts")])  # fmt: skip
def test_bad_values_name_the_cell_the_gene_and_the_fix(value, fix):
    matrix = np.ones((3, 3))
    matrix[2, 1] = value
    with pytest.raises(DataError, match=rf"cell 'c3' has the expression value .* for gene 'B'.*{fix}"):
        sc.cell_strings(matrix, ["A", "B", "C"], ["c1", "c2", "c3"])


def test_gene_ids_with_separators_are_refused():
    with pytest.raises(DataError, match=r"'chr1:100' .* contain ':' or ';'"):
        sc.cell_strings(np.ones((1, 2)), ["A", "chr1:100"], ["c1"])


# ---------------------------------------------------------------------------------------------
# .h5ad


@needs_anndata
@pytest.mark.parametrize("kind", ["csr", "dense", "csc"])
def test_h5ad_cells_labels_and_index_ids(tmp_path, kind):
    X = {"csr": sparse.csr_matrix, "dense": np.asarray, "csc": sparse.csc_matrix}[kind](COUNTS)
    dm = CellClassification(_write(_adata(X), tmp_path), missing_modalities="mask")
    assert dm.target_names == ["B cell", "T cell"]
    cells = _cells(dm)
    expected = {f"bc{i}": s for i, s in enumerate(STRINGS) if s}  # bc2 expresses nothing: dropped
    assert cells == expected
    assert dm.read_counts == {"cells": 5, "empty_cells": 1}
    labels = {rid: int(y) for s in ("train", "val", "test")
              for rid, y in zip(dm.split_ids(s), dm.split_labels(s), strict=True)}  # fmt: skip
    assert labels == {"bc0": 1, "bc1": 0, "bc3": 0, "bc4": 1}


@needs_anndata
def test_reading_in_blocks_gives_the_strings_of_the_whole_matrix(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    X = sparse.random(23, 40, density=0.3, format="csr", random_state=0, dtype=np.float64)
    X.data = np.round(X.data * 20) / 2  # whole and half counts
    adata = anndata.AnnData(X=X, obs=pd.DataFrame(index=[f"c{i}" for i in range(23)]),
                            var=pd.DataFrame(index=[f"G{i:04d}" for i in range(40)]))  # fmt: skip
    adata.layers["dense"] = X.toarray() * rng.integers(1, 3)
    path = tmp_path / "blocks.h5ad"
    adata.write_h5ad(path)
    whole = sc.cell_strings(X, list(adata.var_names), list(adata.obs_names))
    whole_dense = sc.cell_strings(adata.layers["dense"], list(adata.var_names), list(adata.obs_names))
    monkeypatch.setattr(cell_matrix, "_CHUNK_VALUES", 3 * 40)  # 3 cells per block: 8 blocks, the last one short
    assert cell_matrix._chunks(23, 40)[-1] == (21, 23)
    assert sc.read_h5ad_cells(path)[1] == whole
    assert sc.read_h5ad_cells(path, layer="dense")[1] == whole_dense
    assert any(";" in s for s in whole) and any(".5" in s for s in whole)


@needs_anndata
def test_a_layer_raw_x_and_a_var_gene_id_column(tmp_path):
    adata = _adata(np.log1p(COUNTS))  # X: log-normalised, as most published files
    adata.layers["counts"] = sparse.csr_matrix(COUNTS)
    adata.raw = anndata.AnnData(X=sparse.csr_matrix(COUNTS * 2), obs=adata.obs, var=adata.var)
    path = _write(adata, tmp_path)
    from_x = _cells(CellClassification(path))
    assert from_x["bc0"] == "G0001:1.38629;G0003:0.693147"
    assert _cells(CellClassification(source={"path": path, "layer": "counts"}))["bc0"] == STRINGS[0]
    assert _cells(CellClassification(source={"path": path, "layer": "raw.X"}))["bc4"] == "G0001:24;G0007:8"
    by_id = _cells(CellClassification(source={"path": path, "layer": "counts", "gene_id_column": "ensembl_id"}))
    assert by_id["bc1"] == "ENSG00000000001:7;ENSG00000000003:2"
    with pytest.raises(DataError, match=r"no layer 'spliced'; its layers: 'counts', 'raw.X'"):
        CellClassification(source={"path": path, "layer": "spliced"}).setup("fit")
    with pytest.raises(DataError, match=r"no var column 'gene_ids'.*'ensembl_id'"):
        CellClassification(source={"path": path, "gene_id_column": "gene_ids"}).setup("fit")


@needs_anndata
def test_obs_columns_give_ids_splits_groups_and_other_modalities(tmp_path):
    adata = _adata(
        barcode=[f"AAAC-{i}" for i in range(5)],
        split=["train", "train", "val", "test", "val"],
        perturbed_protein=["MKTAYIAKQR", "", "MVLSPADK", "MKTAYIAKQR", "MQIFVK"],
    )
    path = _write(adata, tmp_path)
    dm = CellClassification(
        source={"path": path, "id_column": "barcode"}, modalities={"cell": "X", "protein": "perturbed_protein"},
    )
    proteins = _cells(dm, "protein")
    assert proteins == {"AAAC-0": "MKTAYIAKQR", "AAAC-1": None, "AAAC-3": "MKTAYIAKQR", "AAAC-4": "MQIFVK",
                        "AAAC-2": "MVLSPADK"}  # fmt: skip
    assert _cells(dm)["AAAC-2"] is None, "no expressed gene, but a protein: kept, the cell modality absent"
    assert dm.absent_counts == {"cell": 1, "protein": 1}
    assert dm.split_ids("val") == ["AAAC-2", "AAAC-4"] and dm.split_ids("test") == ["AAAC-3"]
    donors = _write(_adata(donor=["d1", "d2", "d1", "d2", "d1"]), tmp_path, "donors.h5ad")
    grouped = CellClassification(
        donors, split={"group": "donor", "val_fraction": 0.4, "test_fraction": 0.0, "seed": 3},
    )
    grouped.setup("fit")
    assert sorted(map(len, (grouped.split_ids("train"), grouped.split_ids("val")))) == [2, 2]  # d1 (less bc2), d2
    with pytest.raises(DataError, match=r"nor the group column 'patient'.*split: {group: null}"):
        CellClassification(donors, split={"group": "patient"}).setup("fit")


@needs_anndata
def test_tiny_geneformer_tokens_of_a_known_cell(tmp_path):
    # counts G0003 5, G0001 2, G0007 9; the tiny medians are all 1: ranks G0007, G0003, G0001
    X = sparse.csr_matrix(np.array([[2, 0, 5, 9], [1, 0, 0, 0]], dtype=np.float32))
    adata = anndata.AnnData(X=X, obs=pd.DataFrame({"cell_type": ["a", "b"]}, index=["x", "y"]),
                            var=pd.DataFrame(index=GENES))  # fmt: skip
    dm = CellClassification(
        _write(adata, tmp_path), split={"val_fraction": 0.0, "test_fraction": 0.0}, loader={"batch_size": 2},
    )
    backbone = Geneformer("tiny")
    dm.attach_tokenizers({"cell": backbone.tokenizer})
    batch = next(iter(dm.train_dataloader()))
    tokens = dict(zip(batch["ids"], batch["inputs"]["cell"]["input_ids"].tolist(), strict=True))
    cls, eos, pad, first = 2, 3, 0, 4  # G0000 is token 4
    assert tokens["x"] == [cls, first + 7, first + 3, first + 1, eos]
    assert tokens["y"] == [cls, first + 1, eos, pad, pad]
    assert dict(zip(batch["ids"], batch["target"].tolist(), strict=True)) == {"x": 0, "y": 1}


@needs_anndata
def test_cells_of_genes_the_tokenizer_does_not_know_are_named_before_training(tmp_path):
    adata = _adata()
    adata.var_names = ["ENSG1", "ENSG2", "G0003", "ENSG4"]
    dm = CellClassification(_write(adata, tmp_path))
    with pytest.raises(DataError, match=r"record 'bc1': no expressed gene of the Geneformer token dictionary"):
        dm.attach_tokenizers({"cell": Geneformer("tiny").tokenizer})


@needs_anndata
def test_empty_cells_follow_missing_modalities(tmp_path, caplog):
    path = _write(_adata(), tmp_path)
    with caplog.at_level(logging.INFO):
        dm = CellClassification(path)
        dm.setup("fit")
    assert "1 without a non-zero gene" in caplog.text and "dropped 1" in caplog.text
    assert sum(len(dm.split_ids(s)) for s in ("train", "val", "test")) == 4
    with pytest.raises(DataError, match=r"empty sequences \(1 lack cell.*'bc2'"):
        CellClassification(path, missing_modalities="error").setup("fit")


@needs_anndata
def test_missing_labels_follow_the_parent_policy(tmp_path):
    adata = _adata()
    adata.obs["cell_type"] = ["T cell", None, "T cell", "B cell", "T cell"]
    path = _write(adata, tmp_path)
    with pytest.raises(DataError, match=r"1 record\(s\) .* no label in column 'cell_type', e.g. 'bc1'"):
        CellClassification(path).setup("fit")
    assert set(_cells(CellClassification(path, missing_labels="drop"))) == {"bc0", "bc3", "bc4"}


# ---------------------------------------------------------------------------------------------
# dense tables


def _dense_table() -> pd.DataFrame:
    table = pd.DataFrame(COUNTS.astype(int), columns=GENES)
    table.insert(0, "cell_id", [f"bc{i}" for i in range(5)])
    table["cell_type"] = LABELS
    table["protein"] = ["MKT", "MVL", "MQI", "", "MKA"]
    return table


@pytest.mark.parametrize("suffix", [".csv", ".tsv.gz", ".parquet"])
def test_dense_tables_read_genes_from_every_other_column(tmp_path, suffix):
    table = _dense_table()
    path = tmp_path / f"cells{suffix}"
    if suffix == ".parquet":
        table.to_parquet(path)
    else:
        table.to_csv(path, sep="\t" if ".tsv" in suffix else ",", index=False)
    dm = CellClassification(str(path), modalities={"cell": "X", "protein": "protein"})
    assert _cells(dm) == {f"bc{i}": s or None for i, s in enumerate(STRINGS)}
    assert _cells(dm, "protein")["bc4"] == "MKA" and dm.target_names == ["B cell", "T cell"]


def test_dense_table_errors_name_the_column_or_the_cell(tmp_path):
    table = _dense_table()
    path = tmp_path / "cells.csv"
    table.to_csv(path, index=False)
    with pytest.raises(DataError, match=r"column\(s\) 'protein' .* not numbers.*read as a gene"):
        CellClassification(str(path)).setup("fit")  # the protein column is not named in modalities
    table.loc[3, "G0002"] = np.nan
    table.drop(columns="protein").to_csv(path, index=False)
    with pytest.raises(DataError, match=r"cell 'bc3' has the expression value nan for gene 'G0002'"):
        CellClassification(str(path)).setup("fit")
    with pytest.raises(ConfigError, match=r"layer applies to .h5ad files.*set layer to null"):
        CellClassification(source={"path": str(path), "layer": "counts"})
    with pytest.raises(DataError, match=r"no cell id column 'barcode'"):
        CellClassification(source={"path": str(path), "id_column": "barcode"}).setup("fit")


def test_h5ad_without_anndata_says_how_to_install_it(tmp_path, monkeypatch):
    path = tmp_path / "cells.h5ad"
    path.write_bytes(b"")
    for module in ("anndata", "anndata.io", "anndata.experimental"):
        monkeypatch.setitem(sys.modules, module, None)  # import fails
    with pytest.raises(DataError, match=r"reading .h5ad files needs anndata .*pip install 'anndata>=0.10'"):
        CellClassification(str(path)).setup("fit")


def test_unknown_file_types_and_options(tmp_path):
    odd = tmp_path / "cells.xyz"
    odd.write_text("x")
    with pytest.raises(DataError, match=r"cannot tell the format"):
        CellClassification(str(odd)).setup("fit")
    loom = tmp_path / "cells.loom"
    loom.write_text("x")
    with pytest.raises(DataError, match=r"convert it to .h5ad first, e.g. anndata.io.read_loom"):
        CellClassification(str(loom)).setup("fit")
    with pytest.raises(ConfigError, match=r"cannot be cut by letters"):
        CellClassification("sample", lengths={"max": {"cell": 100}})


# ---------------------------------------------------------------------------------------------
# the sample


def test_sample_regulators_then_markers_rank_first_and_knockdowns_shift_fates():
    counts, genes, obs = make_cell_sample(300, seed=1)
    tokenizer = Geneformer("tiny").tokenizer
    token_gene = {token: gene for gene, (token, _) in tokenizer.genes.items()}
    strings = sc.cell_strings(counts, genes, obs.cell_id.tolist())
    ranked = [[token_gene[t] for t in tokenizer.encode(s)[1:6]] for s in strings]
    untargeted = obs.perturbation == CONTROL
    regulators = {t: {g for g, lineage in REGULATORS.items() if lineage == t} for t in MARKERS}
    first = [set(r[:2]) == regulators[label] for r, label in zip(ranked, obs.cell_type, strict=True)]
    assert np.mean(np.array(first)[untargeted.to_numpy()]) > 0.95  # a control cell's two regulators lead
    then = [r[2] in MARKERS[label] for r, label, ok in zip(ranked, obs.cell_type, first, strict=True) if ok]
    assert np.mean(then) > 0.9  # then a marker (each detected in half of its lineage's cells)
    targeted = obs.perturbation != CONTROL
    driven = np.array([REGULATORS.get(p) == t for p, t in zip(obs.perturbation, obs.cell_type, strict=True)])
    assert driven[targeted].mean() < 0.2  # the knocked-down regulator's lineage: 10 % instead of a third
    # a regulator knocked down in its own lineage's cells keeps about 5 % of the controls' expression there
    knocked, controls = [], []
    for gene, lineage in REGULATORS.items():
        column, of_lineage = counts[:, genes.index(gene)], (obs.cell_type == lineage).to_numpy()
        knocked += column[of_lineage & (obs.perturbation == gene).to_numpy()].tolist()
        controls += column[of_lineage & untargeted.to_numpy()].tolist()
    assert len(knocked) >= 5 and np.mean(knocked) < 0.15 * np.mean(controls)
    assert (obs.perturbed_protein == "").sum() == (~targeted).sum()
    assert obs.perturbed_protein[targeted].map(len).between(81, 141).all()
    assert regulator_protein("G0090")[21:50].count("CRECGKSFT") + regulator_protein("G0091").count("CRECGKSFT") == 2


def test_sample_data_module_feeds_geneformer_and_esm2():
    dm = CellClassification(
        source={"path": "sample", "layer": "ignored"}, modalities={"cell": "X", "protein": "perturbed_protein"},
        label_column="state", loader={"batch_size": 8}, sample={"size": 40, "seed": 2},
    )  # fmt: skip
    assert dm.target_names == ["erythroid", "lymphoid", "myeloid"]
    dm.attach_tokenizers({"cell": Geneformer("tiny").tokenizer, "protein": ESM2("tiny").tokenizer})
    batch = next(iter(dm.train_dataloader()))
    assert batch["inputs"]["cell"]["input_ids"][:, 0].eq(2).all()  # <cls> first
    controls = int((make_cell_sample(40, 2)[2].perturbation == CONTROL).sum())
    assert dm.absent_counts == {"cell": 0, "protein": controls} and controls > 0
    assert batch["present"]["cell"].all()
    again = CellClassification("sample", sample={"size": 40, "seed": 2})
    assert _cells(again) == _cells(CellClassification("sample", sample={"size": 40, "seed": 2}))
