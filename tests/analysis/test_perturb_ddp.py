"""``mmfuse perturb`` under Lightning's DDP (two gloo processes): each takes a share of the cells, rank 0 joins the
rows in the cells' order, and the statistics equal one process's exactly (the null's genes are drawn per cell)."""

from __future__ import annotations

import os
import subprocess
import sys

import pandas as pd
import pytest

from tests.analysis.test_perturb import STATES, trained  # noqa: F401 - the module's fixture

pytestmark = pytest.mark.slow


def test_two_processes_perturb_as_one(trained, tmp_path):  # noqa: F811
    config, ckpt = trained
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    for name, extra in (("one", []), ("ddp", ["--trainer.strategy=ddp", "--trainer.devices=2"])):
        result = subprocess.run([sys.executable, "-m", "mmfuse", "perturb", "--config", str(config), "--ckpt_path",
                                 str(ckpt), f"--perturbation.output={tmp_path / name}.csv",
                                 "--perturbation.plots=false",
                                 f"--perturbation.cell_states={STATES % ('erythroid', 'myeloid')}",
                                 "--perturbation.cells.max_cells=30", f"--trainer.default_root_dir={tmp_path}", *extra],
                                capture_output=True, text=True, timeout=280, env=env)  # fmt: skip
        assert result.returncode == 0, result.stderr[-3000:]
    assert "(joined from 2 processes)" in result.stdout
    one, ddp = (pd.read_csv(tmp_path / f"{n}_cells.csv") for n in ("one", "ddp"))
    pd.testing.assert_frame_equal(one, ddp)
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "one.csv"), pd.read_csv(tmp_path / "ddp.csv"))
