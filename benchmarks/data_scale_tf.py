"""TF binding at real scale: memory and speed of ``TFBinding`` at 2k and 200k records (196,608 bp windows).

tf-bind-transformer's data are ReMap peaks over GRCh38 with the TFs' UniProt sequences. This benchmark
writes inputs of that shape, by simulation: a synthetic genome of about 150 Mb (chr1-3, chr8 for
validation, chr9 for test), a ReMap 2022-style BED (``chrom start end TF:context score strand
thickStart thickEnd rgb``; 40 TFs in 6 cell types, of which ``contexts`` keeps 4) and a UniProt-style
proteome FASTA (20,000 entries, ``GN=`` names). Half the records are bound peaks, half unbound regions
drawn from other experiments (``negatives_per_positive: 1``). Per size, each in its own fresh child
process (the rows of :mod:`data_scale`):

* ``cold``: the first setup, which reads the peaks, draws the unbound records and writes the records
  store (``records_dir`` emptied first): setup time, peak RSS;
* ``warm``: setup with the store written, tokenizers attached (tiny Enformer, ESM2, ContextEmbedding),
  then batches with ``num_workers`` 0: time to the first batch from the start of setup, peak RSS,
  records (windows) per second;
* ``workers``: the same with 2 workers; ``ddp``: two gloo ranks through a ``DistributedSampler``, RSS summed.

Targets: warm peak RSS at 200k within 1.2x of 2k, for one process and for 2 ranks summed; the first
batch within 10 s once the store exists. ::

    python benchmarks/data_scale_tf.py --quick            # 2k and 20k records, 30 batches
    python benchmarks/data_scale_tf.py                    # 2k and 200k records, 100 batches
    python benchmarks/data_scale.py --system tf           # the same, from the data-scale entry point
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from data_scale import (  # noqa: E402  (the shared measuring helpers)
    _MARK,
    _collect,
    _fmt,
    _get,
    _iterate,
    _markdown,
    _peak_mb,
    _ratio,
    _rss_mb,
    _run,
    _run_ddp,
    _start,
    _train_loader,
    arguments,
)

WINDOW = 196_608
BATCH_SIZE = 8
CONTIGS = {"chr1": 40_000_000, "chr2": 35_000_000, "chr3": 30_000_000, "chr8": 25_000_000, "chr9": 20_000_000}
TFS = [f"TF{i:02d}" for i in range(40)]
CONTEXTS = ["GM12878", "HepG2", "K-562", "MCF-7", "A549", "HEK293"]
KEPT = CONTEXTS[:4]
PROTEOME = 20_000
TARGETS = {"rss_vs_small": 1.2, "first_batch_s": 10}
_ = _start, _collect  # re-exported helpers used through _run / _run_ddp


# ------------------------------------------------------------------------------------------------------------------
# inputs
def write_peaks(path: Path, records: int, seed: int = 0) -> None:
    """A ReMap-style BED with ``records // 2`` bound peaks in the kept contexts (and as many again in the
    other two, which ``contexts`` leaves out); a third of the regions are shared by several experiments."""
    import numpy as np

    rng = np.random.default_rng(seed)
    bound = records // 2
    kept, others = bound, bound
    names = list(CONTIGS)
    sizes = np.array([CONTIGS[c] for c in names], dtype=np.float64)
    regions = max(kept // 3, 100)
    contig = rng.choice(len(names), size=regions, p=sizes / sizes.sum())
    start = (rng.random(regions) * (sizes[contig] - 1_000)).astype(np.int64)
    width = rng.integers(150, 900, size=regions)
    partial = path.with_name(f".{path.name}.partial")
    with partial.open("w") as handle:
        for n, contexts in ((kept, KEPT), (others, CONTEXTS[4:])):
            region = rng.integers(0, regions, size=n)
            tf = rng.integers(0, len(TFS), size=n)
            context = rng.integers(0, len(contexts), size=n)
            jitter = rng.integers(-40, 40, size=n)
            for r, t, c, j in zip(region, tf, context, jitter, strict=True):
                s, e = int(start[r] + j), int(start[r] + width[r] + j)
                handle.write(f"{names[contig[r]]}\t{max(s, 0)}\t{e}\t{TFS[t]}:{contexts[c]}\t0\t.\t"
                             f"{(s + e) // 2}\t{(s + e) // 2 + 1}\t255,0,0\n")  # fmt: skip
    os.replace(partial, path)


def write_proteome(path: Path, seed: int = 0) -> None:
    """A UniProt-style FASTA of :data:`PROTEOME` proteins (lengths 300-1,200), the TFs among them."""
    import numpy as np

    rng = np.random.default_rng(seed)
    letters = np.array(list("ACDEFGHIKLMNPQRSTVWY"))
    genes = TFS + [f"GENE{i}" for i in range(PROTEOME - len(TFS))]
    partial = path.with_name(f".{path.name}.partial")
    with partial.open("w") as handle:
        for i, gene in enumerate(genes):
            sequence = "M" + "".join(rng.choice(letters, size=int(rng.integers(300, 1_200))))
            handle.write(f">sp|Q{i:05d}|{gene}_HUMAN Protein {gene} OS=Homo sapiens OX=9606 GN={gene} PE=1 SV=1\n")
            handle.writelines(sequence[k : k + 60] + "\n" for k in range(0, len(sequence), 60))
    os.replace(partial, path)


def prepare(work: Path, sizes: list[int]) -> tuple[Path, Path, dict[int, Path]]:
    from synthetic_isoformer import write_genome

    work.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    write_genome(work / "genome.fa", CONTIGS)
    print(f"genome {work / 'genome.fa'}: {time.perf_counter() - started:.1f} s", file=sys.stderr)
    proteins = work / "uniprot.fasta"
    if not proteins.is_file():
        write_proteome(proteins)
    peaks = {}
    for n in sizes:
        peaks[n] = work / f"n{n}" / "remap.bed"
        if not peaks[n].is_file():
            peaks[n].parent.mkdir(parents=True, exist_ok=True)
            started = time.perf_counter()
            write_peaks(peaks[n], n)
            print(f"peaks {peaks[n]}: {time.perf_counter() - started:.1f} s", file=sys.stderr)
    return work / "genome.fa", proteins, peaks


# ------------------------------------------------------------------------------------------------------------------
# child side
def _child(spec: dict[str, Any]) -> dict[str, Any]:
    import lightning  # noqa: F401
    import torch

    from mmfuse.backbones import ESM2, ContextEmbedding, Enformer
    from mmfuse.data import TFBinding

    out: dict[str, Any] = {"kind": spec["kind"], "rss_import_mb": _rss_mb()}
    torch.set_num_threads(1)
    protein = ESM2(preset="tiny").tokenizer
    tokenizers = {"dna": Enformer(preset="tiny").tokenizer, "protein": protein,
                  "context": ContextEmbedding(categories=KEPT).tokenizer}  # fmt: skip
    limit = protein.max_tokens - len(protein.prefix) - len(protein.suffix)
    rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    if spec["kind"] == "ddp":
        torch.distributed.init_process_group("gloo", rank=rank, world_size=world)
    started = time.perf_counter()
    dm = TFBinding(
        source={"peaks": spec["peaks"], "genome": spec["genome"], "proteins": spec["proteins"], "contexts": KEPT,
                "records_dir": spec["records_dir"]},
        window=WINDOW, loader={"batch_size": BATCH_SIZE, "num_workers": spec["workers"]},
        lengths={"max": {"protein": limit}},
    )  # fmt: skip
    dm.setup("fit")
    out["setup_s"] = time.perf_counter() - started
    out["records"] = {s: len(dm.split_ids(s)) for s in ("train", "val", "test")}
    out["peak_setup_mb"] = _peak_mb()
    if spec["kind"] == "cold":
        return out | {"peak_mb": _peak_mb()}
    dm.attach_tokenizers(tokenizers)
    loader = _train_loader(dm, spec["kind"], BATCH_SIZE)
    out |= _iterate(loader, spec["batches"], started)
    out["rss_end_mb"], out["peak_mb"], out["rank"] = _rss_mb(), _peak_mb(), rank
    if spec["kind"] == "ddp":
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()
    return out


# ------------------------------------------------------------------------------------------------------------------
# parent side
def measure(genome: Path, proteins: Path, peaks: Path, batches: int, timeout: float) -> dict[str, Any]:
    records_dir = peaks.parent / "records"
    shutil.rmtree(records_dir, ignore_errors=True)
    spec = {"peaks": str(peaks), "genome": str(genome), "proteins": str(proteins), "records_dir": str(records_dir),
            "workers": 0, "script": __file__}  # fmt: skip
    n = peaks.parent.name
    results = {"cold": _run(spec | {"kind": "cold", "batches": 0}, timeout, f"{n} cold")}
    if "error" in results["cold"]:
        return results | dict.fromkeys(("warm", "workers", "ddp"), {"error": "skipped: the cold run failed"})
    results["warm"] = _run(spec | {"kind": "warm", "batches": batches}, timeout, f"{n} warm, 0 workers")
    results["workers"] = _run(spec | {"kind": "warm", "batches": batches, "workers": 2}, timeout, f"{n} 2 workers")
    results["ddp"] = _run_ddp(spec | {"kind": "ddp", "batches": batches}, timeout, f"{n} DDP 2 ranks")
    return results


def table(results: dict[int, dict[str, Any]]) -> str:
    rows = []
    for n, r in results.items():
        cold, warm, workers, ddp = r["cold"], r["warm"], r["workers"], r["ddp"]
        w2 = _get(workers, "records_per_s")
        built = sum((cold.get("records") or {}).values())
        rows.append([f"{n:,}", _fmt(built), _fmt(_get(cold, "setup_s"), 1), _fmt(_get(cold, "peak_mb")),
                     _fmt(_get(warm, "setup_s"), 1), _fmt(_get(warm, "first_batch_s"), 1),
                     _fmt(_get(warm, "records_per_s"), 1), _fmt(None if w2 is None else w2 / 2, 1),
                     _fmt(_get(warm, "peak_mb")), _fmt(_get(workers, "peak_mb")), _fmt(_get(ddp, "peak_mb"))])
    lines = _markdown(["size", "records built", "cold setup s", "cold peak MB", "warm setup s", "warm 1st batch s",
                       "rec/s w0", "rec/s per worker w2", "warm peak MB", "w2 main peak MB", "DDP 2 ranks peak MB"],
                      rows)
    errors = [f"{n:,} {part}: {res['error']}" for n, r in results.items() for part, res in r.items() if "error" in res]
    return "\n".join(lines + (["", "failed:", *(f"- {e}" for e in errors)] if errors else []))  # fmt: skip


def targets(results: dict[int, dict[str, Any]]) -> str:
    small, large = results[min(results)], results[max(results)]
    checks = [
        (f"warm peak RSS at {max(results):,} / {min(results):,}",
         _ratio(_get(large["warm"], "peak_mb"), _get(small["warm"], "peak_mb")), TARGETS["rss_vs_small"], "x"),
        ("2 DDP ranks, summed peaks, large / small",
         _ratio(_get(large["ddp"], "peak_mb"), _get(small["ddp"], "peak_mb")), TARGETS["rss_vs_small"], "x"),
        (f"first batch at {max(results):,} (store written)", _get(large["warm"], "first_batch_s"),
         TARGETS["first_batch_s"], "s"),
    ]  # fmt: skip
    lines = ["", "targets:"]
    for what, value, limit, unit in checks:
        verdict = "n/a " if value is None else ("PASS" if value <= limit else "FAIL")
        lines.append(f"- {verdict}  {what}: {_fmt(value, 2)} {unit} (<= {limit})")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = arguments(__doc__, "2000,200000", "records (bound + unbound)", 100, "2k and 20k records, 30 batches",
                       "/tmp/mmfuse-bench-tf", 900)  # fmt: skip
    args = parser.parse_args(argv)
    if args.child:
        print(_MARK + json.dumps(_child(json.loads(args.child))), flush=True)
        return
    sizes = [2_000, 20_000] if args.quick else [int(s) for s in args.sizes.split(",")]
    batches = 30 if args.quick and args.batches == parser.get_default("batches") else args.batches
    genome, proteins, peaks = prepare(args.work, sizes)
    results = {n: measure(genome, proteins, peaks[n], batches, args.timeout) for n in sizes}
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    print(f"\n## TF binding at scale: DNA windows {WINDOW:,} bp, batch {BATCH_SIZE}, {batches} batches\n")
    print(table(results))
    print(targets(results))


if __name__ == "__main__":
    main()
