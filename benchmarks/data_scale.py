"""The flagship data path at real scale: memory and speed of ``IsoformExpression`` from 1k to 170k transcripts.

IsoFormer's data set has about 170,000 transcripts, each read with a 196,608 bp DNA window around its
TSS (cut from the genome when the record is read), its RNA and its protein. This benchmark writes a
synthetic genome and table of that shape (:mod:`synthetic_isoformer`) and measures, per table size,
each in its own fresh child process so the RSS figures do not mix:

* ``baseline``: RSS after ``import mmfuse.data, torch, lightning``, before any data.
* ``cold``: the first setup of a table, which converts it to the records store (``records_dir``
  emptied first): setup time, time to the first batch, peak RSS.
* ``warm``: setup with the store already written, then batches with ``num_workers`` 0: setup time,
  time to the first batch, RSS after setup and after the batches, loader records (windows) per second.
* ``workers``: the same with ``num_workers`` 2, the workers' RSS summed as well.
* ``ddp``: two ranks (gloo, CPU, two processes), each reading its share through a
  ``DistributedSampler``; their RSS summed.

Targets (printed with the table): per-process RSS at 170k within 1.5 GB of the import baseline and at
most 1.2x the 1k figure; 2 ranks at most 2.2x one rank; the first batch at 170k (warm) within 30 s;
at least 50 windows/s per loader worker. ::

    python benchmarks/data_scale.py --quick                 # 1k transcripts, 50 batches
    python benchmarks/data_scale.py                         # 1k, 10k, 170k; 200 batches
    python benchmarks/data_scale.py --sizes 10000 --batches 100 --work /tmp/mmfuse-bench
    python benchmarks/data_scale.py --system tf --quick     # TF binding (data_scale_tf.py); cells: data_scale_cells.py
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
WINDOW = 196_608  # Enformer's input length, the data module's default window
BATCH_SIZE = 8
_MARK = "RESULT "  # prefix of the child's one JSON line on stdout
_PAGE_MB = os.sysconf("SC_PAGE_SIZE") / 2**20
TARGETS = {"rss_over_baseline_mb": 1536, "rss_vs_1k": 1.2, "ddp_vs_one": 2.2, "first_batch_s": 30, "per_worker": 50}


# ------------------------------------------------------------------------------------------------------------------
# child side: one measurement in a fresh process; prints one JSON line
def _rss_mb() -> float:
    """Current RSS of this process (``/proc/self/statm``), MB."""
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * _PAGE_MB


def _rss_parts_mb() -> dict[str, float]:
    """This process's RSS by kind (``/proc/self/status``), MB: ``anon`` (heap: what it costs), ``file``
    (mapped files such as a memory-mapped store: shared with other processes and reclaimable), ``shmem``."""
    parts = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(("RssAnon:", "RssFile:", "RssShmem:")):
            name, kb, _ = line.split()
            parts[name[3:-1].lower()] = int(kb) / 1024
    return parts


def _peak_mb() -> float:
    """Peak RSS of this process so far (``ru_maxrss``, KB on Linux), MB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _children_mb(uss: bool = False) -> dict[str, float]:
    """RSS of this process's children (DataLoader workers) summed, MB; with ``uss``, their USS summed too.

    USS (pages only that process holds) needs psutil and reads ``/proc/<pid>/smaps``: slow enough to
    be taken outside the timed loop. RSS counts the pages the workers share with the parent (fork)
    once per worker, so it overstates what they add.
    """
    try:
        import psutil
    except ImportError:  # VmRSS of the direct children, from /proc
        pids = [p for t in Path(f"/proc/{os.getpid()}/task").iterdir() for p in (t / "children").read_text().split()]
        lines = [line for p in pids for line in Path(f"/proc/{p}/status").read_text().splitlines()]
        return {"rss": sum(int(line.split()[1]) / 1024 for line in lines if line.startswith("VmRSS:"))}
    out = {"rss": 0.0} | ({"uss": 0.0} if uss else {})
    for child in psutil.Process().children(recursive=True):
        try:
            out["rss"] += child.memory_info().rss / 2**20
            if uss:
                out["uss"] += child.memory_full_info().uss / 2**20
        except psutil.Error:  # a worker that just exited
            pass
    return out


