"""Tables as people save them (issue 34): a byte-order mark, ids spelled ``NA`` or ``nan``, a table too small
for its splits, isoforms whose ids differ only in their version suffix.

Each case goes through the ``mmfuse`` command where a user meets it (``fit``, ``predict``,
``data build-isoform``, run in this process) and checks the exit code, the one ``mmfuse: error:`` line,
and that nothing was lost or silently changed: every row read, every id kept as written.
"""

from __future__ import annotations

import contextlib
import gzip
import io
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mmfuse.backbones import NucleotideTransformer
from mmfuse.cli import main
from mmfuse.data import DataError, IsoformExpression
from mmfuse.data.files.gct import gct_chunks, sample_tissues
from mmfuse.data.files.tables import read_table
from mmfuse.data.samples.isoform import make_sample_table
from tests.helpers.in_process import QUICKSTART, SMALL, bare_argv

BOM = "\ufeff"


def _mmfuse(*args: str) -> tuple[int, str, str]:
    """``mmfuse ARGS`` run in this process: its exit code, stdout and stderr."""
    out, err = io.StringIO(), io.StringIO()
    with bare_argv(), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(list(args))
        except SystemExit as exit_:
            code = exit_.code
    return int(code or 0), out.getvalue(), err.getvalue()


def _one_error_line(err: str) -> str:
    """The one ``mmfuse: error:`` line of a refused run (no traceback; Lightning's banner lines aside)."""
    assert "Traceback" not in err, err
    errors = [line for line in err.splitlines() if line.startswith("mmfuse: error: ")]
    assert len(errors) == 1, err
    return errors[0]


@pytest.fixture(scope="module")
def table() -> pd.DataFrame:
    return make_sample_table(12, seed=0)


def _predict(checkpoint: Path, path: Path, out: Path, *options: str) -> tuple[int, str]:
    code, _, err = _mmfuse("predict", "--config", str(QUICKSTART), *SMALL, "--ckpt_path", str(checkpoint),
                           f"--data.init_args.source.path={path}", f"--predictions.output={out}",
                           f"--trainer.logger.init_args.save_dir={out.parent}", *options)  # fmt: skip
    return code, err


# a byte-order mark -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["table.csv", "table.tsv", "table.csv.gz"])
def test_a_table_saved_with_a_byte_order_mark_loads_every_row_with_its_ids(tmp_path, table, name):
    text = table.to_csv(index=False, sep="\t" if ".tsv" in name else ",")
    data = (BOM + text).encode()
    path = tmp_path / name
    path.write_bytes(gzip.compress(data) if name.endswith(".gz") else data)
    dm = IsoformExpression(str(path), split={"val_fraction": 0.25})
    dm.setup("fit")
    ids = [i for s in ("train", "val", "test") for i in dm.split_ids(s)]
    assert sorted(ids) == sorted(table["transcript_id"]) and len(ids) == len(table)
    assert read_table(path).columns[0] == "transcript_id"  # the pandas reader agrees: no mark in the name


def test_predict_on_a_table_with_a_byte_order_mark_writes_every_record(trained, tmp_path, table):
    path = tmp_path / "excel.csv"
    path.write_bytes((BOM + table.to_csv(index=False)).encode())  # Excel's "CSV UTF-8"
    code, err = _predict(trained, path, tmp_path / "predictions.csv")
    assert code == 0, err
    written = pd.read_csv(tmp_path / "predictions.csv", dtype={"transcript_id": str})
    assert sorted(written["transcript_id"]) == sorted(table["transcript_id"])


def test_text_files_with_a_byte_order_mark_are_read_as_without(tmp_path):
    gct = tmp_path / "tpm.gct"
    gct.write_text(BOM + "#1.2\n1\t2\nName\tDescription\tS1\tS2\nT1.1\tG1\t1.5\t2\n")
    ((_, chunk),) = list(gct_chunks(gct, 8))
    assert chunk.iloc[0, 0] == "T1.1" and chunk["S1"].tolist() == [1.5]
    attributes = tmp_path / "samples.txt"
    attributes.write_text(BOM + "SAMPID\tSMTS\nS1\tLiver\nS2\tLung\n")
    assert sample_tissues(attributes, "SAMPID", "SMTS") == {"S1": "Liver", "S2": "Lung"}


# ids spelled NA, nan, None -------------------------------------------------------------------------------------
NA_IDS = {0: "NA", 1: "nan", 2: "None", 3: "NULL", 4: "N/A"}


def _na_ids(table: pd.DataFrame) -> pd.DataFrame:
    table = table.copy()
    for row, spelling in NA_IDS.items():
        table.loc[row, "transcript_id"] = spelling
    return table


