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


#: (config, exported directory, records file, mmfuse predict's output, eval batch size) of each trained experiment,
#: for the round trip through a fresh process (the last test of this file)
EXPORTED: list[tuple[str, Path, Path, Path, int]] = []


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_experiment_trains_two_steps_with_tiny_presets(config, tmp_path_factory, monkeypatch):
    """Trains two steps, then predicts from the checkpoint (``mmfuse predict``) and exports it (``mmfuse export``),
    keeping the records it predicted for the round trip below."""
    from mmfuse.cli import main

    tmp_path = tmp_path_factory.mktemp(config.stem)
    monkeypatch.chdir(tmp_path)  # loggers write runs/ here
    monkeypatch.setattr("sys.argv", ["mmfuse"])
    overrides = tiny_overrides(config, tmp_path)
    cli = MmfuseCLI(["fit", "--config", str(config), *overrides])
    assert cli.trainer.global_step == 2
    assert all(b.preset.name == "tiny" for b in cli.model.model.backbones.values() if b.presets)
    ckpt = max(tmp_path.rglob("*.ckpt"), key=lambda p: (p.name == "last.ckpt", p.stat().st_mtime))
    predictions, export = tmp_path / "predictions.csv", tmp_path / "export"
    main(["predict", "--config", str(config), *overrides, "--ckpt_path", str(ckpt), "--trainer.precision=32-true",
          f"--predictions.output={predictions}"])  # compared in float32 (from_pretrained's predict)
    main(["export", "--config", str(config), *overrides, "--ckpt_path", str(ckpt), "--output", str(export)])
    data = cli.datamodule
    data.setup("predict")
    dataset = data.predict_dataloader().dataset
    records = [{"id": item["id"], **item["sequences"]} for item in (dataset[i] for i in range(len(dataset)))]
    (tmp_path / "records.json").write_text(json.dumps(records))
    EXPORTED.append((f"{config.parent.name}/{config.name}", export, tmp_path / "records.json", predictions,
                     data.eval_batch_size))


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


_ROUND_TRIP = """
import json, sys
from mmfuse.model import FusionModel
for case in json.loads(sys.argv[1]):
    model = FusionModel.from_pretrained(case["export"])
    read = {"id", *model.pretrained.modalities}  # the data may serve modalities the model does not read
    records = [{k: v for k, v in r.items() if k in read} for r in json.loads(open(case["records"]).read())]
    model.predict(records, batch_size=case["batch_size"]).to_csv(case["output"], index=False)
"""


def test_every_experiment_round_trips_through_its_export_in_a_fresh_process(tmp_path):
    """``FusionModel.from_pretrained`` of each export, in a new process, predicts what ``mmfuse predict`` wrote from
    the checkpoint (max abs difference <= 1e-6), every output column of every record (every gene of a token model)."""
    import subprocess
    import sys

    import numpy as np
    import pandas as pd

    if not EXPORTED:
        pytest.skip("no experiment was trained in this run (the training tests above were deselected)")
    cases = [{"name": name, "export": str(export), "records": str(records), "batch_size": batch,
              "output": str(tmp_path / f"{i}.csv")} for i, (name, export, records, _, batch) in enumerate(EXPORTED)]
    subprocess.run([sys.executable, "-c", _ROUND_TRIP, json.dumps(cases)], check=True, timeout=600,
                   cwd=Path(__file__).resolve().parents[1])
    for case, (_, _, _, written, _) in zip(cases, EXPORTED, strict=True):
        theirs, ours = pd.read_csv(written, dtype={0: str}), pd.read_csv(case["output"], dtype={"id": str})
        theirs = theirs.rename(columns={theirs.columns[0]: "id"}).drop(columns=["true_label"], errors="ignore")
        keys = ["id", "gene"] if "gene" in theirs.columns else ["id"]
        joined = theirs.merge(ours, on=keys, suffixes=("", "_ours"), how="left", validate="one_to_one")
        assert len(joined) == len(theirs) > 0, case["name"]
        for column in [c for c in theirs.columns if c not in keys]:
            mine = joined[f"{column}_ours"]
            if column == "predicted":
                assert (mine == joined[column]).all(), (case["name"], column)
                continue
            difference = np.abs(mine.to_numpy(float) - joined[column].to_numpy(float)).max()
            assert difference <= 1e-6, (case["name"], column, difference)
