"""The prediction writer never mixes two runs' rows, never writes over its inputs, and keeps ids as written."""

from __future__ import annotations

from types import SimpleNamespace

import pandas as pd
import pytest
import torch

from mmfuse.errors import ConfigError
from mmfuse.training import PredictionWriter


def _trainer(tmp_path, path="sample", world_size=1, rank=0):
    datamodule = SimpleNamespace(path=str(path), id_column="transcript_id", genome_windows=None)
    strategy = SimpleNamespace(barrier=lambda name: None)
    return SimpleNamespace(log_dir=str(tmp_path), default_root_dir=str(tmp_path), world_size=world_size,
                           global_rank=rank, is_global_zero=rank == 0, datamodule=datamodule,
                           strategy=strategy)  # fmt: skip


def _write(writer, trainer, ids, value):
    module = SimpleNamespace(target_names=["t0", "t1"])
    prediction = {"ids": ids, "preds": torch.full((len(ids), 2), value)}
    writer.write_on_batch_end(trainer, module, prediction, list(range(len(ids))), None, 0, 0)


def test_two_runs_writing_one_output_at_once_leave_one_whole_result(tmp_path):
    output = tmp_path / "predictions.csv"
    first, second = PredictionWriter(str(output)), PredictionWriter(str(output))
    trainer = _trainer(tmp_path)
    first.on_predict_start(trainer, None)
    second.on_predict_start(trainer, None)
    for i in range(3):  # interleaved batches, as two processes would write them
        _write(first, trainer, [f"a{i}"], 1.0)
        _write(second, trainer, [f"b{i}"], 2.0)
    first.on_predict_end(trainer, None)
    assert pd.read_csv(output)["transcript_id"].tolist() == ["a0", "a1", "a2"]
    second.on_predict_end(trainer, None)  # the later one replaces it whole
    written = pd.read_csv(output)
    assert written["transcript_id"].tolist() == ["b0", "b1", "b2"] and (written["t0"] == 2.0).all()
    assert not list(tmp_path.glob(".*.partial"))


def test_predictions_never_overwrite_or_join_the_input(tmp_path):
    table = tmp_path / "table.csv"
    table.write_text("transcript_id,RNA\nT1,ACGU\n")
    with pytest.raises(ConfigError, match=r"would overwrite or join the data module's input .*table.csv"):
        PredictionWriter(str(table)).on_predict_start(_trainer(tmp_path, table), None)
    assert table.read_text() == "transcript_id,RNA\nT1,ACGU\n"
    folder = tmp_path / "tables"  # a directory source: a file written there would be read as data next time
    folder.mkdir()
    with pytest.raises(ConfigError, match="another file"):
        PredictionWriter(str(folder / "predictions.csv")).on_predict_start(_trainer(tmp_path, folder), None)
    PredictionWriter(str(tmp_path / "out" / "p.csv")).on_predict_start(_trainer(tmp_path, table), None)  # fine


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".parquet"])
def test_ids_joined_from_several_processes_keep_their_text(tmp_path, suffix):
    output = tmp_path / f"predictions{suffix}"
    writers = [PredictionWriter(str(output)) for _ in range(2)]
    trainers = [_trainer(tmp_path, world_size=2, rank=r) for r in range(2)]
    for rank, (writer, trainer) in enumerate(zip(writers, trainers, strict=True)):
        writer.on_predict_start(trainer, None)
        _write(writer, trainer, [f"0000{rank}", "NA"], float(rank))
    writers[1].on_predict_end(trainers[1], None)
    writers[0].on_predict_end(trainers[0], None)  # rank 0 joins
    read = pd.read_parquet(output) if suffix == ".parquet" else pd.read_csv(
        output, sep="\t" if suffix == ".tsv" else ",", dtype=str, keep_default_na=False)  # fmt: skip
    assert sorted(read["transcript_id"].tolist()) == ["00000", "00001", "NA", "NA"]


