"""Shared fixtures. Tests never touch the network: the hub is switched off before anything imports it."""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("JSONARGPARSE_DEPRECATION_WARNINGS", "off")  # raised by Lightning's CLI, not by mmfuse
# `make test` runs the suite in one pytest-xdist worker per core: one thread each (set before torch is imported, and
# inherited by the commands a test starts), else two workers' OpenMP threads spin on each other's cores
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ["OMP_NUM_THREADS"] = "1"
# MKL's matrix products by its AVX2 code on every x86 CPU (its conditional numerical reproducibility): by default an
# Intel CPU runs its AVX-512 code and an AMD one the AVX2 code, which round differently, and what the slow suite's
# learning runs reach (tests/test_learning.py) moves with the rounding; set before torch loads MKL
os.environ.setdefault("MKL_CBWR", "AVX2")
# records stores (mmfuse/data/store/records.py) go to a fresh directory, not the user's ~/.cache
import tempfile  # noqa: E402

os.environ["MMFUSE_CACHE"] = tempfile.mkdtemp(prefix="mmfuse-test-cache-")

import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
QUICKSTART = REPO / "experiments" / "quickstart" / "config.yaml"

#: example sequences per modality, of different lengths (padding is exercised)
SEQUENCES = {
    "dna": ["ACGT" * 40 + "NACG", "TTGACA" * 16],
    "rna": ["AUGGCCAUUGUAAUGGGCCGCUGAAAGGGUGCCCGAUAG", "ACGUNAC"],
    "protein": ["MKTAYIAKQRQISFVKSHFSRQ", "MVLSPADKTN"],
    # single cells as GENE:value lists (Geneformer's tiny preset knows genes G0000 … G0099)
    "cell": ["G0001:5; G0002:1; G0003:2.5; G0010:7; G0042:1; G0099:3", "G0004:1;G0007:2"],
}


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def small_table():
    """The sample data set with few genes (fast), as a DataFrame."""
    from mmfuse.data.samples.isoform import make_sample_table

    return make_sample_table(num_genes=24, seed=1)


def _run_mmfuse(*args: str, cwd: Path | None = None, env: dict | None = None, timeout: int = 300):
    import subprocess
    import tempfile

    cwd = cwd or Path(tempfile.mkdtemp(prefix="mmfuse-run-"))  # never write runs/ into the repository
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "mmfuse", *args],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture(scope="session")
def run_mmfuse():
    """``run_mmfuse(*args, cwd=None, env=None)`` runs ``python -m mmfuse ARGS`` in a fresh process."""
    return _run_mmfuse


@pytest.fixture(scope="session")
def quickstart() -> Path:
    return QUICKSTART


@pytest.fixture(scope="session")
def sequences() -> dict[str, list[str]]:
    return SEQUENCES


@pytest.fixture(scope="session")
def trained(tmp_path_factory) -> Path:
    """For the training and analysis tests: the last checkpoint of two training steps of the quickstart on
    12 sample genes (:data:`SMALL`)."""
    from tests.helpers.in_process import QUICKSTART, SMALL, mmfuse_stdout

    runs = tmp_path_factory.mktemp("quickstart-runs")
    mmfuse_stdout("fit", "--config", str(QUICKSTART), *SMALL, "--trainer.max_steps=2", "--trainer.limit_val_batches=1",
                  "--trainer.num_sanity_val_steps=0", f"--trainer.logger.init_args.save_dir={runs}")  # fmt: skip
    (last,) = runs.glob("*/*/checkpoints/last.ckpt")
    return last


#: `make test-slow`'s longest tests (node id prefixes), started first so that its workers end together
SLOW_FIRST = ("tests/test_learning.py::test_modality_contribution", "tests/test_learning.py::")


@pytest.hookimpl(wrapper=True)  # around the other plugins' hooks: the groups are set before pytest-xdist reads them
def pytest_collection_modifyitems(config, items):
    """`make test-slow` runs in pytest-xdist workers with ``--dist loadgroup``: the tests of a file are one group
    (one worker, so a module's fixtures are built once), unless a test names its own ``xdist_group`` (each
    adapter's learning run; tests that share a trained run name the same group). The longest run first."""
    if not config.getoption("loadgroup", False):  # set in xdist's workers when --dist loadgroup
        return (yield)
    for item in items:
        if item.get_closest_marker("xdist_group") is None:
            item.add_marker(pytest.mark.xdist_group(item.nodeid.split("::")[0]))

    def rank(item) -> int:
        return next((i for i, prefix in enumerate(SLOW_FIRST) if item.nodeid.startswith(prefix)), len(SLOW_FIRST))

    items.sort(key=rank)  # stable: collection order within each rank
    return (yield)


def pytest_configure(config) -> None:
    from importlib.metadata import version

    from packaging.version import Version  # pytest's own dependency

    if config.getoption("dist", "no") != "loadgroup":
        return
    if Version(pytest.__version__) >= Version("9.2") and Version(version("pytest-xdist")) < Version("3.9"):
        # there pytest-xdist 3.8's loadgroup loses its groups without a word: node ids moved to another attribute
        raise pytest.UsageError(
            f"pytest {pytest.__version__}: pytest-xdist's --dist loadgroup (make test-slow) does not group tests with "
            "pytest 9.2 (pytest-dev/pytest-xdist#1386); install the dev extra's pytest: pip install -e '.[dev]'"
        )
