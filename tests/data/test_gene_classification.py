"""GeneClassification: token labels that follow the tokenizer, genes split (and folded) without overlap, the
label files, every bad input's one-line error, and the sample learnt through the CLI (`mmfuse fit/test/predict`)."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from mmfuse.backbones import Geneformer
from mmfuse.cli import main
from mmfuse.data import DataError, GeneClassification
from mmfuse.data.files.gene_labels import read_gene_labels
from mmfuse.data.samples.cells import MARKERS, REGULATORS, make_cell_sample
from mmfuse.data.samples.gene_labels import gene_classes
from mmfuse.data.token_labels import IGNORE
from mmfuse.errors import ConfigError
from tests.helpers.in_process import bare_argv

LABELS = {"tf": ["G0090", "G0091", "G0092", "G0093", "G0000", "G0001"],
          "other": ["G0040", "G0041", "G0042", "G0043", "G0044", "G0045"]}  # fmt: skip


def _module(max_genes: int | None = None, **options):
    dm = GeneClassification("sample", sample={"size": 60}, loader={"batch_size": 8}, **options)
    dm.setup("fit")
    tokenizer = Geneformer("tiny", max_genes=max_genes).tokenizer
    dm.attach_tokenizers({"cell": tokenizer})
    return dm, tokenizer


def test_sample_labels_are_the_planted_lineage_genes():
    classes = gene_classes()
    lineage = {g for m in MARKERS.values() for g in m} | set(REGULATORS)
    assert set(classes["lineage_gene"]) == lineage and not lineage & set(classes["background"])
    assert GeneClassification("sample").target_names == ["background", "lineage_gene"]


@pytest.mark.parametrize("split", ["train", "val", "test"])
def test_token_labels_follow_the_tokenizer_by_hand(split):
    dm, tokenizer = _module(max_genes=12, split={"val_fraction": 0.2, "test_fraction": 0.3})
    gene_of = {token: gene for gene, (token, _) in tokenizer.genes.items()}
    genes = set(dm.split_genes(split))
    loader = {"train": dm.train_dataloader, "val": dm.val_dataloader, "test": dm.test_dataloader}[split]()
    sequences = {item["id"]: item["sequences"]["cell"] for item in loader.dataset}  # the cells as read
    labelled = 0
    for batch in loader:
        ids = batch["inputs"]["cell"]["input_ids"]
        assert batch["target"].shape == ids.shape and batch["target"].dtype.is_floating_point is False
        for row, cell in enumerate(batch["ids"]):
            tokens = tokenizer.encode(sequences[cell])  # <cls>, the top 12 genes, <eos>
            assert len(tokens) <= 14
            expected = [dm.gene_labels.index(gene_of[t]) if gene_of.get(t) in genes else IGNORE for t in tokens]
            got = batch["target"][row].tolist()
            assert got[: len(tokens)] == expected and set(got[len(tokens) :]) <= {IGNORE}  # padding
            assert got[0] == IGNORE and got[len(tokens) - 1] == IGNORE  # <cls>, <eos>
            labelled += sum(label != IGNORE for label in expected)
    assert labelled > 0


def test_each_split_reads_the_cells_expressing_its_genes():
    dm, _ = _module(split={"val_fraction": 0.2, "test_groups": ["G0090"]})  # an erythroid regulator
    counts, genes, obs = make_cell_sample(60)
    expressing = obs["cell_id"][counts[:, genes.index("G0090")] > 0]
    assert dm.split_ids("test") == list(expressing) and 0 < len(expressing) < 60
    every = dm.split_ids("train") + dm.split_ids("val") + dm.split_ids("test")
    assert len(set(every)) <= 60 < len(every)  # cells are shared by the splits, not partitioned
    assert len(dm.split_sequences("all", "cell")) == 60  # each cell once


def test_split_genes_are_disjoint_and_cover_the_labels():
    dm = GeneClassification("sample", split={"val_fraction": 0.2, "test_fraction": 0.2})
    parts = [set(dm.split_genes(s)) for s in ("train", "val", "test")]
    assert all(parts) and not (parts[0] & parts[1] or parts[0] & parts[2] or parts[1] & parts[2])
    assert set().union(*parts) == set(dm.gene_labels.genes)


def test_folds_never_share_a_gene_and_each_tests_every_class():
    tested = []
    for fold in range(5):
        dm = GeneClassification("sample", split={"folds": 5, "fold": fold, "val_fraction": 0.2})
        test, train, val = (set(dm.split_genes(s)) for s in ("test", "train", "val"))
        assert not test & (train | val) and not train & val
        assert all(n > 0 for n in dm.class_counts("test").values())  # stratified by class
        tested.append(test)
    assert sum(len(t) for t in tested) == len(set().union(*tested)) == 100  # each gene tests in one fold
    assert max(len(t) for t in tested) - min(len(t) for t in tested) <= 2


def test_named_test_genes():
    dm = GeneClassification("sample", split={"test_groups": ["G0090", "G0050"], "val_fraction": 0.2})
    assert set(dm.split_genes("test")) == {"G0050", "G0090"}


def test_predict_names_every_gene_or_the_labelled_ones():
    dm, tokenizer = _module(split={"val_fraction": 0.2, "test_fraction": 0.3, "predict": "test"},
                            predict_genes="all")  # fmt: skip
    batch = next(iter(dm.predict_dataloader()))
    tokens = batch["tokens"]
    ids = batch["inputs"]["cell"]["input_ids"]
    gene_of = {token: gene for gene, (token, _) in tokenizer.genes.items()}
    assert tokens["values"] == [gene_of[int(ids[r, c])] for r, c in tokens["position"].tolist()]
    assert len(tokens["values"]) == int(sum(t in gene_of for t in ids.flatten().tolist()))
    dm.predict_genes = "labelled"
    labelled = next(iter(dm.predict_dataloader()))["tokens"]
    assert set(labelled["values"]) <= set(dm.split_genes("test"))
    assert len(labelled["values"]) == int((labelled_target := batch["target"] != IGNORE).sum()) > 0
    assert labelled_target.shape == ids.shape


@pytest.mark.parametrize("form", ["csv", "tsv", "json", "yaml", "inline"])
def test_label_forms_read_alike(tmp_path, form):
    rows = [(g, c) for c, genes in LABELS.items() for g in genes]
    if form in ("csv", "tsv"):
        path = tmp_path / f"labels.{form}"
        table = pd.DataFrame(rows, columns=["ensembl_id", "class"])
        table.to_csv(path, index=False, sep="," if form == "csv" else "\t")
        labels = read_gene_labels(str(path), "ensembl_id", "class")
    elif form == "inline":
        labels = read_gene_labels(LABELS)
    else:
        path = tmp_path / f"labels.{form}"
        path.write_text(json.dumps(LABELS) if form == "json" else yaml.safe_dump(LABELS))
        labels = read_gene_labels(str(path))
    assert labels.classes == ["other", "tf"] and labels.genes == dict(rows)
    if form in ("csv", "tsv"):  # the data module's option group names the columns
        source = {"path": str(path), "gene_column": "ensembl_id", "label_column": "class"}
        assert GeneClassification("sample", gene_labels=source).gene_labels.genes == dict(rows)
    elif form != "inline":  # a mapping file: just its path
        assert GeneClassification("sample", gene_labels=str(path)).gene_labels.genes == dict(rows)


# ---------------------------------------------------------------------------------------------
# bad input: one line each, naming the file, the gene and the fix


def test_a_gene_the_vocabulary_lacks(tmp_path):
    path = tmp_path / "labels.json"
    path.write_text(json.dumps({**LABELS, "tf": [*LABELS["tf"], "G0100", "ENSG0001"]}))
    with pytest.raises(DataError, match=r"labels.json: 2 labelled gene\(s\) are not in the vocabulary .*'G0100'.*"
                                        r"closest known ids: G00.*unknown_genes: drop"):  # fmt: skip
        _module(gene_labels=str(path), split={"val_fraction": 0.2, "test_fraction": 0.3})
    dm, _ = _module(gene_labels=str(path), unknown_genes="drop", split={"val_fraction": 0.2, "test_fraction": 0.3})
    assert "G0100" in dm.gene_labels.genes  # kept in the labels, labelling no token


def test_a_class_without_a_gene(tmp_path):
    with pytest.raises(DataError, match="gene_labels: class 'tf' has no gene; list some genes"):
        GeneClassification("sample", gene_labels={"tf": [], "other": ["G0001"]})
    with pytest.raises(DataError, match="class 'extra' has no gene; label some genes 'extra'"):
        GeneClassification("sample", gene_labels=LABELS, classes=["other", "tf", "extra"])


def test_a_gene_in_two_classes(tmp_path):
    path = tmp_path / "labels.csv"
    pd.DataFrame({"gene": ["G0001", "G0002", "G0001"], "label": ["tf", "other", "other"]}).to_csv(path, index=False)
    with pytest.raises(DataError, match=r"labels.csv: gene 'G0001' is labelled both 'tf' and 'other'; give each gene"):
        GeneClassification("sample", gene_labels=str(path))


def test_a_split_without_a_labelled_gene():
    labels = {"tf": ["G0090", "G0091"], "other": ["G0040", "G0041"]}
    dm = GeneClassification("sample", gene_labels=labels, split={"val_fraction": 0.0, "test_fraction": 0.01,
                                                                 "folds": None})  # fmt: skip
    dm.setup("fit")  # no validation asked for: train is enough
    dm = GeneClassification("sample", gene_labels=labels, split={"val_fraction": 0.0, "test_fraction": 0.01})
    with pytest.raises(DataError, match=r"gene_labels: the test split \(for test\) has no labelled gene .*raise "
                                        r"split.test_fraction"):  # fmt: skip
        dm.setup("test")


def test_a_split_whose_genes_no_cell_expresses():
    labels = {"tf": ["G0090", "G0091", "NOT_MEASURED"], "other": ["G0040", "G0041"]}
    dm = GeneClassification("sample", gene_labels=labels, split={"test_groups": ["NOT_MEASURED"], "val_fraction": 0})
    with pytest.raises(DataError, match="no cell of sample expresses any of the 1 labelled test genes"):
        dm.setup("test")


def test_more_bad_label_files(tmp_path):
    with pytest.raises(DataError, match="do not exist; check `gene_labels`"):
        GeneClassification("sample", gene_labels=str(tmp_path / "missing.csv"))
    (tmp_path / "d.pkl").write_bytes(b"\x80")
    with pytest.raises(DataError, match="is a pickle; .* as JSON once"):
        GeneClassification("sample", gene_labels=str(tmp_path / "d.pkl"))
    pd.DataFrame({"g": ["G0001"], "label": ["x"]}).to_csv(tmp_path / "t.csv", index=False)
    with pytest.raises(DataError, match=r"has no column 'gene'; set gene_column \('gene'\)"):
        GeneClassification("sample", gene_labels=str(tmp_path / "t.csv"))
    with pytest.raises(DataError, match="needs at least 2 distinct classes"):
        GeneClassification("sample", gene_labels={"tf": ["G0001"]})
    with pytest.raises(DataError, match="class 'tf' has 2 gene"):
        GeneClassification("sample", gene_labels={"tf": ["G0001", "G0002"], "o": list(LABELS["other"])},
                           split={"folds": 5})  # fmt: skip
    with pytest.raises(ConfigError, match="needs `gene_labels`"):
        GeneClassification("cells.h5ad")
    with pytest.raises(ConfigError, match="`split.group` does not apply"):
        GeneClassification("sample", split={"group": "donor"})


def test_an_error_through_the_cli_is_one_line(tmp_path, capsys):
    config = tmp_path / "c.yaml"
    config.write_text(SAMPLE_CONFIG)
    with bare_argv(), contextlib.redirect_stdout(io.StringIO()), pytest.raises(SystemExit) as exited:
        main(["fit", "--config", str(config), '--data.init_args.gene_labels={"a": ["G0001", "G9999"], '
              '"b": ["G0002", "G0003"]}', "--data.init_args.split={folds: null, val_fraction: 0.0, test_fraction: 0.0}",
              "--trainer.limit_val_batches=0", f"--trainer.default_root_dir={tmp_path}"])  # fmt: skip
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("mmfuse: error:")]
    assert exited.value.code == 1 and len(lines) == 1, lines
    assert "'G9999'" in lines[0] and "unknown_genes: drop" in lines[0]


# ---------------------------------------------------------------------------------------------
# the sample, learnt through the CLI

SAMPLE_CONFIG = """
seed_everything: 0
trainer:
  accelerator: cpu
  max_epochs: 2
  enable_progress_bar: false
  enable_model_summary: false
  logger: {class_path: lightning.pytorch.loggers.CSVLogger, init_args: {save_dir: runs, name: genes}}
  callbacks:
    - class_path: lightning.pytorch.callbacks.ModelCheckpoint
      init_args: {monitor: val/auroc, mode: max, filename: best}
