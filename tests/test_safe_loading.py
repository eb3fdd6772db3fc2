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


# --- checkpoints: their hyper-parameters never build the model (docs/reliability.md) --------------


def _evil_source(directory: Path, marker: Path) -> Path:
    """A model directory whose tokenizer is Python code touching ``marker`` when imported."""
    directory.mkdir()
    (directory / "evil.py").write_text(f"from pathlib import Path\nPath({str(marker)!r}).touch()\n")
    (directory / "tokenizer_config.json").write_text(json.dumps({"auto_map": {"AutoTokenizer": ["evil.T", None]}}))
    (directory / "config.json").write_text(json.dumps({"model_type": "evil", "auto_map": {"AutoConfig": "evil.C"}}))
    return directory


def _mmfuse(*args: str) -> tuple[int, str]:
    import contextlib
    import io
    import os
    import sys

    from mmfuse.cli import main

    saved, argv, err = dict(os.environ), sys.argv, io.StringIO()
    sys.argv = ["mmfuse"]
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            try:
                main(list(args))
                code = 0
            except SystemExit as exit:
                code = int(exit.code or 0)
    finally:
        sys.argv = argv
        os.environ.clear()
        os.environ.update(saved)
    return code, err.getvalue()


@pytest.fixture(scope="module")
def hf_run(tmp_path_factory):
    """A one-step fit of the quickstart with its protein read by a tiny ``HuggingFaceEncoder``: (config, ckpt)."""
    import yaml

    from tests.backbones.conftest import make_tiny_hf

    root = tmp_path_factory.mktemp("hf-run")
    quickstart = Path(__file__).resolve().parents[1] / "experiments" / "quickstart" / "config.yaml"
    config = yaml.safe_load(quickstart.read_text())
    source = make_tiny_hf("esm", root / "tiny-esm")
    config["model"]["init_args"]["backbones"]["protein"] = {
        "class_path": "HuggingFaceEncoder", "init_args": {"source": str(source), "modality": "protein"}}  # fmt: skip
    config["trainer"]["logger"]["init_args"]["save_dir"] = str(root / "runs")
    path = root / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    code, err = _mmfuse("fit", "--config", str(path), *_SMALL, "--trainer.max_steps=1", "--trainer.limit_val_batches=1",
                        "--trainer.num_sanity_val_steps=0")  # fmt: skip
    assert code == 0, err[-2000:]
    (checkpoint,) = (root / "runs").glob("*/*/checkpoints/last.ckpt")
    return path, checkpoint


_SMALL = (
    "--data.init_args.sample.size=12",
    "--data.init_args.split.val_fraction=0.25",
    "--data.init_args.split.test_fraction=0.25",
    "--data.init_args.loader.batch_size=4",
    "--trainer.enable_progress_bar=false",
    "--data.init_args.lengths.max={dna: 256, rna: 256, protein: 128}",
    "--trainer.enable_model_summary=false",
)


def _edited(checkpoint: Path, directory: Path, **protein: object) -> Path:
    content = torch.load(checkpoint, map_location="cpu", weights_only=True)
    content["hyper_parameters"]["backbones"]["protein"]["init_args"].update(protein)
    path = directory / "edited.ckpt"
    torch.save(content, path)
    return path


def test_a_checkpoint_cannot_turn_on_remote_code(hf_run, tmp_path):
    """The attack of issue 16: a plain-data checkpoint (it loads with ``weights_only=True``) whose
    hyper-parameters point the backbone at a directory of Python code and set ``trust_remote_code``."""
    import subprocess
    import sys

    config, checkpoint = hf_run
    control = _evil_source(tmp_path / "control", tmp_path / "control_ran")
    # the payload is live: trusting that source runs its code
    subprocess.run([sys.executable, "-c", "from mmfuse.backbones import HuggingFaceEncoder as H\ntry: "
                    f"H({str(control)!r}, modality='protein', trust_remote_code=True)\nexcept Exception: pass"],
                   env={**__import__("os").environ, "HF_HOME": str(tmp_path / "hf")}, timeout=120)  # fmt: skip
    assert (tmp_path / "control_ran").exists()

    marker = tmp_path / "code_ran"
    evil = _edited(checkpoint, tmp_path, source=str(_evil_source(tmp_path / "evil", marker)), trust_remote_code=True)
    for command in ("predict", "test", "fit"):
        code, err = _mmfuse(command, "--config", str(config), "--ckpt_path", str(evil), *_SMALL)
        assert code == 1, err[-2000:]
        assert "sets model.init_args.backbones.protein.init_args.trust_remote_code: True" in err
        assert "never takes from a checkpoint" in err.splitlines()[-1]
    assert not marker.exists()


def test_a_checkpoint_cannot_change_a_weights_source_and_differences_are_shown(hf_run, tmp_path):
    config, checkpoint = hf_run
    elsewhere = _edited(checkpoint, tmp_path, source=str(tmp_path / "no-such-model"), max_length=64)
    code, err = _mmfuse("test", "--config", str(config), "--ckpt_path", str(elsewhere), *_SMALL)
    assert code == 0, err[-2000:]  # the config's source: Lightning's own CLI would have loaded the other one
    note = err[err.index("mmfuse: note: this config differs from what checkpoint") :].splitlines()
    assert "the config's values are used" in note[0] and str(config.parent / "runs") not in note[0]
    assert any(f"protein.init_args.source: '{config.parent / 'tiny-esm'}' (config), '{tmp_path / 'no-such-model'}'"
               f" (checkpoint)" in line for line in note[1:3])  # fmt: skip
    assert any("protein.init_args.max_length: None (config), 64 (checkpoint)" in line for line in note[1:3])


def test_the_comparison_names_each_difference_once_and_knows_re_exported_classes():
    from mmfuse.training.checkpoints import compare_with_checkpoint

    def model(adapter: str, backbone: str, **head: object) -> dict:
        return {"class_path": "mmfuse.training.RegressionTask", "init_args": {
            "backbones": {"dna": {"class_path": backbone, "init_args": {"preset": "tiny"}}},
            "adapter": {"class_path": adapter, "init_args": {"hidden_dim": 8}},
            "head": {"class_path": "mmfuse.training.MLPHead", "init_args": {"dropout": 0.1, **head}},
            "target_names": None}}  # fmt: skip

    def saved(config: dict) -> dict:
        return {"_class_path": config["class_path"], "_instantiator": "x", **config["init_args"], "target_names": ["a"]}

    config = model("mmfuse.adapters.ConcatFusion", "mmfuse.backbones.Enformer")
    same = model("mmfuse.adapters.concat.ConcatFusion", "mmfuse.backbones.enformer.Enformer")
    assert compare_with_checkpoint(config, saved(same)) == ([], [])  # module paths differ, classes do not
    other = model("mmfuse.adapters.CrossAttentionFusion", "other_package.Enformer", dropout=0.5)
    refused, notes = compare_with_checkpoint(config, saved(other))
    assert refused == [
        "model.init_args.adapter.class_path is CrossAttentionFusion in the checkpoint, ConcatFusion in this config",
        "model.init_args.backbones.dna.class_path is other_package.Enformer in the checkpoint, "
        "mmfuse.backbones.Enformer in this config",
    ]
    assert notes == ["model.init_args.head.init_args.dropout: 0.1 (config), 0.5 (checkpoint)"]  # not the adapter's
