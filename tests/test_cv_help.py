"""`mmfuse cv --help` names the directory the folds really go to (cv/<config>, as docs/sweeps.md shows), not
sweep's plural."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import pytest

from mmfuse.cli import cv, main

DOCS = Path(__file__).resolve().parents[1] / "docs" / "sweeps.md"


def _help(command: str) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as exit_:
        main([command, "--help"])
    assert exit_.value.code == 0
    return " ".join(out.getvalue().split())  # argparse wraps lines


def test_cv_help_names_the_directory_cv_writes():
    text = _help("cv")
    assert cv._DIR == "cv"  # what main() joins with the config's name
    assert "(default: cv/<config name>;" in text and "cvs/" not in text
    assert "in cv/quickstart" in DOCS.read_text()


def test_sweep_help_still_names_sweeps():
    assert "(default: sweeps/<config name>;" in _help("sweep")