def _tokenizers() -> tuple[dict[str, Any], dict[str, int]]:
    """The tokenizers of the tiny Enformer / NT (RNA) / ESM2 presets, and the letters each accepts."""
    from mmfuse.backbones import ESM2, Enformer, NucleotideTransformer

    dna = Enformer(preset="tiny").tokenizer
    rna = NucleotideTransformer(preset="tiny", modality="rna").tokenizer
    protein = ESM2(preset="tiny").tokenizer
    limits = {
        "rna": (rna.max_tokens - 1) * rna.k,  # <cls> plus k-mers (RNA here is plain ACGT)
        "protein": protein.max_tokens - len(protein.prefix) - len(protein.suffix),  # <cls> ... <eos>
    }
    return {"dna": dna, "rna": rna, "protein": protein}, limits


def _train_loader(dm: Any, kind: str, batch_size: int) -> Any:
    """The training loader; for ``kind`` ``ddp``, what Lightning's DDP strategy would give: the training split
    read through a ``DistributedSampler`` of this process's rank (``RANK``/``WORLD_SIZE``)."""
    if kind != "ddp":
        return dm.train_dataloader()
    from torch.utils.data import DataLoader, DistributedSampler

    rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    train = dm._splits["train"]
    sampler = DistributedSampler(train, num_replicas=world, rank=rank, shuffle=True, seed=0)
    return DataLoader(train, batch_size=batch_size, sampler=sampler, collate_fn=dm._collate, num_workers=0)


def _iterate(loader: Any, batches: int, started: float) -> dict[str, Any]:
    """Draws ``batches`` batches (epoch after epoch): the first one's time, the rate of the rest, workers' RSS."""
    out: dict[str, Any] = {}
    drawn = records = 0
    workers = getattr(loader, "num_workers", 0) > 0
    peak_rss, probing = 0.0, 0.0
    tick = time.perf_counter()
    while drawn < batches:
        for batch in loader:
            if drawn == 0:
                tick = time.perf_counter()
                out["first_batch_s"] = tick - started
                out["dna_length"] = int(batch["inputs"]["dna"]["input_ids"].shape[1])
            else:
                records += len(batch["ids"])
            drawn += 1
            if workers and (drawn % 25 == 0 or drawn == batches):
                probe = time.perf_counter()
                peak_rss = max(peak_rss, _children_mb()["rss"])
                probing += time.perf_counter() - probe
            if drawn >= batches:
                break
    elapsed = time.perf_counter() - tick - probing
    out["batches"] = drawn
    out["records_per_s"] = records / elapsed if records else None
    out["workers_mb"] = _children_mb(uss=True) | {"rss_peak": peak_rss} if workers else None
    return out


def _child(spec: dict[str, Any]) -> dict[str, Any]:
    started = time.perf_counter()
    import lightning  # noqa: F401  (the baseline: what any training process imports)
    import torch

    import mmfuse.data
    from mmfuse.data import IsoformExpression

    out: dict[str, Any] = {"kind": spec["kind"], "import_s": time.perf_counter() - started, "rss_import_mb": _rss_mb()}
    if spec["kind"] == "baseline":
        return out | {"peak_mb": _peak_mb(), "mmfuse_data": mmfuse.data.__file__}
    torch.set_num_threads(1)
    tokenizers, limits = _tokenizers()
    out["rss_tokenizers_mb"] = _rss_mb()
    rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    if spec["kind"] == "ddp":
        torch.distributed.init_process_group("gloo", rank=rank, world_size=world)
    started = time.perf_counter()
    dm = IsoformExpression(
        source={"path": spec["csv"], "genome": spec["genome"], "records_dir": spec["records_dir"]},
        columns="isoformer", loader={"batch_size": BATCH_SIZE, "num_workers": spec["workers"]},
        lengths={"max": limits},
    )  # fmt: skip
    dm.setup("fit")
    out["setup_s"] = time.perf_counter() - started
    out["rss_setup_mb"], out["peak_setup_mb"], out["rss_parts_setup_mb"] = _rss_mb(), _peak_mb(), _rss_parts_mb()
    tick = time.perf_counter()
    dm.attach_tokenizers(tokenizers)
    out["attach_s"] = time.perf_counter() - tick
    out["rss_attach_mb"], out["rss_parts_attach_mb"] = _rss_mb(), _rss_parts_mb()
    loader = _train_loader(dm, spec["kind"], BATCH_SIZE)
    out["train_records"] = len(loader.dataset)
    out |= _iterate(loader, spec["batches"], started)
    out["rss_end_mb"], out["peak_mb"], out["rss_parts_end_mb"] = _rss_mb(), _peak_mb(), _rss_parts_mb()
    if spec["kind"] == "ddp":
        torch.distributed.barrier()  # both ranks alive until both have measured
        torch.distributed.destroy_process_group()
    out["rank"] = rank
    return out


