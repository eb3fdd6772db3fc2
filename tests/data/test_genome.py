"""`mmfuse data build-isoform` on small real inputs (see tests/data/files/README.md).

Gene model 1: pyfaidx's example ``gene.bed12`` (UCSC uc010vpx.1, DOC2B, hg19 chr17, minus strand) on
the first 40 kb of hg19 chr17, converted here to GTF and GFF3. Its BED12 fields give (0-based):
exons [6010,6168) [11205,11332) [11871,11981) [13920,13995) [22327,22407) [30897,31420), 1,073 bp
spliced; thick (coding) region [6012,31270). On the minus strand the TSS is 31419, the first exon in
transcript order is [30897,31420), so RNA[:30] = revcomp(genome[31390:31420]) =
CGGAGCGGGCAGCGGCCAAGTCAGGGCCGT (read off the FASTA), and the whole RNA equals pyfaidx's own spliced
output ``gene.bed12.fasta``. 5'UTR = 31420 - 31270 = 150 bp → cds_start 150; 3' of the thick region lie
6012 - 6010 = 2 bp → cds_end 1073 - 2 = 1071 (921 bp, 307 codons). revcomp(genome[31267:31270]) is ATG;
the last codon revcomp(genome[6012:6015]) is AAA, not a stop (the model's CDS is 3'-incomplete), so the
protein is the 307 residues MTLRRRGEKA…GYSDPYVK with no stop.

Gene model 2: kallisto's test GTF (Ensembl 90 style, GRCh38: chr5 UGT3A2 and a chr12 HOXC cluster) and
its transcript FASTA. No genome ships with it, so the test writes one: each exon's bases (cut from the
transcript FASTA by the GTF's exon lengths) placed at its coordinates, shifted to start near 0, the rest N.
"""

from __future__ import annotations

import gzip
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from Bio import SeqIO
from Bio.Seq import Seq

from mmfuse.cli import main
from mmfuse.data import DataError, IsoformExpression
from mmfuse.data.files.annotation import read_annotation
from mmfuse.data.genomics.isoform_table import build_isoform_table

FILES = Path(__file__).parent / "files"
TISSUES = {"S1": "Liver", "S2": "Liver", "S3": "Lung", "S4": "Brain"}
FIRST_30 = "CGGAGCGGGCAGCGGCCAAGTCAGGGCCGT"  # revcomp(chr17[31390:31420]), see the module docstring


def _bed12_model() -> dict:
    contig, start, end, name, _, strand, thick_start, thick_end, _, _, sizes, starts = (
        (FILES / "gene.bed12").read_text().strip().split("\t")
    )
    start = int(start)
    exons = [(start + int(o), start + int(o) + int(s)) for s, o in zip(sizes.strip(",").split(","),
             starts.strip(",").split(","), strict=True)]  # fmt: skip
    return {"contig": contig, "strand": strand, "id": name, "exons": exons, "thick": (int(thick_start), int(thick_end))}


def _cds(model: dict) -> list[tuple[int, int]]:
    lo, hi = model["thick"]
    return [(max(s, lo), min(e, hi)) for s, e in model["exons"] if max(s, lo) < min(e, hi)]


def _write_gtf(path: Path, models: list[dict]) -> Path:
    lines = ["#!genome-build GRCh37 (comment lines are skipped)"]
    for m in models:
        biotype = m.get("biotype", "protein_coding")
        attrs = f'gene_id "{m.get("gene", "G1")}"; transcript_id "{m["id"]}"; transcript_type "{biotype}";'
        for kind, intervals in (("exon", m["exons"]), ("CDS", _cds(m) if "thick" in m else [])):
            for s, e in intervals:
                lines.append(
                    f"{m['contig']}\ttest\t{kind}\t{s + 1}\t{e}\t.\t{m['strand']}\t"
                    f"{'0' if kind == 'CDS' else '.'}\t{attrs}"
                )
    path.write_text("\n".join(lines) + "\n")
    return path


