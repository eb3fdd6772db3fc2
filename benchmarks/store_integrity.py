"""What the stores' checksums cost: the records store at IsoFormer's size, the embedding cache, the source digest.

mmfuse checks every store file it reads against checksums written with it (docs/data.md, "Integrity"):
a records store's layout when it opens, each column of a record batch the first time a process reads it
(the whole file when it opens if it is small); an embedding-cache entry the first time a process reads it;
and a store is named by the SHA-256 of its source's whole content. This script measures, in one process:

* ``records``: a synthetic IsoFormer table (:mod:`synthetic_isoformer`, 170k transcripts by default) is
  converted once through ``IsoformExpression`` (DNA windows from a small genome, ``columns: isoformer``);
  then, alternating runs without checks (the store mapped and read as before checksums existed) and
  with them: opening the store, the setup pass over the sequence columns (``ColumnStats`` of RNA and
  protein, what every setup does), a first epoch of reads in shuffled order (id, RNA, protein per record,
  batches of 8: every batch's columns checked on first touch) and a second epoch (nothing left to check).
* ``loader``: seconds per batch of the real loader (196,608 bp windows cut from the genome, tokenized),
  to express the checks as a share of an epoch.
* ``digest``: hashing the source table (what finding its store costs every setup) against converting it.
* ``cache``: an embedding store of pooled rows (one ``1 x 1280`` float32 row per sequence, 170k sequences)
  and one of per-token rows (``512 x 768`` float16, 2k sequences): a first epoch of reads in batches of 32
  (every entry checked once) and a later one, with and without checks, alternating.

Ratios are medians over the alternating runs, with their spread (min-max). ::

    python benchmarks/store_integrity.py --quick          # 2k transcripts, 2k + 200 cache entries, 3 runs
    python benchmarks/store_integrity.py                  # 170k transcripts, 170k + 2k cache entries, 5 runs
"""

from __future__ import annotations

import argparse
import json
import mmap
import shutil
import statistics
import struct
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

WINDOW = 196_608
BATCH_SIZE = 8
CACHE_BATCH = 32
#: contigs of the small genome the windows are cut from (the table's coordinates are drawn inside them)
CONTIGS = {"chr1": 3_000_000, "chr2": 2_000_000, "chrM": 16_569}


def _markdown(head: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(head) + " |", "|" + "|".join("---:" for _ in head) + "|",
            *("| " + " | ".join(row) + " |" for row in rows)]  # fmt: skip


def _spread(values: list[float], digits: int = 3) -> str:
    return f"{statistics.median(values):.{digits}f} ({min(values):.{digits}f}-{max(values):.{digits}f})"


def _timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    tick = time.perf_counter()
    out = fn()
    return time.perf_counter() - tick, out


# records store ------------------------------------------------------------------------------------------------------
def _open_unchecked(path: Path) -> Any:
    """The store mapped and parsed as before checksums existed (the Arrow part of the file; nothing checked)."""
    import pyarrow as pa

    from mmfuse.data.store.integrity import MAGIC
    from mmfuse.data.store.mapped import RecordStore

    tail = struct.Struct(f"<QI{len(MAGIC)}s")
    with path.open("rb") as handle:
        mapping = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
    length, _, magic = tail.unpack(mapping[-tail.size :])
    assert magic == MAGIC
    arrow = pa.py_buffer(mapping).slice(0, len(mapping) - tail.size - length)
    reader = pa.ipc.open_file(pa.BufferReader(arrow))
    table = reader.read_all()
    meta = json.loads(reader.schema.metadata[b"mmfuse"])
    return RecordStore(table, meta["names"], meta["source"], path, mapping, meta)


def _open_checked(path: Path) -> Any:
    from mmfuse.data.store.mapped import RecordStore

    return RecordStore.open(path)


def _records_run(opener: Callable[[Path], Any], path: Path, columns: dict[str, str], order: np.ndarray) -> dict:
    from mmfuse.data.store.rows import ColumnStats

    out: dict[str, float] = {}
    out["open_s"], store = _timed(lambda: opener(path))
    out["setup_s"], _ = _timed(lambda: [ColumnStats(store, c) for c in (columns["rna"], columns["protein"])])
    names = [columns["id"], columns["rna"], columns["protein"]]

    def epoch() -> None:
        for start in range(0, len(order), BATCH_SIZE):
            for row in order[start : start + BATCH_SIZE].tolist():
                for name in names:
                    store.value(name, row)
            if start % (16 * BATCH_SIZE) == 0:
                store.release()  # as the record reader does

    out["epoch1_s"], _ = _timed(epoch)
    out["epoch2_s"], _ = _timed(epoch)
    out["file_mb"] = path.stat().st_size / 2**20
    store.release()
    return out


