"""Every experiment config (experiments/<system>/*.yaml) trains for two steps with tiny presets swapped in.

The override is what a user would type: the whole ``backbones`` mapping given again on the command
line with ``preset: tiny`` (weights, sources and crops of the real checkpoints dropped), and the bundled
sample data in place of the published data set: written in that data set's own layout when the config
names one (IsoFormer's ``GTEx_final.csv`` with a genome to cut DNA from, ModelGenerator's TSV files),
so the published files' reading path trains too.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from mmfuse.cli import MmfuseCLI, load_components
from mmfuse.cli.checks import cpu_has_bf16
from mmfuse.data.samples.layouts import write_isoformer_layout, write_modelgenerator_layout
from mmfuse.registry import BACKBONES

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"
_YAMLS = sorted(p for p in EXPERIMENTS.rglob("*.yaml")
                if p.parent.name != "quickstart" and not p.name.endswith("space.yaml"))  # fmt: skip
#: configs that train; the others are an analysis' options given after their folder's config.yaml
CONFIGS = [p for p in _YAMLS if "model" in (yaml.safe_load(p.read_text()) or {})]
ANALYSES = [p for p in _YAMLS if p not in CONFIGS]
#: options of the real checkpoints that a tiny preset does not take
_REAL_ONLY = {"preset", "source", "revision", "pretrained", "crop_bins", "max_length", "use_tf_gamma"}
#: options that swap each data module's bundled sample data in for the published data, by data class
_SAMPLE_DATA = {
    "IsoformExpression": ["--data.init_args.source.path=sample", "--data.init_args.sample.size=24",
                          "--data.init_args.split.val_fraction=0.2"],  # a validation split however small the real one
    "SequenceClassification": ["--data.init_args.source.path=sample", "--data.init_args.sample.size=24",
                               "--data.init_args.split.val_fraction=0.2"],
    "CellClassification": ["--data.init_args.source.path=sample", "--data.init_args.sample.size=60",
                           "--data.init_args.split.val_fraction=0.2"],  # layer, gene_id_column: ignored for it
    # the planted gene labels of the sample (gene_labels: null), five folds of its 100 genes
    "GeneClassification": ["--data.init_args.source.path=sample", "--data.init_args.sample.size=60",
                           "--data.init_args.gene_labels=null", "--data.init_args.split.val_fraction=0.2"],
    # peaks/genome/proteins are ignored with path: sample, whose cell types are HepG2 and MCF-7 only
    "TFBinding": ['--data.init_args.source={"path": "sample", "contexts": null}', "--data.init_args.sample.size=48"],
}  # fmt: skip


def _has_presets(class_path: str) -> bool:
    load_components()
    return bool(BACKBONES.get(class_path.rsplit(".", 1)[-1]).presets)


def tiny_overrides(config: Path, workdir: Path) -> list[str]:
    """Command-line arguments that run ``config`` with tiny random backbones on the sample data, 2 steps."""
    spec = yaml.safe_load(config.read_text())
    tiny = {}
    for modality, backbone in spec["model"]["init_args"]["backbones"].items():
        args = backbone.get("init_args") or {}
        if not _has_presets(backbone["class_path"]):  # nothing pretrained to swap (e.g. a learned embedding)
            tiny[modality] = backbone
            continue
        # the override is merged into the config's: options of the real checkpoint are reset to null
        reset = {k: None for k in args if k in _REAL_ONLY}
        tiny[modality] = {"class_path": backbone["class_path"], "init_args": {**reset, "preset": "tiny"}}
    overrides = [
        f"--model.init_args.backbones={json.dumps(tiny)}",
        *_SAMPLE_DATA[spec["data"]["class_path"].rsplit(".", 1)[-1]],
        "--trainer.max_steps=2",
        "--trainer.accumulate_grad_batches=1",
        "--trainer.limit_val_batches=1",
        "--trainer.val_check_interval=2",  # validate once, so monitored metrics (early stopping) exist
        "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false",
        "--trainer.accelerator=cpu",
        f"--trainer.default_root_dir={workdir}",
    ]
    if not cpu_has_bf16() and str((spec.get("trainer") or {}).get("precision", "")).startswith("bf16"):
        # bf16 emulated on this CPU runs ~15x slower; CPUs with AMX/AVX-512 BF16 (CI) train it as configured
        overrides.append("--trainer.precision=32-true")
    overrides += _published_layout(spec["data"].get("init_args") or {}, workdir)
    if "embedding_cache" in spec["model"]["init_args"]:
        overrides.append(f"--model.init_args.embedding_cache.directory={workdir / 'cache'}")
    return overrides


def _published_layout(data_args: dict, workdir: Path) -> list[str]:
    """The sample written in the layout of the data set a config reads (``columns:``), and the options reading it."""
    if data_args.get("columns") == "isoformer":
        csv, genome = write_isoformer_layout(workdir / "isoformer", num_genes=24)
        overrides = [f"--data.init_args.source.path={csv.parents[1]}", "--data.init_args.split.val_fraction=0.2"]
        if (data_args.get("source") or {}).get("genome"):  # the sample's DNA windows are 1,024 bp
            overrides.append(f"--data.init_args.source.genome={json.dumps({'fasta': str(genome), 'window': 1024})}")
        return overrides
    if data_args.get("columns") == "modelgenerator":
        return [f"--data.init_args.source.path={write_modelgenerator_layout(workdir / 'modelgenerator', num_genes=24)}"]
    return []


def test_there_are_experiments():
    assert {p.parent.name for p in CONFIGS} >= {"isoformer", "modelgenerator_concat", "tf_bind", "geneformer"}
    for folder in {p.parent for p in CONFIGS}:
        assert (folder / "README.md").is_file(), f"{folder.name}/ needs a README"


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_experiment_trains_two_steps_with_tiny_presets(config, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # loggers write runs/ here
    monkeypatch.setattr("sys.argv", ["mmfuse"])
    cli = MmfuseCLI(["fit", "--config", str(config), *tiny_overrides(config, tmp_path)])
    assert cli.trainer.global_step == 2
    assert all(b.preset.name == "tiny" for b in cli.model.model.backbones.values() if b.presets)


#: what an analysis config needs on the sample in place of the published data's genes and states
_ON_SAMPLE = {
    "perturbation": ["--data.init_args.label_column=cell_type", "--perturbation.genes=[G0090, G0001]",
                     '--perturbation.cells={"filter": null, "max_cells": 6}',
                     '--perturbation.cell_states={"column": "cell_type", "start": "erythroid", "goal": "myeloid",'
                     ' "alternatives": ["lymphoid"]}'],
}  # fmt: skip


def test_every_analysis_config_is_an_analysis_section():
    assert ANALYSES, "experiments/geneformer/perturbation.yaml at least"
    for config in ANALYSES:
        sections = set(yaml.safe_load(config.read_text())) - {"data", "trainer"}
        assert len(sections) == 1 and sections <= set(_ON_SAMPLE), (config, sections)


@pytest.mark.parametrize("config", ANALYSES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_analysis_config_runs_after_its_folders_config_with_tiny_presets(config, tmp_path, monkeypatch):
    from mmfuse.cli import main
    from tests.helpers.in_process import bare_argv

    monkeypatch.chdir(tmp_path)
    (section,) = set(yaml.safe_load(config.read_text())) - {"data", "trainer"}
    base = config.parent / "config.yaml"
    with bare_argv():
        main(["perturb", "--config", str(base), *tiny_overrides(base, tmp_path), "--config", str(config),
              *_ON_SAMPLE[section], f"--{section}.output={tmp_path / 'out.csv'}", f"--{section}.plots=false"])
    assert (tmp_path / "out.csv").is_file() and (tmp_path / "out_cells.csv").is_file()
