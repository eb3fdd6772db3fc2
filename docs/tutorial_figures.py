"""Re-creates the figures and outputs of the tutorials (docs/tutorials.md) from the bundled sample data.

    python docs/tutorial_figures.py [--work DIR] [--part {report,biology,all}]

``report`` (a few minutes on a CPU): ``mmfuse fit`` and ``mmfuse test`` of
``experiments/quickstart/config.yaml`` exactly as shipped; copies the test report's figures (per-tissue
R² and Spearman, best and worst tissue's scatter, loss curves) to ``docs/figures/tutorial/quickstart_*.png``.

``biology``, the tutorial "From a trained model to biology" (about five minutes): ``mmfuse fit`` (the
quickstart with ``modality_dropout: 0.3``), ``mmfuse test``, ``mmfuse explain``, ``mmfuse sample-data
--genome`` and ``mmfuse score-variants``; copies their figures to ``docs/figures/tutorial/`` (with a plot
of the variant effects made here from the command's table).

Runs go to ``DIR`` (default: a new temporary directory), one folder per part; what each command printed
is printed at the end, as the tutorials quote it.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "experiments" / "quickstart" / "config.yaml"
FIGURES = ROOT / "docs" / "figures" / "tutorial"
#: a held-out transcript carrying all three planted features (a muscle-programme promoter, an AU-rich
#: element in its long 3'UTR, the exon peptide in its protein)
RECORD = "SYNT00007.1"
TRAINING = ["--model.init_args.modality_dropout=0.3", "--trainer.enable_progress_bar=false"]


def mmfuse(work: Path, *args: str) -> str:
    """Runs ``mmfuse <args>`` in ``work``; returns what it printed (stdout, then stderr's notes)."""
    command = [str(Path(sys.executable).with_name("mmfuse")), *args]
    print("$", " ".join(["mmfuse", *args]), flush=True)
    done = subprocess.run(command, cwd=work, capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    notes = [line for line in done.stderr.splitlines() if line.startswith("mmfuse: note")]
    return "\n".join([done.stdout.strip(), *notes]).strip()


def plot_variants(table: Path, out: Path) -> None:
    """The predicted change of each variant (mean over tissues) by consequence class."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd

    frame = pd.read_parquet(table) if table.suffix == ".parquet" else pd.read_csv(table)
    if "target" in frame.columns:  # one row per target: the mean over them
        keys = ["variant", "transcript_id", "consequence"]
        frame = frame.groupby(keys, as_index=False)["difference"].mean()
    order = frame.groupby("consequence")["difference"].median().sort_values().index.tolist()
    fig, ax = plt.subplots(figsize=(8, 0.45 * len(order) + 1.2))
    for y, name in enumerate(order):
        values = frame.loc[frame["consequence"] == name, "difference"].to_numpy()
        ax.scatter(values, [y] * len(values), s=18, alpha=0.7, color="#2c7fb8")
    ax.axvline(0, color="0.5", linewidth=0.6)
    ax.set_yticks(range(len(order)), order, fontsize=8)
    ax.set_xlabel("alt − ref prediction, mean over the 30 tissues (log TPM)")
    ax.set_title("Predicted effect of the sample variants, per transcript", fontsize=10)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


#: the report figures the tutorials show, as ``mmfuse test`` names them in ``report_test/``
REPORT_FIGURES = ("r2_spearman_per_tissue.png", "scatter_best_worst.png", "loss_curves.png")


def report(work: Path) -> dict[str, str]:
    """The quickstart as shipped, trained and tested; its report's figures copied as ``quickstart_<name>``."""
    outputs = {"fit": mmfuse(work, "fit", "--config", str(CONFIG))}
    (best,) = work.glob("runs/quickstart/version_0/checkpoints/best.ckpt")
    outputs["test"] = mmfuse(work, "test", "--config", str(CONFIG), "--ckpt_path", str(best.relative_to(work)))
    FIGURES.mkdir(parents=True, exist_ok=True)
    for name in REPORT_FIGURES:
        shutil.copy(work / "runs/quickstart/version_1/report_test" / name, FIGURES / f"quickstart_{name}")
    return outputs


def biology(work: Path) -> dict[str, str]:
    """The tutorial "From a trained model to biology": its commands, and its figures copied."""
    outputs = {}
    outputs["fit"] = mmfuse(work, "fit", "--config", str(CONFIG), *TRAINING)
    (best,) = work.glob("runs/quickstart/version_0/checkpoints/best.ckpt")
    ckpt = str(best.relative_to(work))
    outputs["test"] = mmfuse(work, "test", "--config", str(CONFIG), "--ckpt_path", ckpt, *TRAINING)
    outputs["explain"] = mmfuse(work, "explain", "--config", str(CONFIG), "--ckpt_path", ckpt, "--ids", RECORD,
                                "--attributions.output", "attributions.parquet", *TRAINING)  # fmt: skip
    outputs["sample-data"] = mmfuse(work, "sample-data", "--genome", "genome")
    outputs["score-variants"] = mmfuse(
        work, "score-variants", "--config", str(CONFIG), "--ckpt_path", ckpt, "--vcf", "genome/variants.vcf",
        "--fasta", "genome/genome.fa", "--annotation", "genome/genes.gtf", "--variants.window", "1024",
        "--variants.output", "variant_effects.parquet", *TRAINING,
    )  # fmt: skip

    FIGURES.mkdir(parents=True, exist_ok=True)
    (contribution,) = work.glob("runs/quickstart/version_1/report_test/modality_contribution.png")
    shutil.copy(contribution, FIGURES / "modality_contribution.png")
    shutil.copy(work / "attributions_plots" / f"{RECORD}.png", FIGURES / "attributions.png")
    plot_variants(work / "variant_effects.parquet", FIGURES / "variant_effects.png")
    return outputs


PARTS = {"report": report, "biology": biology}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=None, help="where the runs go (default: a temporary directory)")
    parser.add_argument("--part", choices=[*PARTS, "all"], default="all", help="which tutorial's figures to make")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="mmfuse-tutorial-"))
    printed = {}
    for name, make in PARTS.items():
        if args.part in (name, "all"):
            (work / name).mkdir(parents=True, exist_ok=True)
            printed.update({f"{name}: {command}": text for command, text in make(work / name).items()})
    for command, text in printed.items():
        print(f"\n## {command}\n{text}")
    print(f"\nfigures in {FIGURES}; runs in {work}")


if __name__ == "__main__":
    main()
