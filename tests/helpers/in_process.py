"""Running the ``mmfuse`` command inside a test's process."""

from __future__ import annotations

import contextlib
import io
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any


@contextlib.contextmanager
def bare_argv() -> Iterator[None]:
    """``sys.argv`` of a bare ``mmfuse`` during an in-process run (LightningCLI warns about pytest's), and
    ``os.environ`` restored after it (``seed_everything`` sets PL_GLOBAL_SEED)."""
    saved, argv = dict(os.environ), sys.argv
    sys.argv = ["mmfuse"]
    try:
        yield
    finally:
        sys.argv = argv
        os.environ.clear()
        os.environ.update(saved)


#: the quickstart config, and options that make it small enough for a test (12 genes, short sequences)
QUICKSTART = Path(__file__).resolve().parents[2] / "experiments" / "quickstart" / "config.yaml"
SMALL = ["--data.init_args.sample.size=12", "--data.init_args.loader.batch_size=4",
         "--trainer.enable_progress_bar=false",
         "--data.init_args.lengths.max={dna: 256, rna: 256, protein: 128}",
         "--data.init_args.split.val_fraction=0.25"]  # fmt: skip


def mmfuse_stdout(*args: str) -> str:
    """What ``mmfuse <args>`` prints, run in this process."""
    from mmfuse.cli import main

    out = io.StringIO()
    with bare_argv(), contextlib.redirect_stdout(out):
        main(list(args))
    return out.getvalue()


def load_task(checkpoint: Path, *options: str) -> tuple[Any, Any]:
    """The task and data module of the quickstart with :data:`SMALL` (and ``options``), the task's weights read
    from ``checkpoint`` (eval mode), the data set up for ``predict`` with the task's tokenizers."""
    import torch

    from mmfuse.cli import MmfuseCLI

    with bare_argv():
        cli = MmfuseCLI(["--config", str(QUICKSTART), *SMALL, *options], run=False)
    task, dm = cli.model, cli.datamodule
    task.load_state_dict(torch.load(checkpoint, weights_only=True, map_location="cpu")["state_dict"])
    task.eval()
    dm.setup("predict")
    dm.attach_tokenizers(task.model.tokenizers())
    return task, dm
