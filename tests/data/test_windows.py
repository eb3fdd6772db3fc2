"""DNA windows cut from a genome when records are read: checked against pyfaidx slices reverse-complemented by
Biopython, on both strands, at contig ends, with contig names spelt either way; bad coordinates named."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyfaidx
import pytest
from Bio.Seq import Seq

from mmfuse.data import DataError, IsoformExpression
from mmfuse.data.genomics.tissues import GTEX_TISSUES
from mmfuse.data.genomics.windows import GenomeWindows, reverse_complement

WINDOW = 40


@pytest.fixture
def genome(tmp_path):
    """A FASTA with soft-masked runs: chr1 (300 bp), chr2 (90 bp) and MT (50 bp)."""
    rng = np.random.default_rng(3)
    contigs = {}
    for name, length in (("chr1", 300), ("chr2", 90), ("MT", 50)):
        letters = rng.choice(list("ACGT"), length)
        letters[20:35] = np.char.lower(letters[20:35])  # soft-masked repeat
        contigs[name] = "".join(letters)
    path = tmp_path / "genome.fa"
    path.write_text("".join(f">{n}\n" + "\n".join(s[i : i + 60] for i in range(0, len(s), 60)) + "\n"
                            for n, s in contigs.items()))  # fmt: skip
    return path, contigs


def _table(rows, tmp_path, name="t.csv"):
    """A GTEx_final.csv-like table: coordinates, RNA, protein, the 30 tissues."""
    frame = pd.DataFrame(rows, columns=["transcript_id_gtex", "chr", "start", "end", "strand"])
    frame.insert(1, "gene_id_gtex", [f"G{i}" for i in range(len(frame))])
    frame.insert(2, "split", "train")
    frame["RNA"], frame["Protein"] = "ACGUACGU", "MKT"
    for i, tissue in enumerate(GTEX_TISSUES):
        frame[tissue] = float(i)
    path = tmp_path / name
    frame.to_csv(path, index=False)
    return path


def _expected(fasta, contig, start, end, strand):
    """The window from pyfaidx and Biopython alone: TSS (0-based) at WINDOW // 2, N past the contig's ends."""
    record = pyfaidx.Fasta(str(fasta))[contig]
    tss = start - 1 if strand == "+" else end - 1
    half = WINDOW // 2
    first = tss - half if strand == "+" else tss - (WINDOW - half - 1)
    letters = [str(record[p : p + 1]).upper() if 0 <= p < len(record) else "N" for p in range(first, first + WINDOW)]
    window = "".join(letters)
    return str(Seq(window).reverse_complement()) if strand == "-" else window


def _windows(path, fasta, **options):
    dm = IsoformExpression(
        source={"path": str(path), "genome": GenomeWindows(str(fasta), window=WINDOW, **options)},
        columns="isoformer", split={"val_fraction": 0.0},
    )  # fmt: skip
    dm.setup("fit")
    return dm, {r["id"]: r["sequences"]["dna"] for r in dm._splits["train"]}