def _write_gff3(path: Path, models: list[dict]) -> Path:
    lines = ["##gff-version 3"]
    for m in models:
        tid, gene = m["id"], m.get("gene", "G1")
        lo, hi = min(s for s, _ in m["exons"]), max(e for _, e in m["exons"])
        lines.append(f"{m['contig']}\ttest\tgene\t{lo + 1}\t{hi}\t.\t{m['strand']}\t.\tID=gene:{gene}")
        lines.append(f"{m['contig']}\ttest\tmRNA\t{lo + 1}\t{hi}\t.\t{m['strand']}\t.\tID=transcript:{tid};"
                     f"Parent=gene:{gene};biotype={m.get('biotype', 'protein_coding')}")  # fmt: skip
        for kind, intervals in (("exon", m["exons"]), ("CDS", _cds(m) if "thick" in m else [])):
            for s, e in intervals:
                lines.append(
                    f"{m['contig']}\ttest\t{kind}\t{s + 1}\t{e}\t.\t{m['strand']}\t"
                    f"{'0' if kind == 'CDS' else '.'}\tParent=transcript:{tid}"
                )
    path.write_text("\n".join(lines) + "\n")
    return path


def _write_expression(tmp_path: Path, rows: dict[str, list[float]]) -> tuple[Path, Path]:
    """A GTEx-style GCT (version line, dimensions, header, rows) and its sample attributes file."""
    samples = list(TISSUES)
    text = ["#1.2", f"{len(rows)}\t{len(samples)}", "\t".join(["transcript_id", "gene_id", *samples])]
    text += ["\t".join([tid, "G1", *map(str, values)]) for tid, values in rows.items()]
    gct = tmp_path / "tpm.gct.gz"
    with gzip.open(gct, "wt") as handle:
        handle.write("\n".join(text) + "\n")
    attributes = tmp_path / "samples.txt"
    attributes.write_text("SAMPID\tSMTSD\tSMTS\n" + "".join(f"{s}\tsub\t{t}\n" for s, t in TISSUES.items()))
    return gct, attributes


@pytest.fixture
def genome(tmp_path: Path) -> Path:
    path = tmp_path / "chr17.fa"  # a copy: the .fai is built beside it
    shutil.copy(FILES / "chr17.hg19.part.fa", path)
    return path


def _chr17(genome: Path) -> str:
    return "".join(genome.read_text().split("\n")[1:]).upper()


def _build(tmp_path, genome, annotation, rows, **kwargs):
    gct, attributes = _write_expression(tmp_path, rows)
    out = tmp_path / "table.parquet"
    summary = build_isoform_table(genome, annotation, gct, attributes, out, **kwargs)
    return pd.read_parquet(out), summary


def test_minus_strand_transcript_matches_hand_derived_values(tmp_path, genome):
    model = _bed12_model()
    gtf = _write_gtf(tmp_path / "a.gtf", [model])
    table, summary = _build(tmp_path, genome, gtf, {"uc010vpx.1": [1.0, 3.0, 0.0, 5.0]}, window=1000)
    row = table.iloc[0]
    chr17 = _chr17(genome)
    spliced = "".join((FILES / "gene.bed12.fasta").read_text().split("\n")[1:]).upper()
    assert row.RNA == spliced and len(row.RNA) == 1073 and row.RNA[:30] == FIRST_30
    assert row.RNA[:30] == str(Seq(chr17[31390:31420]).reverse_complement())
    # window 1000 on the minus strand: genome [31419 - 499, 31419 + 501), reverse-complemented; TSS at 500
    assert row.tss == 31419 and row.DNA == str(Seq(chr17[30920:31920]).reverse_complement())
    assert row.DNA[500:530] == FIRST_30
    assert (row.cds_start, row.cds_end, row.utr5_length, row.utr3_length) == (150, 1071, 150, 2)
    assert row.RNA[150:153] == "ATG" and row.RNA[1068:1071] == "AAA"  # 3'-incomplete CDS: no stop codon
    assert len(row.Protein) == 307 and row.Protein.startswith("MTLRRRGEKA") and row.Protein.endswith("GYSDPYVK")
    assert row.Protein == str(Seq(spliced[150:1071]).translate())
    assert row.biotype == "protein_coding" and row.strand == "-" and row.contig == "chr17"
    # Liver = mean(1, 3) = 2, Lung = 0, Brain = 5; GTEx column order
    assert list(table.columns[-3:]) == ["Brain", "Liver", "Lung"]
    np.testing.assert_allclose(row[["Brain", "Liver", "Lung"]].astype(float), np.log1p([5.0, 2.0, 0.0]), rtol=1e-6)
    assert summary.written == 1 and summary.padded == 0 and summary.noncoding == 0


