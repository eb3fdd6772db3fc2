"""docs/backbones.md lists every built-in backbone and each of its presets."""

from __future__ import annotations

from pathlib import Path

import pytest

from mmfuse.registry import BACKBONES, BUILTIN_SOURCE

DOC = Path(__file__).resolve().parents[2] / "docs" / "backbones.md"
BUILTINS = [e for e in BACKBONES.entries() if e.source == BUILTIN_SOURCE]


@pytest.mark.parametrize("entry", BUILTINS, ids=lambda e: e.name)
def test_backbone_and_its_presets_are_documented(entry):
    text = DOC.read_text()
    assert f"`{entry.name}`" in text, f"add {entry.name} to the table in docs/backbones.md"
    undocumented = [p for p in entry.obj.presets if f"`{p}`" not in text and p != "tiny"]
    assert not undocumented, f"presets of {entry.name} missing from docs/backbones.md: {undocumented}"