def test_windows_match_pyfaidx_and_biopython_on_both_strands_and_at_contig_ends(genome, tmp_path):
    fasta, contigs = genome
    rows = [("plus", "chr1", 100, 180, "+"), ("minus", "chr1", 100, 180, "-"),
            ("plus_start", "chr1", 5, 50, "+"), ("minus_start", "chr1", 1, 10, "-"),
            ("plus_end", "chr2", 85, 90, "+"), ("minus_end", "chr2", 30, 88, "-"),
            ("masked", "chr1", 28, 60, "+"), ("mito", "MT", 10, 40, "-")]  # fmt: skip
    dm, windows = _windows(_table(rows, tmp_path), fasta)
    for rid, contig, start, end, strand in rows:
        assert windows[rid] == _expected(fasta, contig, start, end, strand), rid
        assert len(windows[rid]) == WINDOW and set(windows[rid]) <= set("ACGTN")
    assert windows["plus_start"].startswith("N" * 16) and windows["minus_end"].startswith("N")
    assert windows["plus"][WINDOW // 2] == contigs["chr1"][99].upper()  # the TSS at index WINDOW // 2
    assert dm.padded_counts == {"dna": 5}  # plus_start, minus_start, plus_end, minus_end and mito (50 bp)


def test_contig_names_match_with_or_without_chr(genome, tmp_path):
    fasta, _ = genome
    rows = [("a", "1", 100, 180, "+"), ("b", "chrMT", 10, 40, "-"), ("c", "chrM", 10, 40, "-"), ("d", "M", 10, 40, "-")]
    _, windows = _windows(_table(rows, tmp_path), fasta)
    assert windows["a"] == _expected(fasta, "chr1", 100, 180, "+")
    assert windows["b"] == windows["c"] == windows["d"] == _expected(fasta, "MT", 10, 40, "-")


@pytest.mark.parametrize(("row", "message"), [
    (("bad", "chr7", 10, 20, "+"), r"record 'bad' of .* is on contig 'chr7', which .*genome.fa does not hold "
                                   r"\(looked for 'chr7' or '7'; its contigs: chr1, chr2, MT\)"),
    (("bad", "chr1", 50, 20, "+"), r"1 record\(s\) .* have start > end .*'bad': start 50, end 20\).*1-based"),
    (("bad", "chr1", 10, 20, "."), r"1 record\(s\) .* strand other than '\+' or '-' in column 'strand' .*'bad': '\.'"),
    (("bad", "chr1", "ten", 20, "+"), r"1 record\(s\) .* missing or non-integer 'start' \(e.g. 'bad': 'ten'\)"),
    (("bad", "chr2", 95, 99, "+"), r"start past the end of their contig .*'bad': TSS 95 on chr2, 90 bp.*same assembly"),
    (("bad", "chr1", 0, 20, "+"), r"start below 1 .*'bad'"),
])  # fmt: skip
def test_bad_coordinates_are_named_before_training(genome, tmp_path, row, message):
    fasta, _ = genome
    path = _table([("good", "chr1", 100, 180, "+"), row], tmp_path)
    with pytest.raises(DataError, match=message):
        _windows(path, fasta)


def test_iupac_codes_read_as_n_and_other_letters_name_the_record(tmp_path):
    fasta = tmp_path / "g.fa"
    body = "ACGT" * 10
    fasta.write_text(f">chr1\n{body}RYKM{body}\n>chr2\n{body}*{body}\n")
    path = _table([("iupac", "chr1", 43, 60, "+")], tmp_path)
    _, windows = _windows(path, fasta)
    assert windows["iupac"] == ("ACGT" * 10 + "NNNN" + "ACGT" * 10)[43 - 1 - 20 : 43 - 1 + 20]
    path = _table([("star", "chr2", 41, 60, "+")], tmp_path, "s.csv")
    dm = IsoformExpression(
        source={"path": str(path), "genome": GenomeWindows(str(fasta), window=WINDOW)}, columns="isoformer",
        split={"val_fraction": 0.0},
    )  # fmt: skip
    dm.setup("fit")
    with pytest.raises(DataError, match=r"record 'star': the genome holds '\*' at chr2:41 \(1-based\)"):
        dm._splits["train"][0]


def test_zero_based_coordinates_and_a_tss_column(genome, tmp_path):
    fasta, _ = genome
    bed = _table([("plus", "chr1", 99, 180, "+"), ("minus", "chr1", 99, 180, "-")], tmp_path)
    _, windows = _windows(bed, fasta, one_based=False)
    assert windows["plus"] == _expected(fasta, "chr1", 100, 180, "+")
    assert windows["minus"] == _expected(fasta, "chr1", 100, 180, "-")
    table = pd.read_csv(bed).assign(tss=[99, 179])
    table.to_csv(tmp_path / "tss.csv", index=False)
    _, by_tss = _windows(tmp_path / "tss.csv", fasta, tss_column="tss")
    assert by_tss == windows


def test_genome_as_a_path_uses_the_preset_columns_and_the_window_default(genome, tmp_path):
    fasta, _ = genome
    path = _table([("a", "chr1", 100, 180, "+")], tmp_path)
    dm = IsoformExpression(source={"path": str(path), "genome": str(fasta)}, columns="isoformer")
    assert dm.genome_windows == GenomeWindows(str(fasta), window=196_608) and dm.served == ["rna", "protein", "dna"]


def test_a_modality_read_from_a_column_and_the_genome_is_refused(genome):
    fasta, _ = genome
    with pytest.raises(Exception, match=r"dna is both read from column 'DNA' and cut from the genome"):
        IsoformExpression(source={"path": "t.csv", "genome": str(fasta)}, modalities={"dna": "DNA"})


def test_reverse_complement_agrees_with_biopython():
    sequence = "".join(np.random.default_rng(0).choice(list("ACGTN"), 500))
    assert reverse_complement(sequence) == str(Seq(sequence).reverse_complement())


def test_a_bad_letter_in_the_genome_ends_the_cli_run_in_one_error_line(tmp_path, monkeypatch, capsys):
    from mmfuse.cli import main
    from mmfuse.data.samples.layouts import write_isoformer_layout

    csv, genome = write_isoformer_layout(tmp_path / "iso", num_genes=6)
    lines = genome.read_text().splitlines()
    genome.write_text("\n".join(line if line.startswith(">") else "*" + line[1:] for line in lines) + "\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("sys.argv", ["mmfuse"])
    tiny = {"dna": {"class_path": "Enformer", "init_args": {"preset": "tiny"}}}
    with pytest.raises(SystemExit) as info:
        main(["fit", "--model=RegressionTask", f"--model.backbones={json.dumps(tiny)}", "--model.adapter=ConcatFusion",
              "--data=IsoformExpression", f"--data.source.path={tmp_path / 'iso'}", "--data.columns=isoformer",
              f"--data.source.genome={json.dumps({'fasta': str(genome), 'window': 1024})}", "--data.modalities={}",
              "--data.loader.num_workers=1", "--data.split.val_fraction=0.3", "--data.loader.batch_size=64",
              "--trainer.max_steps=1",
              "--trainer.accelerator=cpu", "--trainer.logger=false", "--trainer.enable_checkpointing=false",
              "--trainer.enable_progress_bar=false"])  # fmt: skip
    assert info.value.code == 1
    errors = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert errors[-1].startswith("mmfuse: error: record 'SYNT") and "the genome holds '*' at chr" in errors[-1]
    assert not any("Traceback" in line for line in errors)


def test_an_error_reraised_from_a_worker_is_reported_as_its_own_message():
    from torch._utils import ExceptionWrapper

    from mmfuse.cli import _message

    try:
        raise DataError("record 'T1': the genome holds '*' at chr1:5 (1-based), which is not a DNA letter")
    except DataError:
        wrapped = ExceptionWrapper(where="in DataLoader worker process 0")  # what torch sends back
    with pytest.raises(DataError) as info:
        wrapped.reraise()
    assert "Original Traceback" in str(info.value)
    assert _message(info.value) == "record 'T1': the genome holds '*' at chr1:5 (1-based), which is not a DNA letter"
    assert _message(DataError("plain")) == "plain"
