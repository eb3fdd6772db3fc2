"""TFBinding: ReMap-style peaks + genome + TF proteins → bound/unbound records (files written here by hand)."""

from __future__ import annotations

import gzip
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mmfuse.backbones import ContextEmbedding
from mmfuse.data import DataError, TFBinding
from mmfuse.data.files.bed import read_peaks
from mmfuse.data.files.fasta import protein_name, read_proteins
from mmfuse.data.genomics.intervals import IntervalIndex, sample_free
from mmfuse.data.samples.tf_binding import CONTEXT_OFFSET, SAMPLE_CONTEXT_MOTIFS, SAMPLE_MOTIFS
from mmfuse.errors import ConfigError

CONTIGS = ("chr1", "chr2", "chr8", "chr9")
LENGTH = 2_000
UNIPROT = ">sp|P55317|FOXA1_HUMAN Hepatocyte nuclear factor 3-alpha OS=Homo sapiens OX=9606 GN=FOXA1 PE=1 SV=2"
# made-up sequences under a real UniProt header and a plain one
PROTEINS = f"{UNIPROT}\nMLGTVKMEGHESNDWNSYYADTQEAYSSVPVS\nMNSGLG\n>CTCF repressor\nMEGDAVEAIVEESETFIKGKERK\n"


def _genome(seed: int = 0) -> dict[str, str]:
    rng = np.random.default_rng(seed)
    return {c: "".join(rng.choice(list("ACGT"), size=LENGTH)) for c in CONTIGS}


@pytest.fixture(scope="module")
def genome() -> dict[str, str]:
    return _genome()


def _write(tmp_path: Path, peaks: str, genome: dict[str, str], proteins: str = PROTEINS) -> dict[str, str]:
    """Writes the three inputs; returns TFBinding's file arguments."""
    (tmp_path / "genome.fa").write_text("".join(f">{c}\n{s[:1000]}\n{s[1000:]}\n" for c, s in genome.items()))
    (tmp_path / "peaks.bed").write_text(peaks)
    (tmp_path / "proteins.fasta").write_text(proteins)
    return {"peaks": str(tmp_path / "peaks.bed"), "genome": str(tmp_path / "genome.fa"),
            "proteins": str(tmp_path / "proteins.fasta")}  # fmt: skip


def _table(dm: TFBinding) -> pd.DataFrame:
    """The records as the data module reads them: the stored columns, and each record's sequences."""
    dm.setup("fit")
    table = dm.records().frame(["id", "label", "split", "tf", "context", "contig", "start", "end", "centre"])
    sequences = {}
    for split in ("train", "val", "test"):
        ids = dm.split_ids(split)
        for column, modality in (("DNA", "dna"), ("Protein", "protein"), ("Context", "context")):
            view = dm.split_sequences(split, modality)
            assert len(view) == len(ids)
            sequences.setdefault(column, {}).update(zip(ids, view, strict=True))
    for column, values in sequences.items():
        table[column] = table["id"].map(values)
    assert table["DNA"].notna().all()
    return table


def _random_peaks(seed: int = 1, per_contig: int = 8) -> str:
    """Peaks of 6 experiments (FOXA1, CTCF × 3 cell types) on every contig; peaks may overlap."""
    rng = np.random.default_rng(seed)
    lines = []
    for tf in ("FOXA1", "CTCF"):
        for context in ("HepG2", "K562", "MCF-7"):
            for contig in CONTIGS:
                for start in rng.integers(0, LENGTH - 100, size=per_contig):
                    lines.append(f"{contig}\t{start}\t{start + int(rng.integers(20, 80))}\t{tf}:{context}\n")
    return "".join(lines)


# ---------------------------------------------------------------------------------------------
# files


