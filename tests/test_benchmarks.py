"""The benchmark scripts run and report real numbers: benchmarks/gpu_flagship.py in ``--quick`` mode (the code a
GPU runs, at tiny sizes on the CPU), the FLOP counting of benchmarks/_utilisation.py on cases counted by hand, and
benchmarks/serving.py in ``--quick`` mode (two servers, every answer checked)."""

from __future__ import annotations

import importlib.util
import json
import logging
import sys
from pathlib import Path

import pytest
import torch

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"_bench_{name}", BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def utilisation():
    return _load("_utilisation")


@pytest.mark.parametrize("input_grad", [False, True])
def test_step_flops_of_a_linear_layer(utilisation, input_grad):
    """Forward 2·B·in·out; the backward adds as many for the weight's gradient, and as many again for the
    input's when it needs one (the bias's gradient is a sum, not counted)."""
    batch, d_in, d_out = 3, 16, 5
    layer = torch.nn.Linear(d_in, d_out)
    x = torch.randn(batch, d_in, requires_grad=input_grad)
    forward = 2 * batch * d_in * d_out
    assert utilisation.step_flops(lambda: layer(x)) == forward
    assert utilisation.step_flops(lambda: layer(x).sum().backward()) == (3 if input_grad else 2) * forward


def test_step_flops_of_a_convolution(utilisation):
    batch, c_in, c_out, kernel, length = 2, 3, 5, 4, 10
    conv = torch.nn.Conv1d(c_in, c_out, kernel)
    flops = utilisation.step_flops(lambda: conv(torch.randn(batch, c_in, length)))
    assert flops == 2 * batch * (length - kernel + 1) * c_out * c_in * kernel


def test_utilisation_and_peak(utilisation):
    assert utilisation.peak_dtype("bf16-mixed") is torch.bfloat16
    assert utilisation.peak_dtype("32-true") is torch.float32
    assert utilisation.utilisation(2e9, 10.0, 4e10) == pytest.approx(0.5)
    assert 1e8 < utilisation.matmul_peak(torch.float32, n=256, seconds=0.05) < 1e14  # a CPU's FLOP/s


@pytest.fixture(scope="module")
def flagship():
    return _load("gpu_flagship")


@pytest.mark.parametrize(
    ("fits", "timed", "largest", "stop", "tries"),
    [(16, 8, 16, "out of memory", [8, 16, 32]), (4, 4, 4, "out of memory", [8, 4]), (64, 8, 32, "cap", [8, 16, 32])],
)
def test_gpu_flagship_batch_search(flagship, monkeypatch, tmp_path, fits, timed, largest, stop, tries):
    """Out of memory above ``fits`` (as CUDA would say it): the timed batch halves from 8 until it fits, the
    search doubles from it until the first failure or the cap."""
    from types import SimpleNamespace

    tried = []

    def fit(task, dm, steps, precision, work, accelerator, clock=None):
        tried.append(dm.batch_size)
        if dm.batch_size > fits:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        if clock is not None:
            clock.marks.extend(0.5 * i for i in range(steps))  # a step every half second

    monkeypatch.setattr(flagship, "fit", fit)
    monkeypatch.setattr(flagship, "datamodule", lambda path, batch, size, work: SimpleNamespace(batch_size=batch))
    size = flagship.replace(flagship.QUICK, batch=8, max_batch=32)
    run = {"precision": "32-true", "accelerator": "cpu"}
    row, _ = flagship.timed_fit(None, tmp_path, size, run, tmp_path)
    assert row["batch"] == timed and row["steps_per_s"] == pytest.approx(2.0) and row["samples_per_s"] == 2 * timed
    if timed == size.batch:  # else measure() takes the halved batch as the largest
        search = flagship.largest_batch(None, tmp_path, size, run, tmp_path, timed)
        assert (search["largest_batch"], search["search_stop"]) == (largest, stop)
    assert tried == tries


