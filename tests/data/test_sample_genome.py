"""``mmfuse sample-data --genome``: the sample's transcripts rebuilt from its genome and GTF, and its planted VCF."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from mmfuse.data.files.annotation import read_annotation
from mmfuse.data.files.fasta import open_genome
from mmfuse.data.files.vcf import VariantCounts, read_variants
from mmfuse.data.genomics.isoform_table import transcript_sequences
from mmfuse.data.genomics.variant_effects import touches, variant_effect
from mmfuse.data.samples.genome import PLANTED, write_sample_genome
from mmfuse.data.samples.isoform import make_sample_table

# make_sample_table(12, 3) as it was before the generator recorded its exons (CSV, sha256): recording them draws
# nothing (the default table, 1b599a4f…, was checked the same way)
TABLE_SHA256 = "10512af55adafd14e27ce282f2aea917c4c7c62691217905b057cc7a46a019de"
GENES = 60  # of the 240 of the default sample (all of which the command's tutorial uses)


@pytest.fixture(scope="module")
def sample(tmp_path_factory) -> tuple[Path, Path, Path]:
    return write_sample_genome(tmp_path_factory.mktemp("sample-genome"), GENES)


def test_the_sample_table_is_unchanged():
    assert hashlib.sha256(make_sample_table(12, 3).to_csv(index=False).encode()).hexdigest() == TABLE_SHA256


def test_every_transcript_comes_back_from_the_genome_as_the_table_has_it(sample):
    fasta, gtf, _ = sample
    genome, transcripts, table = open_genome(fasta), read_annotation(gtf), make_sample_table(GENES)
    assert sorted(transcripts) == sorted(table["transcript_id"])  # SYNT00000.1 and .2 stay two transcripts
    for row in table.itertuples():
        built = transcript_sequences(genome, transcripts[row.transcript_id], 1024)
        assert (built["DNA"], built["RNA"], built["Protein"]) == (row.DNA, row.RNA, row.Protein), row.transcript_id
        assert (built["cds_start"], built["cds_end"]) == ((row.cds_start, row.cds_end) if row.Protein else (None, None))
    strands = {t.strand for t in transcripts.values()}
    assert strands == {"+", "-"} and {t.contig for t in transcripts.values()} == {"chr1", "chr2"}


def test_the_planted_variants_do_what_they_say(sample):
    fasta, gtf, vcf = sample
    genome, transcripts = open_genome(fasta), read_annotation(gtf)
    counts = VariantCounts()
    found: dict[str, set[tuple[str, str]]] = {}
    for variant in read_variants(vcf, genome, counts):
        for t in transcripts.values():
            if t.contig == variant.contig and touches(t, variant, 1024):
                effect = variant_effect(genome, t, variant, 1024)
                changed = ",".join(m for m in effect.ref if effect.ref[m] != effect.alt[m])
                found.setdefault(variant.vcf_id, set()).add((effect.consequence, changed))
    assert set(found) | {"missing_contig", "wrong_ref", "symbolic"} == set(PLANTED)
    assert (counts.alleles, counts.symbolic, counts.ref_mismatch, dict(counts.missing_contigs)) == (
        13,
        1,
        1,
        {"chrUn": 1},
    )
    assert found["promoter_motif"] == found["promoter_motif_2"] == {("upstream", "dna")}
    assert found["intron1"] == {("intronic", "dna")} and found["utr5"] == {("5'UTR", "dna,rna")}
    assert ("3'UTR", "rna") in found["are_break"]  # the long-3'UTR isoforms (the short ones end before it)
    assert found["motif_missense"] >= {("missense", "rna,protein")}
    assert ("synonymous", "rna") in found["synonymous"] and ("stop_gained", "rna,protein") in found["nonsense"]
    assert ("frameshift", "rna,protein") in found["frameshift"]
