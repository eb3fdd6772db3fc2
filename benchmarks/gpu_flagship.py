"""The IsoFormer flagship fine-tuned at its real sizes in ``bf16-mixed`` on one GPU: speed, memory, utilisation.

The model is ``experiments/isoformer/config.yaml`` with random weights (``pretrained=False``, no downloads):
Enformer (official architecture: dim 1,536, depth 11, 8 heads; 196,608 bp, 896 central bins), Nucleotide
Transformer v2 250M on RNA (12,282 nt, 2,048 tokens), ESM2-150M on protein (1,022 aa), the config's
cross-attention fusion (one layer, 8 heads of 64, pre-norm, no feed-forward, mean pooling) and linear
head (``--adapter concat``: ConcatFusion 512 wide instead, as the single-modality configs), Adam
(lr 3e-5), gradient clipping at 1.0. Every record has the longest sequences the config allows (random
letters), so the batches are the worst case the flagship trains on. One row per configuration:

* ``trained``  LoRA (r 8, on query/value) on NT and ESM2; Enformer trained in full.
* ``cached``   LoRA on NT and ESM2; Enformer frozen, its embeddings cached (``embedding_cache``); the
               epochs are timed after the cache is filled (before the first epoch; ``cache_fill_s``).
* ``frozen``   LoRA on NT and ESM2; Enformer frozen, run every step (no cache).

Columns, each measured by ``Trainer.fit`` (never a hand-written loop) in this run:

* ``batch``: the batch timed: ``--batch`` (8, the config's), or the largest that fits if that does not.
* ``steps/s``: the median over ``--steps`` steps after ``--warmup`` (interval between the ends of two
  consecutive training steps, after ``torch.cuda.synchronize``: data loading, forward, backward,
  clipping and the optimiser step); ``samples/s`` = steps/s × batch.
* ``peak CUDA GiB``: ``torch.cuda.max_memory_allocated`` over the timed fit (reset before it); on a CPU
  ``peak RSS GiB``, the process's high-water mark over the timed fit (``/proc/self/clear_refs``).
* ``TFLOP/step``: model FLOPs of one training step (forward, loss, backward; matmuls, convolutions,
  attention) counted by ``torch.utils.flop_counter`` on one batch under autocast
  (``benchmarks/_utilisation.py``); a cached Enformer costs none.
* ``utilisation``: TFLOP/step × steps/s against the bf16 matmul peak (8,192² products; 2,048² on a CPU)
  measured at the start of the same run, printed above the table.
* ``largest batch``: from the timed batch, doubling until CUDA runs out of memory (each try a
  ``Trainer.fit`` of two steps, so the optimiser state exists), up to ``--max-batch`` (``(cap)``: that
  still fit) and ``--search-seconds`` per configuration (``(time)``: stopped there; ``(error)``: another
  error ended it, named in the JSON's ``search_stop``); the powers of two below the timed batch fit
  with it. A timed batch that runs out of memory is halved until one fits (and is then the largest).

TF32: ``torch.set_float32_matmul_precision("high")`` on CUDA, so the float32 matmuls autocast leaves in
float32 use TF32 tensor cores, as anyone training on this GPU would set; bf16 matmuls are unaffected.

Run it on a device machine (CUDA; not yet run on one: expected 3–5 minutes on one H200, from one sample's
4.5 TFLOP forward pass counted on a CPU), from the repository root:

    PYTHONUNBUFFERED=1 python benchmarks/gpu_flagship.py --json $OUT/gpu.json

mmfuse need not be installed there (the script puts this checkout first on ``sys.path``), but its imports
must be: on this workplace's device image that means carrying wheels of enformer-pytorch 0.8.11, polars
and pyfaidx (enformer-pytorch imports both), torchdata and biopython.

The table goes to stdout; progress lines with timestamps to stderr (a run cut short still says how far
it got) and ``--json`` is rewritten after every row. ``--quick`` runs the same code on the CPU at tiny
sizes (tiny presets, 16,384 bp so the tiny Enformer's share of a step shows, a few steps, one thread,
the batch search capped at 4; ``bf16-mixed`` where the CPU has bf16 instructions, else ``32-true``) in
seconds: ``tests/test_benchmarks.py`` does, so this script cannot rot. Results: docs/performance.md.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import gc
import json
import logging
import os
import resource
import statistics
import sys
import tempfile
import time
import traceback
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script: mmfuse and benchmarks/ from this checkout
    sys.path.insert(0, str(REPO))

from benchmarks._utilisation import matmul_peak, peak_dtype, step_flops, utilisation  # noqa: E402
from benchmarks.performance import _random, _trainer, table  # noqa: E402

#: configuration -> (label, Enformer frozen, Enformer cached)
CONFIGS = {
    "trained": ("LoRA NT + ESM2, Enformer trained", False, False),
    "cached": ("LoRA NT + ESM2, Enformer frozen + cached", True, True),
    "frozen": ("LoRA NT + ESM2, Enformer frozen", True, False),
}
_T0 = time.perf_counter()


@dataclass(frozen=True)
class Size:
    """Models, lengths (letters per record) and run lengths of one scale."""

    enformer: str
    crop_bins: int | None
    nt: str
    esm: str
    dna: int
    rna: int
    protein: int
    batch: int
    max_batch: int
    steps: int
    warmup: int
    workers: int
    search_seconds: float
    peak_seconds: float = 1.0  # matmul_peak's products: 8,192² on a GPU, 2,048² on a CPU
    threads: int | None = None  # CPU threads (None: torch's default)


FLAGSHIP = Size("enformer_official_rough", 896, "nt_v2_250m_multi_species", "esm2_t30_150M_UR50D",
                dna=196_608, rna=12_282, protein=1_022, batch=8, max_batch=64, steps=20, warmup=3, workers=4,
                search_seconds=100)  # fmt: skip
QUICK = Size("tiny", None, "tiny", "tiny", dna=16_384, rna=300, protein=100, batch=2, max_batch=4, steps=4, warmup=2,
             workers=0, search_seconds=30, peak_seconds=0.2, threads=1)  # fmt: skip


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')} +{time.perf_counter() - _T0:6.1f}s] {message}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------------------
# the model and the data


def build_task(size: Size, frozen: bool, cached: bool, work: Path, adapter: str) -> Any:
    """The flagship task at ``size``: LoRA on NT and ESM2, Enformer trained or ``frozen`` (and ``cached``)."""
    import torch

    from mmfuse.adapters import ConcatFusion, CrossAttentionFusion
    from mmfuse.backbones import ESM2, Enformer, NucleotideTransformer
    from mmfuse.backbones.finetune import FineTuning, LoraOptions
    from mmfuse.cache import CacheOptions
    from mmfuse.data import GTEX_TISSUES
    from mmfuse.training import RegressionTask
    from mmfuse.training.heads import LinearHead

    lora = FineTuning(lora=LoraOptions())  # r 8, alpha 16, on the backbones' query and value projections
    backbones = {
        "dna": Enformer(size.enformer, pretrained=False, finetune=FineTuning(freeze=frozen), crop_bins=size.crop_bins),
        "rna": NucleotideTransformer(size.nt, pretrained=False, modality="rna", finetune=lora),
        "protein": ESM2(size.esm, pretrained=False, finetune=lora),
    }
    fusion = {
        "cross_attention": functools.partial(CrossAttentionFusion, num_layers=1, num_heads=8, head_dim=64, norm="pre",
                                             feed_forward=False, pooling="mean"),
        "concat": functools.partial(ConcatFusion, hidden_dim=512, pooling="mean"),
    }[adapter]  # fmt: skip
    return RegressionTask(backbones, adapter=fusion, head=LinearHead, target_names=list(GTEX_TISSUES),
                          optimizer=functools.partial(torch.optim.Adam, lr=3e-5),
                          embedding_cache=CacheOptions(directory=str(work / "cache")) if cached else None)  # fmt: skip


def write_table(size: Size, records: int, work: Path) -> Path:
    """``records`` training records (and two validation ones) with sequences as long as ``size`` allows."""
    import numpy as np

    from mmfuse.data.samples.isoform import make_sample_table

    rng = np.random.default_rng(0)
    frame = make_sample_table(num_genes=records, seed=0).iloc[: records + 2].reset_index(drop=True)
    frame["DNA"] = [_random("ACGT", size.dna, rng) for _ in range(len(frame))]
    frame["RNA"] = [_random("ACGU", size.rna, rng) for _ in range(len(frame))]
    frame["Protein"] = [_random("ACDEFGHIKLMNPQRSTVWY", size.protein, rng) for _ in range(len(frame))]
    frame["split"] = ["train"] * records + ["val"] * 2
    path = work / "flagship.parquet"
    frame.to_parquet(path)
    return path


def datamodule(path: Path, batch: int, size: Size, work: Path) -> Any:
    from mmfuse.data import IsoformExpression

    return IsoformExpression(
        source={"path": str(path), "records_dir": str(work / "records")},
        loader={"batch_size": batch, "eval_batch_size": size.batch, "num_workers": size.workers},
    )  # fmt: skip


# ------------------------------------------------------------------------------------------------
# measurements


def _clock() -> Any:
    """A Lightning callback: the end of every training step, and how long the cache took to fill."""
    import lightning as L
    import torch

    class Clock(L.Callback):
        def __init__(self) -> None:
            self.marks: list[float] = []
            self.fill = 0.0

        def on_fit_start(self, trainer, module):  # runs before the task's own callbacks (the cache fills there)
            self.fill = time.perf_counter()

        def on_train_start(self, trainer, module):
            self.fill = time.perf_counter() - self.fill

        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
            if torch.cuda.is_available() and module.device.type == "cuda":
                torch.cuda.synchronize()
            self.marks.append(time.perf_counter())

    return Clock()


def fit(task: Any, dm: Any, steps: int, precision: str, work: Path, accelerator: str, clock: Any = None) -> None:
    trainer = _trainer(work, [clock] if clock else [], accelerator=accelerator, max_steps=steps, max_epochs=-1,
                       limit_val_batches=0, precision=precision, gradient_clip_val=1.0)  # fmt: skip
    with contextlib.redirect_stdout(sys.stderr):  # the task's epoch lines: stdout holds the table alone
        trainer.fit(task, dm)


def _out_of_memory(exc: BaseException) -> bool:
    import torch

    # cuBLAS and cuDNN report a failed allocation as a RuntimeError of their own
    return isinstance(exc, torch.OutOfMemoryError) or (
        isinstance(exc, RuntimeError) and ("out of memory" in str(exc) or "ALLOC_FAILED" in str(exc))
    )


def _free() -> None:
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def largest_batch(task: Any, path: Path, size: Size, run: dict, work: Path, fits: int) -> dict:
    """The largest power-of-two batch that trains two steps, doubling from ``fits`` (known to fit) up to
    ``size.max_batch`` or until ``size.search_seconds`` are spent."""
    largest, batch, start, took, stop = fits, 2 * fits, time.perf_counter(), 0.0, "cap"
    while batch <= size.max_batch:
        if time.perf_counter() - start + 2 * took > size.search_seconds:
            stop = "time"
            break
        t0, failure = time.perf_counter(), None
        try:
            fit(task, datamodule(path, batch, size, work), 2, run["precision"], work, run["accelerator"])
        except Exception as exc:  # out of memory, or a kernel's size limit: the search ends either way
            failure = "out of memory" if _out_of_memory(exc) else f"{type(exc).__name__}: {str(exc)[:200]}"
        _free()  # after the except block: its traceback held the failed step's tensors
        if failure:
            log(f"  batch {batch}: {failure}")
            stop = failure
            break
        took = time.perf_counter() - t0
        log(f"  batch {batch} fits ({took:.1f} s)")
        largest, batch = batch, batch * 2
    return {"largest_batch": largest, "search_stop": stop, "search_s": time.perf_counter() - start}


def _reset_peaks() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    with contextlib.suppress(OSError):  # resets VmHWM (Linux ≥ 4.0); elsewhere ru_maxrss is the process's
        Path("/proc/self/clear_refs").write_text("5")


def _peaks() -> dict[str, float]:
    import torch

    out = {"peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}
    with contextlib.suppress(OSError, StopIteration):
        status = Path("/proc/self/status").read_text().splitlines()
        out["peak_rss_gib"] = int(next(s for s in status if s.startswith("VmHWM:")).split()[1]) / 2**20
    if torch.cuda.is_available():
        out["peak_cuda_gib"] = torch.cuda.max_memory_allocated() / 2**30
        out["peak_cuda_reserved_gib"] = torch.cuda.max_memory_reserved() / 2**30
    return out


def count_flops(task: Any, dm: Any, precision: str, device: str) -> int:
    """Model FLOPs of one training step (forward, loss, backward) on one training batch of ``dm``."""
    import torch

    batch = task.transfer_batch_to_device(next(iter(dm.train_dataloader())), torch.device(device), 0)
    task.zero_grad(set_to_none=True)  # the fit's last gradients: not moved, not accumulated into
    task.to(device).train()
    task.trainer = None  # the finished fit's trainer: self.log outside a loop then only warns

    def step() -> None:
        with torch.autocast(device, dtype=peak_dtype(precision), enabled=precision != "32-true"):
            loss = task.training_step(batch, 0)["loss"]
        loss.backward()

    with contextlib.redirect_stdout(sys.stderr), warnings_ignored():
        flops = step_flops(step)
    task.zero_grad(set_to_none=True)
    task.cpu()
    return flops


@contextlib.contextmanager
def warnings_ignored() -> Any:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def timed_fit(task: Any, path: Path, size: Size, run: dict, work: Path) -> tuple[dict, Any]:
    """Steps/s and peak memory of ``size.steps`` steps after ``size.warmup``, at ``size.batch`` or, if that
    runs out of memory, the largest power of two below it that does not; and that batch's data module."""
    batch = size.batch
    while True:
        dm, clock, failure = datamodule(path, batch, size, work), _clock(), None
        log(f"timing {size.warmup} + {size.steps} steps at batch {batch}")
        _free()
        _reset_peaks()
        try:
            fit(task, dm, size.warmup + size.steps, run["precision"], work, run["accelerator"], clock)
        except Exception as exc:
            if not _out_of_memory(exc) or batch == 1:
                raise
            failure = "out of memory"
        if failure is None:
            break
        _free()
        log(f"  batch {batch}: {failure}")
        batch //= 2
    row = _peaks()
    marks = clock.marks[size.warmup - 1 :]
    steps_per_s = 1 / statistics.median(b - a for a, b in zip(marks, marks[1:], strict=False))
    row |= {"batch": batch, "steps_per_s": steps_per_s, "samples_per_s": steps_per_s * batch,
            "cache_fill_s": clock.fill}  # fmt: skip
    return row, dm