def _records(work: Path, transcripts: int, runs: int, batches: int) -> dict[str, Any]:
    import torch
    from data_scale import _tokenizers
    from synthetic_isoformer import write_genome, write_isoformer_table

    from mmfuse.data import IsoformExpression
    from mmfuse.data.store.records import content

    torch.set_num_threads(1)
    work.mkdir(parents=True, exist_ok=True)
    genome = work / "genome.fa"
    lengths = write_genome(genome, CONTIGS)
    csv = work / f"isoformer_{transcripts}.csv"
    if not csv.is_file():
        print(f"writing {transcripts:,} transcripts to {csv} ...", file=sys.stderr)
        write_isoformer_table(csv, lengths, transcripts)
    records_dir = work / "records"
    shutil.rmtree(records_dir, ignore_errors=True)
    tokenizers, limits = _tokenizers()

    def module() -> Any:
        return IsoformExpression(source={"path": str(csv), "genome": {"fasta": str(genome), "window": WINDOW},
                                         "records_dir": str(records_dir)}, columns="isoformer",
                                 loader={"batch_size": BATCH_SIZE}, lengths={"max": limits})  # fmt: skip

    out: dict[str, Any] = {"transcripts": transcripts, "csv_mb": csv.stat().st_size / 2**20}
    dm = module()
    out["build_setup_s"], _ = _timed(lambda: dm.setup("fit"))  # converts the table: reads (and digests) it
    store = dm.records()
    path = store.path
    out["digest_s"] = [_timed(lambda: content(csv))[0] for _ in range(3)]
    dm.attach_tokenizers(tokenizers)
    loader = iter(dm.train_dataloader())
    next(loader)
    tick = time.perf_counter()
    for _ in range(batches):
        next(loader)
    out["loader_batch_s"] = (time.perf_counter() - tick) / batches
    out["train_records"] = len(dm.split_ids("train"))
    columns = {"id": dm.id_column, "rna": dm.modalities["rna"], "protein": dm.modalities["protein"]}
    order = np.random.default_rng(0).permutation(len(store))
    dm = loader = store = None  # the data module's store unmapped before the runs
    out["runs"] = {"without": [], "with": []}
    _records_run(_open_checked, path, columns, order)  # the file in the page cache for both
    for run in range(runs):
        for kind, opener in (("without", _open_unchecked), ("with", _open_checked))[:: 1 if run % 2 == 0 else -1]:
            out["runs"][kind].append(_records_run(opener, path, columns, order))
            print(f"  records run {run + 1}/{runs} {kind}: {out['runs'][kind][-1]}", file=sys.stderr)
    return out


# embedding cache -------------------------------------------------------------------------------------------------
def _cache_store(directory: Path, keys: int, rows: int, dim: int, precision: str) -> list[bytes]:
    import torch

    from mmfuse.cache import EmbeddingStore

    shutil.rmtree(directory, ignore_errors=True)
    store = EmbeddingStore(directory, dim=dim, precision=precision)
    dtype = torch.float32 if precision == "float32" else torch.float16
    base = torch.randn(rows, dim, generator=torch.Generator().manual_seed(0)).to(dtype)
    names = [i.to_bytes(16, "big") for i in range(keys)]
    for start in range(0, keys, 512):
        store.put([(k, base + i) for i, k in enumerate(names[start : start + 512], start)])
    return names


def _cache_run(directory: Path, names: list[bytes], dim: int, precision: str, checked: bool) -> dict[str, float]:
    from mmfuse.cache import EmbeddingStore

    store = EmbeddingStore(directory, dim=dim, precision=precision)
    if not checked:
        store._checked.update(names)  # as if every entry were checked: reads as before checksums existed
    order = [names[i] for i in np.random.default_rng(0).permutation(len(names))]

    def epoch() -> None:
        for start in range(0, len(order), CACHE_BATCH):
            batch = order[start : start + CACHE_BATCH]
            views = [store.view(k) for k in batch]  # as CachedBackbone.encode reads them
            out = np.zeros((len(views), max(len(v) for v in views), dim), dtype=store.np_dtype)
            for i, v in enumerate(views):
                out[i, : len(v)] = v

    first, _ = _timed(epoch)
    later, _ = _timed(epoch)
    return {"epoch1_s": first, "epoch2_s": later}


