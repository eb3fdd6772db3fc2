"""`attributions.methods` takes one method alone as well as a list (docs/tasks.md: "[ig, ism] (default), or
one of them"), through the real ``mmfuse explain`` command line."""

from __future__ import annotations

import pandas as pd
import pytest

from mmfuse.analysis.explain import ExplanationWriter
from mmfuse.errors import ConfigError
from tests.helpers.in_process import QUICKSTART, SMALL, mmfuse_stdout


@pytest.mark.parametrize(
    ("given", "methods"),
    [(["--attributions.methods", "ism"], {"ism"}), (["--attributions.methods=ig"], {"ig"}),
     (["--attributions.methods=[ism, ig]"], {"ig", "ism"})],
    ids=["ism-alone", "ig-alone", "a-list"],
)  # fmt: skip
def test_one_method_given_alone_is_the_only_one_run(trained, tmp_path, given, methods):
    out = tmp_path / "attr.parquet"
    mmfuse_stdout("explain", "--config", str(QUICKSTART), *SMALL, "--ckpt_path", str(trained), "--ids=SYNT00000.1",
                  *given, f"--attributions.output={out}", "--attributions.ism_max_length=64",
                  "--attributions.steps=4", "--attributions.plots=false",
                  f"--trainer.logger.init_args.save_dir={tmp_path}")  # fmt: skip
    written = pd.read_parquet(out)
    assert set(written["method"]) == methods and set(written["record"]) == {"SYNT00000.1"}


def test_a_single_method_is_normalised_to_a_list_and_a_bad_one_refused():
    assert ExplanationWriter(methods="ism").methods == ["ism"]
    assert ExplanationWriter().methods == ["ig", "ism"]
    with pytest.raises(ConfigError, match=r"attributions.methods takes ig and/or ism, not \['shap'\]"):
        ExplanationWriter(methods="shap")
