"""``mmfuse score-variants`` on the small genome of tests/helpers/small_genome.py: output, values, counts,
atomicity and refusals (the consequences themselves: tests/data/test_variants.py)."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from mmfuse.analysis.variants import OUTPUT_COLUMNS, VariantWriter, score_variants, variant_pairs
from mmfuse.cli import MmfuseCLI, main
from mmfuse.data.collate import MultiModalCollate
from mmfuse.errors import MmfuseError
from tests.helpers import small_genome as sg
from tests.helpers.in_process import QUICKSTART, SMALL, bare_argv, mmfuse_stdout

# scored with the RNA (300 nt) and protein (79 aa) whole, the DNA window's middle 256 bp (the checkpoint is
# conftest's `trained`, of the quickstart on 12 sample genes)
SMALL = [*SMALL, "--data.init_args.lengths.max={dna: 256, rna: 320, protein: 128}"]
RECORDS = {
    "syn+": sg.snv("+", 47, "A", "syn_plus"), "mis+": sg.snv("+", 61, "G", "mis_plus"),
    "syn-": sg.snv("-", 47, "A", "syn_minus"), "mis-": sg.snv("-", 61, "G", "mis_minus"),
    "intron+": sg.genome_snv(1200)[0], "fs-": sg.deletion("-", 90),
    "outside": sg.genome_snv(1800)[0], "chr2": "chr2\t5\t.\tA\tG\t.\tPASS\t.",
    "wrong-ref": f"chr1\t1201\t.\t{sg.genome_snv(1200)[1]}\tA\t.\tPASS\t.",
}  # fmt: skip


@pytest.fixture(scope="module")
def genome(tmp_path_factory) -> tuple[Path, Path, Path]:
    return sg.write_inputs(tmp_path_factory.mktemp("small-genome"), list(RECORDS.values()))


@pytest.fixture(scope="module")
def cli(tmp_path_factory) -> MmfuseCLI:
    """The quickstart's task, data module and trainer, built as the command builds them (nothing run)."""
    root = tmp_path_factory.mktemp("variant-cli")
    with bare_argv():
        built = MmfuseCLI(["--config", str(QUICKSTART), *SMALL, f"--trainer.logger.init_args.save_dir={root}",
                           f"--trainer.default_root_dir={root}"], run=False)  # fmt: skip
    return built


def _score(cli: MmfuseCLI, trained: Path, vcf: Path | str, fasta: Path | str, annotation: Path | str,
           **options) -> str:  # fmt: skip
    writer = VariantWriter(**{"window": sg.WINDOW, **options})
    cli.trainer.callbacks[:] = [c for c in cli.trainer.callbacks if not isinstance(c, VariantWriter)] + [writer]
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        score_variants(cli.trainer, cli.model, cli.datamodule, str(trained), str(vcf), str(fasta), str(annotation))
    return out.getvalue()


@pytest.fixture(scope="module")
def scored(trained, genome, tmp_path_factory) -> tuple[Path, str]:
    """The one end-to-end run of the command: its output file and what it printed."""
    fasta, gtf, vcf = genome
    out = tmp_path_factory.mktemp("variant-effects") / "effects.csv"
    printed = mmfuse_stdout("score-variants", "--config", str(QUICKSTART), *SMALL, "--ckpt_path", str(trained),
                      "--vcf", str(vcf), "--fasta", str(fasta), "--annotation", str(gtf), "--variants.window=600",
                      f"--variants.output={out}", f"--trainer.logger.init_args.save_dir={out.parent}")  # fmt: skip
    return out, printed