def test_peaks_skip_track_comment_header_lines_and_extra_columns(tmp_path):
    text = (
        'track name=remap description="ReMap"\nbrowser position chr1:1-100\n#comment\n'
        "chrom\tstart\tend\tname\tscore\n"
        "chr1\t10\t70\tFOXA1:MCF-7,HepG2\t5\t.\t30\t31\t0,0,0\n\n"
        "chr2\t5\t25\tCTCF:K562\n"
    )
    bed = tmp_path / "p.bed"
    bed.write_text(text)
    table = read_peaks(bed)
    assert table.values.tolist() == [
        ["chr1", 10, 70, -1, "FOXA1", "MCF-7", 5],
        ["chr1", 10, 70, -1, "FOXA1", "HepG2", 5],
        ["chr2", 5, 25, -1, "CTCF", "K562", 7],
    ]
    with gzip.open(tmp_path / "p.bed.gz", "wt") as handle:
        handle.write(text)
    assert read_peaks(tmp_path / "p.bed.gz").equals(table)
    assert read_peaks(bed, contexts=["HepG2", "K562"])["context"].tolist() == ["HepG2", "K562"]
    assert read_peaks(bed, tfs=["CTCF"])["start"].tolist() == [5]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("chr1\t10\t20", r"p.bed:3: 3 column\(s\); a peak needs 4"),
        ("chr1\tten\t20\tA:B", r"p.bed:3: start 'ten' and end '20' must be whole numbers"),
        ("chr1\t30\t20\tA:B", r"p.bed:3: the interval \[30, 20\) is empty or negative"),
        ("chr1\t10\t20\tGSE1.FOXA1.MCF-7", r"p.bed:3: the name 'GSE1.FOXA1.MCF-7' is not TF:context .*awk"),
        ("chr1\t10\t20\tFOXA1:", r"p.bed:3: the name 'FOXA1:' is not TF:context"),
    ],
)
def test_a_malformed_peak_names_file_and_line(tmp_path, line, message):
    bed = tmp_path / "p.bed"
    bed.write_text(f"track name=x\nchr1\t1\t5\tA:B\n{line}\n")
    with pytest.raises(DataError, match=message):
        read_peaks(bed)


def test_summits_and_whitelists(tmp_path):
    bed = tmp_path / "p.bed"
    bed.write_text("chr1\t100\t200\tA:B\t0\t.\t3.1\t9.2\t-1\t30\nchr1\t300\t400\tA:B\t0\t.\t1\t2\t3\t-1\n")
    assert read_peaks(bed, summit=True)["summit"].tolist() == [130, -1]
    bed.write_text("chr1\t100\t200\tA:B\t0\t.\t3.1\t9.2\t-1\t100\n")
    with pytest.raises(DataError, match=r"p.bed:1: summit offset 100 lies past the peak's end \(100 bp long\)"):
        read_peaks(bed, summit=True)
    bed.write_text("chr1\t100\t200\tFOXA1:HepG2\n")
    with pytest.raises(DataError, match="p.bed:1: no summit offset in the 10th column"):
        read_peaks(bed, summit=True)
    with pytest.raises(DataError, match=r"`contexts` lists 'K562', 'hepg2', .* in the file: 'hepg2' → 'HepG2'"):
        read_peaks(bed, contexts=["hepg2", "K562"])
    with pytest.raises(DataError, match=r"`tfs` lists 'FOXA2'"):
        read_peaks(bed, tfs=["FOXA2"])


def test_protein_names_from_uniprot_and_plain_headers(tmp_path):
    assert protein_name(UNIPROT[1:]) == "FOXA1"
    assert protein_name("CTCF transcriptional repressor") == "CTCF"
    isoform = ">sp|P55317-2|FOXA1_HUMAN Isoform 2 of Hepatocyte nuclear factor 3-alpha OS=Homo sapiens GN=FOXA1\nMKT\n"
    with gzip.open(tmp_path / "p.fasta.gz", "wt") as handle:
        handle.write(PROTEINS + isoform)
    proteins, repeated = read_proteins(tmp_path / "p.fasta.gz")
    assert sorted(proteins) == ["CTCF", "FOXA1"] and repeated == 1
    assert proteins == {"FOXA1": "MLGTVKMEGHESNDWNSYYADTQEAYSSVPVSMNSGLG", "CTCF": "MEGDAVEAIVEESETFIKGKERK"}
    (tmp_path / "empty.fasta").write_text(">CTCF\n\n>FOXA1\nMKT\n")
    with pytest.raises(DataError, match="record 'CTCF' has no sequence"):
        read_proteins(tmp_path / "empty.fasta")
    (tmp_path / "none.fasta").write_text("MKTAYIAK\n")
    with pytest.raises(DataError, match="none.fasta is not a FASTA file: This FASTA file contains comments"):
        read_proteins(tmp_path / "none.fasta")
    (tmp_path / "blank.fasta").write_text("")
    with pytest.raises(DataError, match="holds no FASTA record"):
        read_proteins(tmp_path / "blank.fasta")


