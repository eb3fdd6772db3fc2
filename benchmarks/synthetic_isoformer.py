"""A synthetic genome and transcript table in the layout of IsoFormer's ``GTEx_final.csv``, at any scale.

The published data set (InstaDeepAI/multi_omics_transcript_expression, https://arxiv.org/abs/2406.14150)
has about 170,000 transcripts; its table carries coordinates, RNA, UTR/CDS parts, protein and log
expression in 30 GTEx tissues, and the DNA comes from the reference genome. This module writes a
random stand-in of the same shape, so the data path can be measured at full scale offline:

* :func:`write_genome`: a FASTA of random ACGT (some soft-masked lowercase runs, a few ``N`` runs)
  with contigs of human-like sizes (about 280 Mb by default), and its ``.fai`` index.
* :func:`write_isoformer_table`: ``transcript_id_gtex``, ``gene_id_gtex``, ``split``, ``chr``,
  ``strand``, ``start``, ``end`` (1-based, inclusive), ``RNA``, ``5UTR``, ``CDS``, ``3UTR``,
  ``Protein`` and the 30 tissues, written in chunks so memory stays flat.

Both are deterministic from their seed. ::

    python benchmarks/synthetic_isoformer.py --out /tmp/mmfuse-bench/n1000 --transcripts 1000
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from mmfuse.data.genomics.tissues import GTEX_TISSUES

__all__ = ["DEFAULT_CONTIGS", "main", "table_columns", "write_genome", "write_isoformer_table"]

#: human-like contig sizes, about 280 Mb in all; chrM is the real mitochondrial length
DEFAULT_CONTIGS: dict[str, int] = {
    "chr1": 90_000_000, "chr2": 70_000_000, "chr3": 50_000_000, "chr4": 40_000_000, "chrX": 30_000_000,
    "chrM": 16_569,
}  # fmt: skip
_ID_COLUMNS = ["transcript_id_gtex", "gene_id_gtex", "split", "chr", "strand", "start", "end"]
_SEQUENCE_COLUMNS = ["RNA", "5UTR", "CDS", "3UTR", "Protein"]

_NUCLEOTIDES = np.frombuffer(b"ACGT", dtype=np.uint8)
_AMINO_ACIDS = np.frombuffer(b"ACDEFGHIKLMNPQRSTVWY", dtype=np.uint8)
_STOP_CODONS = (b"TAA", b"TAG", b"TGA")
_GENOME_CHUNK = 4_000_020  # bases per generated chunk: a multiple of 60 (and of most line widths)
_TABLE_CHUNK = 2_000  # rows per written chunk
_MARGIN = 1_000  # transcripts stay this far inside their contig
_NONCODING = 0.1  # share of transcripts without CDS (and protein)
_TEST_GENES = 0.1  # share of genes in the test split


def table_columns() -> list[str]:
    """The columns of the table, in the order :func:`write_isoformer_table` writes them."""
    return _ID_COLUMNS + _SEQUENCE_COLUMNS + list(GTEX_TISSUES)


# genome ------------------------------------------------------------------------------------------------------------
def _read_fai(path: Path) -> dict[str, int] | None:
    fai = Path(f"{path}.fai")
    if not path.is_file() or not fai.is_file() or fai.stat().st_mtime < path.stat().st_mtime:
        return None
    lengths = {}
    for line in fai.read_text().splitlines():
        name, length, *_ = line.split("\t")
        lengths[name] = int(length)
    return lengths


def _contig_bases(rng: np.random.Generator, length: int) -> np.ndarray:
    """Random bases of one chunk (``uint8`` letters): ACGT, soft-masked runs, rare ``N`` runs."""
    bases = _NUCLEOTIDES[rng.integers(0, 4, size=length, dtype=np.uint8)]
    # soft-masked repeats: about one run of 100 bp-3 kb per 20 kb (~5 % of the sequence lowercase)
    for start in rng.integers(0, length, size=max(1, length // 20_000)):
        run = bases[start : start + int(rng.integers(100, 3_000))]
        run |= 32  # the ASCII lowercase bit: b"A" | 32 == b"a" (idempotent where runs overlap)
    # assembly gaps: one N run of 1-50 kb per ~20 Mb
    if rng.random() < length / 20_000_000:
        start = int(rng.integers(0, length))
        bases[start : start + int(rng.integers(1_000, 50_000))] = ord("N")
    return bases


def _write_lines(handle, bases: np.ndarray, line_width: int) -> None:
    """Writes ``bases`` as lines of ``line_width`` letters (the last line may be shorter)."""
    full = len(bases) // line_width * line_width
    if full:
        lines = np.empty((full // line_width, line_width + 1), dtype=np.uint8)
        lines[:, :line_width] = bases[:full].reshape(-1, line_width)
        lines[:, line_width] = ord("\n")
        handle.write(lines.tobytes())
    if full < len(bases):
        handle.write(bases[full:].tobytes() + b"\n")


def write_genome(
    path: str | os.PathLike, contigs: dict[str, int] | None = None, seed: int = 0, line_width: int = 60
) -> dict[str, int]:
    """Writes a random FASTA genome and its ``.fai`` index; reuses an existing one of the same contigs.

    Args:
        path: the FASTA to write (its index goes to ``path + ".fai"``).
        contigs: ``{name: length}`` in file order (default :data:`DEFAULT_CONTIGS`, about 280 Mb).
        seed: seed of the sequence; the same seed and contigs give the same file.
        line_width: letters per line.

    Returns:
        The contig lengths, as the index reads them.

    Examples:
        >>> import tempfile
        >>> fasta = Path(tempfile.mkdtemp()) / "g.fa"
        >>> write_genome(fasta, {"chr1": 1000, "chrM": 130})
        {'chr1': 1000, 'chrM': 130}
    """
    import pyfaidx

    path = Path(path)
    contigs = dict(DEFAULT_CONTIGS if contigs is None else contigs)
    if _read_fai(path) == contigs:
        return contigs
    path.parent.mkdir(parents=True, exist_ok=True)
    chunk = _GENOME_CHUNK // line_width * line_width
    partial = path.with_name(f".{path.name}.partial")
    with partial.open("wb") as handle:
        for index, (name, length) in enumerate(contigs.items()):
            rng = np.random.default_rng([seed, index])
            handle.write(f">{name}\n".encode())
            for offset in range(0, length, chunk):
                _write_lines(handle, _contig_bases(rng, min(chunk, length - offset)), line_width)
    Path(f"{path}.fai").unlink(missing_ok=True)
    os.replace(partial, path)
    pyfaidx.Faidx(str(path)).close()  # writes path.fai
    lengths = _read_fai(path)
    assert lengths == contigs, (lengths, contigs)
    return lengths


# table -------------------------------------------------------------------------------------------------------------
def _plan_genes(rng: np.random.Generator, lengths: dict[str, int], n_transcripts: int) -> pd.DataFrame:
    """One row per gene: contig, strand, span, split and how many transcripts it has (1-4)."""
    sizes = []
    total = 0
    while total < n_transcripts:  # 1-4 transcripts per gene, most genes with one or two
        size = min(int(rng.choice(4, p=[0.45, 0.3, 0.15, 0.1])) + 1, n_transcripts - total)
        sizes.append(size)
        total += size
    n = len(sizes)
    names = [c for c, length in lengths.items() if length >= 2 * _MARGIN + 1_000]
    if not names:
        raise ValueError(f"no contig is long enough for a transcript ({2 * _MARGIN + 1_000} bp): {lengths}")
    room = np.array([lengths[c] for c in names], dtype=np.int64)
    contig = rng.choice(len(names), size=n, p=room / room.sum())
    limit = room[contig] - 2 * _MARGIN  # the span must fit inside the margins
    span = np.minimum(np.exp(rng.uniform(np.log(1_000), np.log(100_000), size=n)).astype(np.int64), limit)
    start = _MARGIN + 1 + (rng.random(n) * (limit - span + 1)).astype(np.int64)  # 1-based
    return pd.DataFrame({
        "gene": np.arange(n), "contig": np.array(names)[contig], "strand": rng.choice(["+", "-"], size=n),
        "start": start, "span": span, "size": sizes,
        "split": np.where(rng.random(n) < _TEST_GENES, "test", "train"),
    })  # fmt: skip


def _random_text(rng: np.random.Generator, lengths: np.ndarray, alphabet: np.ndarray) -> list[str]:
    """One random string per length, drawn from ``alphabet``, in one numpy call."""
    letters = alphabet[rng.integers(0, len(alphabet), size=int(lengths.sum()), dtype=np.uint8)]
    text = letters.tobytes().decode("ascii")
    ends = np.cumsum(lengths)
    return [text[e - n : e] for e, n in zip(ends.tolist(), lengths.tolist(), strict=True)]


def _chunk_rows(rng: np.random.Generator, genes: pd.DataFrame, first: int) -> pd.DataFrame:
    """The table rows of one chunk of transcripts (``genes`` has one row per transcript)."""
    n = len(genes)
    # transcript span: the gene's span, each end pulled in by up to a tenth of it (at least 1 kb remains)
    span = genes["span"].to_numpy()
    trim = (rng.random((2, n)) * np.maximum(span - 1_000, 0) / 10).astype(np.int64)
    start = genes["start"].to_numpy() + trim[0]
    end = genes["start"].to_numpy() + span - 1 - trim[1]
    # RNA: log-normal length, median 2 kb, 200 nt-12 kb; 5'UTR and 3'UTR around a CDS of whole codons
    rna_len = np.clip(np.exp(rng.normal(np.log(2_000), 0.7, size=n)), 200, 12_000).astype(np.int64)
    coding = rng.random(n) >= _NONCODING
    utr5 = np.minimum(rng.geometric(1 / 150, size=n), rna_len // 4)
    utr3 = (rna_len * rng.uniform(0.1, 0.5, size=n)).astype(np.int64)
    cds = (rna_len - utr5 - utr3) // 3 * 3
    cds = np.where(coding, cds, 0)
    utr5 = np.where(coding, utr5, 0)
    utr3 = rna_len - utr5 - cds  # non-coding: the whole RNA is "3'UTR", CDS and 5'UTR empty
    rnas = _random_text(rng, rna_len, _NUCLEOTIDES)
    proteins = _random_text(rng, np.maximum(cds // 3 - 1, 0), _AMINO_ACIDS)
    stops = rng.integers(0, 3, size=n)
    parts: dict[str, list[str]] = {"RNA": [], "5UTR": [], "CDS": [], "3UTR": [], "Protein": []}
    for i, rna in enumerate(rnas):
        a, b = int(utr5[i]), int(utr5[i] + cds[i])
        if b > a:  # a start codon, a stop codon, and the protein starting with M
            rna = rna[:a] + "ATG" + rna[a + 3 : b - 3] + _STOP_CODONS[stops[i]].decode() + rna[b:]
            proteins[i] = "M" + proteins[i][1:]
        parts["RNA"].append(rna)
        parts["5UTR"].append(rna[:a])
        parts["CDS"].append(rna[a:b])
        parts["3UTR"].append(rna[b:])
        parts["Protein"].append(proteins[i])
    rows = first + np.arange(n)
    table = pd.DataFrame({
        "transcript_id_gtex": [f"ENST{i + 1:011d}.1" for i in rows.tolist()],
        "gene_id_gtex": [f"ENSG{g + 1:011d}.1" for g in genes["gene"].tolist()],
        "split": genes["split"].to_numpy(), "chr": genes["contig"].to_numpy(),
        "strand": genes["strand"].to_numpy(), "start": start, "end": end, **parts,
    })  # fmt: skip
    # log(1 + TPM)-like targets: a per-transcript level, tissue noise, about a third silent
    level = rng.gamma(2.0, 1.0, size=(n, 1))
    values = np.maximum(level + rng.normal(0, 0.8, size=(n, len(GTEX_TISSUES))), 0)
    values[rng.random(values.shape) < 0.3] = 0.0
    tissues = pd.DataFrame(values.round(4), columns=list(GTEX_TISSUES))
    return pd.concat([table, tissues], axis=1)


def write_isoformer_table(
    path: str | os.PathLike, genome_lengths: dict[str, int], n_transcripts: int, seed: int = 0
) -> None:
    """Writes ``n_transcripts`` random transcripts as a CSV in the layout of IsoFormer's ``GTEx_final.csv``.

    Genes have 1-4 transcripts, on one contig and strand, splits ``train``/``test`` by gene (about
    90/10). Coordinates are 1-based and inclusive, at least 1 kb inside the contig, spans 1-100 kb;
    ``5UTR + CDS + 3UTR == RNA`` with a CDS of whole codons (``ATG`` to a stop codon), and
    ``Protein`` is the CDS's length / 3 - 1 residues (about 10 % are non-coding: empty CDS and
    Protein). Rows are made and written in chunks of 2,000, so memory does not grow with the table.

    Args:
        path: the CSV to write (replaced atomically).
        genome_lengths: ``{contig: length}`` of the genome the coordinates refer to.
        n_transcripts: rows to write.
        seed: seed of the table; a smaller table of the same seed is a prefix of a larger one's genes.

    Examples:
        >>> import tempfile
        >>> csv = Path(tempfile.mkdtemp()) / "t.csv"
        >>> write_isoformer_table(csv, {"chr1": 50_000}, 3)
        >>> t = pd.read_csv(csv, keep_default_na=False)
        >>> t.shape, bool((t["5UTR"] + t["CDS"] + t["3UTR"] == t["RNA"]).all())
        ((3, 42), True)
    """
    if n_transcripts < 1:
        raise ValueError(f"n_transcripts must be positive, not {n_transcripts}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    genes = _plan_genes(np.random.default_rng([seed, 0]), genome_lengths, n_transcripts)
    per_transcript = genes.loc[genes.index.repeat(genes["size"])].reset_index(drop=True)
    partial = path.with_name(f".{path.name}.partial")
    with partial.open("w", newline="") as handle:
        for chunk, first in enumerate(range(0, n_transcripts, _TABLE_CHUNK)):
            rng = np.random.default_rng([seed, 1, chunk])
            rows = _chunk_rows(rng, per_transcript.iloc[first : first + _TABLE_CHUNK], first)
            rows.to_csv(handle, header=chunk == 0, index=False, float_format="%.4f")
    os.replace(partial, path)


# command line ------------------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> None:
    """Writes ``OUT/genome.fa`` (with ``.fai``) and ``OUT/GTEx_final.csv``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="directory to write genome.fa and GTEx_final.csv to")
    parser.add_argument("--transcripts", type=int, default=1_000, help="rows of the table")
    parser.add_argument("--seed", type=int, default=0, help="seed of genome and table")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    lengths = write_genome(args.out / "genome.fa", seed=args.seed)
    genome_s = time.perf_counter() - started
    write_isoformer_table(args.out / "GTEx_final.csv", lengths, args.transcripts, seed=args.seed)
    table_s = time.perf_counter() - started - genome_s
    size = (args.out / "GTEx_final.csv").stat().st_size / 1e6
    print(
        f"genome {sum(lengths.values()) / 1e6:.1f} Mb in {genome_s:.1f} s; "
        f"table {args.transcripts:,} transcripts ({size:,.0f} MB) in {table_s:.1f} s -> {args.out}",
        file=sys.stderr,
    )


if __name__ == "__main__":
    main()
