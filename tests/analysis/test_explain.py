"""``mmfuse explain``: attributions equal the model run by hand, the table and plots, and refusals.

The planted motifs of the sample data standing out in a trained model: tests/test_learning.py (slow).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from mmfuse.analysis.attribution import find_cds, letter_scores
from mmfuse.analysis.explain import ExplanationWriter
from mmfuse.cli import main
from mmfuse.errors import ConfigError, MmfuseError
from mmfuse.tokenizers import ESM_VOCAB, CharTokenizer, KmerTokenizer
from tests.helpers.in_process import QUICKSTART, SMALL, bare_argv, load_task, mmfuse_stdout

IDS = ["SYNT00001.2", "SYNT00000.1"]  # a non-coding transcript (no protein) first: the order given is kept


def _task_and_records(checkpoint: Path, ids: list[str]) -> tuple[object, dict]:
    """The checkpoint's task, in eval mode, and one batch of the records ``ids`` with their sequences."""
    task, dm = load_task(checkpoint)
    dm.select_records(ids)
    return task, next(iter(dm.predict_dataloader()))


def _predict(task, sequences: dict[str, str], tokens: dict | None = None) -> float:
    """The mean prediction over targets of one record, by the task's own forward."""
    tokenizers = task.model.tokenizers()
    inputs = {m: tokenizers[m]([s]) for m, s in sequences.items()}
    inputs |= tokens or {}
    present = {m: torch.tensor([m in inputs]) for m in task.model.backbones}
    with torch.no_grad():
        return float(task(inputs, present).mean())


@pytest.fixture(scope="module")
def explained(trained, tmp_path_factory) -> tuple[str, pd.DataFrame, Path]:
    out = tmp_path_factory.mktemp("explain") / "attr.parquet"
    printed = mmfuse_stdout("explain", "--config", str(QUICKSTART), *SMALL, "--ckpt_path", str(trained),
                            "--ids", ",".join(IDS), f"--attributions.output={out}", "--attributions.steps=64",
                            f"--trainer.logger.init_args.save_dir={out.parent}")  # fmt: skip
    return printed, pd.read_parquet(out), out


def test_the_table_covers_every_letter_of_each_record_in_the_order_given(explained, trained):
    printed, table, out = explained
    task, batch = _task_and_records(trained, IDS)
    assert list(table.columns) == ["record", "modality", "position", "letter", "target", "method", "score"]
    assert list(dict.fromkeys(table["record"])) == IDS
    assert f"Wrote {len(table)} attributions of 2 records to {out}" in printed
    assert "note: protein absent from the record (nothing to attribute): 1 record(s)" in printed
    for b, record in enumerate(IDS):
        for m in ("dna", "rna", "protein"):
            sequence = batch["sequences"][m][b]
            for method in ("ig", "ism"):
                rows = table[(table["record"] == record) & (table["modality"] == m) & (table["method"] == method)]
                if not batch["present"][m][b]:
                    assert rows.empty  # the non-coding transcript has no protein track
                    continue
                assert rows["position"].tolist() == list(range(len(sequence)))  # cropped to 256/128 letters
                assert "".join(rows["letter"]) == sequence and set(rows["target"]) == {"mean"}
    assert (out.parent / "attr_plots" / "SYNT00000.1.png").read_bytes()[:4] == b"\x89PNG"
    assert (out.parent / "attr_plots" / "SYNT00001.2.png").is_file()


def test_integrated_gradients_sum_to_the_change_from_the_baseline(explained, trained):
    """Completeness: the letters' scores, over every modality, add up to the prediction minus the baseline's
    (every letter token replaced by the tokenizer's reference token, special tokens kept)."""
    _, table, _ = explained
    task, batch = _task_and_records(trained, IDS)
    b = IDS.index("SYNT00000.1")
    sequences = {m: batch["sequences"][m][b] for m in ("dna", "rna", "protein")}
    baseline = {}
    for m, sequence in sequences.items():
        tokenizer = task.model.tokenizers()[m]
        tokens = tokenizer([sequence])
        letters = torch.tensor([s is not None for s in tokenizer.spans(sequence)])
        tokens["input_ids"][0] = torch.where(letters, tokenizer.reference_id, tokens["input_ids"][0])
        baseline[m] = tokens
    change = _predict(task, sequences) - _predict(task, sequences, baseline)
    ig = table[(table["record"] == "SYNT00000.1") & (table["method"] == "ig")]
    assert abs(change) > 1e-3
    assert ig["score"].sum() == pytest.approx(change, rel=0.03, abs=1e-4)
    assert set(ig["modality"]) == {"dna", "rna", "protein"}


@pytest.mark.parametrize(("modality", "position"), [("dna", 100), ("rna", 17), ("protein", 40)])
def test_mutagenesis_is_the_prediction_minus_the_mean_of_the_mutants(explained, trained, modality, position):
    _, table, _ = explained
    task, batch = _task_and_records(trained, IDS)
    b = IDS.index("SYNT00000.1")
    sequences = {m: batch["sequences"][m][b] for m in ("dna", "rna", "protein")}
    sequence = sequences[modality]
    letter = sequence[position]
    alphabet = "ACDEFGHIKLMNPQRSTVWY" if modality == "protein" else "ACGT"
    mutants = [_predict(task, {**sequences, modality: sequence[:position] + a + sequence[position + 1 :]})
               for a in alphabet if a != letter]  # fmt: skip
    expected = _predict(task, sequences) - float(np.mean(mutants))
    row = table[(table["record"] == "SYNT00000.1") & (table["modality"] == modality) & (table["method"] == "ism")
                & (table["position"] == position)]  # fmt: skip
    assert row["letter"].item() == letter
    assert row["score"].item() == pytest.approx(expected, abs=1e-5)