def test_score_variants_writes_each_pair_and_target(scored):
    out, printed = scored
    table = pd.read_csv(out, keep_default_na=False)
    assert tuple(table.columns) == OUTPUT_COLUMNS
    pairs = table.drop_duplicates(["variant", "transcript_id"]).set_index(["vcf_id", "transcript_id"])
    # 6 variants scored; those of GPLUS (exon 1, intron 1) in both of its isoforms: 9 pairs x 30 tissues
    assert len(pairs) == 9 and len(table) == 9 * 30 and table["target"].nunique() == 30
    assert f"Wrote 270 variant effects (9 variant-transcript pairs x 30 targets) to {out}" in printed
    for line in ("variants scored: 6, in 9 variant-transcript pairs",
                 "skipped, on a contig the FASTA lacks: 1\n  chr2: 1",
                 "skipped, REF differs from the genome: 1 (e.g. chr1:1201 REF",
                 "in no transcript's DNA window or span: 1", "past a contig end (padded with N): 3",
                 "leaves unchanged (outside the DNA window or cropped away): 2"):  # fmt: skip
        assert line in printed
    expected = {("mis_plus", "TPLUS1"): ("missense", "dna,rna,protein", "p.K11R"),
                ("mis_plus", "TPLUS2"): ("noncoding_exon", "dna,rna", ""),
                ("syn_minus", "TMINUS1"): ("synonymous", "dna,rna", "p.L6="),
                ("mis_minus", "TMINUS1"): ("missense", "dna,rna,protein", "p.K11R")}  # fmt: skip
    for key, fields in expected.items():
        assert tuple(pairs.loc[key, ["consequence", "changed", "protein_change"]]) == fields
    intron = table[table["variant"] == f"chr1:1201:{sg.genome_sequence()[1200]}>{sg.genome_snv(1200)[1]}"]
    assert set(intron["consequence"]) == {"intronic"} and set(intron["changed"]) == {"none"}  # cropped out of the DNA
    assert np.allclose(intron["difference"], 0.0, atol=1e-6)
    assert np.allclose(table["difference"], table["alt_prediction"] - table["ref_prediction"], atol=1e-5)
    assert not list(out.parent.glob(".*partial"))


