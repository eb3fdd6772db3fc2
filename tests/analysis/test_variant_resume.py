"""``--variants.resume``: a run killed midway (SIGKILL, mid-batch) and started again ends with the rows of an
uninterrupted run, byte for byte after sorting."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.analysis.test_variant_reuse import SMALL
from tests.helpers.in_process import QUICKSTART

pytestmark = pytest.mark.slow


def _inputs(root: Path, count: int) -> tuple[Path, Path, Path]:
    """The bundled sample genome and ``count`` SNVs in its transcripts."""
    subprocess.run([sys.executable, "-m", "mmfuse", "sample-data", "--genome", str(root)], check=True,
                   capture_output=True, timeout=120)  # fmt: skip
    fasta, gtf = root / "genome.fa", root / "genes.gtf"
    genome, name = {}, None
    for line in fasta.read_text().splitlines():
        if line.startswith(">"):
            name = line[1:].split()[0]
            genome[name] = []
        else:
            genome[name].append(line.strip().upper())
    genome = {c: "".join(parts) for c, parts in genome.items()}
    spans = [(f[0], int(f[3]), int(f[4])) for f in (line.split("\t") for line in gtf.read_text().splitlines())
             if len(f) > 4 and f[2] == "transcript"]  # fmt: skip
    rng = random.Random(0)
    picks = sorted((c, rng.randint(lo, hi)) for c, lo, hi in (rng.choice(spans) for _ in range(count)))
    lines = ["##fileformat=VCFv4.2", *(f"##contig=<ID={c},length={len(s)}>" for c, s in genome.items()),
             "#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO"]  # fmt: skip
    for contig, pos in picks:
        ref = genome[contig][pos - 1]
        lines.append(f"{contig}\t{pos}\t.\t{ref}\t{rng.choice([b for b in 'ACGT' if b != ref])}\t.\tPASS\t.")
    vcf = root / "random.vcf"
    vcf.write_text("\n".join(lines) + "\n")
    return fasta, gtf, vcf


def test_a_killed_run_resumes_to_the_rows_of_an_uninterrupted_one(trained, tmp_path):
    fasta, gtf, vcf = _inputs(tmp_path / "genome", 250)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}

    def command(output: Path, *extra: str) -> list[str]:
        return [sys.executable, "-m", "mmfuse", "score-variants", "--config", str(QUICKSTART), *SMALL, "--ckpt_path",
                str(trained), "--vcf", str(vcf), "--fasta", str(fasta), "--annotation", str(gtf),
                "--variants.window=1024", "--variants.batch_size=1", f"--variants.output={output}",
                f"--trainer.default_root_dir={tmp_path}", "--trainer.logger=false", *extra]  # fmt: skip

    whole = tmp_path / "whole.csv"
    subprocess.run(command(whole), check=True, capture_output=True, timeout=600, env=env)
    resumed = tmp_path / "resumed.csv"
    log = resumed.with_name(f".{resumed.name}.resume.log")
    process = subprocess.Popen(command(resumed, "--variants.resume=true"), stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, env=env)  # fmt: skip
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and process.poll() is None:
        if log.is_file() and len(log.read_text().splitlines()) > 3:
            break
        time.sleep(0.02)
    assert process.poll() is None, "the run ended before it could be killed"
    process.send_signal(signal.SIGKILL)
    process.wait()
    partial = resumed.with_name(f".{resumed.name}.resume")
    assert partial.is_file() and not resumed.exists()
    written = len(log.read_text().splitlines()) - 1
    result = subprocess.run(command(resumed, "--variants.resume=true"), capture_output=True, text=True, timeout=600,
                            env=env)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Resuming:" in result.stdout and written > 0
    assert not partial.exists() and not log.exists()
    a, b = whole.read_text().splitlines(), resumed.read_text().splitlines()
    assert a[0] == b[0] and len(a) == len(b) > 100
    assert sorted(a[1:]) == sorted(b[1:])