def test_interval_index_and_drawing_free_candidates():
    index = IntervalIndex(np.array([0, 0, 1]), np.array([10, 50, 0]), np.array([100, 60, 5]))
    queries = np.array([[0, 0, 10], [0, 99, 120], [0, 100, 120], [0, 55, 56], [1, 4, 9], [1, 5, 9], [2, 0, 99]])
    expected = [False, True, False, True, True, False, False]  # half-open: touching ends do not overlap
    assert index.overlaps(queries[:, 0], queries[:, 1], queries[:, 2]).tolist() == expected
    free = lambda ids: ids >= 90  # noqa: E731  (10 of 100 pass: the random rounds end, the full search finds all)
    picked = sample_free(np.random.default_rng(0), np.arange(100), 15, free)
    assert sorted(picked.tolist()) == list(range(90, 100))


# ---------------------------------------------------------------------------------------------
# records


def test_windows_are_centred_on_peaks_and_padded_with_n(tmp_path, genome):
    peaks = "chr1\t50\t60\tFOXA1:HepG2\nchr1\t0\t4\tFOXA1:HepG2\nchr2\t1996\t2000\tCTCF:HepG2\n"
    dm = TFBinding(_write(tmp_path, peaks, genome), window=11, negatives_per_positive=0)
    rows = _table(dm).set_index("id")
    assert rows.loc["FOXA1:HepG2@chr1:50-60", "DNA"] == genome["chr1"][50:61]  # midpoint 55, 5 bp before it
    assert rows.loc["FOXA1:HepG2@chr1:0-4", "DNA"] == "NNN" + genome["chr1"][:8]  # midpoint 2: starts at -3
    assert rows.loc["CTCF:HepG2@chr2:1996-2000", "DNA"] == genome["chr2"][1993:] + "NNNN"
    assert dm.summary.padded == 2 and dm.summary.bound == 3 and dm.summary.unbound == 0
    protein = rows.loc["FOXA1:HepG2@chr1:50-60"]
    assert (protein["Protein"], protein["Context"], protein["label"], protein["split"]) == (
        "MLGTVKMEGHESNDWNSYYADTQEAYSSVPVSMNSGLG", "HepG2", "bound", "train")  # fmt: skip
    assert rows.loc["CTCF:HepG2@chr2:1996-2000", "Protein"] == "MEGDAVEAIVEESETFIKGKERK"

    summit = "chr1\t50\t70\tFOXA1:HepG2\t0\t.\t0\t0\t0\t3\n"
    dm = TFBinding(_write(tmp_path, summit, genome), window=10, center="summit", negatives_per_positive=0)
    assert _table(dm)["DNA"].tolist() == [genome["chr1"][48:58]]  # summit 53, window [48, 58)


def test_unbound_records_come_from_other_experiments_and_never_overlap_their_own(tmp_path, genome):
    text = _random_peaks()
    dm = TFBinding(_write(tmp_path, text, genome), window=40, negatives_per_positive=2, seed=3)
    table = _table(dm)
    peaks = read_peaks(tmp_path / "peaks.bed")
    regions = set(zip(peaks.contig, peaks.start, peaks.end, strict=True))
    for (tf, context), records in table.groupby(["tf", "context"]):
        own = peaks[(peaks.tf == tf) & (peaks.context == context)]
        unbound = records[records.label == "unbound"]
        for row in unbound.itertuples():
            assert (row.contig, row.start, row.end) in regions, "a region bound in another experiment"
            same = own[own.contig == row.contig]
            assert not ((same.start < row.end) & (same.end > row.start)).any(), f"{row.id} overlaps its own peak"
        for split in ("train", "val", "test"):  # 2 unbound per bound record, in every split
            bound = int(((records.label == "bound") & (records.split == split)).sum())
            assert int(((records.label == "unbound") & (records.split == split)).sum()) == 2 * bound
    assert dm.summary.negatives_short == 0 and dm.summary.experiments == 6
    assert table["id"].is_unique and len(table) == 3 * len(peaks)

    again = TFBinding(_write(tmp_path, text, genome), window=40, negatives_per_positive=2, seed=3)
    assert _table(again)["id"].tolist() == table["id"].tolist()
    other = TFBinding(_write(tmp_path, text, genome), window=40, negatives_per_positive=2, seed=4)
    assert set(_table(other)["id"]) != set(table["id"])


