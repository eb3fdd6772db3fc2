"""The cell store: an .h5ad (or a dense table) converted once into sparse rows, cell strings made when read."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pandas as pd
import pytest
from torch.utils.data import DataLoader

from mmfuse.backbones import Geneformer
from mmfuse.data import CellClassification, DataError
from mmfuse.data.files import h5ad as cell_matrix
from mmfuse.data.files.h5ad import cell_strings, value_lengths
from mmfuse.data.store.cells import GENES, LENGTH, VALUES, CellSequences, open_cells
from mmfuse.data.store.records import RecordStore

anndata = pytest.importorskip("anndata")
sparse = pytest.importorskip("scipy.sparse")

GENE_IDS = [f"G{i:04d}" for i in range(30)]


def _matrix(seed: int = 0, cells: int = 41) -> np.ndarray:
    """Counts, halves, values needing %.6g and float64 (1/3), large whole numbers, an empty cell, a full one."""
    rng = np.random.default_rng(seed)
    X = rng.poisson(0.6, (cells, len(GENE_IDS))).astype(np.float64)
    X[1, :5] = [0.5, 1 / 3, 2e6, 123456789.0, 7.0000001]
    X[2] = 0
    X[3] = rng.integers(1, 1000, len(GENE_IDS))
    X[4, 7] = 1e-7
    return X


def _adata(X, **layers) -> anndata.AnnData:
    n = X.shape[0]
    obs = pd.DataFrame({"cell_type": [("a", "b", "c")[i % 3] for i in range(n)],
                        "donor": [f"d{i % 4}" for i in range(n)]}, index=[f"c{i}" for i in range(n)])  # fmt: skip
    var = pd.DataFrame({"ensembl": [f"ENSG{i:011d}" for i in range(len(GENE_IDS))]}, index=GENE_IDS)
    adata = anndata.AnnData(X=X, obs=obs, var=var)
    for name, value in layers.items():
        adata.layers[name] = value
    return adata


def _strings(dm: CellClassification, modality: str = "cell") -> dict[str, str | None]:
    dm.setup("fit")
    assert dm._splits is not None
    return {rid: seq for records in dm._splits.values()
            for rid, seq in zip(records.ids, records.sequences[modality], strict=True)}  # fmt: skip


def _expected(X, genes=GENE_IDS) -> dict[str, str]:
    strings = cell_strings(X, genes, [f"c{i}" for i in range(X.shape[0])])
    return {f"c{i}": s for i, s in enumerate(strings) if s}


def _source(path, tmp_path, **options) -> dict:
    return {"path": str(path), "records_dir": str(tmp_path / "records"), **options}


@pytest.mark.parametrize("kind", ["csr", "dense", "float32"])
def test_strings_read_from_the_store_are_those_of_cell_strings(tmp_path, kind):
    X = _matrix()
    matrix = {"csr": sparse.csr_matrix(X), "dense": X, "float32": sparse.csr_matrix(X.astype(np.float32))}[kind]
    path = tmp_path / "cells.h5ad"
    _adata(matrix).write_h5ad(path)
    dm = CellClassification(_source(path, tmp_path), split={"group": "donor"})
    expected = _expected(matrix)
    assert _strings(dm) == expected
    assert dm.read_counts == {"cells": 41, "empty_cells": 1}
    cells = dm._cells
    assert cells is not None
    assert cells.store.meta["cells"]["values"] == ("float" if kind == "float32" else "double"), "float32 if exact"
    rows = {rid: row for row, rid in enumerate(dm.records().frame(["cell_id"])["cell_id"])}
    assert all(cells.lengths[rows[rid]] == len(s) for rid, s in expected.items()), "lengths are the strings'"


def test_value_lengths_match_every_value_format():
    values = np.array([1, 9, 10, 99, 100, 999999, 1e6, 123456789, 1e14, 1e15 - 1, 1e15, 3e17, 0.5, 1 / 3, 1e-7, 2.5e-5,
                       12345.678, 7.0000001])  # fmt: skip
    assert value_lengths(values).tolist() == [len(v) for v in cell_matrix.format_values(values)]


def test_a_layer_raw_x_and_a_gene_id_column(tmp_path):
    X = _matrix()
    adata = _adata(np.log1p(X), counts=sparse.csr_matrix(X))
    adata.raw = anndata.AnnData(X=sparse.csr_matrix(X * 2), obs=adata.obs, var=adata.var)
    path = tmp_path / "cells.h5ad"
    adata.write_h5ad(path)
    ensembl = list(adata.var["ensembl"])
    for options, matrix, genes in [({}, np.log1p(X), GENE_IDS), ({"layer": "counts"}, X, GENE_IDS),
                                   ({"layer": "raw.X"}, X * 2, GENE_IDS),
                                   ({"layer": "counts", "gene_id_column": "ensembl"}, X, ensembl)]:  # fmt: skip
        assert _strings(CellClassification(_source(path, tmp_path, **options))) == _expected(matrix, genes), options


def test_dense_tables_and_the_sample_go_through_the_same_store(tmp_path):
    X = _matrix().round()
    table = pd.DataFrame(X.astype(int), columns=GENE_IDS)
    table.insert(0, "cell_id", [f"c{i}" for i in range(len(table))])
    table["cell_type"] = ["a", "b"] * 20 + ["a"]
    path = tmp_path / "cells.csv"
    table.to_csv(path, index=False)
    dm = CellClassification(_source(path, tmp_path))
    assert _strings(dm) == _expected(X)
    assert isinstance(dm._cells, CellSequences) and dm.records().path is not None
    sample = CellClassification("sample", sample={"size": 30})
    assert isinstance(sample._derived(sample.records(), pd.DataFrame()).get("cell"), CellSequences)


def test_the_store_is_reused_and_rebuilt_when_the_file_changes(tmp_path):
    X = _matrix()
    path = tmp_path / "cells.h5ad"
    _adata(sparse.csr_matrix(X)).write_h5ad(path)
    first = CellClassification(_source(path, tmp_path)).records()
    assert first.path is not None
    before = first.path.stat()
    again = CellClassification(_source(path, tmp_path))
    assert again.records().path == first.path
    after = first.path.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns), "opened, not written again"
    assert again.read_counts == {"cells": 41, "empty_cells": 1}, "counted from the stored lengths"
    changed = X.copy()
    changed[0, 0] += 1  # other values, the same layout: the same size
    size, mtime = path.stat().st_size, path.stat().st_mtime_ns
    _adata(sparse.csr_matrix(changed)).write_h5ad(path)
    os.utime(path, ns=(mtime, mtime))
    assert path.stat().st_size == size
    rebuilt = CellClassification(_source(path, tmp_path))
    assert rebuilt.records().path != first.path
    assert _strings(rebuilt) == _expected(changed)
    assert set(tmp_path.joinpath("records").glob("cells-*.arrow")) == {first.path, rebuilt.records().path}


def test_a_store_opens_as_a_records_store_with_its_gene_list(tmp_path):
    path = tmp_path / "cells.h5ad"
    _adata(sparse.csr_matrix(_matrix())).write_h5ad(path)
    store = open_cells(str(path), ["cell_id", "cell_type", "donor"], "cell_id", records_dir=tmp_path / "records")
    assert store.path is not None
    mapped = RecordStore.open(store.path)
    assert mapped.meta["cells"]["genes"] == GENE_IDS and mapped.meta["source"] == str(path)
    assert {"cell_id", "cell_type", "donor", GENES, VALUES, LENGTH} <= set(mapped.column_names)
    assert mapped.frame(["cell_id"])["cell_id"].tolist()[:2] == ["c0", "c1"]
    assert "X" in mapped.names and "donor" in mapped.names


def test_workers_read_the_same_strings(tmp_path):
    X = _matrix(cells=60)
    path = tmp_path / "cells.h5ad"
    _adata(sparse.csr_matrix(X)).write_h5ad(path)
    dm = CellClassification(_source(path, tmp_path), loader={"batch_size": 7, "num_workers": 2})
    dm.setup("fit")
    train = dm._splits["train"]
    loader = DataLoader(train, batch_size=7, num_workers=2, collate_fn=list)
    read = {item["id"]: item["sequences"]["cell"] for batch in loader for item in batch}
    expected = _expected(X)
    assert read == {rid: expected.get(rid) for rid in train.ids} and len(read) == len(train)
    cells = dm._cells
    assert cells is not None and cells(0) == expected["c0"]
    copied = pickle.loads(pickle.dumps(cells))  # what a spawned worker gets: the store's path, mapped again
    assert copied._columns is None and copied.store.path == cells.store.path and copied(1) == expected["c1"]
    assert len(pickle.dumps(cells)) < 20_000, "no rows pickled"
    dm.attach_tokenizers({"cell": Geneformer("tiny").tokenizer})
    batches = list(dm.train_dataloader())
    assert sum(len(b["ids"]) for b in batches) == len(train)


@pytest.mark.parametrize(("value", "fix"), [(-1.0, "raw counts"), (np.nan, "fill missing values with 0"),
                                            (np.inf, "raw counts")])  # fmt: skip
def test_bad_values_give_the_messages_of_the_reader(tmp_path, value, fix):
    X = _matrix()
    X[5, 3] = value
    path = tmp_path / "cells.h5ad"
    _adata(X).write_h5ad(path)
    pattern = rf"cell 'c5' has the expression value .* for gene 'G0003' in {path} \(X\).*{fix}"
    with pytest.raises(DataError, match=pattern):
        CellClassification(_source(path, tmp_path)).setup("fit")
    assert not list(tmp_path.joinpath("records").glob("cells-*.arrow")), "nothing written"
    with pytest.raises(DataError, match=pattern):
        cell_strings(X, GENE_IDS, [f"c{i}" for i in range(X.shape[0])], f"{path} (X)")


def test_file_errors_keep_their_messages(tmp_path):
    with pytest.raises(DataError, match=r"does not exist; check the data module's `path`"):
        CellClassification(_source(tmp_path / "none.h5ad", tmp_path)).setup("fit")
    broken = tmp_path / "broken.h5ad"
    broken.write_bytes(b"not hdf5")
    with pytest.raises(DataError, match=r"cannot open .* as an HDF5 .h5ad file"):
        CellClassification(_source(broken, tmp_path)).setup("fit")
    path = tmp_path / "cells.h5ad"
    _adata(_matrix()).write_h5ad(path)
    with pytest.raises(DataError, match=r"no var column 'gene_ids'.*'ensembl'"):
        CellClassification(_source(path, tmp_path, gene_id_column="gene_ids")).setup("fit")
    with pytest.raises(DataError, match=r"lacks column\(s\) 'state'"):
        CellClassification(_source(path, tmp_path), label_column="state").setup("fit")


def test_cells_without_a_known_gene_are_found_over_the_gene_list(tmp_path):
    X = np.zeros((200, 4))
    X[:, 0] = 1  # G0001: known to the tiny Geneformer
    X[[17, 150, 151], 0] = 0
    X[[17, 150, 151], 3] = 5  # only ENSG4, which it does not know
    adata = anndata.AnnData(X=sparse.csr_matrix(X), obs=pd.DataFrame({"cell_type": ["a", "b"] * 100},
                            index=[f"c{i}" for i in range(200)]), var=pd.DataFrame(index=["G0001", "G0002", "G0003",
                            "ENSG4"]))  # fmt: skip
    path = tmp_path / "cells.h5ad"
    adata.write_h5ad(path)
    dm = CellClassification(_source(path, tmp_path), split={"val_fraction": 0.0, "test_fraction": 0.0})
    with pytest.raises(DataError, match=r"(?s)^3 cell sequence\(s\) .*record 'c17': no expressed gene.*record 'c150'"):
        dm.attach_tokenizers({"cell": Geneformer("tiny").tokenizer})
    cells = dm._cells
    assert cells is not None
    positions, weights = cells.checked_rows(dm._splits["train"].rows)
    assert len(positions) <= 64 + 1 + 3 and weights.sum() == len(positions)
