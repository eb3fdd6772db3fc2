"""score-variants runs each backbone once per distinct input: each transcript's reference once, the inputs a
variant leaves unchanged never again; predictions as a whole batch of reference and alternate records gives them;
an input a backbone refuses skips its pair, counted, and the run goes on."""

from __future__ import annotations

import contextlib
import io

import numpy as np
import pandas as pd
import pytest
import torch

from mmfuse.analysis.variant_reuse import Reuse, VariantCollate
from mmfuse.analysis.variants import VariantWriter, score_variants, variant_pairs
from mmfuse.cli import MmfuseCLI
from mmfuse.data.collate import MultiModalCollate
from mmfuse.tokenizers import InvalidSequenceError
from tests.helpers import small_genome as sg
from tests.helpers.in_process import QUICKSTART, SMALL, bare_argv

SMALL = [*SMALL, "--data.init_args.lengths.max={dna: 256, rna: 320, protein: 128}"]
# three variants of each strand's transcript (so references repeat), one changing nothing the model reads
RECORDS = [sg.snv("+", 47, "A", "syn_plus"), sg.snv("+", 61, "G", "mis_plus"), sg.snv("+", 70, "T", "other_plus"),
           sg.snv("-", 47, "A", "syn_minus"), sg.snv("-", 61, "G", "mis_minus"), sg.genome_snv(1200)[0]]  # fmt: skip


@pytest.fixture(scope="module")
def setup(trained, tmp_path_factory):
    root = tmp_path_factory.mktemp("reuse")
    (root / "genome").mkdir()
    fasta, gtf, vcf = sg.write_inputs(root / "genome", RECORDS)
    with bare_argv():
        cli = MmfuseCLI(["--config", str(QUICKSTART), *SMALL, f"--trainer.logger.init_args.save_dir={root}",
                         f"--trainer.default_root_dir={root}"], run=False)  # fmt: skip
    return cli, trained, (str(vcf), str(fasta), str(gtf)), root


def _run(setup, name: str, **options) -> tuple[pd.DataFrame, VariantWriter, str]:
    cli, trained, files, root = setup
    writer = VariantWriter(**{"window": sg.WINDOW, "output": str(root / f"{name}.csv"), **options})
    cli.trainer.callbacks[:] = [c for c in cli.trainer.callbacks if not isinstance(c, VariantWriter)] + [writer]
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        score_variants(cli.trainer, cli.model, cli.datamodule, str(trained), *files)
    return pd.read_csv(root / f"{name}.csv", keep_default_na=False), writer, out.getvalue()


def test_each_distinct_input_is_encoded_once(setup):
    cli, trained, files, _ = setup
    table, writer, printed = _run(setup, "once", batch_size=2)
    dataset = variant_pairs(cli.model, cli.datamodule, VariantWriter(window=sg.WINDOW), *files)
    items = [dataset[i] for i in range(len(dataset))]
    assert len(items) >= 5
    for modality in ("dna", "rna", "protein"):
        distinct = {i[side]["sequences"][modality] for i in items for side in ("ref", "alt")} - {None}
        assert writer.reuse.passes[modality] == len(distinct), modality  # never one twice, across batches
        assert writer.reuse.passes[modality] < 2 * len(items)  # what scoring ref and alt of each pair cost
    refs = {tuple(sorted(i["ref"]["sequences"].items(), key=str)) for i in items}
    assert len(refs) < len(items) and len(writer.reuse.references) == len(refs)  # a reference per transcript
    unchanged_protein = [i for i in items if i["ref"]["sequences"]["protein"] == i["alt"]["sequences"]["protein"]]
    assert unchanged_protein  # a synonymous or intronic variant: its protein is the reference's
    assert "backbone passes per pair: dna " in printed and "(each transcript's reference once" in printed
    import json

    summary = json.loads((setup[3] / "once_summary.json").read_text())
    assert summary["pairs_scored"] == len(items) and summary["rows"] == len(table)
    assert summary["backbone_passes_per_pair"] == pytest.approx(writer.reuse.per_pair())


