"""Checkpoint size of a LoRA / frozen / fully trained ESM2 protein task: what a run writes per checkpoint.

Random weights of each ESM2 preset's architecture are saved to a temporary directory and loaded back
as the backbone's ``source`` (as downloaded weights would be); a regression task around it takes one
training step and is saved with Lightning. Sizes are printed as MB and as a share of full fine-tuning.

    python benchmarks/checkpoint_size.py                       # ESM2 8M and 35M
    python benchmarks/checkpoint_size.py esm2_t30_150M_UR50D   # larger, ~2 GB of disk while running
"""

from __future__ import annotations

import argparse
import tempfile
from functools import partial
from pathlib import Path

import lightning as L
import torch

from mmfuse.adapters import ConcatFusion
from mmfuse.backbones import ESM2
from mmfuse.backbones.finetune import FineTuning, LoraOptions
from mmfuse.data import IsoformExpression
from mmfuse.training import MLPHead, RegressionTask

SETUPS = {"full": FineTuning(), "lora r=8": FineTuning(lora=LoraOptions(r=8)), "frozen": FineTuning(freeze=True)}


def checkpoint_mb(preset: str, source: str, options: FineTuning, root: Path) -> float:
    task = RegressionTask(
        {"protein": ESM2(preset, source=source, finetune=options)},
        adapter=partial(ConcatFusion, hidden_dim=64),
        head=partial(MLPHead, hidden_dims=[64]),
        target_names=[f"t{i}" for i in range(30)],
    )
    data = IsoformExpression(
        "sample", modalities={"protein": "Protein"}, loader={"batch_size": 2}, sample={"size": 8},
    )
    trainer = L.Trainer(max_steps=1, limit_val_batches=0, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, accelerator="cpu",
                        default_root_dir=root)  # fmt: skip
    trainer.fit(task, data)
    path = root / "run.ckpt"
    trainer.save_checkpoint(path)
    return path.stat().st_size / 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("presets", nargs="*", default=["esm2_t6_8M_UR50D", "esm2_t12_35M_UR50D"])
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="mmfuse-ckpt-") as tmp:
        for preset in args.presets:
            weights = Path(tmp) / preset
            ESM2(preset, pretrained=False).model.save_pretrained(weights)
            sizes = {name: checkpoint_mb(preset, str(weights), opts, Path(tmp)) for name, opts in SETUPS.items()}
            rows.append((preset, sizes))
    header = f"{'preset':<22}" + "".join(f"{name:>22}" for name in SETUPS)
    print("\nCheckpoint size, MB (share of full fine-tuning; full includes AdamW state)\n" + header)
    for preset, sizes in rows:
        cells = "".join(f"{mb:>13.2f} ({mb / sizes['full']:>5.1%})" for mb in sizes.values())
        print(f"{preset:<22}{cells}")


if __name__ == "__main__":
    torch.manual_seed(0)
    main()