def test_the_difference_equals_the_model_run_by_hand(scored, cli, trained, genome):
    fasta, gtf, vcf = genome
    table = pd.read_csv(scored[0], keep_default_na=False)
    writer = VariantWriter(window=sg.WINDOW)
    dataset = variant_pairs(cli.model, cli.datamodule, writer, str(vcf), str(fasta), str(gtf))
    task = cli.model
    task.load_state_dict(torch.load(trained, weights_only=True, map_location="cpu")["state_dict"])
    task.eval()
    collate = MultiModalCollate(task.model.tokenizers())
    assert len(dataset) == 9
    for i in (0, 3, 8):
        item = dataset[i]
        row = item["row"]
        with torch.no_grad():
            batch = collate([item["ref"], item["alt"]])
            preds = task(batch["inputs"], batch["present"]).numpy()
        mine = table[(table["variant"] == row["variant"]) & (table["transcript_id"] == row["transcript_id"])]
        assert mine["target"].tolist() == list(task.target_names)
        np.testing.assert_allclose(mine["ref_prediction"], preds[0], rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(mine["difference"], preds[1] - preds[0], rtol=1e-4, atol=1e-5)
        changed = row["changed"].split(",")
        for modality in ("dna", "rna", "protein"):  # what is not listed as changed is the same input
            same = item["ref"]["sequences"][modality] == item["alt"]["sequences"][modality]
            assert same == (modality not in changed)


def test_a_failing_run_leaves_the_earlier_output_and_no_partial_file(cli, trained, genome, tmp_path, monkeypatch):
    fasta, gtf, vcf = genome
    out = tmp_path / "effects.csv"
    out.write_text("an earlier run's file")
    original = VariantWriter._frame
    calls = []

    def failing(self, pl_module, prediction):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("the machine went away")
        return original(self, pl_module, prediction)

    monkeypatch.setattr(VariantWriter, "_frame", failing)
    with pytest.raises(RuntimeError, match="went away"):
        _score(cli, trained, vcf, fasta, gtf, output=str(out), batch_size=2)
    assert out.read_text() == "an earlier run's file" and [p.name for p in tmp_path.iterdir()] == ["effects.csv"]


def _bad(cli, trained, genome, tmp_path, case: str) -> tuple[list, dict]:
    fasta, gtf, vcf = genome
    table = tmp_path / "table.vcf"
    table.write_text("transcript_id,DNA\nT1,ACGT\n")
    nothing = sg.write_vcf(tmp_path / "nothing.vcf", [RECORDS["chr2"], RECORDS["outside"]])
    empty = tmp_path / "fasta.gtf"
    empty.write_text(fasta.read_text())  # a FASTA by another name: no feature line
    tsv = sg.write_vcf(tmp_path / "variants.tsv", [RECORDS["mis+"]])  # a VCF by another name
    return {
        "missing-vcf": ([tmp_path / "no.vcf", fasta, gtf], {}),
        "not-a-vcf": ([table, fasta, gtf], {}),
        "missing-fasta": ([vcf, tmp_path / "no.fa", gtf], {}),
        "missing-gtf": ([vcf, fasta, tmp_path / "no.gtf"], {}),
        "empty-gtf": ([vcf, fasta, empty], {}),
        "output-is-input": ([tsv, fasta, gtf], {"output": str(tsv)}),
        "suffix": ([vcf, fasta, gtf], {"output": str(tmp_path / "effects.xlsx")}),
        "nothing-scored": ([nothing, fasta, gtf], {"output": str(tmp_path / "effects.csv")}),
        "no-window": ([vcf, fasta, gtf], {"window": None}),
    }[case]


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("missing-vcf", r"^--vcf '.*no.vcf' does not exist; give the VCF of the variants \(.vcf, .vcf.gz or .bcf\)$"),
        ("not-a-vcf", r"^--vcf '.*table.vcf' is not a VCF file htslib can read .*'#CHROM POS ID REF ALT"),
        ("missing-fasta", r"^--fasta: genome FASTA '.*no.fa' does not exist"),
        ("missing-gtf", r"^--annotation: annotation '.*no.gtf' does not exist$"),
        ("empty-gtf", r"^--annotation '.*fasta.gtf' holds no transcript with exons; give the GTF or GFF3"),
        ("output-is-input", r"^--variants.output '.*variants.tsv' is the input '.*variants.tsv'; write the effects"),
        ("suffix", r"^--variants.output '.*effects.xlsx' must end in .csv, .tsv, .parquet$"),
        ("nothing-scored", r"^no variant of .*nothing.vcf was scored, so nothing was written: no variant lies in a "
                           r"transcript .* \(.*on a contig the FASTA lacks: 1  chr2: 1;"),
        ("no-window", r"^the model reads DNA \(dna\) but the length of its DNA window is not known: .* "
                      r"--variants.window .*\(the sample data: 1024\)$"),
    ],
)  # fmt: skip
def test_a_bad_input_gets_one_message(cli, trained, genome, tmp_path, case, message):
    paths, options = _bad(cli, trained, genome, tmp_path, case)
    with pytest.raises(MmfuseError, match=message):
        _score(cli, trained, *paths, **options)
    assert not list(tmp_path.glob("effects*")) and not list(tmp_path.glob(".*partial"))


def test_the_command_prints_a_bad_input_in_one_line(trained, genome, tmp_path, capsys):
    fasta, gtf, _ = genome
    with bare_argv(), pytest.raises(SystemExit) as exit_:
        main(["score-variants", "--config", str(QUICKSTART), *SMALL, "--ckpt_path", str(trained), "--fasta",
              str(fasta), "--annotation", str(gtf), f"--trainer.logger.init_args.save_dir={tmp_path}"])  # fmt: skip
    err = capsys.readouterr().err
    assert exit_.value.code == 1 and len(err.splitlines()) == 1
    assert err.startswith("mmfuse: error: mmfuse score-variants needs --vcf: --vcf VARIANTS.vcf --fasta GENOME.fa")


def test_an_exported_directory_scores_as_its_checkpoint(cli, trained, genome, tmp_path):
    """``--ckpt_path DIR`` of ``mmfuse export``'s directory: the same rows as the checkpoint it was written from."""
    from mmfuse.cli import main

    fasta, gtf, vcf = genome
    export = tmp_path / "export"
    with bare_argv():
        main(["export", "--config", str(QUICKSTART), *SMALL, "--ckpt_path", str(trained), "--output", str(export)])
    rows = []
    for model in (trained, export):
        out = tmp_path / f"{model.name}.csv"
        _score(cli, model, vcf, fasta, gtf, output=str(out))
        rows.append(pd.read_csv(out))
    pd.testing.assert_frame_equal(rows[0], rows[1])