def test_gff3_and_gtf_give_the_same_table(tmp_path, genome):
    models = [_bed12_model(), {"contig": "chr17", "strand": "+", "id": "NC1", "biotype": "lncRNA",
                               "exons": [(1000, 1200), (1500, 1600)]}]  # fmt: skip
    rows = {"uc010vpx.1": [1, 2, 3, 4], "NC1": [0, 0, 1, 1]}
    from_gtf, _ = _build(tmp_path, genome, _write_gtf(tmp_path / "a.gtf", models), rows, window=64)
    from_gff, summary = _build(tmp_path, genome, _write_gff3(tmp_path / "a.gff3", models), rows, window=64)
    pd.testing.assert_frame_equal(from_gtf, from_gff)
    chr17 = _chr17(genome)
    nc = from_gff.set_index("transcript_id").loc["NC1"]
    assert nc.RNA == chr17[1000:1200] + chr17[1500:1600] and nc.Protein == "" and nc.biotype == "lncRNA"
    assert pd.isna(nc.cds_start) and nc.DNA == chr17[1000 - 32 : 1000 + 32]
    assert summary.noncoding == 1


def test_cds_with_its_stop_codon_or_without_gives_the_same_end(tmp_path, genome):
    # a plus-strand ORF written here on chr17: find the first ATG…stop in frame after position 2000
    chr17 = _chr17(genome)
    start = chr17.index("ATG", 2000)
    end = start + 3 * next(
        i for i in range(1, 500) if chr17[start + 3 * i : start + 3 * i + 3] in ("TAA", "TAG", "TGA")
    )
    base = {"contig": "chr17", "strand": "+", "id": "ORF1", "exons": [(start - 20, end + 23)]}
    rows = {"ORF1": [1, 1, 1, 1]}
    with_stop, _ = _build(tmp_path, genome, _write_gtf(tmp_path / "a.gtf", [{**base, "thick": (start, end + 3)}]), rows)
    without, _ = _build(tmp_path, genome, _write_gtf(tmp_path / "b.gtf", [{**base, "thick": (start, end)}]), rows)
    for table in (with_stop, without):
        assert (table.cds_start[0], table.cds_end[0]) == (20, end + 3 - start + 20)
        assert table.Protein[0] == str(Seq(chr17[start:end]).translate()) and "*" not in table.Protein[0]


def test_versions_missing_contigs_and_padding_are_counted(tmp_path, genome):
    models = [
        {"contig": "chr17", "strand": "+", "id": "ENST00000000001", "exons": [(100, 400)]},  # window runs off 0
        {"contig": "chr1", "strand": "+", "id": "ENST00000000002.1", "exons": [(100, 400)]},  # not in the FASTA
        {"contig": "chr17", "strand": "-", "id": "ENST00000000003.4", "exons": [(5000, 5100)]},  # not in the GCT
    ]
    rows = {"ENST00000000001.7": [1, 1, 1, 1], "ENST00000000002.1": [1, 1, 1, 1], "ENST00000000009.1": [1, 1, 1, 1]}
    table, summary = _build(tmp_path, genome, _write_gtf(tmp_path / "a.gtf", models), rows, window=1000)
    assert list(table.transcript_id) == ["ENST00000000001.7"]  # matched without the version
    assert table.annotation_transcript_id[0] == "ENST00000000001"
    assert table.DNA[0] == "N" * 400 + _chr17(genome)[:600]  # TSS 100 at index 500
    assert summary.padded == 1 and dict(summary.missing_contigs) == {"chr1": 1}
    assert summary.missing_from_annotation == 1 and summary.missing_from_expression == 1
    assert any("chr1: 1" in line for line in summary.lines())


def test_malformed_annotation_line_is_named(tmp_path, genome):
    gtf = _write_gtf(tmp_path / "a.gtf", [_bed12_model()])
    lines = gtf.read_text().splitlines()
    lines[2] = lines[2].replace("\t", " ", 3)
    gtf.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=f"{gtf}:3: expected 9 tab-separated fields"):
        read_annotation(gtf)


def test_nan_tpm_names_the_line_or_is_skipped(tmp_path, genome):
    models = [_bed12_model(), {"contig": "chr17", "strand": "+", "id": "T2", "exons": [(100, 400)]}]
    gtf = _write_gtf(tmp_path / "a.gtf", models)
    rows = {"uc010vpx.1": [1, 1, 1, 1], "T2": [1, float("nan"), 1, 1]}
    with pytest.raises(DataError, match=r"tpm\.gct\.gz:5: TPM of T2 in sample S2 is nan"):
        _build(tmp_path, genome, gtf, rows)
    assert not (tmp_path / "table.parquet").exists()  # nothing half-written
    table, summary = _build(tmp_path, genome, gtf, rows, bad_values="skip")
    assert list(table.transcript_id) == ["uc010vpx.1"] and summary.bad_values_skipped == 1