def measure(name: str, size: Size, path: Path, run: dict, work: Path) -> dict:
    """One configuration's row: the timed fit, the FLOPs of one of its steps, then the batch search."""
    import lightning as L

    label, frozen, cached = CONFIGS[name]
    L.seed_everything(0, verbose=False)
    log(f"{name}: building ({label})")
    task = build_task(size, frozen, cached, work / name, run["adapter"])
    row: dict[str, Any] = {"configuration": name, "label": label,
                           "params": sum(p.numel() for p in task.parameters()),
                           "trainable": sum(p.numel() for p in task.parameters() if p.requires_grad)}  # fmt: skip
    log(f"{name}: {row['params'] / 1e6:,.0f} M parameters, {row['trainable'] / 1e6:,.1f} M trained")
    timed, dm = timed_fit(task, path, size, run, work)
    row |= timed
    log(f"{name}: {row['steps_per_s']:.3g} steps/s at batch {row['batch']}; counting FLOPs")
    row["flops_per_step"] = count_flops(task, dm, run["precision"], run["accelerator"])
    row["utilisation"] = utilisation(row["flops_per_step"], row["steps_per_s"], run["peak_flops"])
    log(f"{name}: {row['flops_per_step'] / 1e12:.3g} TFLOP/step, utilisation {row['utilisation']:.1%}; largest batch")
    if row["batch"] < size.batch:  # the timed batch already ran out of memory at twice its size
        row |= {"largest_batch": row["batch"], "search_stop": "out of memory", "search_s": 0.0}
    else:
        row |= largest_batch(task, path, size, run, work, row["batch"])
    del task, dm
    _free()
    return row