def test_too_few_free_regions_are_counted_and_logged(tmp_path, genome, caplog):
    peaks = ("chr1\t100\t200\tFOXA1:HepG2\nchr1\t150\t160\tCTCF:HepG2\nchr1\t500\t510\tCTCF:HepG2\n"
             "chr1\t100\t200\tFOXA1:HepG2\n")  # fmt: skip
    dm = TFBinding(_write(tmp_path, peaks, genome), window=20, negatives_per_positive=3)
    with caplog.at_level(logging.INFO):
        table = _table(dm)
    foxa1 = table[table.tf == "FOXA1"]
    assert foxa1.id.tolist() == ["FOXA1:HepG2@chr1:100-200", "FOXA1:HepG2@chr1:500-510"]  # 150-160 overlaps
    assert dm.summary.duplicate_peaks == 1
    # FOXA1 wants 3 and finds 1 (500-510); CTCF wants 6 and finds none (100-200 overlaps its 150-160)
    assert dm.summary.negatives_short == 2 + 6 and (table.label == "unbound").sum() == 1
    assert "8 unbound records wanted but not found" in caplog.text
    assert "1 repeated peaks of an experiment dropped" in caplog.text


def test_explicit_negatives_file(tmp_path, genome):
    files = _write(tmp_path, "chr1\t100\t200\tFOXA1:HepG2\nchr8\t100\t200\tFOXA1:HepG2\n", genome)
    (tmp_path / "neg.bed").write_text("chr1\t300\t350\tFOXA1:HepG2\nchr1\t190\t210\tFOXA1:HepG2\n"
                                      "chr9\t10\t60\tFOXA1:HepG2\n")  # fmt: skip
    dm = TFBinding({**files, "negatives": str(tmp_path / "neg.bed")}, negatives_per_positive=0, window=20)
    table = _table(dm)
    unbound = table[table.label == "unbound"]
    assert unbound.id.tolist() == ["FOXA1:HepG2@chr1:300-350", "FOXA1:HepG2@chr9:10-60"]
    assert unbound.split.tolist() == ["train", "test"] and dm.summary.overlapping_negatives == 1
    with pytest.raises(ConfigError, match="set negatives_per_positive: 0 to use it"):
        TFBinding({**files, "negatives": str(tmp_path / "neg.bed")})


def test_splits_by_contig(tmp_path, genome):
    files = _write(tmp_path, _random_peaks(per_contig=2), genome)
    table = _table(TFBinding(files, window=20))
    assert dict(table.groupby("contig")["split"].unique().map(list)) == {
        "chr1": ["train"], "chr2": ["train"], "chr8": ["val"], "chr9": ["test"]}  # fmt: skip
    dm = TFBinding(files, window=20, split={"val_groups": ["chr2"], "test_groups": ["chr8", "chr9"]})
    table = _table(dm)
    assert set(table[table.split == "val"].contig) == {"chr2"}
    assert set(table[table.split == "test"].contig) == {"chr8", "chr9"}
    assert set(dm.split_ids("val")) == set(table[table.split == "val"].id)
    with pytest.raises(ConfigError, match=r"\['chr8'\] are in both split.val_groups and split.test_groups"):
        TFBinding(files, split={"val_groups": ["chr8"], "test_groups": ["chr8"]})


def test_subsets_and_max_peaks_per_experiment(tmp_path, genome):
    files = _write(tmp_path, _random_peaks(), genome)
    dm = TFBinding({**files, "contexts": ["K562"], "tfs": ["CTCF"]}, window=20, max_peaks_per_experiment=5)
    table = _table(dm)
    assert set(zip(table.tf, table.context, strict=True)) == {("CTCF", "K562")}
    assert (table.label == "bound").sum() == 5 and dm.summary.subsampled_out == 4 * 8 - 5
    assert dm.context_categories == ["K562"]
    again = TFBinding({**files, "contexts": ["K562"], "tfs": ["CTCF"]}, window=20, max_peaks_per_experiment=5)
    assert _table(again).id.tolist() == table.id.tolist()