model:
  class_path: TokenClassificationTask
  init_args:
    backbones:
      cell: {class_path: Geneformer, init_args: {preset: tiny}}
    adapter: {class_path: ConcatFusion, init_args: {hidden_dim: 32, pooling: cls}}
    head: {class_path: MLPHead, init_args: {hidden_dims: [32], dropout: 0.0}}
    optimizer: {class_path: torch.optim.AdamW, init_args: {lr: 3.0e-3}}
data:
  class_path: GeneClassification
  init_args:
    source: sample
    split: {folds: 5, fold: 0, val_fraction: 0.2}
    loader: {batch_size: 32}
"""

# Test AUROC (macro over the two classes, per labelled token of the 21 held-out genes of fold 0, 7,719 tokens):
# 0.81 measured with this config (2026-12-07, CPU; folds 1-3 after 4 epochs: 0.84, 0.87, 0.76). Chance is 0.5.
# It stays below 1 by design: in cells of another lineage a lineage gene is rare and low, like background
# (mmfuse/data/samples/gene_labels.py). Per gene (the mean over the cells, predictions_genes.csv) every
# held-out lineage gene ranks above every held-out background gene (AUROC 1.0 measured).
TOKEN_AUROC = 0.7
GENE_AUROC = 0.9


def _auroc(positive: np.ndarray, score: np.ndarray) -> float:
    pos, neg = score[positive], score[~positive]
    wins = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    return float(wins / pos.size / neg.size)


def test_the_sample_is_learnt_from_context_through_the_cli(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = Path("genes.yaml")
    config.write_text(SAMPLE_CONFIG)
    with bare_argv(), contextlib.redirect_stdout(io.StringIO()):
        assert main(["fit", "--config", str(config)]) == 0
        fitted = json.loads(next(Path("runs").glob("genes/version_0/summary_fit.json")).read_text())
        checkpoint = fitted["best_checkpoint"]
        assert main(["test", "--config", str(config), "--ckpt_path", checkpoint]) == 0
        assert main(["predict", "--config", str(config), "--ckpt_path", checkpoint, "--data.init_args.split.predict",
                     "test", "--predictions.output", "predictions_test.csv"]) == 0  # fmt: skip
    tested = json.loads(next(Path("runs").glob("genes/version_1/summary_test.json")).read_text())
    table = pd.read_csv(tested["metrics_table"], index_col=0)
    assert {"f1", "auroc", "support"} <= set(table.columns) and {"background", "lineage_gene"} <= set(table.index)
    assert table.loc["macro", "auroc"] > TOKEN_AUROC, table

    rows = pd.read_csv("predictions_test.csv")
    assert list(rows.columns) == ["cell_id", "gene", "background", "lineage_gene", "predicted", "true_label"]
    dm = GeneClassification("sample", split={"folds": 5, "fold": 0, "val_fraction": 0.2})
    held_out = set(dm.split_genes("test"))
    assert set(rows["gene"]) == held_out and not held_out & set(dm.split_genes("train"))
    genes = pd.read_csv("predictions_test_genes.csv").set_index("gene")
    assert list(genes.columns) == ["records", "background", "lineage_gene", "predicted", "true_label"]
    assert genes["records"].sum() == len(rows)
    assert genes.loc["G0094", "records"] == int((rows["gene"] == "G0094").sum())
    assert genes.loc["G0094", "lineage_gene"] == pytest.approx(rows.loc[rows["gene"] == "G0094", "lineage_gene"].mean())
    positive = (genes["true_label"] == "lineage_gene").to_numpy()
    assert _auroc(positive, genes["lineage_gene"].to_numpy()) > GENE_AUROC, genes