# ------------------------------------------------------------------------------------------------
# the report


def print_table(run: dict, rows: list[dict]) -> None:
    memory = "peak CUDA GiB" if run["accelerator"] == "cuda" else "peak RSS GiB"
    sizes, dtype = run["sizes"], str(peak_dtype(run["precision"])).removeprefix("torch.")
    print(
        f"# mmfuse flagship fine-tuning — {run['device_name']}, torch {run['torch']}, {run['precision']}, "
        f"{run['size']} sizes; {dtype} matmul peak {run['peak_flops'] / 1e12:.4g} TFLOP/s (measured in this run)"
    )
    cells = []
    for r in rows:
        if "error" in r:
            cells.append([r["configuration"], "", f"failed: {r['error']}", "", "", "", "", "", ""])
            continue
        stop = r["search_stop"]
        cap = "" if stop == "out of memory" else f" ({stop})" if stop in ("cap", "time") else " (error)"
        cells.append([r["configuration"], r["batch"], r["steps_per_s"], r["samples_per_s"],
                      r.get("peak_cuda_gib", r["peak_rss_gib"]), r["flops_per_step"] / 1e12,
                      r["flops_per_step"] * r["steps_per_s"] / 1e12, f"{r['utilisation']:.1%}",
                      f"{r['largest_batch']}{cap}"])  # fmt: skip
    table(f"LoRA on NT {sizes['nt']} ({sizes['rna']:,} nt) and ESM2 {sizes['esm']} ({sizes['protein']:,} aa); Enformer "
          f"{sizes['enformer']} ({sizes['dna']:,} bp) trained, frozen + cached, or frozen",
          ["configuration", "batch", "steps/s", "samples/s", memory, "TFLOP/step", "TFLOP/s", "utilisation",
           "largest batch"], cells)  # fmt: skip


