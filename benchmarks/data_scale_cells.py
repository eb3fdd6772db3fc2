"""Single cells at scale: memory and speed of ``CellClassification`` from 2k to 500k cells × 20,000 genes.

A CELLxGENE-style atlas holds hundreds of thousands of cells of ~20,000 genes, ~1,500 of them expressed
per cell. This benchmark writes an ``.h5ad`` of that shape by simulation (CSR written in blocks of cells
straight with h5py in AnnData's on-disk layout, so the writer stays small; counts as float32, obs
``cell_type`` and ``donor``) and measures, per size, each in its own fresh child process:

* ``baseline``: RSS after ``import mmfuse.data, torch, lightning``.
* ``build``: converting the file into the cell store (:mod:`mmfuse.data.store.cells`; ``records_dir``
  emptied first): time and peak RSS.
* ``fit``: with the store written, from process start: construct the data module, ``setup("fit")``,
  attach a Geneformer-style rank value tokenizer (19,000 of the 20,000 genes known, so the cells
  without a known gene are looked for over the stored gene indices), draw the first batch of
  ``train_dataloader()``: time to the first batch, peak RSS; then more batches: records per second,
  with ``num_workers`` 0 and 2; ``ddp``: two gloo ranks reading their shares through a
  ``DistributedSampler``, peak RSS summed over the ranks.

Targets: fit peak RSS at the largest size within 1.2x of 2k; the first batch within 10 s. ::

    python benchmarks/data_scale_cells.py --quick              # 2k and 20k cells, 20 batches
    python benchmarks/data_scale_cells.py                      # 2k and 500k cells
    python benchmarks/data_scale_cells.py --cells 2000,200000  # as disk and time allow (~12 GB at 500k)
    python benchmarks/data_scale.py --system cells --quick     # the same, from the data-scale entry point
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent  # the children run this file (``script`` in their spec)
sys.path.insert(0, str(HERE))

from data_scale import (  # noqa: E402
    _MARK,
    _children_mb,
    _fmt,
    _get,
    _markdown,
    _peak_mb,
    _ratio,
    _rss_mb,
    _run,
    _run_ddp,
    _train_loader,
)

GENES, EXPRESSED, KNOWN = 20_000, 1_500, 19_000
BATCH_SIZE = 16
TARGETS = {"rss_vs_small": 1.2, "first_batch_s": 10.0}


def write_h5ad(path: Path, cells: int, seed: int = 0, block: int = 5_000) -> None:
    """An ``.h5ad`` of ``cells`` × 20,000 genes, 1,500 expressed per cell, written a block of cells at a time."""
    import h5py
    import numpy as np
    import pandas as pd
    from anndata.io import write_elem

    rng = np.random.default_rng(seed)
    step = GENES / EXPRESSED
    base = (np.arange(EXPRESSED) * step).astype(np.int64)  # one gene in each stretch of ~13: sorted, distinct
    tmp = path.with_name(f".{path.name}.tmp")
    with h5py.File(tmp, "w") as f:
        f.attrs["encoding-type"], f.attrs["encoding-version"] = "anndata", "0.1.0"
        X = f.create_group("X")
        X.attrs["encoding-type"], X.attrs["encoding-version"], X.attrs["shape"] = "csr_matrix", "0.1.0", (cells, GENES)
        nnz = cells * EXPRESSED
        data = X.create_dataset("data", (nnz,), dtype=np.float32, chunks=(1 << 20,))
        indices = X.create_dataset("indices", (nnz,), dtype=np.int32, chunks=(1 << 20,))
        X.create_dataset("indptr", data=np.arange(cells + 1, dtype=np.int64) * EXPRESSED)
        for start in range(0, cells, block):
            n = min(block, cells - start)
            offsets = rng.integers(0, int(step), (n, EXPRESSED))
            at = slice(start * EXPRESSED, (start + n) * EXPRESSED)
            indices[at] = np.minimum(base + offsets, GENES - 1).astype(np.int32).ravel()
            data[at] = (rng.geometric(0.3, (n, EXPRESSED)) * rng.integers(1, 4, (n, 1))).astype(np.float32).ravel()
        ids = [f"cell{i:07d}" for i in range(cells)]
        obs = pd.DataFrame({"cell_type": pd.Categorical(np.array(["T", "B", "NK"])[np.arange(cells) % 3]),
                            "donor": pd.Categorical([f"d{i % 20}" for i in range(cells)])}, index=ids)  # fmt: skip
        write_elem(f, "obs", obs)
        write_elem(f, "var", pd.DataFrame(index=[f"ENSG{i:011d}" for i in range(GENES)]))
    tmp.replace(path)


def _tokenizer() -> Any:
    from mmfuse.backbones.geneformer_inputs import RankValueTokenizer

    genes = [f"ENSG{i:011d}" for i in range(KNOWN)]
    tokens = {"<pad>": 0, "<cls>": 1, "<eos>": 2} | {g: i + 3 for i, g in enumerate(genes)}
    return RankValueTokenizer("Geneformer-like", tokens, {g: 1.0 + (i % 7) for i, g in enumerate(genes)}, 2048, True)


def _child(spec: dict[str, Any]) -> dict[str, Any]:
    started = time.perf_counter()
    import lightning  # noqa: F401  (what any training process imports)
    import torch

    from mmfuse.data import CellClassification

    out: dict[str, Any] = {"kind": spec["kind"], "rss_import_mb": _rss_mb()}
    if spec["kind"] == "baseline":
        return out | {"peak_mb": _peak_mb()}
    torch.set_num_threads(1)
    rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    if spec["kind"] == "ddp":
        torch.distributed.init_process_group("gloo", rank=rank, world_size=world)
    source = {"path": spec["h5ad"], "records_dir": spec["records_dir"]}
    loader = {"batch_size": BATCH_SIZE, "num_workers": spec.get("workers", 0)}
    tick = time.perf_counter()
    dm = CellClassification(source, split={"group": "donor"}, loader=loader)
    if spec["kind"] == "build":
        dm.records()
        return out | {"build_s": time.perf_counter() - tick, "peak_mb": _peak_mb()}
    dm.setup("fit")
    out["setup_s"] = time.perf_counter() - tick
    tokenizer = _tokenizer()
    tick = time.perf_counter()
    dm.attach_tokenizers({"cell": tokenizer})
    out["attach_s"] = time.perf_counter() - tick
    loader = _train_loader(dm, spec["kind"], BATCH_SIZE)
    batches, records, drawn = iter(loader), 0, 0
    next(batches)
    out["first_batch_s"], out["peak_first_mb"] = time.perf_counter() - started, _peak_mb()
    tick = time.perf_counter()
    for batch in batches:
        records += len(batch["ids"])
        drawn += 1
        if drawn >= spec["batches"]:
            break
    out["records_per_s"] = records / (time.perf_counter() - tick)
    out["workers_rss_mb"] = _children_mb()["rss"] if spec.get("workers") else None
    out |= {"peak_mb": _peak_mb(), "rss_end_mb": _rss_mb(), "train_records": len(dm._splits["train"]), "rank": rank}
    if spec["kind"] == "ddp":
        torch.distributed.barrier()  # both ranks alive until both have measured
        torch.distributed.destroy_process_group()
    return out


def measure(h5ad: Path, batches: int, timeout: float) -> dict[str, Any]:
    records_dir = h5ad.parent / "records"
    shutil.rmtree(records_dir, ignore_errors=True)
    spec = {"h5ad": str(h5ad), "records_dir": str(records_dir), "batches": batches, "script": str(Path(__file__))}
    n = h5ad.parent.name
    results = {"build": _run(spec | {"kind": "build"}, timeout, f"{n} build")}
    if "error" in results["build"]:
        return results | dict.fromkeys(("w0", "w2", "ddp"), {"error": "skipped: the build failed"})
    results["w0"] = _run(spec | {"kind": "fit", "workers": 0}, timeout, f"{n} fit, 0 workers")
    results["w2"] = _run(spec | {"kind": "fit", "workers": 2}, timeout, f"{n} fit, 2 workers")
    results["ddp"] = _run_ddp(spec | {"kind": "ddp", "workers": 0}, timeout, f"{n} DDP 2 ranks")
    results["store_gb"] = sum(p.stat().st_size for p in records_dir.glob("cells-*.arrow")) / 2**30
    return results


def table(baseline: dict[str, Any], results: dict[int, dict[str, Any]]) -> str:
    rows = []
    for n, r in results.items():
        w0, w2 = r["w0"], r["w2"]
        rate2 = _get(w2, "records_per_s")
        rows.append([f"{n:,}", _fmt(r.get("store_gb"), 2), _fmt(_get(r["build"], "build_s"), 1),
                     _fmt(_get(r["build"], "peak_mb")), _fmt(_get(w0, "setup_s"), 2), _fmt(_get(w0, "attach_s"), 2),
                     _fmt(_get(w0, "first_batch_s"), 2), _fmt(_get(w0, "peak_mb")), _fmt(_get(w0, "records_per_s")),
                     _fmt(_get(w2, "first_batch_s"), 2), _fmt(_get(w2, "peak_mb")),
                     _fmt(None if rate2 is None else rate2 / 2), _fmt(_get(w2, "workers_rss_mb")),
                     _fmt(_get(r["ddp"], "peak_mb"))])  # fmt: skip
    lines = [f"import baseline (mmfuse.data, torch, lightning): {_fmt(_get(baseline, 'rss_import_mb'))} MB RSS", ""]
    lines += _markdown(["cells", "store GB", "build s", "build peak MB", "setup s", "attach s", "1st batch s (w0)",
                        "fit peak MB (w0)", "rec/s w0", "1st batch s (w2)", "fit peak MB (w2, main)",
                        "rec/s per worker (w2)", "workers RSS MB", "DDP 2 ranks peak MB (summed)"], rows)  # fmt: skip
    small, large = min(results), max(results)
    if small != large:
        for w in ("w0", "w2", "ddp"):
            ratio = _ratio(_get(results[large][w], "peak_mb"), _get(results[small][w], "peak_mb"))
            verdict = "n/a" if ratio is None else "PASS" if ratio <= TARGETS["rss_vs_small"] else "FAIL"
            lines.append(
                f"- {verdict}  fit peak RSS {large:,} / {small:,} cells ({w}): {_fmt(ratio, 2)}x (target <= 1.2)"
            )
    first = _get(results[large]["w0"], "first_batch_s")
    verdict = "n/a" if first is None else "PASS" if first <= TARGETS["first_batch_s"] else "FAIL"
    lines.append(f"- {verdict}  first batch at {large:,} cells, from process start: {_fmt(first, 2)} s (target <= 10)")
    errors = [f"{n:,} {k}: {v['error']}" for n, r in results.items() for k, v in r.items()
              if isinstance(v, dict) and "error" in v]  # fmt: skip
    return "\n".join(lines + (["", "failed:", *errors] if errors else []))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cells", default="2000,500000", help="sizes in cells, comma-separated")
    parser.add_argument("--quick", action="store_true", help="2k and 20k cells, 20 batches")
    parser.add_argument("--batches", type=int, default=50, help="batches drawn after the first, per measurement")
    parser.add_argument("--work", type=Path, default=Path("/tmp/mmfuse-bench-cells"), help="inputs and stores")
    parser.add_argument("--timeout", type=float, default=1200, help="seconds allowed per child process")
    parser.add_argument("--json", type=Path, help="also write every measurement to this file")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    if args.child:
        print(_MARK + json.dumps(_child(json.loads(args.child))), flush=True)
        return
    sizes = [2_000, 20_000] if args.quick else [int(s) for s in args.cells.split(",")]
    batches = 20 if args.quick and args.batches == parser.get_default("batches") else args.batches
    files = {}
    for n in sizes:
        files[n] = args.work / f"n{n}" / "cells.h5ad"
        if not files[n].is_file():
            files[n].parent.mkdir(parents=True, exist_ok=True)
            tick = time.perf_counter()
            write_h5ad(files[n], n)
            print(f"wrote {files[n]} ({files[n].stat().st_size / 2**30:.2f} GB): {time.perf_counter() - tick:.0f} s",
                  file=sys.stderr)  # fmt: skip
    baseline = _run({"kind": "baseline", "script": str(Path(__file__).resolve())}, args.timeout, "import baseline")
    results = {n: measure(files[n], batches, args.timeout) for n in sizes}
    if args.json:
        args.json.write_text(json.dumps({"baseline": baseline, "results": results}, indent=1))
    print(f"\n## cells at scale: {GENES:,} genes, {EXPRESSED:,} expressed per cell, batch {BATCH_SIZE}, "
          f"{batches} batches\n")  # fmt: skip
    print(table(baseline, results))


if __name__ == "__main__":
    main()