def test_unreadable_index_is_a_data_error(tmp_path, genome):
    Path(f"{genome}.fai").write_text("chr17\tnot-a-number\n")
    with pytest.raises(DataError, match=r"index of .*chr17\.fa .*Delete .*\.fai"):
        _build(tmp_path, genome, _write_gtf(tmp_path / "a.gtf", [_bed12_model()]), {"uc010vpx.1": [1, 1, 1, 1]})


def _kallisto_genome(tmp_path: Path) -> tuple[Path, Path, dict[str, str]]:
    """Writes a genome holding kallisto's transcripts at their GTF coordinates (shifted), and that GTF."""
    with gzip.open(FILES / "kallisto.transcripts.fasta.gz", "rt") as handle:
        sequences = {r.id: str(r.seq) for r in SeqIO.parse(handle, "fasta")}
    transcripts = read_annotation(FILES / "kallisto.transcripts.gtf.gz")
    offsets = {c: min(t.start for t in transcripts.values() if t.contig == c) - 100 for c in ("5", "12")}
    contigs = {
        c: ["N"] * (max(t.end for t in transcripts.values() if t.contig == c) - offsets[c] + 100) for c in offsets
    }
    for t in transcripts.values():
        if t.transcript_id not in sequences:
            continue
        rna, position = sequences[t.transcript_id], 0
        for s, e in t.ordered_exons():
            piece = rna[position : position + e - s]
            position += e - s
            piece = str(Seq(piece).reverse_complement()) if t.strand == "-" else piece
            contigs[t.contig][s - offsets[t.contig] : e - offsets[t.contig]] = piece
    fasta = tmp_path / "kallisto.fa"
    fasta.write_text("".join(f">{c}\n{''.join(bases)}\n" for c, bases in contigs.items()))
    gtf = tmp_path / "kallisto.gtf"
    with gzip.open(FILES / "kallisto.transcripts.gtf.gz", "rt") as handle:
        lines = [
            line if line.startswith("#") else "\t".join(
                f[:3] + [str(int(f[3]) - offsets[f[0]]), str(int(f[4]) - offsets[f[0]])] + f[5:]
            ) for line in handle for f in [line.split("\t")]
        ]  # fmt: skip
    gtf.write_text("".join(lines))
    return fasta, gtf, sequences


def test_ensembl_gtf_rebuilds_kallistos_transcripts(tmp_path):
    fasta, gtf, sequences = _kallisto_genome(tmp_path)
    table, summary = _build(tmp_path, fasta, gtf, {tid: [1, 2, 3, 4] for tid in sequences}, window=200)
    assert summary.written == 14 and summary.missing_from_expression == 27 - 14
    table = table.set_index("transcript_id")
    for tid, rna in sequences.items():
        assert table.RNA[tid] == rna, tid  # exons joined 5'→3' on both strands
    coding = table[table.biotype == "protein_coding"]
    assert len(coding) == 13 and set(table.biotype) == {"protein_coding", "nonsense_mediated_decay"}
    for tid, row in coding.iterrows():
        # Ensembl GTF: CDS without the stop codon plus a stop_codon line; the table includes it
        assert row.RNA[row.cds_start : row.cds_start + 3] == "ATG", tid
        assert row.RNA[row.cds_end - 3 : row.cds_end] in ("TAA", "TAG", "TGA"), tid
        assert row.Protein.startswith("M") and "*" not in row.Protein, tid
        assert len(row.Protein) == (row.cds_end - row.cds_start) // 3 - 1
    # transcript_version is appended to the annotation's id; UGT3A2 (chr5, minus strand) 5'UTR is 102 bp
    assert coding.annotation_transcript_id["ENST00000282507.7"] == "ENST00000282507.7"
    assert coding.cds_start["ENST00000282507.7"] == 36066891 - 36066789