# ------------------------------------------------------------------------------------------------------------------
# parent side: prepares the inputs, starts the children, prints the table
def _start(spec: dict[str, Any], env: dict[str, str] | None = None) -> subprocess.Popen:
    command = [sys.executable, spec.get("script", str(Path(__file__).resolve())), "--child", json.dumps(spec)]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def _collect(process: subprocess.Popen, timeout: float, label: str) -> dict[str, Any]:
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()  # returncode -9
        stdout, stderr = process.communicate()
    lines = [line for line in stdout.splitlines() if line.startswith(_MARK)]
    if process.returncode or not lines:
        errors = [line for line in stderr.splitlines() if line.strip()] or ["no output"]
        failed = "timed out" if process.returncode == -9 else f"exit {process.returncode}"
        print(f"  {label}: {failed}\n" + "\n".join("    " + line for line in errors[-25:]), file=sys.stderr)
        return {"error": f"{failed}: {errors[-1][:160]}"}
    return json.loads(lines[-1][len(_MARK) :])


def _run(spec: dict[str, Any], timeout: float, label: str) -> dict[str, Any]:
    started = time.perf_counter()
    result = _collect(_start(spec), timeout, label) | {"wall_s": time.perf_counter() - started}
    print(f"  {label}: {result['wall_s']:.1f} s", file=sys.stderr)
    return result


