"""The bundled sample data set: form, determinism, and the documented planted signal."""

from __future__ import annotations

import hashlib
import re

import numpy as np
import pandas as pd
import torch
from Bio.Seq import Seq
from torchmetrics.functional import spearman_corrcoef

from mmfuse.data import GTEX_TISSUES
from mmfuse.data.samples.isoform import ARE, MOTIF_COPIES, PROGRAMS, PROTEIN_MOTIF, make_sample_table, planted_signal


def _digest(table: pd.DataFrame) -> str:
    return hashlib.sha256(pd.util.hash_pandas_object(table, index=True).values.tobytes()).hexdigest()


def test_same_seed_same_table_other_seed_other_table():
    assert _digest(make_sample_table(20, seed=3)) == _digest(make_sample_table(20, seed=3))
    assert _digest(make_sample_table(20, seed=3)) != _digest(make_sample_table(20, seed=4))


def test_form_follows_the_isoformer_data_set(small_table):
    t = small_table
    assert list(t.columns[-31:-1]) == list(GTEX_TISSUES)
    assert t.transcript_id.is_unique
    assert t.groupby("gene_id").size().between(2, 4).all(), "2-4 isoforms per gene"
    assert (t.DNA.str.len() == 1024).all() and t.DNA.str.fullmatch("[ACGT]+").all()
    # isoforms share the TSS, hence the DNA window
    assert (t.groupby("gene_id").DNA.nunique() == 1).all()
    targets = t[list(GTEX_TISSUES)].to_numpy()
    assert np.isfinite(targets).all() and targets.min() >= 0 and 1.0 < targets.mean() < 4.0


def test_proteins_are_translated_from_the_cds(small_table):
    coding = small_table[small_table.biotype == "protein_coding"]
    assert 0 < len(coding) < len(small_table), "some transcripts are non-coding"
    assert (small_table.Protein[small_table.biotype != "protein_coding"] == "").all()
    for row in coding.itertuples():
        cds = row.RNA[row.cds_start : row.cds_end]
        assert cds.startswith("ATG") and len(cds) % 3 == 0
        assert str(Seq(cds).translate()) == row.Protein + "*"  # Biopython, standard code
        assert len(row.RNA) - row.cds_end >= 120, "a 3'UTR follows the stop codon"


def test_planted_features_are_in_their_modality_only(small_table):
    for row in small_table.itertuples():
        promoter, utr3 = row.DNA[:512], row.RNA[row.cds_end :]
        for p, (motif, _) in enumerate(PROGRAMS.values()):
            expected = MOTIF_COPIES if p == row.program else 0
            assert promoter.count(motif) >= expected and (p != row.program or promoter.count(motif) == expected)
            assert motif not in row.RNA or p != row.program or row.RNA.count(motif) < MOTIF_COPIES
        assert utr3.count(ARE) == row.are_count
        assert (PROTEIN_MOTIF in row.Protein) == row.has_motif
        # the DNA window ends before any 3'UTR and before the cassette exon
        assert utr3[-60:] not in row.DNA
        if row.has_motif:
            start = row.Protein.index(PROTEIN_MOTIF)
            coding = row.RNA[row.cds_start + 3 * start : row.cds_start + 3 * (start + len(PROTEIN_MOTIF))]
            assert coding not in row.DNA


def test_each_modality_explains_part_of_the_targets():
    t = make_sample_table(240, seed=0)
    y = torch.tensor(t[list(GTEX_TISSUES)].to_numpy(), dtype=torch.float64)

    def spearman(signal: np.ndarray) -> float:
        noise = 1e-9 * np.random.default_rng(0).standard_normal(signal.shape)  # break ties
        return spearman_corrcoef(torch.tensor(signal + noise), y).mean().item()

    none = np.full(len(t), -1)
    zeros = np.zeros(len(t))
    full = spearman(planted_signal(t.program, t.are_count, t.has_motif))
    dna = spearman(planted_signal(t.program, zeros, zeros))
    rna = spearman(planted_signal(none, t.are_count, zeros))
    protein = spearman(planted_signal(none, zeros, t.has_motif))
    # the noiseless signal is the best any model can do from sequence: ~0.72 (IsoFormer reports 0.72)
    assert 0.65 < full < 0.8
    assert min(dna, rna, protein) > 0.08 and full > max(dna, rna, protein) + 0.15
    assert re.fullmatch("[ACDEFGHIKLMNPQRSTVWY]+", PROTEIN_MOTIF)


def test_noncoding_transcripts_have_no_protein_and_no_protein_signal():
    t = make_sample_table(120, seed=0)
    noncoding = t.biotype == "processed_transcript"
    assert 0.05 < noncoding.mean() < 0.15
    assert (t.Protein[noncoding] == "").all() and not t.has_motif[noncoding].any()
    # the fraction is drawn from its own stream: the coding transcripts do not change with it
    coding_only = make_sample_table(120, seed=0, noncoding_fraction=0.0)
    assert (coding_only.RNA == t.RNA).all() and (coding_only.Protein[~noncoding] == t.Protein[~noncoding]).all()


def test_expression_levels_are_tertiles_of_mean_expression(small_table):
    mean = small_table[list(GTEX_TISSUES)].mean(axis=1)
    counts = small_table.expression_level.value_counts()
    assert set(counts.index) == {"low", "medium", "high"} and counts.max() - counts.min() <= 2
    by_level = mean.groupby(small_table.expression_level)
    assert by_level.max()["low"] <= by_level.min()["medium"] and by_level.max()["medium"] <= by_level.min()["high"]
