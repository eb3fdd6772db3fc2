"""Fixtures of the task tests: one small quickstart checkpoint shared by the commands that read one."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers.in_process import QUICKSTART, SMALL, mmfuse_stdout


@pytest.fixture(scope="session")
def trained(tmp_path_factory) -> Path:
    """The last checkpoint of two training steps of the quickstart on 12 sample genes (:data:`SMALL`)."""
    runs = tmp_path_factory.mktemp("quickstart-runs")
    mmfuse_stdout("fit", "--config", str(QUICKSTART), *SMALL, "--trainer.max_steps=2", "--trainer.limit_val_batches=1",
                  "--trainer.num_sanity_val_steps=0", f"--trainer.logger.init_args.save_dir={runs}")  # fmt: skip
    (last,) = runs.glob("*/*/checkpoints/last.ckpt")
    return last