def test_missing_tf_is_an_error_or_skipped(tmp_path, genome):
    peaks = "chr1\t10\t60\tFoxa1:HepG2\nchr1\t100\t160\tGATA1:HepG2\nchr1\t300\t360\tCTCF:HepG2\n"
    files = _write(tmp_path, peaks, genome)
    with pytest.raises(DataError) as info:
        _table(TFBinding(files, window=20))
    message = str(info.value)
    assert message.startswith(f"2 TF(s) of {files['peaks']} have no sequence in {files['proteins']}: Foxa1, GATA1")
    assert "'Foxa1' (did you mean 'FOXA1'?)" in message and "set source: {missing_tf: skip}" in message
    dm = TFBinding({**files, "missing_tf": "skip"}, window=20, negatives_per_positive=0)
    assert _table(dm).id.tolist() == ["CTCF:HepG2@chr1:300-360"]
    assert dm.summary.skipped_tfs == {"Foxa1": 1, "GATA1": 1}


def test_missing_contig_is_an_error_or_skipped(tmp_path, genome):
    peaks = "chr1\t10\t60\tCTCF:HepG2\n1\t100\t160\tCTCF:HepG2\nchrUn_1\t5\t9\tCTCF:HepG2\n"
    files = _write(tmp_path, peaks, genome)
    with pytest.raises(DataError, match=(r"2 peak\(s\) of .*peaks.bed lie on contigs missing from the genome "
                                         r".*genome.fa: 1, chrUn_1 \(the genome names it 'chr1'.*e.g. line 2.*"
                                         r"missing_contig: skip")):  # fmt: skip
        _table(TFBinding(files, window=20))
    dm = TFBinding({**files, "missing_contig": "skip"}, window=20, negatives_per_positive=0)
    assert _table(dm).id.tolist() == ["CTCF:HepG2@chr1:10-60"]
    assert dm.summary.skipped_contigs == {"1": 1, "chrUn_1": 1}


def test_options_are_checked(tmp_path, genome):
    files = _write(tmp_path, "chr1\t10\tx\tCTCF:HepG2\n", genome)
    with pytest.raises(ConfigError, match="`source.path` is `sample` .* or null, not 'data.csv'"):
        TFBinding("data.csv")
    with pytest.raises(ConfigError, match=r"needs `source.genome`, `source.proteins` \(or `source: sample`\)"):
        TFBinding(source={"peaks": "p.bed"})
    with pytest.raises(ConfigError, match="`negatives_per_positive` must be a whole number >= 0, not -1"):
        TFBinding("sample", negatives_per_positive=-1)
    with pytest.raises(ConfigError, match=r"`sample.size` must be at least 7, .*\(chr1, chr2, chr3, chr4, chr5, "):
        TFBinding("sample", split={"val_groups": ["chr5", "chr6"]}, sample={"size": 6})
    with pytest.raises(DataError, match=r"peaks.bed:1: start '10' and end 'x'"):
        _table(TFBinding(files))  # a first line that is not a header: start is a number
    with pytest.raises(DataError, match=r"input file\(s\) not found: peaks 'p.bed', negatives 'n.bed'"):
        _table(TFBinding({**files, "peaks": "p.bed", "negatives": "n.bed"}, negatives_per_positive=0))


# ---------------------------------------------------------------------------------------------
# the sample data set and the tokenizers