class _TextWriter(PredictionWriter):
    """Rows with text beside the numbers, as explain's letters and score-variants' alleles are."""

    def _frame(self, pl_module, prediction):
        frame = super()._frame(pl_module, prediction)
        frame["allele"] = ["NA", "", "null"][: len(frame)]
        return frame


@pytest.mark.parametrize("suffix", [".csv", ".tsv"])
def test_text_joined_from_several_processes_reads_as_one_process_wrote_it(tmp_path, suffix):
    sep = "\t" if suffix == ".tsv" else ","
    alone = tmp_path / f"alone{suffix}"
    writer, trainer = _TextWriter(str(alone)), _trainer(tmp_path)
    writer.on_predict_start(trainer, None)
    _write(writer, trainer, ["r0", "r1", "r2"], 0.125)
    writer.on_predict_end(trainer, None)
    joined = tmp_path / f"joined{suffix}"
    writers = [_TextWriter(str(joined)) for _ in range(2)]
    trainers = [_trainer(tmp_path, world_size=2, rank=r) for r in range(2)]
    for writer, trainer, ids in zip(writers, trainers, [["r0", "r1", "r2"], []], strict=True):
        writer.on_predict_start(trainer, None)
        if ids:
            _write(writer, trainer, ids, 0.125)
    writers[1].on_predict_end(trainers[1], None)
    writers[0].on_predict_end(trainers[0], None)
    assert "__mmfuse_index" not in joined.read_text()
    assert joined.read_text() == alone.read_text()
    read = pd.read_csv(joined, sep=sep, dtype=str, keep_default_na=False)
    assert read["allele"].tolist() == ["NA", "", "null"] and read["t0"].tolist() == ["0.125"] * 3


def test_gated_fusion_writes_each_records_modality_weights(tmp_path):
    from functools import partial

    import lightning as L

    from mmfuse.adapters import GatedFusion
    from mmfuse.backbones import ESM2, NucleotideTransformer
    from mmfuse.training import MLPHead, RegressionTask
    from tests.training.test_regression import _datamodule, _task

    dm = _datamodule()
    adapter, head = partial(GatedFusion, hidden_dim=16, gate_dim=8), partial(MLPHead, hidden_dims=[8])
    task = RegressionTask({"rna": NucleotideTransformer("tiny"), "protein": ESM2("tiny")}, adapter=adapter, head=head,
                          target_names=[f"t{i}" for i in range(30)])  # fmt: skip
    output = tmp_path / "p.csv"
    trainer = L.Trainer(logger=False, accelerator="cpu", enable_progress_bar=False, enable_model_summary=False,
                        callbacks=[PredictionWriter(str(output), modality_weights=True)])  # fmt: skip
    trainer.predict(task, dm, return_predictions=False)
    table = pd.read_csv(output)
    weights = table[["weight_protein", "weight_rna"]]
    assert list(table.columns[-2:]) == ["weight_protein", "weight_rna"] and len(table) > 10
    assert ((weights >= 0) & (weights <= 1)).all().all()
    assert (weights.sum(axis=1) - 1).abs().max() < 1e-5
    sample = dm.records().frame(["transcript_id", "Protein"])  # the records as the data module stores them
    lacking = sorted(set(sample.loc[sample["Protein"].fillna("") == "", "transcript_id"]) & set(table.iloc[:, 0]))
    assert lacking, "the sample has non-coding transcripts"
    no_protein = table.set_index(table.columns[0]).loc[lacking]
    assert (no_protein["weight_protein"] == 0).all() and (no_protein["weight_rna"] == 1).all()
    plain = L.Trainer(logger=False, accelerator="cpu", enable_progress_bar=False, enable_model_summary=False,
                      callbacks=[PredictionWriter(str(tmp_path / "q.csv"), modality_weights=True)])  # fmt: skip
    with pytest.raises(ConfigError, match="the adapter ConcatFusion does not weigh modalities per sample"):
        plain.predict(_task(), dm, return_predictions=False)
    assert not (tmp_path / "q.csv").exists()