def write_json(path: Path | None, run: dict, rows: list[dict]) -> None:
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(path.suffix + ".partial")
    partial.write_text(json.dumps({"run": run, "rows": rows}, indent=2))
    os.replace(partial, path)


def _precision(accelerator: str) -> str:
    import torch

    if accelerator == "cuda":
        return "bf16-mixed"
    return "bf16-mixed" if torch.ops.mkldnn._is_mkldnn_bf16_supported() else "32-true"


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("configs", nargs="*", choices=[[], *CONFIGS], default=[], help="default: all three")
    parser.add_argument("--quick", action="store_true", help="tiny sizes on the CPU (what the test runs)")
    parser.add_argument("--steps", type=int, help="timed steps (default 20; quick 4)")
    parser.add_argument("--warmup", type=int, help="steps before timing (default 3; quick 2)")
    parser.add_argument("--batch", type=int, help="batch timed (default 8, the config's; quick 2)")
    parser.add_argument("--max-batch", type=int, help="cap of the batch search (default 64; quick 4)")
    parser.add_argument("--search-seconds", type=float, help="time cap of each batch search (default 100)")
    parser.add_argument("--threads", type=int, help="CPU threads (default: torch's; quick 1: its kernels are tiny)")
    parser.add_argument("--adapter", choices=["cross_attention", "concat"], default="cross_attention")
    parser.add_argument("--json", type=Path, help="also write the rows here (after every row)")
    args = parser.parse_args(argv)
    if (args.steps is not None and args.steps < 1) or (args.warmup is not None and args.warmup < 1):
        parser.error("--steps and --warmup must be at least 1 (the first step's end starts the clock)")
    import torch

    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)  # "GPU available" … once per fit
    size = QUICK if args.quick else FLAGSHIP
    given = {"steps": args.steps, "warmup": args.warmup, "batch": args.batch, "max_batch": args.max_batch,
             "search_seconds": args.search_seconds, "threads": args.threads}  # fmt: skip
    size = replace(size, **{k: v for k, v in given.items() if v is not None})
    accelerator = "cuda" if torch.cuda.is_available() and not args.quick else "cpu"
    if size.threads:
        torch.set_num_threads(size.threads)
    if accelerator == "cuda":
        torch.set_float32_matmul_precision("high")
    precision = _precision(accelerator)
    log(f"measuring the {peak_dtype(precision)} matmul peak on {accelerator}")
    run = {"size": "quick" if args.quick else "flagship", "accelerator": accelerator, "precision": precision,
           "device_name": torch.cuda.get_device_name() if accelerator == "cuda" else f"CPU ({os.cpu_count()} cores)",
           "torch": torch.__version__, "threads": torch.get_num_threads(), "adapter": args.adapter,
           "sizes": asdict(size),
           "peak_flops": matmul_peak(peak_dtype(precision), accelerator, seconds=size.peak_seconds)}  # fmt: skip
    log(f"peak {run['peak_flops'] / 1e12:.4g} TFLOP/s; {run['device_name']}, torch {run['torch']}, {precision}")
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="mmfuse-gpu-") as tmp:
        work = Path(tmp)
        path = write_table(size, max(size.max_batch, 4 * size.batch), work)
        for name in args.configs or list(CONFIGS):
            try:
                rows.append(measure(name, size, path, run, work))
            except Exception as exc:  # one configuration failing still leaves the others' rows
                traceback.print_exc()
                rows.append({"configuration": name, "label": CONFIGS[name][0], "error": f"{type(exc).__name__}: "
                             f"{str(exc)[:300]}"})  # fmt: skip
                _free()
            write_json(args.json, run, rows)
    print_table(run, rows)
    if any("error" in r for r in rows):
        raise SystemExit(1)
    return rows


if __name__ == "__main__":
    main()
