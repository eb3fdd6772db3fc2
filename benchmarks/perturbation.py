"""Perturbations per second of ``mmfuse perturb`` (in-silico deletion of every gene of each cell).

Runs the analysis' own code (:class:`mmfuse.analysis.perturb.PerturbationWriter`) on the bundled single-cell
sample with the tiny Geneformer, zero-shot (mean embedding) and through a fused classifier head, for several
``batch_size`` values (the perturbed copies of one cell embedded together), alternating the settings and
reporting the median over repeats with the spread::

    python benchmarks/perturbation.py                 # CPU, tiny Geneformer
    python benchmarks/perturbation.py --device cuda   # a GPU, when one is lent
    python benchmarks/perturbation.py --preset geneformer_v1_6L --genes 2048 --pretrained false  # a real size

A perturbation is one (cell, gene) deletion; the null's rank-matched genes are part of the same copies.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch


def _setup(preset: str, genes: int | None, pretrained: bool, device: str):
    from mmfuse.analysis.module import AnalysisModule
    from mmfuse.analysis.perturb import PerturbationWriter
    from mmfuse.backbones import Geneformer
    from mmfuse.data.files.h5ad import cell_strings
    from mmfuse.data.samples.cells import CELL_TYPES, make_cell_sample
    from mmfuse.training import ClassificationTask

    backbone = Geneformer(preset, pretrained=pretrained, max_genes=genes)
    task = ClassificationTask({"cell": backbone}, target_names=list(CELL_TYPES)).to(device).eval()
    counts, names, obs = make_cell_sample(64, 0)
    if preset != "tiny":  # the sample's genes renamed to the first of the real vocabulary
        vocabulary = [g for g in backbone.tokenizer.genes][: len(names)]
        names = vocabulary
    cells = cell_strings(counts, names, obs.cell_id.tolist())
    return task, cells, PerturbationWriter, AnalysisModule


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--genes", type=int, default=None, help="max_genes (default: the preset's)")
    parser.add_argument("--pretrained", default="true", choices=["true", "false"])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--cells", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch-sizes", default="1,16,64,256")
    args = parser.parse_args()
    torch.manual_seed(0)
    task, cells, writer_class, module_class = _setup(args.preset, args.genes, args.pretrained == "true", args.device)
    rows = []
    settings = [(mode, int(b)) for mode in ("mean", "fused") for b in args.batch_sizes.split(",")]
    times: dict[tuple[str, int], list[float]] = {s: [] for s in settings}
    done: dict[tuple[str, int], int] = {}
    for _ in range(args.repeats):
        for mode, batch in settings:  # alternating, so drifts of the machine fall on every setting alike
            writer = writer_class(embedding=mode, batch_size=batch, plots=False)
            writer.chosen, writer.mode, writer.tokenizer = "cell", mode, task.model.backbones["cell"].tokenizer
            writer._token_of = {g: t for g, (t, _) in writer.tokenizer.genes.items()}
            writer._gene_of = {t: g for g, t in writer._token_of.items()}
            writer.outputs = list(task.target_names) if mode == "fused" else []
            module = module_class.of(task, writer)
            start = time.perf_counter()
            perturbations = 0
            with torch.inference_mode():
                for i, cell in enumerate(cells[: args.cells]):
                    perturbations += len(writer._cell(module, f"c{i}", cell, {}))
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            times[(mode, batch)].append(time.perf_counter() - start)
            done[(mode, batch)] = perturbations
    for mode, batch in settings:
        rates = [done[(mode, batch)] / t for t in times[(mode, batch)]]
        rows.append((mode, batch, done[(mode, batch)], statistics.median(rates), min(rates), max(rates)))
    base = {mode: next(r[3] for r in rows if r[0] == mode and r[1] == int(args.batch_sizes.split(",")[0]))
            for mode in ("mean", "fused")}  # fmt: skip
    print(f"mmfuse perturb, delete every gene: {args.preset} Geneformer on {args.device}, {args.cells} cells, "
          f"median of {args.repeats} alternating runs (min-max)")
    first = args.batch_sizes.split(",")[0]
    print(f"| embedding | batch_size | perturbations | perturbations/s | min-max | vs batch {first} |")
    print("|---|---|---|---|---|---|")
    for mode, batch, n, median, low, high in rows:
        print(f"| {mode} | {batch} | {n} | {median:,.0f} | {low:,.0f}-{high:,.0f} | {median / base[mode]:.1f}x |")
    print(f"(genes per cell: mean {np.mean([len(c.split(';')) for c in cells[: args.cells]]):.0f})")


if __name__ == "__main__":
    main()
