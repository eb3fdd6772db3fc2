"""``mmfuse score-variants`` at genome scale: peak memory, time to the first batch, pairs per second and backbone
passes per pair, for VCFs of 1k, 100k and 1M SNVs on the bundled sample genome (``mmfuse sample-data --genome``,
703 transcripts on 771 kb), scored by the quickstart model with tiny presets (one training step)::

    python benchmarks/variant_scoring.py                       # 1k, 100k, 1M variants
    python benchmarks/variant_scoring.py --sizes 1000 --quick  # what tests/test_benchmarks.py runs

Each size runs ``mmfuse score-variants`` in its own process with ``--trainer.limit_predict_batches`` batches (the
whole VCF is still read: counted before the first batch, then streamed), and reports its peak RSS (``wait4``), its
wall time and the pairs it walked. One further run scores every pair of the 1k VCF for pairs/s and the backbone
passes per pair, read from the run's ``<output>_summary.json``. Memory and time are of this machine (one run
each); the ratio of peak RSS to the smallest run is the figure to compare.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
QUICKSTART = REPO / "experiments" / "quickstart" / "config.yaml"
DATA = ["--data.init_args.sample.size=12", "--data.init_args.split.val_fraction=0.25",
        "--trainer.enable_progress_bar=false", "--data.init_args.lengths.max={dna: 256, rna: 320, protein: 128}"]


def _mmfuse(*args: str, cwd: Path) -> tuple[int, float, int, str]:
    """(status, seconds, peak RSS in bytes, stdout) of one ``mmfuse`` process."""
    start = time.perf_counter()
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    with tempfile.TemporaryFile("w+") as out:
        process = subprocess.Popen([sys.executable, "-m", "mmfuse", *args], cwd=cwd, stdout=out,
                                   stderr=subprocess.DEVNULL, env=env)  # fmt: skip
        _, status, usage = os.wait4(process.pid, 0)
        out.seek(0)
        text = out.read()
    return os.waitstatus_to_exitcode(status), time.perf_counter() - start, usage.ru_maxrss * 1024, text


def _vcf(path: Path, genome: Path, gtf: Path, count: int, seed: int = 0) -> None:
    """``count`` SNVs at random places of the transcripts' spans (REF from the genome), sorted by position."""
    from mmfuse.data.files.fasta import open_genome

    fasta = open_genome(genome)
    spans = []
    for line in gtf.read_text().splitlines():
        fields = line.split("\t")
        if len(fields) > 4 and fields[2] == "transcript":
            spans.append((fields[0], int(fields[3]), int(fields[4])))
    rng = random.Random(seed)
    picks = sorted((c, rng.randint(lo, hi)) for c, lo, hi in (rng.choice(spans) for _ in range(count)))
    sequences = {c: str(fasta[c][:]).upper() for c in {c for c, _, _ in spans}}
    with path.open("w") as handle:
        handle.write("##fileformat=VCFv4.2\n" + "".join(f"##contig=<ID={c},length={len(s)}>\n"
                                                          for c, s in sequences.items()))  # fmt: skip
        handle.write("#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\n")
        for contig, pos in picks:
            ref = sequences[contig][pos - 1]
            alt = rng.choice([b for b in "ACGT" if b != ref])
            handle.write(f"{contig}\t{pos}\t.\t{ref}\t{alt}\t.\tPASS\t.\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1000,100000,1000000")
    parser.add_argument("--batches", type=int, default=4, help="prediction batches per sized run")
    parser.add_argument("--quick", action="store_true", help="small sizes (the test's run)")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        genome = root / "genome"
        code, *_ = _mmfuse("sample-data", "--genome", str(genome), cwd=root)
        assert code == 0, "mmfuse sample-data --genome failed"
        code, _, _, _ = _mmfuse("fit", "--config", str(QUICKSTART), *DATA, "--trainer.max_steps=1",
                                "--trainer.limit_val_batches=0", f"--trainer.default_root_dir={root}",
                                f"--trainer.logger.init_args.save_dir={root / 'runs'}", cwd=root)  # fmt: skip
        assert code == 0, "the training step failed"
        ckpt = next((root / "runs").rglob("last.ckpt"))
        common = ["--config", str(QUICKSTART), *DATA, "--ckpt_path", str(ckpt), "--fasta", str(genome / "genome.fa"),
                  "--annotation", str(genome / "genes.gtf"), "--variants.window=1024", "--trainer.logger=false"]
        rows = []
        for n in sizes:
            vcf = root / f"v{n}.vcf"
            _vcf(vcf, genome / "genome.fa", genome / "genes.gtf", n)
            out = root / f"effects{n}.csv"
            code, seconds, rss, _ = _mmfuse("score-variants", *common, "--vcf", str(vcf), f"--variants.output={out}",
                                            f"--trainer.limit_predict_batches={args.batches}", cwd=root)  # fmt: skip
            summary = json.loads(out.with_name(f"{out.stem}_summary.json").read_text()) if code == 0 else {}
            rows.append((n, code, rss, seconds, summary.get("counts", {}).get("rows", 0)))
        full = root / "effects_full.csv"
        vcf = root / f"v{sizes[0]}.vcf"
        code, whole, _, _ = _mmfuse("score-variants", *common, "--vcf", str(vcf), f"--variants.output={full}",
                                    cwd=root)  # fmt: skip
        summary = json.loads(full.with_name(f"{full.stem}_summary.json").read_text()) if code == 0 else {}
    base = rows[0][2] or 1
    print(f"score-variants, quickstart tiny presets, {args.batches} prediction batches per sized run, this machine\n")
    print("| variants | pairs walked | status | peak RSS | vs smallest | wall s |")
    print("|---:|---:|---:|---:|---:|---:|")
    for n, status, rss, seconds, pairs in rows:
        print(f"| {n:,} | {pairs:,} | {status} | {rss / 2**20:,.0f} MB | {rss / base:.2f}x | {seconds:.1f} |")
    passes = summary.get("backbone_passes_per_pair", {})
    pairs = summary.get("pairs_scored", 0)
    print(f"\nall {pairs:,} pairs of the {sizes[0]:,}-variant VCF: {whole:.1f} s including start-up "
          f"({pairs / max(whole, 1e-9):,.0f} pairs/s); backbone passes per pair: "
          + ", ".join(f"{m} {v:.2f}" for m, v in passes.items()) + " (before: 2 per modality)")


if __name__ == "__main__":
    main()
