"""Safe loading: nothing mmfuse reads can run code. Every ``torch.load`` in the package passes
``weights_only=True``, no code path turns ``trust_remote_code`` on by itself, safetensors files are
preferred to pickled ``.bin`` files, and a ``.bin`` that asks to run code is refused. (Plugin import
failures are isolated and reported: tests/test_registry.py, tests/test_cli.py; Geneformer's pickled
dictionaries: tests/backbones/test_geneformer.py; checkpoints: tests/test_resume.py.)"""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest
import torch
from torch import nn

from mmfuse.backbones._weights import load_config_and_weights
from mmfuse.errors import ConfigError

PACKAGE = Path(__file__).resolve().parents[1] / "mmfuse"
SOURCES = sorted(PACKAGE.rglob("*.py"))


def _calls(name: str):
    for path in SOURCES:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call):
                func = node.func
                called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
                if called == name:
                    yield path, node


def _keyword(call: ast.Call, name: str):
    return next((k.value for k in call.keywords if k.arg == name), None)


def test_every_torch_load_reads_weights_only():
    loads = list(_calls("load"))
    torch_loads = [
        (p, c) for p, c in loads if isinstance(c.func, ast.Attribute) and ast.unparse(c.func) == "torch.load"
    ]
    assert torch_loads, "the scan should find mmfuse's torch.load calls"
    unsafe = [f"{p.relative_to(PACKAGE.parent)}:{c.lineno}" for p, c in torch_loads
              if not (isinstance(v := _keyword(c, "weights_only"), ast.Constant) and v.value is True)]  # fmt: skip
    assert not unsafe, f"torch.load without weights_only=True at {unsafe}"


def test_no_code_path_turns_trust_remote_code_on_by_itself():
    forced = []
    for path in SOURCES:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.keyword) and node.arg == "trust_remote_code":
                if isinstance(node.value, ast.Constant) and node.value.value is True:
                    forced.append(f"{path.name}:{node.value.lineno}")
            if isinstance(node, ast.Dict):  # {"trust_remote_code": True} splatted into a call
                for key, value in zip(node.keys, node.values, strict=True):
                    if isinstance(key, ast.Constant) and key.value == "trust_remote_code":
                        guarded = isinstance(value, ast.Constant) and value.value is True
                        forced.append(f"{path.name}:{key.lineno}") if guarded and not _guarded(path, key) else None
    assert not forced, f"trust_remote_code forced on at {forced}"


def _guarded(path: Path, node: ast.AST) -> bool:
    """Whether the line builds the option only when the user's own ``trust_remote_code`` is set."""
    line = path.read_text().splitlines()[node.lineno - 1]
    return "if trust_remote_code" in line


class _Tiny(nn.Module):
    def __init__(self, config: dict) -> None:
        super().__init__()
        self.linear = nn.Linear(config["width"], 2)


class _RunsCode:
    """Unpickling it would call ``Path.touch`` on a marker file: code execution."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_safetensors_is_read_before_a_pickled_bin(tmp_path):
    from safetensors.torch import save_file

    (tmp_path / "config.json").write_text(json.dumps({"width": 3}))
    good = {"linear.weight": torch.full((2, 3), 0.5), "linear.bias": torch.zeros(2)}
    save_file(good, tmp_path / "model.safetensors")
    marker = tmp_path / "code_ran"
    torch.save({"linear.weight": _RunsCode(marker)}, tmp_path / "pytorch_model.bin")
    model = load_config_and_weights(str(tmp_path), _Tiny, "tiny")
    assert torch.equal(model.linear.weight, good["linear.weight"])
    assert not marker.exists()


def test_a_bin_that_asks_to_run_code_is_refused(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"width": 3}))
    marker = tmp_path / "code_ran"
    torch.save({"linear.weight": _RunsCode(marker)}, tmp_path / "pytorch_model.bin")
    with pytest.raises(ConfigError, match=r"pytorch_model.bin holds Python objects .* will not run code"):
        load_config_and_weights(str(tmp_path), _Tiny, "tiny")
    assert not marker.exists()