def test_output_is_read_by_isoform_expression_and_the_cli_reports(tmp_path, genome, capsys):
    models = [_bed12_model()] + [
        {"contig": "chr17", "strand": "+", "id": f"T{i}", "gene": f"G{i}", "exons": [(2000 + 300 * i, 2200 + 300 * i)]}
        for i in range(8)
    ]
    gtf = _write_gtf(tmp_path / "a.gtf", models)
    gct, attributes = _write_expression(tmp_path, {m["id"]: [1, 2, 3, 4] for m in models} | {"EXTRA": [1, 1, 1, 1]})
    out = tmp_path / "out" / "table.parquet"
    args = ["data", "build-isoform", "--fasta", str(genome), "--annotation", str(gtf), "--expression", str(gct),
            "--sample-tissues", str(attributes), "--out", str(out), "--window", "128",
            "--min-samples", "2"]  # fmt: skip
    assert main(args) == 0
    report = capsys.readouterr().out
    assert "transcripts written: 9 (8 non-coding" in report and "not the annotation: 1" in report
    data = IsoformExpression(str(out), target_columns=["Liver"], split={"val_fraction": 0.2, "test_fraction": 0.2})
    data.setup("fit")
    assert sum(len(data.split_ids(s)) for s in ("train", "val", "test")) == 9
    assert pd.read_parquet(out).columns[-1] == "Liver"  # --min-samples 2: Brain and Lung left out
    with pytest.raises(SystemExit):
        main(args[:-4] + ["--window", "0"])


def test_coordinates_table_cuts_the_same_windows_when_read(tmp_path, genome, capsys):
    models = [_bed12_model()] + [
        {"contig": "chr17", "strand": "-+"[i % 2], "id": f"T{i}", "gene": f"G{i}",
         "exons": [(2000 + 300 * i, 2200 + 300 * i)]}
        for i in range(6)
    ]
    gtf = _write_gtf(tmp_path / "a.gtf", models)
    gct, attributes = _write_expression(tmp_path, {m["id"]: [1, 2, 3, 4] for m in models})
    common = ["data", "build-isoform", "--fasta", str(genome), "--annotation", str(gtf), "--expression", str(gct),
              "--sample-tissues", str(attributes), "--window", "128"]  # fmt: skip
    assert main([*common, "--out", str(tmp_path / "full.parquet")]) == 0
    assert main([*common, "--out", str(tmp_path / "coords.parquet"), "--coordinates"]) == 0
    full, coords = pd.read_parquet(tmp_path / "full.parquet"), pd.read_parquet(tmp_path / "coords.parquet")
    assert "DNA" not in coords.columns and coords["tss"].tolist() == full["tss"].tolist()
    dm = IsoformExpression(
        source={"path": str(tmp_path / "coords.parquet"),
                "genome": {"fasta": str(genome), "window": 128, "contig_column": "contig", "tss_column": "tss"}},
        target_columns=["Liver"], modalities={"rna": "RNA"}, split={"val_fraction": 0.0, "test_fraction": 0.0},
    )
    dm.setup("fit")
    windows = {r["id"]: r["sequences"]["dna"] for r in dm._splits["train"]}
    assert windows == dict(zip(full["transcript_id"], full["DNA"], strict=True))


@pytest.mark.parametrize("write", [_write_gtf, _write_gff3], ids=["gtf", "gff3"])
@pytest.mark.parametrize(("contig", "strand"), [("chr2", "+"), ("chr1", "-")], ids=["contig", "strand"])
def test_one_id_on_two_contigs_or_strands_is_refused_by_id(tmp_path, write, contig, strand):
    first = {"id": "ENST1.1", "contig": "chr1", "strand": "+", "exons": [(10, 40)]}
    second = {**first, "contig": contig, "strand": strand, "exons": [(100, 130)], "gene": "G2"}
    annotation = write(tmp_path / ("a.gtf" if write is _write_gtf else "a.gff3"), [first, second])
    where = re.escape(f"{contig} ({strand})")
    refused = rf"transcript (transcript:)?ENST1.1 is (on|annotated on) .*{where}.*one id must"
    with pytest.raises(DataError, match=refused):
        read_annotation(annotation)


# --- bad expression files and builds that would write nothing (docs/data.md, "Building from a genome")


def _gct(tmp_path: Path, lines: list[str]) -> Path:
    path = tmp_path / "bad.gct"
    path.write_text("\n".join(lines) + "\n")
    return path


