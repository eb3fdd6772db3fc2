"""The documentation site: the YAML reference is current and `mkdocs build --strict` passes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_yaml_reference_is_generated_from_the_current_registries():
    result = subprocess.run([sys.executable, str(REPO / "docs" / "gen_reference.py"), "--check"],
                            capture_output=True, text=True, cwd=REPO)  # fmt: skip
    assert result.returncode == 0, result.stderr


def test_yaml_reference_lists_every_component_and_option():
    from mmfuse.registry import ADAPTERS, BACKBONES, BUILTIN_SOURCE, HEADS

    text = (REPO / "docs" / "reference.md").read_text()
    for registry in (BACKBONES, ADAPTERS, HEADS):
        for entry in registry.entries():
            assert (f"### {entry.name}\n" in text) == (entry.source == BUILTIN_SOURCE), entry.name
    assert "| `embedding_cache` |" in text and "| `bucketing` |" in text and "| `r` |" in text


def test_site_builds_strictly(tmp_path):
    # mkdocs-material comes with the dev extra (`make install`); warnings (dead links, pages missing
    # from the navigation) fail the build
    import os

    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    result = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-q", "-d", str(tmp_path / "site")],
                            capture_output=True, text=True, cwd=REPO, env=env)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "site" / "reference" / "index.html").is_file()