def test_sample_plants_tf_and_context_motifs_at_bound_sites():
    dm = TFBinding("sample", sample={"size": 48, "seed": 2})
    table = _table(dm)
    assert dm.window == 256 and set(table.contig) == {"chr1", "chr2", "chr3", "chr4", "chr8", "chr9"}
    assert (table.groupby(["split", "label"]).size().unstack()["bound"] == [8, 32, 8]).all()  # test, train, val
    centre = 128  # the peaks are 60 bp around the site: the window's middle is the site
    for row in table.itertuples():
        motif, mark = SAMPLE_MOTIFS[row.tf], SAMPLE_CONTEXT_MOTIFS[row.context]
        has_motif = row.DNA[centre - len(motif) // 2 :].startswith(motif)
        has_mark = row.DNA[centre + CONTEXT_OFFSET :].startswith(mark)
        assert (has_motif and has_mark) == (row.label == "bound"), row.id
    assert len(set(table[table.label == "unbound"].context)) == 2


def test_context_tokenizer_names_the_record_of_an_unknown_context():
    dm = TFBinding("sample", sample={"size": 12})
    with pytest.raises(DataError, match=(r"context sequence\(s\) \(column 'Context' of sample\) cannot be read by "
                                         r"ContextEmbedding:\n  record '[A-Z0-9]+:MCF-7@chr\d:\d+-\d+': 'MCF-7' is "
                                         r"not among .* Did you mean 'mcf-7'\?")):  # fmt: skip
        dm.attach_tokenizers({"context": ContextEmbedding(["HepG2", "mcf-7"]).tokenizer})
    dm.attach_tokenizers({"context": ContextEmbedding(dm.context_categories).tokenizer})
    batch = next(iter(dm.train_dataloader()))
    assert batch["inputs"]["context"]["input_ids"].shape == (8, 1) and batch["target"].dtype.is_floating_point is False


# ---------------------------------------------------------------------------------------------
# the records store


def test_records_are_stored_without_sequences_and_found_again_until_inputs_or_options_change(tmp_path, genome, caplog):
    files = _write(tmp_path, _random_peaks(per_contig=4), genome)
    options = {**files, "records_dir": str(tmp_path / "records")}
    dm = TFBinding(options, window=40)
    table = _table(dm)
    store = dm.records()
    assert not {"DNA", "Protein"} & set(store.column_names)  # sequences are made when a record is read
    assert set(store.meta["proteins"]) == {"FOXA1", "CTCF"}  # each TF's protein once
    assert {"centre", "contig", "strand", "tf"} <= set(store.column_names)

    caplog.set_level(logging.INFO)
    again = TFBinding(options, window=80)  # the window is cut when read: the same store
    again.setup("fit")
    assert again.records().path == store.path and again.summary.bound == dm.summary.bound
    assert any("TFBinding: 6 experiments" in r.getMessage() for r in caplog.records)  # logged from the store
    assert len(again.split_sequences("train", "dna")[0]) == 80
    assert _table(again)["id"].tolist() == table["id"].tolist()

    reseeded = TFBinding(options, window=40, seed=1)
    reseeded.setup("fit")
    assert reseeded.records().path != store.path  # other unbound regions drawn
    (tmp_path / "proteins.fasta").write_text(PROTEINS.replace("MEGDAV", "MEGDAW"))
    edited = TFBinding(options, window=40)
    assert _table(edited).set_index("id").loc[table.id[table.tf == "CTCF"].iloc[0], "Protein"].startswith("MEGDAW")
    assert edited.records().path != store.path


def test_a_protein_a_tokenizer_refuses_counts_every_record_of_its_tf(tmp_path, genome):
    from mmfuse.tokenizers import CharTokenizer

    files = _write(tmp_path, _random_peaks(per_contig=2), genome, PROTEINS.replace("MEGDAV", "MEGDAV*"))
    dm = TFBinding(files, window=40, negatives_per_positive=0)
    n = len(_table(dm).query("tf == 'CTCF'"))
    tokenizer = CharTokenizer("aa", "ACDEFGHIKLMNPQRSTVWY", range(20), pad_id=20)
    with pytest.raises(DataError, match=rf"^{n} protein sequence\(s\) \(the proteins of .*proteins.fasta\) cannot be "
                                        r"read by aa:\n  record 'CTCF:"):  # fmt: skip
        dm.attach_tokenizers({"protein": tokenizer})


def test_workers_read_the_same_records(tmp_path, genome):
    files = _write(tmp_path, _random_peaks(per_contig=2), genome)
    from mmfuse.tokenizers import CharTokenizer

    batches = {}
    for workers in (0, 2):
        dm = TFBinding(files, window=40, loader={"batch_size": 4, "num_workers": workers})
        dm.attach_tokenizers({"dna": CharTokenizer("dna", "ACGTN", range(5), pad_id=5),
                              "protein": CharTokenizer("aa", "ACDEFGHIKLMNPQRSTVWY", range(20), pad_id=20),
                              "context": ContextEmbedding(dm.context_categories).tokenizer})  # fmt: skip
        batches[workers] = [(b["ids"], b["inputs"]["dna"]["input_ids"]) for b in dm.val_dataloader()]
    assert [ids for ids, _ in batches[0]] == [ids for ids, _ in batches[2]]
    assert all((a == b).all() for (_, a), (_, b) in zip(batches[0], batches[2], strict=True))