def test_gpu_flagship_quick(flagship, utilisation, tmp_path, capsys):
    """The GPU script's code path at tiny sizes: one row per configuration with real numbers, and the FLOPs of
    a frozen Enformer's step exceeding the cached one's by exactly the Enformer's forward pass, counted on its
    own (the cached Enformer does not run in the steps), the trained one's exceeding both (its backward)."""
    threads, level = torch.get_num_threads(), logging.getLogger("lightning.pytorch").level
    try:
        rows = flagship.main(["--quick", "--json", str(tmp_path / "gpu.json")])
    finally:  # main sets them for its process; this one goes on
        torch.set_num_threads(threads)
        logging.getLogger("lightning.pytorch").setLevel(level)
    out = capsys.readouterr().out
    written = json.loads((tmp_path / "gpu.json").read_text())
    assert written["rows"] == json.loads(json.dumps(rows))
    assert written["run"]["peak_flops"] > 0 and written["run"]["precision"] in ("bf16-mixed", "32-true")

    lines = [line for line in out.splitlines() if line.startswith("| ")]
    assert [line.split("|")[1].strip() for line in lines] == ["configuration", *flagship.CONFIGS]
    by_name = {r["configuration"]: r for r in rows}
    for row in rows:
        assert "error" not in row, row
        assert row["steps_per_s"] > 0 and row["samples_per_s"] == pytest.approx(row["steps_per_s"] * row["batch"])
        assert row["flops_per_step"] > 0 and 0 < row["utilisation"] < 1.5
        assert row["batch"] == flagship.QUICK.batch and row["largest_batch"] >= row["batch"] >= 1
        assert row["peak_rss_gib"] > 0.1
        assert 0 < row["trainable"] < row["params"]
    # no timing comparison between rows: speed is the script's to measure, not a test's (a loaded CI machine
    # measured the cached row slower than the trained one at these tiny sizes); the FLOPs below show what
    # each row runs

    from mmfuse.backbones import Enformer

    enformer = Enformer(flagship.QUICK.enformer, pretrained=False).eval()
    tokens = enformer.tokenizer(["ACGT" * (flagship.QUICK.dna // 4)] * flagship.QUICK.batch)
    enformer_forward = utilisation.step_flops(lambda: enformer(tokens))
    assert by_name["frozen"]["flops_per_step"] - by_name["cached"]["flops_per_step"] == enformer_forward
    assert by_name["trained"]["flops_per_step"] > by_name["frozen"]["flops_per_step"]  # and its backward


#: ModelGenerator 0.1.3's parameter counts of its cross-attention configuration as
#: benchmarks/modelgenerator_baseline.py --fusion attention builds it (printed by that script):
#: CrossAttentionFusion (DNA 384 queries, RNA 256 keys, 16 heads of 24; query/key/value/dense with biases)
#: and MLPPoolAdapter (384 -> 128 -> 30)
MG_ATTENTION_FUSION, MG_ATTENTION_HEAD = 493_056, 53_150


def test_performance_cross_attention_configuration_matches_modelgenerator(tmp_path):
    """performance.py's ``preset_attention`` is ModelGenerator's cross-attention configuration: the same
    fusion weights (mmfuse's query and key/value projections have no bias: 3 × 384 fewer) and head, DNA
    querying RNA, every backbone trained, no protein."""
    performance = _load("performance")
    task = performance.build("preset_attention", frozen=False, work=tmp_path)
    model = task.model
    count = lambda module: sum(p.numel() for p in module.parameters())  # noqa: E731
    assert sorted(model.backbones) == ["dna", "rna"]
    assert model.adapter.queries == ["dna"] and model.adapter.output_dim == 384
    assert count(model.adapter) == MG_ATTENTION_FUSION - 3 * 384
    assert count(model.head) == MG_ATTENTION_HEAD
    assert all(p.requires_grad for p in model.parameters())


def test_serving_quick(tmp_path, capsys):
    """benchmarks/serving.py in ``--quick`` mode: both servers (``--max_batch_size`` 1 and 16) answer every request
    of every run, and the table has a row for each with real numbers (no speed comparison: the script's to make)."""
    pytest.importorskip("litserve")
    serving = _load("serving")
    rows = serving.main(["--quick", "--accelerator", "cpu", "--json", str(tmp_path / "serving.json")])
    out = capsys.readouterr().out
    assert [r["max_batch_size"] for r in rows] == [1, 16]
    assert json.loads((tmp_path / "serving.json").read_text())["rows"] == json.loads(json.dumps(rows))
    for row in rows:
        assert row["errors"] == 0 and row["runs"] == 2, row
        assert 0 < row["min"] <= row["requests_per_s"] <= row["max"] and 0 < row["p50_ms"] <= row["p99_ms"]
    lines = [line for line in out.splitlines() if line.startswith("| ")]
    assert [line.split("|")[1].strip() for line in lines] == ["max_batch_size", "1", "16"]
