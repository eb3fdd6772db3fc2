"""``mmfuse score-variants`` under Lightning's DDP (two gloo processes) and with DataLoader workers: the pairs are
dealt out by transcript, and the joined output equals one process's row for row."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from tests.analysis.test_variant_reuse import RECORDS, SMALL
from tests.helpers import small_genome as sg
from tests.helpers.in_process import QUICKSTART

pytestmark = pytest.mark.slow


def test_two_processes_and_workers_score_as_one(trained, tmp_path):
    (tmp_path / "genome").mkdir()
    fasta, gtf, vcf = sg.write_inputs(tmp_path / "genome", RECORDS)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    runs = {"one": [], "ddp": ["--trainer.strategy=ddp", "--trainer.devices=2"],
            "workers": ["--data.init_args.loader.num_workers=2"]}  # fmt: skip
    for name, extra in runs.items():
        result = subprocess.run([sys.executable, "-m", "mmfuse", "score-variants", "--config", str(QUICKSTART), *SMALL,
                                 "--ckpt_path", str(trained), "--vcf", str(vcf), "--fasta", str(fasta), "--annotation",
                                 str(gtf), f"--variants.window={sg.WINDOW}", "--variants.batch_size=2",
                                 f"--variants.output={tmp_path / name}.csv", f"--trainer.default_root_dir={tmp_path}",
                                 "--trainer.logger=false", *extra],
                                capture_output=True, text=True, timeout=280, env=env)  # fmt: skip
        assert result.returncode == 0, result.stderr[-3000:]
        if name == "ddp":
            assert "(joined from 2 processes)" in result.stdout
    one = pd.read_csv(tmp_path / "one.csv", keep_default_na=False)
    keys = ["variant", "transcript_id", "target"]
    for name in ("ddp", "workers"):
        other = pd.read_csv(tmp_path / f"{name}.csv", keep_default_na=False)
        a, b = (t.sort_values(keys, kind="stable").reset_index(drop=True) for t in (one, other))
        pd.testing.assert_frame_equal(a.drop(columns=["ref_prediction", "alt_prediction", "difference"]),
                                      b.drop(columns=["ref_prediction", "alt_prediction", "difference"]))
        np.testing.assert_allclose(a["difference"], b["difference"], rtol=1e-4, atol=1e-6)
    assert len(one) > 0