def _cache(work: Path, shapes: list[tuple[str, int, int, int, str]], runs: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for label, keys, rows, dim, precision in shapes:
        directory = work / f"cache-{label}"
        names = _cache_store(directory, keys, rows, dim, precision)
        size = sum(p.stat().st_size for p in directory.glob("*.bin")) / 2**20
        result: dict[str, Any] = {"keys": keys, "rows": rows, "dim": dim, "precision": precision, "bin_mb": size,
                                  "runs": {"without": [], "with": []}}  # fmt: skip
        _cache_run(directory, names, dim, precision, True)  # in the page cache for both
        for run in range(runs):
            for kind in ("without", "with")[:: 1 if run % 2 == 0 else -1]:
                result["runs"][kind].append(_cache_run(directory, names, dim, precision, kind == "with"))
            print(f"  cache {label} run {run + 1}/{runs}: {result['runs']['with'][-1]}", file=sys.stderr)
        out[label] = result
        shutil.rmtree(directory, ignore_errors=True)
    return out


# report ----------------------------------------------------------------------------------------------------------
def _ratios(runs: dict[str, list[dict[str, float]]], key: str) -> list[float]:
    return [w[key] / o[key] for o, w in zip(runs["without"], runs["with"], strict=True)]


def _report(records: dict[str, Any], cache: dict[str, Any]) -> str:
    runs = records["runs"]
    lines = [f"## records store: {records['transcripts']:,} transcripts ({records['csv_mb']:,.0f} MB CSV, store "
             f"{runs['with'][0]['file_mb']:,.0f} MB), {len(runs['with'])} alternating runs; seconds, median (min-max)",
             ""]  # fmt: skip
    rows = []
    for key, what in (("open_s", "open the store"), ("setup_s", "setup pass (ColumnStats of RNA, protein)"),
                      ("epoch1_s", "first epoch of reads (id, RNA, protein; batches of 8)"),
                      ("epoch2_s", "second epoch of reads")):  # fmt: skip
        rows.append([what, _spread([r[key] for r in runs["without"]]), _spread([r[key] for r in runs["with"]]),
                     _spread(_ratios(runs, key), 2)])  # fmt: skip
    lines += _markdown(["", "without checks", "with checks", "with / without"], rows)
    batches = -(-records["train_records"] // BATCH_SIZE)
    per_read = [(w["epoch1_s"] - o["epoch1_s"]) / (-(-records["transcripts"] // BATCH_SIZE)) * 1e6
                for o, w in zip(runs["without"], runs["with"], strict=True)]  # fmt: skip
    extra = [sum(w[k] - o[k] for k in ("open_s", "setup_s", "epoch1_s"))
             for o, w in zip(runs["without"], runs["with"], strict=True)]  # fmt: skip
    epoch = records["loader_batch_s"] * batches
    digest = statistics.median(records["digest_s"])
    lines += ["",
              f"- checks' cost per batch of 8 in the first epoch: {_spread(per_read, 1)} us",
              f"- all checks of one process (open + setup pass + first epoch, with minus without): {_spread(extra)} s",
              f"- the real loader (windows of {WINDOW:,} bp from the genome, tokenized; one process): "
              f"{records['loader_batch_s'] * 1e3:.1f} ms per batch of 8, so an epoch of the "
              f"{records['train_records']:,} training records is {epoch:,.0f} s; the checks are "
              f"{_spread([e / epoch * 100 for e in extra], 2)} % of it",
              f"- source digest (SHA-256 of the {records['csv_mb']:,.0f} MB table, page cache warm), every setup: "
              f"{_spread(records['digest_s'])} s; converting the table (first setup, which digests it twice): "
              f"{records['build_setup_s']:.1f} s ({digest / records['build_setup_s'] * 100:.1f} % of it per digest)",
              ""]  # fmt: skip
    for label, result in cache.items():
        runs = result["runs"]
        lines += [f"## embedding cache, {label}: {result['keys']:,} sequences x {result['rows']} x {result['dim']} "
                  f"{result['precision']} ({result['bin_mb']:,.0f} MB); reads in batches of {CACHE_BATCH}, seconds",
                  ""]  # fmt: skip
        rows = [[what, _spread([r[key] for r in runs["without"]]), _spread([r[key] for r in runs["with"]]),
                 _spread(_ratios(runs, key), 2)]
                for key, what in (("epoch1_s", "first epoch (every entry checked once)"),
                                  ("epoch2_s", "later epoch"))]  # fmt: skip
        lines += [*_markdown(["", "without checks", "with checks", "with / without"], rows), ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--transcripts", type=int, default=170_000, help="rows of the synthetic IsoFormer table")
    parser.add_argument("--runs", type=int, default=5, help="alternating runs without and with checks")
    parser.add_argument("--batches", type=int, default=50, help="loader batches timed")
    parser.add_argument("--quick", action="store_true", help="2k transcripts, small caches, 3 runs, 10 batches")
    parser.add_argument("--work", type=Path, default=Path("/tmp/mmfuse-bench-integrity"))
    parser.add_argument("--json", type=Path, help="also write every measurement to this file")
    args = parser.parse_args(argv)
    transcripts, runs, batches = (2_000, 3, 10) if args.quick else (args.transcripts, args.runs, args.batches)
    shapes = [("pooled", 2_000 if args.quick else 170_000, 1, 1280, "float32"),
              ("per-token", 200 if args.quick else 2_000, 512, 768, "float16")]  # fmt: skip
    records = _records(args.work, transcripts, runs, batches)
    cache = _cache(args.work, shapes, runs)
    if args.json:
        args.json.write_text(json.dumps({"records": records, "cache": cache}, indent=1))
    print(_report(records, cache))


if __name__ == "__main__":
    main()
