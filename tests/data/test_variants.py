"""Variants applied to a small genome (tests/helpers/small_genome.py): consequences, inputs, VCF policies."""

from __future__ import annotations

import gzip
from pathlib import Path

import pysam
import pytest
from Bio.Seq import Seq

from mmfuse.data.errors import DataError
from mmfuse.data.files.annotation import Transcript, read_annotation
from mmfuse.data.files.fasta import open_genome
from mmfuse.data.files.vcf import Variant, VariantCounts, read_variants
from mmfuse.data.genomics.isoform_table import transcript_sequences
from mmfuse.data.genomics.variant_effects import buildable, touches, variant_effect
from tests.helpers import small_genome as sg

TRANSCRIPT = {"+": "TPLUS1", "-": "TMINUS1"}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> tuple[object, dict[str, Transcript], Path]:
    directory = tmp_path_factory.mktemp("small-genome")
    fasta, gtf, _ = sg.write_inputs(directory)
    return open_genome(fasta), read_annotation(gtf), directory


def _effect(inputs, strand: str, line: str):
    genome, transcripts, directory = inputs
    counts = VariantCounts()
    (variant,) = read_variants(sg.write_vcf(directory / "one.vcf", [line]), genome, counts)
    transcript = transcripts[TRANSCRIPT[strand]]
    assert touches(transcript, variant, sg.WINDOW) and buildable(transcript, variant)
    return variant_effect(genome, transcript, variant, sg.WINDOW)


def _changed(effect) -> list[str]:
    return [m for m in ("dna", "rna", "protein") if effect.ref[m] != effect.alt[m]]


def _base(strand: str, i: int) -> str:
    """A base other than RNA base ``i`` (not a stop-making one at the planted codons)."""
    return {"A": "C", "C": "G", "G": "T", "T": "C"}[sg.rna()[i]]


def test_the_small_genome_gives_its_transcripts(inputs):
    genome, transcripts, _ = inputs
    for strand, name in TRANSCRIPT.items():
        row = transcript_sequences(genome, transcripts[name], sg.WINDOW)
        assert row["RNA"] == sg.rna() and row["Protein"] == sg.protein() and len(row["Protein"]) == 79
        assert row["padded"] == (strand == "-")  # GMINUS's window runs past the contig's end


@pytest.mark.parametrize("strand", ["+", "-"])
def test_a_synonymous_snv_changes_the_rna_not_the_protein(inputs, strand):
    effect = _effect(inputs, strand, sg.snv(strand, 47, "A"))  # CTG -> CTA, both L
    assert (effect.consequence, effect.protein_change) == ("synonymous", "p.L6=")
    assert _changed(effect) == ["dna", "rna"]  # codon 5 lies in the DNA window too
    diffs = [i for i, (a, b) in enumerate(zip(effect.ref["rna"], effect.alt["rna"], strict=True)) if a != b]
    assert diffs == [47] and effect.alt["rna"][45:48] == "CTA"


@pytest.mark.parametrize("strand", ["+", "-"])
def test_a_missense_snv_changes_one_residue(inputs, strand):
    effect = _effect(inputs, strand, sg.snv(strand, 61, "G"))  # AAA -> AGA: K -> R
    ref, alt = effect.ref["protein"], effect.alt["protein"]
    assert len(alt) == len(ref) == 79
    assert [(i, a, b) for i, (a, b) in enumerate(zip(ref, alt, strict=True)) if a != b] == [(10, "K", "R")]
    assert (effect.consequence, effect.protein_change) == ("missense", "p.K11R")


@pytest.mark.parametrize(
    ("strand", "position", "consequence"),
    [("+", 1200, "intronic"), ("-", 2400, "intronic"), ("+", 1100, "splice_site"), ("-", 2499, "splice_site")],
)
def test_an_intronic_snv_in_the_window_changes_only_the_dna(inputs, strand, position, consequence):
    line, base = sg.genome_snv(position)
    effect = _effect(inputs, strand, line)
    assert effect.consequence == consequence and _changed(effect) == ["dna"]  # splicing is not modelled
    assert effect.ref["rna"] == effect.alt["rna"] and effect.ref["protein"] == effect.alt["protein"]
    index = position - 700 if strand == "+" else 2899 - position  # the window's index of the base (5'->3')
    assert effect.alt["dna"][index] == (base if strand == "+" else str(Seq(base).complement()))