def test_ids_spelled_like_missing_values_are_ids(tmp_path, table):
    path = tmp_path / "table.csv"
    _na_ids(table).to_csv(path, index=False)
    dm = IsoformExpression(str(path), split={"val_fraction": 0.25})
    dm.setup("fit")
    ids = [i for s in ("train", "val", "test") for i in dm.split_ids(s)]
    assert set(NA_IDS.values()) <= set(ids) and len(ids) == len(table) == len(set(ids))


def test_predictions_keep_ids_spelled_like_missing_values(trained, tmp_path, table):
    path = tmp_path / "table.csv"
    _na_ids(table).to_csv(path, index=False)
    code, err = _predict(trained, path, tmp_path / "predictions.parquet")
    assert code == 0, err
    written = pd.read_parquet(tmp_path / "predictions.parquet")
    assert sorted(written["transcript_id"]) == sorted(_na_ids(table)["transcript_id"])
    assert written["transcript_id"].map(type).eq(str).all()


@pytest.mark.parametrize("cell", ["NA", "nan", ""])
def test_a_target_cell_spelled_na_or_empty_is_still_missing(tmp_path, table, cell):
    edited = _na_ids(table)
    edited["Liver"] = edited["Liver"].astype(object)
    edited.loc[7, "Liver"] = cell
    path = tmp_path / "table.csv"
    edited.to_csv(path, index=False)
    record = edited.loc[7, "transcript_id"]
    message = rf"1 record\(s\) of .* have missing, NaN or infinite targets, e\.g\. '{record}' \(Liver: "
    with pytest.raises(DataError, match=message):
        IsoformExpression(str(path), split={"val_fraction": 0.25}).setup("fit")
    dm = IsoformExpression(str(path), split={"val_fraction": 0.25}, nan_targets="drop")
    dm.setup("fit")
    ids = {i for s in ("train", "val", "test") for i in dm.split_ids(s)}
    assert ids == set(edited["transcript_id"]) - {record}  # that record alone left out; "NA" and "nan" kept


def test_an_empty_id_is_still_no_id(tmp_path, table):
    edited = table.copy()
    edited.loc[3, "transcript_id"] = ""
    path = tmp_path / "table.csv"
    edited.to_csv(path, index=False)
    message = r"1 records of .* have no id in column 'transcript_id' \(the first at data row 4\)"
    with pytest.raises(DataError, match=message):
        IsoformExpression(str(path)).setup("fit")


@pytest.mark.parametrize("name", ["cells.csv", "cells.tsv"])
def test_a_small_table_read_whole_keeps_ids_and_reads_other_na_as_missing(tmp_path, name):
    sep = "\t" if name.endswith(".tsv") else ","
    path = tmp_path / name
    path.write_text(BOM + sep.join(["cell", "label", "G1"]) + "\n" + "".join(
        sep.join(row) + "\n" for row in (["NA", "B", "1"], ["nan", "NA", "2"], ["c3", "", "NA"])))  # fmt: skip
    table = read_table(path, dtype={"cell": str, "label": str}, text_columns=["cell"])
    assert table["cell"].tolist() == ["NA", "nan", "c3"]
    assert table["label"].isna().tolist() == [False, True, True] and table["G1"].isna().tolist() == [False, False, True]
    assert read_table(path)["cell"].isna().tolist() == [True, True, False]  # without text_columns: as pandas reads


def test_gct_ids_spelled_na_are_ids_and_na_values_are_nan(tmp_path):
    gct = tmp_path / "tpm.gct"
    gct.write_text("#1.2\n3\t2\nName\tDescription\tS1\tS2\nNA\tNA\t1\t2\nnan\tG2\tNA\t3\nT3\tG3\t\t4\n")
    ((_, chunk),) = list(gct_chunks(gct, 8))
    assert chunk.iloc[:, 0].tolist() == ["NA", "nan", "T3"] and chunk.iloc[0, 1] == "NA"
    assert np.isnan(chunk["S1"].iloc[1]) and np.isnan(chunk["S1"].iloc[2]) and chunk["S2"].tolist() == [2, 3, 4]


# a table too small for its splits -----------------------------------------------------------------------------
TOO_SMALL = (
    "the table has 1 record in 1 gene ('gene_id'), too few to split for fit: train (to train) and val (val_fraction "
    "0.25) each need at least one gene, 2 in all; val_fraction 0.25 draws about one gene in 4. Add rows (more genes), "
    "or set split.val_fraction: 0 and trainer.limit_val_batches: 0 to train on every gene without validation"
)