def test_letters_share_their_token_score_and_spans_follow_the_tokens():
    kmer = KmerTokenizer("nt")
    for sequence in ("ACGTACGTAC", "ACGTNNACGTACGTAAAT", "N", "ACGTAC" * 3 + "G"):
        assert len(kmer.spans(sequence)) == len(kmer.encode(sequence))
    assert kmer.spans("ACGTACGTNA") == [None, (0, 6), (6, 7), (7, 8), (8, 9), (9, 10)]
    esm = CharTokenizer("esm", "ACDE", [5, 23, 13, 9], pad_id=1, bos_id=0, eos_id=2)
    assert esm.spans("ACD") == [None, (0, 1), (1, 2), (2, 3), None]
    assert ESM_VOCAB[esm.reference_id] == ESM_VOCAB[1]  # no X in this alphabet: padding
    scores = letter_scores(np.array([5.0, 12.0, 1.0, -2.0]), kmer.spans("ACGTACGT")[:4], 8)
    np.testing.assert_allclose(scores, [2, 2, 2, 2, 2, 2, 1, -2])
    assert scores.sum() == pytest.approx(12 + 1 - 2)  # the special token's score is nobody's letter


def test_the_coding_sequence_is_found_in_any_frame():
    assert find_cds("GGATGAAATAGCC", "MK") == (2, 11)  # stop codon included
    assert find_cds("CATGTTTCCC", "MFP") == (1, 10)  # no stop codon in the transcript
    assert find_cds("ATGAAA", "W") is None and find_cds("ATGAAA", "") is None


def _refused(tmp_path, capsys, *options: str, ckpt: Path | None = None) -> str:
    with bare_argv(), pytest.raises(SystemExit) as exit_:
        main(["explain", "--config", str(QUICKSTART), *SMALL, f"--trainer.logger.init_args.save_dir={tmp_path}",
              *(["--ckpt_path", str(ckpt)] if ckpt else []), *options])  # fmt: skip
    err = capsys.readouterr().err
    assert exit_.value.code == 1 and err.startswith("mmfuse: error: ") and len(err.splitlines()) == 1, err
    return err


@pytest.fixture(scope="module")
def task_and_data(trained):
    return load_task(trained)


@pytest.mark.parametrize(
    ("options", "ids", "message"),
    [
        ({}, "SYNT00000.1,NOPE.1", "1 of the 2 ids given are not records of sample: NOPE.1 (its ids read like"),
        ({"targets": ["Brain", "Bone"]}, "SYNT00000.1",
         "attributions.targets names ['Bone'], not targets of this model (Adipose Tissue, Adrenal Gland"),
        ({"targets": ["predicted"]}, "SYNT00000.1", "attributions.targets names ['predicted']"),
        ({"modalities": ["cell"]}, "SYNT00000.1",
         "attributions.modalities names ['cell']; the model reads ['dna', 'protein', 'rna']"),
        ({}, " ", "mmfuse explain needs the records to explain: --ids T1,T2"),
    ],
    ids=["unknown-id", "unknown-target", "summary-of-a-classifier", "unknown-modality", "blank-ids"],
)
def test_a_bad_choice_is_refused_before_anything_runs(task_and_data, options, ids, message):
    task, dm = task_and_data
    with pytest.raises(MmfuseError) as refused:
        ExplanationWriter(**options).prepare(task, dm, "best.ckpt", ids)
    assert message in str(refused.value)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ([], "mmfuse explain needs the records to explain: --ids T1,T2"),
        (["--ids=SYNT00000.1", "--attributions.output=a.txt"], "attributions.output 'a.txt' must end in .csv, .tsv"),
        (["--ids=SYNT00000.1", "--attributions.steps=0"], "attributions.steps must be at least 1, not 0"),
    ],
    ids=["no-ids", "suffix", "steps"],
)
def test_a_bad_option_is_one_line_with_the_fix(options, message, trained, tmp_path, capsys):
    assert message in _refused(tmp_path, capsys, *options, ckpt=trained)


def test_explaining_needs_a_trained_checkpoint(tmp_path, capsys):
    assert "mmfuse explain explains a trained model: pass --ckpt_path" in _refused(tmp_path, capsys, "--ids=X")


def test_a_backbone_that_cannot_be_placed_on_letters_is_named():
    from mmfuse.backbones.context import ContextEmbedding

    assert "ContextEmbedding has no input layer to attribute to" in ExplanationWriter._why_not(
        "tissue", ContextEmbedding(categories=["liver", "brain"], embed_dim=4)
    )
    with pytest.raises(ConfigError, match=r"attributions.methods takes ig and/or ism, not \['shap'\]"):
        ExplanationWriter(methods=["shap"])


def test_a_failed_run_leaves_the_earlier_file_and_no_partial_one(trained, tmp_path, monkeypatch):
    out = tmp_path / "attr.csv"
    out.write_text("an earlier run's file")

    def failing(self, task, batch):
        raise RuntimeError("the machine went away")

    monkeypatch.setattr(ExplanationWriter, "step", failing)
    with pytest.raises(RuntimeError, match="went away"):
        mmfuse_stdout("explain", "--config", str(QUICKSTART), *SMALL, "--ckpt_path", str(trained), "--ids=SYNT00000.1",
                      f"--attributions.output={out}", f"--trainer.logger.init_args.save_dir={tmp_path}")  # fmt: skip
    assert out.read_text() == "an earlier run's file"
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_file()) == ["attr.csv"]
