"""The records store and the published layouts: IsoFormer's GTEx_final.csv with a genome, ModelGenerator's TSV
directory, the hub file fetched alone; memory-mapped records give the batches the in-memory path gives, in
workers too, and no sequence column is ever turned into pandas."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from mmfuse.backbones import ESM2, Enformer, NucleotideTransformer
from mmfuse.data import GTEX_TISSUES, DataError, IsoformExpression
from mmfuse.data.samples.isoform import make_sample_table
from mmfuse.data.samples.layouts import write_isoformer_layout, write_modelgenerator_layout
from mmfuse.data.store.records import ROW_ID, RecordStore
from mmfuse.data.store.rows import SequenceView

SPLITS = ("train", "val", "test")
GENES = 16


@pytest.fixture(scope="module")
def isoformer(tmp_path_factory):
    return write_isoformer_layout(tmp_path_factory.mktemp("isoformer"), GENES)


@pytest.fixture(scope="module")
def tokenizers():
    return {"dna": Enformer("tiny").tokenizer, "rna": NucleotideTransformer("tiny", modality="rna").tokenizer,
            "protein": ESM2("tiny").tokenizer}  # fmt: skip


def _batches(dm, split="train"):
    loader = {"train": dm.train_dataloader, "val": dm.val_dataloader, "test": dm.test_dataloader}[split]()
    return list(loader)


def _assert_same_batches(first, second):
    assert len(first) == len(second)
    for a, b in zip(first, second, strict=True):
        assert a["ids"] == b["ids"]
        torch.testing.assert_close(a["target"], b["target"])
        assert a["inputs"].keys() == b["inputs"].keys()
        for modality in a["inputs"]:
            for name, tensor in a["inputs"][modality].items():
                torch.testing.assert_close(tensor, b["inputs"][modality][name])
        for modality in a["present"]:
            torch.testing.assert_close(a["present"][modality], b["present"][modality])


def test_gtex_final_csv_with_a_genome_gives_the_sample_back(isoformer, tokenizers, monkeypatch):
    csv, genome = isoformer
    dm = IsoformExpression(
        source={"path": str(csv.parents[1]), "genome": {"fasta": str(genome), "window": 1024}}, columns="isoformer",
        loader={"batch_size": 4}, lengths={"max": {"rna": 2000}},
    )  # fmt: skip
    dm.setup("fit")
    table = make_sample_table(GENES).set_index("transcript_id")
    published = pd.read_csv(csv).set_index("transcript_id_gtex")
    # the file's splits are kept; 5 % of the training genes (at least one gene) validate
    for split in ("val", "train"):
        assert all(published.loc[r, "split"] == "train" for r in dm.split_ids(split))
    assert set(dm.split_ids("test")) == set(published.index[published.split == "test"])
    train_genes = {table.loc[r, "gene_id"] for r in dm.split_ids("train")}
    assert dm.split_ids("val") and not train_genes & {table.loc[r, "gene_id"] for r in dm.split_ids("val")}
    for split in SPLITS:
        for record in dm._splits[split]:
            expected = table.loc[record["id"]]
            assert record["sequences"]["dna"] == expected["DNA"]
            assert record["sequences"]["rna"] == expected["RNA"][-2000:]
            assert record["sequences"]["protein"] == (expected["Protein"] or None)
            np.testing.assert_allclose(record["target"], expected[list(GTEX_TISSUES)].to_numpy(np.float32))
    dm.attach_tokenizers(tokenizers)
    batch = _batches(dm)[0]
    assert batch["inputs"]["dna"]["input_ids"].shape[:2] == (4, 1024)


def test_isoformer_without_a_genome_says_how_to_get_dna(isoformer, tokenizers):
    csv, _ = isoformer
    dm = IsoformExpression(str(csv), columns="isoformer")
    with pytest.raises(DataError, match=r"maps only \['protein', 'rna'\].*GTEx_final.csv has no DNA column\), "
                                        r"set `genome: GENOME.fa`"):  # fmt: skip
        dm.attach_tokenizers(tokenizers)


def test_a_hub_id_fetches_the_published_file_alone(isoformer, monkeypatch):
    csv, genome = isoformer
    calls = []

    def download(repo_id, filename, **kwargs):
        calls.append((repo_id, filename, kwargs))
        return str(csv)

    monkeypatch.setattr("huggingface_hub.hf_hub_download", download)
    dm = IsoformExpression(
        source={"path": "InstaDeepAI/multi_omics_transcript_expression", "genome": str(genome), "revision": "main"},
        columns="isoformer",
    )  # fmt: skip
    dm.prepare_data()
    assert calls == [("InstaDeepAI/multi_omics_transcript_expression", "transcript_expression/GTEx_final.csv",
                      {"repo_type": "dataset", "revision": "main"})]  # fmt: skip


def test_modelgenerator_directory_splits_by_file_and_numbers_the_records(tmp_path, tokenizers):
    directory = write_modelgenerator_layout(tmp_path / "mg", GENES)
    dm = IsoformExpression(str(directory), columns="modelgenerator", loader={"batch_size": 4})
    dm.setup("fit")
    sizes = {name: len(pd.read_csv(directory / name, sep="\t")) for name in
             ("train_0.tsv", "train_1.tsv", "validation.tsv", "test.tsv")}  # fmt: skip
    assert len(dm.split_ids("train")) == sizes["train_0.tsv"] + sizes["train_1.tsv"]
    assert dm.split_ids("val") == [f"validation.tsv:{i}" for i in range(sizes["validation.tsv"])]
    assert dm.split_ids("test") == [f"test.tsv:{i}" for i in range(sizes["test.tsv"])]
    first = pd.read_csv(directory / "test.tsv", sep="\t").iloc[0]
    record = dm._splits["test"][0]
    assert record["sequences"]["rna"] == first["rna_seq"]
    np.testing.assert_allclose(record["target"], first[[f"labels_{i}" for i in range(30)]].to_numpy(np.float32))
    dm.attach_tokenizers(tokenizers)
    assert len(_batches(dm, "val")) == -(-sizes["validation.tsv"] // 4)


def test_memory_mapped_records_give_the_in_memory_batches(tmp_path, tokenizers):
    table = make_sample_table(12, seed=2)
    table.to_csv(tmp_path / "sample.csv", index=False)
    options = {"loader": {"batch_size": 4, "bucketing": True, "bucket_pool": 2}, "lengths": {"max": {"rna": 600}},
               "split": {"val_fraction": 0.3}}
    mapped = IsoformExpression({"path": str(tmp_path / "sample.csv"), "records_dir": str(tmp_path / "records")},
                               **options)
    in_memory = IsoformExpression("sample", sample={"size": 12, "seed": 2}, **options)
    for dm in (mapped, in_memory):
        dm.setup("fit")
        dm.attach_tokenizers(tokenizers)
    assert mapped.records().path is not None and in_memory.records().path is None
    assert mapped.crop_counts == in_memory.crop_counts and mapped.crop_counts["rna"] > 0
    for split in SPLITS:
        torch.manual_seed(0)
        first = _batches(mapped, split)
        torch.manual_seed(0)
        _assert_same_batches(first, _batches(in_memory, split))


def test_workers_cut_the_same_windows(isoformer, tokenizers):
    csv, genome = isoformer
    batches = []
    for workers in (0, 2):
        dm = IsoformExpression(
            source={"path": str(csv), "genome": {"fasta": str(genome), "window": 1024}}, columns="isoformer",
            loader={"batch_size": 4, "num_workers": workers}, lengths={"max": {"rna": 2000}},
        )  # fmt: skip
        dm.setup("fit")
        dm.attach_tokenizers(tokenizers)
        batches.append(_batches(dm, "test"))
    _assert_same_batches(*batches)


def test_no_sequence_column_is_read_into_pandas(isoformer, tokenizers, monkeypatch):
    csv, genome = isoformer
    asked = []
    real = RecordStore.frame
    def frame(self, columns, **options):
        asked.append(list(columns))
        return real(self, columns, **options)

    monkeypatch.setattr(RecordStore, "frame", frame)
    dm = IsoformExpression(
        source={"path": str(csv), "genome": {"fasta": str(genome), "window": 1024}}, columns="isoformer",
    )
    dm.setup("fit")
    dm.attach_tokenizers(tokenizers)
    assert asked and not {"RNA", "Protein", "5UTR", "CDS", "3UTR"} & {c for columns in asked for c in columns}
    view = dm.split_sequences(["train", "val"], "rna")  # what the embedding cache fills itself from: lazy
    assert isinstance(view, SequenceView) and len(view) == len(dm.split_ids("train")) + len(dm.split_ids("val"))
    assert view[0] == dm._splits["train"][0]["sequences"]["rna"]


def test_the_store_is_written_once_and_again_when_the_file_changes(tmp_path):
    table = make_sample_table(4)
    path = tmp_path / "t.csv"
    table.to_csv(path, index=False)
    first = IsoformExpression(source={"path": str(path), "records_dir": str(tmp_path / "records")}).records()
    again = IsoformExpression(source={"path": str(path), "records_dir": str(tmp_path / "records")}).records()
    assert first.path == again.path and first.path.stat().st_mtime_ns == again.path.stat().st_mtime_ns
    assert set(first.column_names) == {"transcript_id", "gene_id", "DNA", "RNA", "Protein", *GTEX_TISSUES, ROW_ID}
    table.iloc[:3].to_csv(path, index=False)
    changed = IsoformExpression(source={"path": str(path), "records_dir": str(tmp_path / "records")}).records()
    assert changed.path != first.path and len(changed) == 3


def test_ids_keep_their_leading_zeros(tmp_path):
    table = make_sample_table(3)
    table["transcript_id"] = [f"{i:05d}" for i in range(len(table))]
    table.to_csv(tmp_path / "t.csv", index=False)
    dm = IsoformExpression(str(tmp_path / "t.csv"), split={"test_fraction": 0.0, "val_fraction": 0.0})
    dm.setup("fit")
    assert dm.split_ids("train")[:2] == ["00000", "00001"]


def test_a_row_longer_than_the_csv_block_is_read_with_a_larger_block(tmp_path, monkeypatch):
    import mmfuse.data.files.tables as sources
    import mmfuse.data.store.records as records

    monkeypatch.setattr(records, "BLOCKS", (2048, 1 << 20))
    monkeypatch.setattr(sources, "BLOCKS", (2048, 1 << 20))
    tried = []
    real = records._write
    monkeypatch.setattr(records, "_write", lambda *a: tried.append(a[-1]) or real(*a))
    table = make_sample_table(3)  # DNA windows of 1,024 bp: a row is about 2 kB
    table.loc[1, "DNA"] = "ACGT" * 1000  # 4 kB
    table.to_csv(tmp_path / "t.csv", index=False)
    dm = IsoformExpression(str(tmp_path / "t.csv"), split={"test_fraction": 0.0, "val_fraction": 0.0})
    dm.setup("fit")
    assert dm._splits["train"][1]["sequences"]["dna"] == "ACGT" * 1000 and len(dm.split_ids("train")) == len(table)
    assert tried == [2048, 1 << 20]  # the first block was too small for the 4 kB row


def test_a_spawned_worker_maps_the_store_again_and_reopens_the_genome(isoformer):
    import pickle

    csv, genome = isoformer
    dm = IsoformExpression(
        source={"path": str(csv), "genome": {"fasta": str(genome), "window": 1024}}, columns="isoformer",
    )
    dm.setup("fit")
    records = dm._splits["train"]
    payload = pickle.dumps(records)  # what a spawn-started DataLoader worker receives
    assert len(payload) < 100_000  # the store's path, not its contents
    again = pickle.loads(payload)
    assert again.reader.store.path == records.reader.store.path and again.reader.windows[1]._genome is None
    for i in (0, len(records) - 1):
        assert again[i]["sequences"] == records[i]["sequences"] and again[i]["id"] == records[i]["id"]


def test_a_modelgenerator_hub_id_is_fetched_and_read_as_its_local_copy(tmp_path, monkeypatch):
    directory = write_modelgenerator_layout(tmp_path / "copy", GENES)
    calls = []

    def snapshot(repo_id, **kwargs):
        calls.append((repo_id, kwargs))
        return str(directory)

    monkeypatch.setattr("huggingface_hub.snapshot_download", snapshot)
    from_hub = IsoformExpression("genbio-ai/transcript_isoform_expression_prediction", columns="modelgenerator")
    from_hub.setup("fit")
    local = IsoformExpression(str(directory), columns="modelgenerator")
    local.setup("fit")
    assert calls == [("genbio-ai/transcript_isoform_expression_prediction",
                      {"repo_type": "dataset", "revision": None, "allow_patterns": ["*.tsv"]})]  # fmt: skip
    for split in SPLITS:  # the same splits and the same FILE:ROW ids either way
        assert from_hub.split_ids(split) == local.split_ids(split) and from_hub.split_ids(split)


def test_predictions_of_a_table_without_ids_carry_file_and_row(tmp_path, monkeypatch, capsys):
    import json

    from mmfuse.cli import main

    write_modelgenerator_layout(tmp_path / "mg", 6)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("sys.argv", ["mmfuse"])
    rna = {"rna": {"class_path": "NucleotideTransformer", "init_args": {"preset": "tiny", "modality": "rna"}}}
    main(["predict", "--model=RegressionTask", f"--model.backbones={json.dumps(rna)}", "--model.adapter=ConcatFusion",
          "--data=IsoformExpression", "--data.source.path=mg", "--data.columns=modelgenerator",
          '--data.modalities={"rna": "rna_seq"}', '--data.lengths.max={"rna": 1000}', "--trainer.accelerator=cpu",
          "--trainer.logger=false", "--trainer.enable_progress_bar=false",
          "--predictions.output=preds.csv"])  # fmt: skip
    predictions = pd.read_csv(tmp_path / "preds.csv")
    files = {name: len(pd.read_csv(tmp_path / "mg" / name, sep="\t")) for name in
             ("train_0.tsv", "train_1.tsv", "validation.tsv", "test.tsv")}  # fmt: skip
    expected = {f"{name}:{i}" for name, n in files.items() for i in range(n)}
    assert predictions.columns[0] == "id" and set(predictions["id"]) == expected