def test_predictions_equal_a_whole_batch_of_reference_and_alternate_records(setup):
    cli, trained, files, _ = setup
    table, _, _ = _run(setup, "equal", batch_size=1)  # every pair in its own batch: everything reused across
    task = cli.model
    task.load_state_dict(torch.load(trained, weights_only=True, map_location="cpu")["state_dict"])
    task.eval()
    dataset = variant_pairs(task, cli.datamodule, VariantWriter(window=sg.WINDOW), *files)
    items = [dataset[i] for i in range(len(dataset))]
    with torch.no_grad():
        batch = MultiModalCollate(task.model.tokenizers())([i["ref"] for i in items] + [i["alt"] for i in items])
        preds = task(batch["inputs"], batch["present"]).numpy()
    n = len(items)
    for k, item in enumerate(items):
        rows = table[(table["variant"] == item["row"]["variant"]) &
                     (table["transcript_id"] == item["row"]["transcript_id"])]  # fmt: skip
        np.testing.assert_allclose(rows["ref_prediction"], preds[k], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(rows["difference"], preds[n + k] - preds[k], rtol=1e-4, atol=1e-6)
    same, _, _ = _run(setup, "batched", batch_size=4)
    pd.testing.assert_frame_equal(table.drop(columns=["ref_prediction", "alt_prediction", "difference"]),
                                  same.drop(columns=["ref_prediction", "alt_prediction", "difference"]))
    np.testing.assert_allclose(table["difference"], same["difference"], rtol=1e-4, atol=1e-6)


def test_an_input_the_backbone_refuses_skips_its_pair_and_the_run_goes_on(setup, monkeypatch):
    cli, _, files, _ = setup
    dataset = variant_pairs(cli.model, cli.datamodule, VariantWriter(window=sg.WINDOW), *files)
    items = [dataset[i] for i in range(len(dataset))]
    refused = next(i for i in items if i["row"]["vcf_id"] == "mis_plus" and i["row"]["protein_change"])
    too_long = refused["alt"]["sequences"]["protein"]
    hit = {(i["row"]["vcf_id"], i["row"]["transcript_id"]) for i in items
           if too_long in (i["ref"]["sequences"]["protein"], i["alt"]["sequences"]["protein"])}  # fmt: skip
    tokenizer = cli.model.model.tokenizers()["protein"]
    validate = type(tokenizer).validate

    def shorter(self, sequence: str) -> None:  # as if the backbone read fewer residues than this protein has
        if sequence == too_long:
            raise InvalidSequenceError(f"{len(sequence)} residues, over the 78 this backbone reads", limit=78)
        validate(self, sequence)

    monkeypatch.setattr(type(tokenizer), "validate", shorter)
    table, writer, printed = _run(setup, "skipped", batch_size=2)
    assert sorted((s["variant"], s["transcript_id"], s["modality"]) for s in writer.skipped) == sorted(
        (i["row"]["variant"], i["row"]["transcript_id"], "protein") for i in items
        if (i["row"]["vcf_id"], i["row"]["transcript_id"]) in hit)  # fmt: skip
    assert "pairs skipped, an input the backbone refuses" in printed and "over the 78 this backbone reads" in printed
    scored = set(zip(table["vcf_id"], table["transcript_id"], strict=True))
    assert not scored & hit and len(scored) == len(items) - len(hit) > 0


def test_the_reuse_budget_drops_the_least_recently_used():
    reuse = Reuse(budget_mb=1 / 2**20 * 100)  # 100 bytes
    for i in range(5):
        reuse._keep(("rna", str(i)), (torch.zeros(2, 4), torch.ones(2, dtype=torch.bool)))  # 34 bytes each
    assert list(reuse.features) == [("rna", "3"), ("rna", "4")] and reuse.bytes == 68  # two fit in 100 bytes


def test_the_collate_tokenizes_each_distinct_sequence_once():
    from mmfuse.backbones import ESM2

    tokenizer = ESM2("tiny").tokenizer
    calls = []

    def counting(sequences):
        calls.append(list(sequences))
        return tokenizer(sequences)

    collate = VariantCollate({"protein": counting})
    collate.tokenizers["protein"].validate = tokenizer.validate  # type: ignore[attr-defined]
    item = {"row": {"variant": "v", "transcript_id": "t"}, "ref": {"sequences": {"protein": "MKV"}},
            "alt": {"sequences": {"protein": "MKV"}}}  # fmt: skip
    other = {**item, "alt": {"sequences": {"protein": "MKL"}}}
    batch = collate([item, other])
    assert calls == [["MKV", "MKL"]]
    assert batch["modalities"]["protein"]["ref"] == [0, 0] and batch["modalities"]["protein"]["alt"] == [0, 1]
    assert batch["ref_keys"][0] == batch["ref_keys"][1]