@pytest.mark.parametrize("strand", ["+", "-"])
def test_a_frameshift_changes_the_protein_after_it(inputs, strand):
    effect = _effect(inputs, strand, sg.deletion(strand, 90))  # RNA base 90: codon 20's first base
    ref, alt = effect.ref["protein"], effect.alt["protein"]
    assert effect.consequence == "frameshift" and effect.protein_change.startswith("p.L21")
    assert alt[:20] == ref[:20] and alt[20:] != ref[20 : 20 + len(alt) - 20]
    coding = sg.rna()[30:90] + sg.rna()[91:]
    new = str(Seq(coding[: len(coding) // 3 * 3]).translate()).split("*")[0]  # read on to the first stop
    assert alt == new and effect.protein_change == f"p.L21{new[20]}fs*{len(new) - 20 + 1}"
    assert effect.alt["rna"] == sg.rna()[:90] + sg.rna()[91:]


@pytest.mark.parametrize("strand", ["+", "-"])
def test_a_deletion_keeps_the_window_centred_on_the_tss(inputs, strand):
    effect = _effect(inputs, strand, sg.deletion(strand, 90))
    genome = sg.genome_sequence() + "N" * 200  # GMINUS's window runs 100 bp past the contig
    if strand == "+":  # deleted base 1090, downstream of the TSS: one more base comes in at the 3' end
        assert effect.alt["dna"] == genome[700:1090] + genome[1091:1301]
    else:  # deleted base 2509: the TSS moves to 2598 in the alternate genome, the window starts one base earlier
        assert effect.alt["dna"] == str(Seq(genome[2299:2509] + genome[2510:2900]).reverse_complement())
    assert len(effect.alt["dna"]) == sg.WINDOW


def test_an_upstream_insertion_pushes_the_far_end_of_the_window_out(inputs):
    genome = sg.genome_sequence()
    effect = _effect(inputs, "+", f"chr1\t900\t.\t{genome[899]}\t{genome[899]}AAA\t.\tPASS\t.")
    assert effect.consequence == "upstream" and _changed(effect) == ["dna"]
    assert effect.alt["dna"] == genome[703:900] + "AAA" + genome[900:1300]


@pytest.mark.parametrize("strand", ["+", "-"])
@pytest.mark.parametrize(
    ("make", "consequence", "change", "changed"),
    [
        (lambda s: sg.snv(s, 152, "A"), "stop_gained", "p.W41*", ["rna", "protein"]),
        (lambda s: sg.snv(s, 267, "C"), "stop_lost", None, ["rna", "protein"]),
        (lambda s: sg.snv(s, 31, "C"), "start_lost", "p.M1?", ["dna", "rna", "protein"]),
        (lambda s: sg.snv(s, 10, _base(s, 10)), "5'UTR", "", ["dna", "rna"]),
        (lambda s: sg.snv(s, 285, _base(s, 285)), "3'UTR", "", ["rna"]),
        (lambda s: sg.deletion(s, 120, 3), "inframe_deletion", None, ["rna", "protein"]),
    ],
)  # fmt: skip
def test_consequence_classes(inputs, strand, make, consequence, change, changed):
    effect = _effect(inputs, strand, make(strand))
    assert effect.consequence == consequence
    assert _changed(effect) == changed
    if change is not None:
        assert effect.protein_change == change
    if consequence == "stop_lost":  # reads on into the 3'UTR: the residues of the old stop codon and after it
        new = str(Seq(sg.rna()[30:267] + "CAA" + sg.rna()[270:]).translate())
        assert effect.alt["protein"] == new.split("*")[0] and len(effect.alt["protein"]) > 79
    if consequence == "start_lost":
        assert effect.alt["protein"] is None  # no protein: the modality is absent
    if consequence == "inframe_deletion":
        ref = sg.protein()
        assert effect.alt["protein"] == ref[:30] + ref[31:]
        assert effect.protein_change == f"p.{ref[30]}31del"


def test_an_exonic_snv_of_two_isoforms_has_a_class_per_transcript(inputs):
    genome, transcripts, directory = inputs
    (variant,) = read_variants(sg.write_vcf(directory / "two.vcf", [sg.snv("+", 61, "G")]), genome, VariantCounts())
    found = {t.transcript_id: variant_effect(genome, t, variant, sg.WINDOW).consequence
             for t in transcripts.values() if touches(t, variant, sg.WINDOW)}  # fmt: skip
    assert found == {"TPLUS1": "missense", "TPLUS2": "noncoding_exon"}


def test_a_deletion_of_a_whole_exon_cannot_be_built():
    transcript = Transcript("T", "G", "chr1", "+", exons=[(10, 20)])
    assert not buildable(transcript, Variant("chr1", 8, "C" + "G" * 14, "C", contig="chr1"))  # deletes 8..21
    assert buildable(transcript, Variant("chr1", 12, "CG", "C", contig="chr1"))


def test_vcf_alleles_are_split_and_the_policies_counted(inputs):
    genome, _, directory = inputs
    sequence = sg.genome_sequence()
    ref = sequence[1199]
    other = [b for b in "ACGT" if b != ref]
    records = [
        f"chr1\t1200\trs1\t{ref}\t{other[0]},{other[1]},<DEL>,*\t.\tq10\t.",  # 2 alleles kept, 2 symbolic
        f"1\t1201\t.\t{sequence[1200]}\t{'ACGT'.replace(sequence[1200], '')[0]}\t.\tPASS\t.",  # '1' is chr1
        "chr2\t5\t.\tA\tG\t.\tPASS\t.",  # no chr2 in the FASTA
        f"chr1\t1300\t.\t{'ACGT'.replace(sequence[1299], '')[0]}\t{sequence[1299]}\t.\tPASS\t.",  # REF is wrong
        f"chr1\t1000\t.\t{sequence[999:1060]}\t{sequence[999]}\t.\tPASS\t.",  # a 60-bp deletion: too long
        f"chr1\t1400\t.\t{sequence[1399]}\t.\t.\tPASS\t.",  # no ALT
    ]
    counts = VariantCounts()
    variants = list(read_variants(sg.write_vcf(directory / "many.vcf", records), genome, counts))
    assert [(v.vcf_id, v.pos, v.alt, v.filter, v.contig) for v in variants] == [
        ("rs1", 1200, other[0], "q10", "chr1"), ("rs1", 1200, other[1], "q10", "chr1"),
        ("", 1201, variants[2].alt, "PASS", "chr1"),
    ]  # fmt: skip
    assert (counts.records, counts.alleles, counts.symbolic, counts.too_long, counts.ref_mismatch) == (6, 9, 3, 1, 1)
    assert dict(counts.missing_contigs) == {"chr2": 1}
    assert counts.ref_mismatch_example.startswith("chr1:1300 REF ")
    assert variants[2].chrom == "1" and variants[2].name == f"1:1201:{sequence[1200]}>{variants[2].alt}"


def test_bad_vcfs_get_one_message(inputs, tmp_path):
    genome = inputs[0]
    with pytest.raises(DataError, match=r"^--vcf '.*missing.vcf' does not exist; give the VCF of the variants"):
        list(read_variants(tmp_path / "missing.vcf", genome, VariantCounts()))
    table = tmp_path / "table.vcf"
    table.write_text("transcript_id,DNA\nT1,ACGT\n")
    with pytest.raises(DataError, match=r"^--vcf '.*table.vcf' is not a VCF file htslib can read .*##fileformat"):
        list(read_variants(table, genome, VariantCounts()))
    plain = tmp_path / "plain.vcf.gz"
    plain.write_bytes(gzip.compress(sg.write_vcf(tmp_path / "plain.vcf", [sg.snv("+", 61, "G")]).read_bytes()))
    with pytest.raises(DataError, match=r"^--vcf '.*plain.vcf.gz' is gzip- but not bgzip-compressed; recompress"):
        list(read_variants(plain, genome, VariantCounts()))
    bgzipped = tmp_path / "bgzipped.vcf.gz"
    pysam.tabix_compress(str(tmp_path / "plain.vcf"), str(bgzipped))
    assert [v.pos for v in read_variants(bgzipped, genome, VariantCounts())] == [sg.genomic("+", 61) + 1]
    broken = sg.write_vcf(tmp_path / "broken.vcf", [sg.snv("+", 61, "G"), "chr1\tx\t.\tA"])
    with pytest.raises(DataError, match=r"broken.vcf: cannot read the record after chr1:1062 .*POS \(a number\)"):
        list(read_variants(broken, genome, VariantCounts()))