def _run_ddp(spec: dict[str, Any], timeout: float, label: str, world: int = 2) -> dict[str, Any]:
    with socket.socket() as probe:  # a free port for the gloo rendezvous
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    started = time.perf_counter()
    ranks = []
    for rank in range(world):
        env = os.environ | {"RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": str(world),
                            "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}  # fmt: skip
        ranks.append(_start(spec, env))
    results = [_collect(p, timeout, f"{label} rank {r}") for r, p in enumerate(ranks)]
    print(f"  {label}: {time.perf_counter() - started:.1f} s", file=sys.stderr)
    errors = [r["error"] for r in results if "error" in r]
    if errors:
        return {"error": errors[0]}
    summed = {k: sum(r[k] or 0 for r in results) for k in ("peak_mb", "rss_end_mb", "records_per_s")}
    return summed | {"first_batch_s": max(r["first_batch_s"] for r in results), "ranks": results}


def _prepare(work: Path, sizes: list[int]) -> tuple[Path, dict[int, Path]]:
    sys.path.insert(0, str(HERE))
    from synthetic_isoformer import write_genome, write_isoformer_table

    started = time.perf_counter()
    lengths = write_genome(work / "genome.fa")
    print(f"genome {work / 'genome.fa'}: {time.perf_counter() - started:.1f} s", file=sys.stderr)
    tables = {}
    for n in sizes:
        tables[n] = work / f"n{n}" / "GTEx_final.csv"
        if not tables[n].is_file():  # written atomically: a file there is complete (and deterministic)
            started = time.perf_counter()
            write_isoformer_table(tables[n], lengths, n)
            print(f"table {tables[n]}: {time.perf_counter() - started:.1f} s", file=sys.stderr)
    return work / "genome.fa", tables


def _measure(genome: Path, table: Path, batches: int, timeout: float) -> dict[str, Any]:
    records_dir = table.parent / "records"
    shutil.rmtree(records_dir, ignore_errors=True)
    spec = {"csv": str(table), "genome": str(genome), "records_dir": str(records_dir), "workers": 0}
    n = table.parent.name
    results = {"cold": _run(spec | {"kind": "data", "batches": 1}, timeout, f"{n} cold")}
    if "error" in results["cold"]:  # the others would each convert again (and fail the same way)
        return results | dict.fromkeys(("warm", "workers", "ddp"), {"error": "skipped: the cold run failed"})
    results["warm"] = _run(spec | {"kind": "data", "batches": batches}, timeout, f"{n} warm, 0 workers")
    results["workers"] = _run(spec | {"kind": "data", "batches": batches, "workers": 2}, timeout, f"{n} 2 workers")
    results["ddp"] = _run_ddp(spec | {"kind": "ddp", "batches": batches}, timeout, f"{n} DDP 2 ranks")
    return results


# ------------------------------------------------------------------------------------------------------------------
# report
def _fmt(value: Any, digits: int = 0) -> str:
    if value is None:
        return "–"
    return f"{value:,.{digits}f}" if isinstance(value, float | int) else str(value)


def _get(result: dict[str, Any], key: str, scale: float = 1.0) -> float | None:
    value = result.get(key)
    return value * scale if isinstance(value, float | int) else None


def _markdown(head: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(head) + " |", "|" + "|".join("---:" for _ in head) + "|",
            *("| " + " | ".join(row) + " |" for row in rows)]  # fmt: skip


def _table(baseline: dict[str, Any], results: dict[int, dict[str, Any]], batches: int) -> str:
    speed, memory = [], []
    for n, r in results.items():
        cold, warm, workers, ddp = r["cold"], r["warm"], r["workers"], r["ddp"]
        w2 = _get(workers, "records_per_s")
        speed.append(
            [
                f"{n:,}",
                *(_fmt(_get(cold, k), 1) for k in ("setup_s", "first_batch_s")),
                *(_fmt(_get(warm, k), 1) for k in ("setup_s", "attach_s", "first_batch_s", "records_per_s")),
                _fmt(w2, 1),
                _fmt(None if w2 is None else w2 / 2, 1),
                _fmt(_get(ddp, "records_per_s"), 1),
            ]
        )
        parts = warm.get("rss_parts_end_mb") or {}
        w = workers.get("workers_mb") or {}
        ratio = ddp["peak_mb"] / warm["peak_mb"] if _get(ddp, "peak_mb") and _get(warm, "peak_mb") else None
        memory.append([f"{n:,}", _fmt(_get(cold, "peak_mb")), _fmt(_get(warm, "rss_setup_mb")),
                       _fmt(_get(warm, "rss_end_mb")), _fmt(parts.get("anon")), _fmt(parts.get("file")),
                       _fmt(_get(warm, "peak_mb")), _fmt(_get(workers, "peak_mb")), _fmt(w.get("rss_peak")),
                       _fmt(w.get("uss")), _fmt(_get(ddp, "peak_mb")), _fmt(ratio, 2)])  # fmt: skip
    lines = [f"import baseline (mmfuse.data, torch, lightning): {_fmt(_get(baseline, 'rss_import_mb'))} MB RSS", ""]
    lines += _markdown(["transcripts", "cold setup s", "cold 1st batch s", "warm setup s", "attach s",
                        "warm 1st batch s", "rec/s w0", "rec/s w2", "rec/s per worker w2", "rec/s DDP 2 ranks"],
                       speed)  # fmt: skip
    lines += ["", "memory, MB (RSS; anon = heap, file = mapped files such as the records store; w2 = 2 workers):", ""]
    lines += _markdown(["transcripts", "cold peak", "warm after setup", f"after {batches} batches", "of which anon",
                        "of which file", "warm peak", "w2 main peak", "w2 workers RSS", "w2 workers USS",
                        "DDP 2 ranks peak", "DDP / one"], memory)  # fmt: skip
    errors = [f"{n:,} {part}: {res['error']}" for n, r in results.items() for part, res in r.items() if "error" in res]
    if errors:
        lines += ["", "failed measurements:", *(f"- {e}" for e in errors)]
    return "\n".join(lines)


def _check(what: str, value: float | None, limit: float, unit: str, at_least: bool = False) -> str:
    ok = None if value is None else (value >= limit if at_least else value <= limit)
    verdict = "n/a " if ok is None else ("PASS" if ok else "FAIL")
    return f"- {verdict}  {what}: {_fmt(value, 2)} {unit}"


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def _targets(baseline: dict[str, Any], results: dict[int, dict[str, Any]]) -> str:
    n = max(results)
    largest, small = results[n], results[1_000] if 1_000 in results and n != 1_000 else None
    warm = largest["warm"]
    peak, base = _get(warm, "peak_mb"), _get(baseline, "rss_import_mb")
    anon = (warm.get("rss_parts_end_mb") or {}).get("anon")
    anon_1k = ((small or {}).get("warm", {}).get("rss_parts_end_mb") or {}).get("anon")
    rates = {f"{k:,} w0": _get(r["warm"], "records_per_s") for k, r in results.items()}
    rates |= {f"{k:,} w2": _get(r["workers"], "records_per_s", 0.5) for k, r in results.items()}
    known = [v for v in rates.values() if v is not None]
    lines = [
        "",
        "targets:",
        _check(f"per-process peak RSS at {n:,} minus the import baseline <= 1.5 GB",
               None if peak is None or base is None else peak - base, TARGETS["rss_over_baseline_mb"], "MB"),
        _check(f"peak RSS at {n:,} <= 1.2x the 1k figure", _ratio(peak, _get(small["warm"], "peak_mb")) if small
               else None, TARGETS["rss_vs_1k"], "x"),
        _check("2 DDP ranks <= 2.2x one rank (summed peaks)", _ratio(_get(largest["ddp"], "peak_mb"), peak),
               TARGETS["ddp_vs_one"], "x"),
        _check(f"first batch at {n:,} (warm store) <= 30 s", _get(warm, "first_batch_s"), TARGETS["first_batch_s"],
               "s"),
        _check(f"loader >= 50 windows/s per worker (slowest of {', '.join(rates)})", min(known) if known else None,
               TARGETS["per_worker"], "/s", at_least=True),
        f"- (anon RSS after the batches at {n:,}: {_fmt(anon)} MB"
        + (f", {_fmt(_ratio(anon, anon_1k), 2)}x the 1k figure" if _ratio(anon, anon_1k) else "")
        + f"; cold first batch, converting the table: {_fmt(_get(largest['cold'], 'first_batch_s'), 1)} s)",
    ]  # fmt: skip
    return "\n".join(lines)


def arguments(doc: str, sizes: str, what: str, batches: int, quick: str, work: str, timeout: float) -> Any:
    """The options every data-scale script takes (its sizes, batches, ``--quick``, work directory, ``--json``)."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument("--sizes", default=sizes, help=f"{what}, comma-separated")
    parser.add_argument("--batches", type=int, default=batches, help="batches drawn per measurement")
    parser.add_argument("--quick", action="store_true", help=quick)
    parser.add_argument("--work", type=Path, default=Path(work), help="where the inputs and stores go")
    parser.add_argument("--timeout", type=float, default=timeout, help="seconds allowed per child process")
    parser.add_argument("--json", type=Path, help="also write every measurement to this file")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    return parser


def main(argv: list[str] | None = None) -> None:
    """Runs the benchmark (or, with ``--child``, one measurement); ``--system tf|cells``: the other seed systems'."""
    argv = sys.argv[1:] if argv is None else argv
    if "--system" in argv and argv[argv.index("--system") + 1] != "isoform":  # their scripts, their options
        at = argv.index("--system")
        return __import__(f"data_scale_{argv[at + 1]}").main(argv[:at] + argv[at + 2 :])
    parser = arguments(__doc__, "1000,10000,170000", "table sizes in transcripts", 200, "--sizes 1000 and 50 batches",
                       "/tmp/mmfuse-bench", 600)  # fmt: skip
    args = parser.parse_args(argv)
    if args.child:
        print(_MARK + json.dumps(_child(json.loads(args.child))), flush=True)
        return
    sizes = [1_000] if args.quick else [int(s) for s in args.sizes.split(",")]
    batches = 50 if args.quick and args.batches == parser.get_default("batches") else args.batches
    genome, tables = _prepare(args.work, sizes)
    baseline = _run({"kind": "baseline"}, args.timeout, "import baseline")
    results = {n: _measure(genome, tables[n], batches, args.timeout) for n in sizes}
    if args.json:
        args.json.write_text(json.dumps({"baseline": baseline, "results": results}, indent=1))
    print(f"\n## data path at scale: DNA windows {WINDOW:,} bp, batch {BATCH_SIZE}, {batches} batches\n")
    print(_table(baseline, results, batches))
    print(_targets(baseline, results))


if __name__ == "__main__":
    main()