_HEADER = "transcript_id\tgene_id\tS1\tS2\tS3\tS4"


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        (["#1.2", _HEADER, "uc010vpx.1\tG1\t1\t1\t1\t1"],
         r"bad\.gct:2: expected the GCT dimensions line .* found 'transcript_id\\tgene_id"),
        (["#1.2", "1\t4", _HEADER, "uc010vpx.1\tG1\t1\tn/a?\t1\t1"],
         r"bad\.gct:4: the value of uc010vpx\.1 in sample S2 is 'n/a\?', not a number"),
        (["#1.2", "3\t4", _HEADER, "uc010vpx.1\tG1\t1\t1\t1\t1"],
         r"the dimensions line says 3 rows, the file has 1: it may be truncated"),
        (["#1.2", "1\t5", _HEADER, "uc010vpx.1\tG1\t1\t1\t1\t1"],
         r"bad\.gct:3: the header names 4 samples, the dimensions line says 5"),
        (["#1.2", "2\t4", _HEADER, "uc010vpx.1\tG1\t1\t1\t1\t1", "\tG2\t1\t1\t1\t1"],
         r"bad\.gct:5: the transcript id \(first column\) is empty"),
        (["#1.2", "1\t4", _HEADER, "uc010vpx.1\tG1\t1\t1\t1\t1\t7\t8"],
         r"bad\.gct:4: the row has more fields than the header"),
        (["#1.2", "2\t4", _HEADER, "uc010vpx.1\tG1\t1\t1\t1\t1", "T2\tG1\t1\t1\t1\t1\t7"],
         r"bad\.gct:5: 7 tab-separated fields, the header has 6"),
    ],
    ids=["no-dimensions-line", "non-numeric-value", "truncated", "header-against-dimensions", "empty-id",
         "first-row-too-long", "later-row-too-long"],
)
def test_bad_expression_files_name_the_line(tmp_path, genome, lines, message):
    gtf = _write_gtf(tmp_path / "a.gtf", [_bed12_model()])
    _, attributes = _write_expression(tmp_path, {})
    out = tmp_path / "table.parquet"
    with pytest.raises(DataError, match=message):
        build_isoform_table(genome, gtf, _gct(tmp_path, lines), attributes, out)
    assert not out.exists()


def test_samples_without_a_tissue_are_left_out_and_counted(tmp_path, genome):
    gtf = _write_gtf(tmp_path / "a.gtf", [_bed12_model()])
    _, attributes = _write_expression(tmp_path, {})
    gct = _gct(tmp_path, ["#1.2", "1\t5", f"{_HEADER}\tS9", "uc010vpx.1\tG1\t1\t1\t1\t1\t1000"])
    summary = build_isoform_table(genome, gtf, gct, attributes, tmp_path / "t.parquet")
    assert summary.samples_without_tissue == ["S9"]
    assert "expression samples left out, not in the sample attributes: 1 (e.g. S9)" in summary.lines()
    table = pd.read_parquet(tmp_path / "t.parquet")
    assert table["Liver"][0] == pytest.approx(np.log1p(1.0))  # S9's 1000 TPM went nowhere


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda m: {**m, "contig": "17"}, r"no matched transcript lies on a contig of the genome: the annotation names "
                                          r"17, the genome FASTA has chr17; .*UCSC 'chr1' against Ensembl '1'"),
        (lambda m: {**m, "id": "ENST00000000001"}, r"no transcript id of the expression file is in the annotation "
                                                   r"\(its ids look like 'ENST00000000001'"),
    ],
    ids=["contig-names", "transcript-ids"],
)
def test_a_build_that_would_write_no_transcript_says_why(tmp_path, genome, edit, message):
    gtf = _write_gtf(tmp_path / "a.gtf", [edit(_bed12_model())])
    out = tmp_path / "table.parquet"
    with pytest.raises(DataError, match=rf"no transcript written to .*table\.parquet: {message}"):
        _build(tmp_path, genome, gtf, {"uc010vpx.1": [1, 1, 1, 1]})
    assert not out.exists()


def test_the_table_is_parquet_and_must_be_named_so(tmp_path, genome, capsys):
    gtf = _write_gtf(tmp_path / "a.gtf", [_bed12_model()])
    gct, attributes = _write_expression(tmp_path, {"uc010vpx.1": [1, 1, 1, 1]})
    args = ["data", "build-isoform", "--fasta", str(genome), "--annotation", str(gtf), "--expression", str(gct),
            "--sample-tissues", str(attributes), "--out", str(tmp_path / "table.csv")]  # fmt: skip
    with pytest.raises(SystemExit) as exit:
        main(args)
    assert exit.value.code == 1
    assert "table.csv: the table is written as Parquet; name it table.parquet" in capsys.readouterr().err
    assert not (tmp_path / "table.csv").exists()


def test_an_annotation_compressed_without_gz_in_its_name_is_named(tmp_path):
    gtf = _write_gtf(tmp_path / "a.gtf", [_bed12_model()])
    gtf.write_bytes(gzip.compress(gtf.read_bytes()))
    with pytest.raises(DataError, match=r"a\.gtf is gzip-compressed but its name does not say so; rename it a\.gtf\.gz"):  # noqa: E501
        read_annotation(gtf)
