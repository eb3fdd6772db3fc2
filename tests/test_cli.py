"""The ``mmfuse`` command: help, config printing, component listing, plugins and error messages."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import yaml

from mmfuse.cli import main

EXPERIMENTS = sorted((Path(__file__).resolve().parents[1] / "experiments").rglob("*.yaml"))


def test_help_lists_the_subcommands(run_mmfuse):
    result = run_mmfuse("--help")
    assert result.returncode == 0, result.stderr
    assert "{fit,validate,test,predict}" in result.stdout and "mmfuse components" in result.stdout
    result = run_mmfuse("fit", "--help")
    assert result.returncode == 0 and "--predictions.output" in result.stdout and "--model" in result.stdout


@pytest.mark.parametrize("config", EXPERIMENTS, ids=lambda p: str(p.parent.name + "/" + p.name))
def test_every_experiment_config_parses(config, capsys, monkeypatch):
    monkeypatch.setattr("sys.argv", ["mmfuse"])
    with pytest.raises(SystemExit) as info:
        main(["fit", "--config", str(config), "--print_config"])
    assert info.value.code == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["model"]["class_path"].startswith("mmfuse.tasks.")
    for backbone in printed["model"]["init_args"]["backbones"].values():
        assert backbone["class_path"].startswith("mmfuse.backbones.")  # short names resolved


def test_components_lists_builtins_with_their_source(capsys):
    assert main(["components"]) == 0
    out = capsys.readouterr().out
    assert "backbones:" in out and "adapters:" in out and "heads:" in out
    line = next(line for line in out.splitlines() if line.strip().startswith("ESM2"))
    assert "mmfuse (built-in)" in line and "ESM2 protein encoder" in line


# an unknown component name and a misspelled option: tests/test_bad_input.py (the CLI cases)


def _in_process(capsys, monkeypatch, *args: str) -> tuple[int, str]:
    """``mmfuse ARGS`` in this process: its exit code and standard error (faster than a new process)."""
    monkeypatch.setattr("sys.argv", ["mmfuse"])
    with pytest.raises(SystemExit) as exit_:
        main(list(args))
    return exit_.value.code, capsys.readouterr().err


def test_bad_option_value_is_one_clear_line(quickstart, capsys, monkeypatch):
    override = "--model.init_args.backbones.protein.init_args.preset=esm2_8M"
    code, stderr = _in_process(capsys, monkeypatch, "fit", "--config", str(quickstart), override)
    assert code == 1
    assert stderr.strip().splitlines()[-1].startswith("mmfuse: error: Unknown ESM2 preset 'esm2_8M'")
    assert "Traceback" not in stderr


def test_bad_adapter_option_is_one_clear_line(quickstart, capsys, monkeypatch):
    override = '--model.init_args.adapter={"class_path": "CrossAttentionFusion", "init_args": {"queries": ["atac"]}}'
    code, stderr = _in_process(capsys, monkeypatch, "fit", "--config", str(quickstart), override)
    assert code == 1, stderr[-2000:]
    last = stderr.strip().splitlines()[-1]
    assert last.startswith("mmfuse: error: queries ['atac'] must name one or more of the modalities"), last
    assert "Traceback" not in stderr


def test_plugin_components_and_failures_are_reported_by_distribution(run_mmfuse, tmp_path):
    # a real distribution on sys.path: metadata + entry points + module
    (tmp_path / "mmfuse_toy_plugin.py").write_text(
        textwrap.dedent('''
        import torch
        from mmfuse.backbones import Backbone, BackboneOutput
        from mmfuse.tokenizers import CharTokenizer

        class ToyBackbone(Backbone):
            """A one-layer embedding of DNA letters."""
            def __init__(self, preset: str = "tiny", modality: str = "dna", freeze: bool = False):
                super().__init__(modality, freeze)
                self.embedding = torch.nn.Embedding(5, 8)
                self.tokenizer = CharTokenizer("Toy", "ACGTN", [0, 1, 2, 3, 4], pad_id=4)
                self._finish_init()

            @property
            def embed_dim(self):
                return 8

            def encode(self, batch):
                return BackboneOutput(self.embedding(batch["input_ids"]), batch["attention_mask"])
    ''')
    )
    info = tmp_path / "mmfuse_toy_plugin-0.3.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: mmfuse-toy-plugin\nVersion: 0.3\n")
    (info / "entry_points.txt").write_text(
        "[mmfuse.backbones]\nToyBackbone = mmfuse_toy_plugin:ToyBackbone\nBroken = mmfuse_missing_module:Nothing\n"
    )
    env = {"PYTHONPATH": str(tmp_path)}
    result = run_mmfuse("components", env=env)
    assert result.returncode == 0, result.stderr
    toy = next(line for line in result.stdout.splitlines() if "ToyBackbone" in line)
    assert "mmfuse-toy-plugin 0.3" in toy and "A one-layer embedding" in toy
    failed = "(failed) Broken = mmfuse_missing_module:Nothing (mmfuse-toy-plugin 0.3): ModuleNotFoundError"
    assert failed in result.stdout
    assert "failed to import and is skipped" in result.stderr
    # the rest of the CLI keeps working, and YAML may name the plugin's class
    config = tmp_path / "toy.yaml"
    config.write_text(
        textwrap.dedent("""
        model:
          class_path: RegressionTask
          init_args:
            backbones:
              dna: {class_path: ToyBackbone}
        data:
          class_path: IsoformExpression
          init_args: {modalities: {dna: DNA}}
    """)
    )
    result = run_mmfuse("fit", "--config", str(config), "--print_config", env=env)
    assert result.returncode == 0, result.stderr
    assert "class_path: mmfuse_toy_plugin.ToyBackbone" in result.stdout


def test_sample_data_command_writes_the_table(tmp_path, capsys):
    assert main(["sample-data", "--out", str(tmp_path / "s.parquet"), "--genes", "5"]) == 0
    import pandas as pd

    table = pd.read_parquet(tmp_path / "s.parquet")
    assert table.gene_id.nunique() == 5 and "Vagina" in table.columns
    assert "Wrote" in capsys.readouterr().out