@pytest.mark.parametrize(
    ("seed", "drawn", "empty"),
    [(0, "train", "the 'val' split of {path} is empty"),  # the validation loader finds it empty
     (4, "val", "the 'train' split of {path} is empty, so no targets to standardise with"),  # before training
     (1, "test", "the 'train' split of {path} is empty, so no targets to standardise with")],
)  # fmt: skip
def test_a_one_row_table_says_it_is_too_small_to_split(tmp_path, table, seed, drawn, empty):
    from mmfuse.data.splits import gene_split

    assert gene_split(table["gene_id"][0], seed, 0.25, 0.1) == drawn  # the split seed puts the one gene there
    path = tmp_path / "one.csv"
    table.iloc[:1].to_csv(path, index=False)
    code, _, err = _mmfuse("fit", "--config", str(QUICKSTART), *SMALL, f"--data.init_args.source.path={path}",
                           f"--data.init_args.split.seed={seed}", "--trainer.max_steps=1",
                           f"--trainer.logger.init_args.save_dir={tmp_path}")  # fmt: skip
    assert code == 1
    assert _one_error_line(err) == f"mmfuse: error: {empty.format(path=path)}; {TOO_SMALL}"


def test_a_loader_refused_inside_a_trainer_leaves_the_dataloader_class_as_it_was(tmp_path, table):
    """Lightning patches ``DataLoader.__setattr__`` while it calls a loader hook and restores it only when the hook
    returns; raised there, the refusal would leave every later loader of the process recording its attributes (its
    iterators and worker processes kept alive until garbage collection, which then waits 5 s per worker). The hook
    returns a loader that raises when used, so the same one line comes out and the class is left as it was."""
    from torch.utils.data import DataLoader
    from torchdata.stateful_dataloader import StatefulDataLoader

    before = (DataLoader.__setattr__, DataLoader.__init__, StatefulDataLoader.__init__)
    path = tmp_path / "one.csv"
    table.iloc[:1].to_csv(path, index=False)
    code, _, err = _mmfuse("fit", "--config", str(QUICKSTART), *SMALL, f"--data.init_args.source.path={path}",
                           "--data.init_args.split.seed=0", "--trainer.max_steps=1",
                           f"--trainer.logger.init_args.save_dir={tmp_path}")  # fmt: skip
    assert code == 1 and _one_error_line(err).startswith(f"mmfuse: error: the 'val' split of {path} is empty; ")
    assert (DataLoader.__setattr__, DataLoader.__init__, StatefulDataLoader.__init__) == before


def test_two_genes_fit_but_a_cross_validation_fold_needs_a_third(tmp_path, table):
    two = table[table["gene_id"].isin(["SYNG00000", "SYNG00001"])]
    path = tmp_path / "two.csv"
    two.to_csv(path, index=False)
    dm = IsoformExpression(str(path), split={"val_fraction": 0.5, "test_fraction": 0.0})
    dm.setup("fit")  # one gene may train, one validate (the draw decides; the loaders say when it did not)
    assert sorted(i for s in ("train", "val", "test") for i in dm.split_ids(s)) == sorted(two["transcript_id"])
    folds = IsoformExpression(str(path), modalities={"rna": "RNA"}, split={"val_fraction": 0.25, "folds": 2})
    folds.setup("fit")  # setup reads the table; the split fit needs and cannot fill is refused when asked for
    assert sorted(i for s in ("train", "val", "test") for i in folds.split_ids(s)) == sorted(two["transcript_id"])
    assert [len(folds.split_ids(s)) > 0 for s in ("train", "val", "test")] == [True, False, True]
    folds.attach_tokenizers({"rna": NucleotideTransformer("tiny", modality="rna").tokenizer})
    with pytest.raises(DataError) as refused:
        folds.val_dataloader()
    assert str(refused.value) == (
        f"the 'val' split of {path} is empty; the table has {len(two)} records in 2 genes ('gene_id'), too few to "
        f"split for fit: train (to train), val (val_fraction 0.25) and test (fold 0 of 2) each need at least one "
        f"gene, 3 in all; val_fraction 0.25 draws about one gene in 4. Add rows (more genes), or set "
        f"split.val_fraction: 0 and trainer.limit_val_batches: 0 to train on every gene without validation"
    )


def test_a_table_for_prediction_is_never_too_small(tmp_path, table):
    path = tmp_path / "one.csv"
    table.iloc[:1].to_csv(path, index=False)
    dm = IsoformExpression(str(path))
    dm.setup("predict")
    assert [i for s in ("train", "val", "test") for i in dm.split_ids(s)] == [table["transcript_id"][0]]


