"""The quickstart checkpoint of two training steps (``trained``, tests/conftest.py) and its export."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers.in_process import QUICKSTART, SMALL, bare_argv

#: the data options of the trained model (predict and test read the same records)
DATA = SMALL


@pytest.fixture(scope="session")
def exported(trained: Path, tmp_path_factory) -> dict[str, Path]:
    """``{"ckpt", "export"}``: the quickstart checkpoint and its export (``mmfuse export``)."""
    from mmfuse.cli import main

    export = tmp_path_factory.mktemp("hub") / "export"
    with bare_argv():
        main(["export", "--config", str(QUICKSTART), *DATA, "--ckpt_path", str(trained), "--output", str(export)])
    return {"ckpt": trained, "export": export}


@pytest.fixture(scope="session")
def exported_dir(exported) -> Path:
    return exported["export"]