def test_validation_switched_off_needs_only_a_training_gene(tmp_path, table):
    from mmfuse.data.options import GeneSplit
    from mmfuse.data.splits import SplitRule

    rule = SplitRule.of(GeneSplit(val_fraction=0.2), "transcript_id", "t.csv", "IsoformExpression")
    assert rule.needed("fit") == {"train": "to train", "val": "val_fraction 0.2"}
    assert rule.needed("fit", validates=False) == {"train": "to train"}
    assert rule.needed("predict") == rule.needed("test") == rule.needed(None) == {}
    assert rule.too_small(table.iloc[:1], "fit", validates=False) is None  # one gene trains: nothing refused
    assert rule.too_small(table.iloc[:1], "fit") == TOO_SMALL.replace("0.25", "0.2").replace("in 4", "in 5")


# isoforms whose ids differ only in their version ----------------------------------------------------------------
TISSUES = {"S1": "Liver", "S2": "Lung"}


def _isoform_inputs(tmp_path: Path, annotated: list[str], expressed: list[str], bom: bool = False) -> list[str]:
    """A 3 kb genome, a GTF with one two-exon transcript per id of ``annotated`` (one gene), a GCT with one row
    per id of ``expressed`` and the sample attributes: the options of ``mmfuse data build-isoform``."""
    rng = np.random.default_rng(0)
    genome = tmp_path / "genome.fa"
    genome.write_text(">chr1\n" + "".join(rng.choice(list("ACGT"), 3000)) + "\n")
    mark = BOM if bom else ""
    lines = []
    for k, tid in enumerate(annotated):
        start = 200 + 600 * k
        for s, e in ((start, start + 100), (start + 200, start + 350)):
            lines.append(f'chr1\ttest\texon\t{s + 1}\t{e}\t.\t+\t.\tgene_id "G1"; transcript_id "{tid}";')
    gtf = tmp_path / "a.gtf"
    gtf.write_text(mark + "\n".join(lines) + "\n")
    gct = tmp_path / "tpm.gct"
    rows = "".join(f"{tid}\tG1\t{k + 1}\t{2 * k + 1}\n" for k, tid in enumerate(expressed))
    gct.write_text(f"{mark}#1.2\n{len(expressed)}\t2\nName\tDescription\tS1\tS2\n{rows}")
    attributes = tmp_path / "samples.txt"
    attributes.write_text(mark + "SAMPID\tSMTS\n" + "".join(f"{s}\t{t}\n" for s, t in TISSUES.items()))
    out = tmp_path / "table.parquet"
    return ["data", "build-isoform", "--fasta", str(genome), "--annotation", str(gtf), "--expression", str(gct),
            "--sample-tissues", str(attributes), "--out", str(out), "--window", "64"]  # fmt: skip


@pytest.mark.parametrize("bom", [False, True], ids=["plain", "byte-order-marks"])
def test_isoforms_differing_only_in_their_version_are_both_built(tmp_path, bom):
    ids = ["SYNT00000.1", "SYNT00000.2"]
    code, out, err = _mmfuse(*_isoform_inputs(tmp_path, ids, ids, bom=bom))
    assert code == 0, err
    assert "transcripts written: 2" in out
    built = pd.read_parquet(tmp_path / "table.parquet")
    assert built["transcript_id"].tolist() == ids and built["annotation_transcript_id"].tolist() == ids
    assert built["tss"].tolist() == [200, 800]  # each matched its own model, not the other's
    assert built["Liver"].tolist() == pytest.approx(np.log1p([1.0, 2.0]).tolist())


def test_expression_ids_that_collide_once_their_versions_are_stripped_are_named(tmp_path):
    args = _isoform_inputs(tmp_path, ["ENST00000000001.5"], ["ENST00000000001.4", "ENST00000000001.5"])
    code, _, err = _mmfuse(*args)
    assert code == 1
    assert _one_error_line(err) == (
        f"mmfuse: error: {tmp_path / 'tpm.gct'}:5: transcripts ENST00000000001.4 (line 4) and ENST00000000001.5 "
        f"collide once their versions are stripped: both match ENST00000000001.5 of the annotation, which has one "
        f"transcript of that id; keep one of them in the expression file, or use the annotation release the "
        f"expression was quantified with"
    )
    assert not (tmp_path / "table.parquet").exists()


def test_a_transcript_written_twice_is_named_with_both_lines(tmp_path):
    args = _isoform_inputs(tmp_path, ["SYNT00000.1", "SYNT00000.2"], ["SYNT00000.1", "SYNT00000.2", "SYNT00000.2"])
    code, _, err = _mmfuse(*args)
    assert code == 1
    assert _one_error_line(err) == (f"mmfuse: error: {tmp_path / 'tpm.gct'}:6: transcript SYNT00000.2 appears twice "
                                    f"(first at line 5); keep one row per transcript")  # fmt: skip
    assert not (tmp_path / "table.parquet").exists()
