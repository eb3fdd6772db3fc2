"""The ``mmfuse`` command: help, config printing, component listing, plugins and error messages."""

from __future__ import annotations

import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from mmfuse.cli import main
from mmfuse.cli.hints import config_hints, user_config
from mmfuse.registry import Registry

# configs; search spaces of `mmfuse sweep` are named *space.yaml (tests/test_sweep.py)
EXPERIMENTS = sorted(p for p in (Path(__file__).resolve().parents[1] / "experiments").rglob("*.yaml")
                     if not p.name.endswith("space.yaml") and "model" in yaml.safe_load(p.read_text()))  # fmt: skip
# an analysis' options (experiments/geneformer/perturbation.yaml) run in tests/test_experiments.py


def test_help_lists_every_command_with_one_line(run_mmfuse, capsys, monkeypatch):
    from mmfuse.cli import COMMANDS

    result = run_mmfuse("--help")  # the installed command, in its own process
    assert result.returncode == 0, result.stderr
    listed = [line.split()[0] for line in result.stdout.splitlines() if line.startswith("  ")]
    assert listed == list(COMMANDS) and len(COMMANDS) == 15, result.stdout
    for name, command in COMMANDS.items():
        assert f"  {name}" in result.stdout and command.help in result.stdout
    unknown = run_mmfuse("fitt", "--config", "x.yaml")
    assert unknown.returncode == 2 and unknown.stderr.strip() == (
        "mmfuse: error: no command 'fitt'; did you mean `mmfuse fit`? (`mmfuse --help` lists them)")
    monkeypatch.setattr("sys.argv", ["mmfuse"])
    with pytest.raises(SystemExit) as info:
        main(["fit", "--help"])
    out = capsys.readouterr().out
    assert info.value.code == 0 and "--predictions.output" in out and "--model" in out


@pytest.mark.parametrize("config", EXPERIMENTS, ids=lambda p: str(p.parent.name + "/" + p.name))
def test_every_experiment_config_parses(config, capsys, monkeypatch):
    monkeypatch.setattr("sys.argv", ["mmfuse"])
    with pytest.raises(SystemExit) as info:
        main(["fit", "--config", str(config), "--print_config"])
    assert info.value.code == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["model"]["class_path"].startswith("mmfuse.training.")
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


@pytest.mark.parametrize("has_bf16", [False, True])
def test_bf16_on_a_cpu_without_bf16_instructions_is_warned_before_the_run(quickstart, capsys, monkeypatch, has_bf16):
    # the warning comes before the model is built: a bad adapter option then ends the command cheaply
    monkeypatch.setattr("mmfuse.cli.checks.cpu_has_bf16", lambda: has_bf16)
    override = '--model.init_args.adapter={"class_path": "CrossAttentionFusion", "init_args": {"queries": ["atac"]}}'
    code, stderr = _in_process(capsys, monkeypatch, "fit", "--config", str(quickstart), override,
                               "--trainer.precision=bf16-mixed", "--trainer.accelerator=cpu")  # fmt: skip
    assert code == 1, stderr[-2000:]
    warned = [line for line in stderr.splitlines() if line.startswith("mmfuse: warning: trainer.precision")]
    if has_bf16:
        assert not warned, stderr
    else:
        assert warned == [
            "mmfuse: warning: trainer.precision is bf16-mixed but this CPU has no bfloat16 matrix instructions "
            "(AVX-512 BF16 or AMX): PyTorch emulates them and training runs several times slower than in 32-true; "
            "use --trainer.precision 32-true here (bf16-mixed pays on GPUs and on CPUs with AMX or AVX-512 BF16)"
        ]


def test_slow_precision_note_only_for_bf16_on_a_cpu(monkeypatch):
    from mmfuse.cli.checks import slow_precision_note

    monkeypatch.setattr("mmfuse.cli.checks.cpu_has_bf16", lambda: False)
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    assert slow_precision_note({"trainer": {"precision": "bf16-true", "accelerator": "auto"}}).startswith(
        "mmfuse: warning: trainer.precision is bf16-true"
    )
    for trainer in ({"precision": "32-true", "accelerator": "cpu"}, {"precision": "16-mixed", "accelerator": "cpu"},
                    {"precision": "bf16-mixed", "accelerator": "gpu"}, {}):  # fmt: skip
        assert slow_precision_note({"trainer": trainer}) is None, trainer
    monkeypatch.setattr("torch.cuda.is_available", lambda: True)  # auto picks the GPU
    assert slow_precision_note({"trainer": {"precision": "bf16-mixed", "accelerator": "auto"}}) is None


def test_trainer_writes_checkpoints_through_the_atomic_checkpoint_io(quickstart, monkeypatch, tmp_path):
    from mmfuse.cli import MmfuseCLI
    from mmfuse.training import AtomicCheckpointIO

    monkeypatch.setattr("sys.argv", ["mmfuse"])
    cli = MmfuseCLI(["--config", str(quickstart), "--data.init_args.sample.size=12", "--trainer.logger=false",
                     f"--trainer.default_root_dir={tmp_path}"], run=False)  # fmt: skip
    assert isinstance(cli.trainer.strategy.checkpoint_io, AtomicCheckpointIO)


def test_plugin_components_and_failures_are_reported_by_distribution(run_mmfuse, tmp_path):
    # a real distribution on sys.path: metadata + entry points + module
    (tmp_path / "mmfuse_toy_plugin.py").write_text(
        textwrap.dedent('''
        import torch
        from mmfuse.backbones import Backbone, BackboneOutput, FineTuning
        from mmfuse.tokenizers import CharTokenizer

        class ToyBackbone(Backbone):
            """A one-layer embedding of DNA letters."""
            def __init__(self, preset: str = "tiny", modality: str = "dna", finetune: FineTuning | None = None):
                super().__init__(modality, finetune)
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


# hints for a refused config, from signatures and registries (small stand-ins for mmfuse's classes)
@dataclass
class FineTuning:
    freeze: bool = False
    lora: dict | None = None


class Module:  # what torch.nn.Module is to mmfuse's components: the base of several registries
    pass


class Encoder(Module):
    def __init__(self, preset: str = "tiny", finetune: FineTuning | None = None) -> None: ...


class Head(Module):
    def __init__(self, dropout: float = 0.0, loss_scale: float = 1.0) -> None: ...


class Objective(Module):
    pass


class Regression(Objective):
    def __init__(self, target_names: list[str], loss: str = "mse", standardize_targets: bool = True) -> None: ...


class Classification(Objective):
    def __init__(self, target_names: list[str], label_smoothing: float = 0.0) -> None: ...


class Task:
    def __init__(
        self,
        encoders: dict[str, Encoder],
        head: Module | None = None,
        objective: Objective | None = None,
        lr: float = 1e-3,
    ) -> None: ...


class RegressionTask(Task):
    pass


class ClassificationTask(Task):
    pass


class Runner:
    def __init__(self, max_epochs: int = 1, max_steps: int = -1) -> None: ...


def _hints(config: dict) -> list[str]:
    registries = {kind: Registry(kind, group="mmfuse.test-none") for kind in ("encoder", "head", "objective")}
    registries["encoder"].register()(Encoder)
    registries["head"].register()(Head)
    registries["objective"].register()(Regression)
    registries["objective"].register()(Classification)
    return config_hints(config, {"model": Task, "runner": Runner, "seed_everything": None}, registries)


def _task(task: str = "RegressionTask", encoder: dict | None = None, **options) -> dict:
    encoder = {"class_path": "Encoder", "init_args": encoder or {"preset": "tiny"}}
    return {"model": {"class_path": task, "init_args": {"encoders": {"dna": encoder}, **options}}}


def test_hints_name_the_closest_option_section_and_component():
    assert _hints(_task(lrr=0.1)) == [
        "'lrr' is not an option of RegressionTask; did you mean 'lr'? "
        "(RegressionTask takes: encoders, head, objective, lr)"
    ]
    assert _hints({"runer": {}, "runner": {"max_epoch": 3}}) == [
        "'runer' is not a section of the config; did you mean 'runner'?",
        "'max_epoch' is not an option of the Runner; did you mean 'max_epochs'? (Runner takes: max_epochs, max_steps)",
    ]
    config = _task()
    config["model"]["init_args"]["encoders"]["rna"] = {"class_path": "Encodr"}
    assert _hints(config) == ["Unknown encoder 'Encodr'. Known encoders: Encoder. Did you mean 'Encoder'?"]
    # `head` takes any Module (encoders and objectives too): its own registry answers
    assert _hints(_task(head={"class_path": "Haed"})) == [
        "Unknown head 'Haed'. Known heads: Head. Did you mean 'Head'?"
    ]
    assert _hints({**_task(), "seed_everything": 1}) == []  # a valid config: nothing to say
    assert _hints(_task("RegresionTask")) == [
        "Unknown Task 'RegresionTask'. Known: ClassificationTask, RegressionTask, Task. Did you mean 'RegressionTask'?"
    ]


def test_hints_say_where_an_option_of_the_previous_layout_moved():
    assert _hints(_task(encoder={"preset": "tiny", "freeze": True})) == [
        "'freeze' is now an option of finetune: write `finetune: {freeze: true}`"
    ]
    assert _hints(_task(encoder={"freeze": True, "lora": {"r": 8}, "presett": "tiny"})) == [
        "'presett' is not an option of Encoder; did you mean 'preset'? (Encoder takes: preset, finetune)",
        "'freeze' and 'lora' are now options of finetune: write `finetune: {freeze: true, lora: {r: 8}}`",
    ]
    assert _hints(_task(encoder={"finetune": {"frezze": True}})) == [
        "'frezze' is not an option of FineTuning; did you mean 'freeze'? (FineTuning takes: freeze, lora)"
    ]
    assert _hints(_task(loss="huber", standardize_targets=False)) == [
        "'loss' and 'standardize_targets' are options of the objective: write "
        "`objective: {class_path: Regression, init_args: {loss: huber, standardize_targets: false}}`"
    ]
    # `head` (a Module) takes Regression too, `objective` (an Objective) more closely
    assert _hints(_task(loss="huber", head={"class_path": "Head", "init_args": {"dropout": 0.1}}))[0].startswith(
        "'loss' is an option of the objective: write `objective: {class_path: Regression"
    )
    assert _hints(_task("ClassificationTask", label_smoothing=0.1)) == [
        "'label_smoothing' is an option of the objective: write "
        "`objective: {class_path: Classification, init_args: {label_smoothing: 0.1}}`"
    ]


def test_user_config_merges_config_files_and_overrides(tmp_path):
    first, second = tmp_path / "a.yaml", tmp_path / "b.yaml"
    first.write_text("trainer: {max_epochs: 3, logger: false}\nmodel: {class_path: A, init_args: {x: 1}}\n")
    second.write_text("trainer: {max_epochs: 5}\n")
    args = ["fit", "-c", str(first), "--config", str(second), "--print_config", "--trainer.logger", "true",
            "--model.init_args.y=[1, 2]", "--trainer.callbacks+=X", "--seed_everything", "-1"]  # fmt: skip
    assert user_config(args) == {
        "trainer": {"max_epochs": 5, "logger": True},
        "model": {"class_path": "A", "init_args": {"x": 1, "y": [1, 2]}},
        "seed_everything": -1,
    }
    assert user_config(["fit", "--config", str(first), "--model=B"])["model"] == {"class_path": "B"}


def test_moved_options_of_todays_configs_say_what_to_write(quickstart, capsys, monkeypatch, tmp_path):
    """End to end on the real classes: a config written for the flat fine-tuning options and task losses."""
    config = tmp_path / "old.yaml"
    esm2 = "class_path: ESM2\n        init_args: {preset: tiny"
    text = quickstart.read_text().replace(esm2 + "}", esm2 + ", freeze: true}")
    config.write_text(text.replace("    optimizer:\n", "    loss: huber\n    optimizer:\n", 1))
    code, stderr = _in_process(capsys, monkeypatch, "fit", "--config", str(config))
    assert code == 2
    lines = config.read_text().splitlines()
    at = {key: 1 + next(i for i, row in enumerate(lines) if f"{key}:" in row) for key in ("loss", "freeze")}
    assert sorted(stderr.rstrip().splitlines()[:2]) == [
        f"mmfuse: error: {config}:{at['freeze']}: 'freeze' is now an option of finetune: write "
        f"`finetune: {{freeze: true}}`",
        f"mmfuse: error: {config}:{at['loss']}: 'loss' is an option of the objective: write "
        f"`objective: {{class_path: Regression, init_args: {{loss: huber}}}}`",
    ]


def test_a_refused_config_gets_its_cause_and_place_without_the_usage_dump(capsys, monkeypatch, tmp_path):
    config = tmp_path / "x.yaml"
    quickstart = next(p for p in EXPERIMENTS if p.parent.name == "quickstart" and p.name == "config.yaml")
    text = quickstart.read_text().replace("init_args: {hidden_dim: 64}", "init_args: {hiden_dim: 64}")
    config.write_text(text)
    line = 1 + next(i for i, row in enumerate(text.splitlines()) if "hiden_dim" in row)
    code, err = _in_process(capsys, monkeypatch, "fit", "--config", str(config))
    assert code == 2
    assert err.splitlines()[0] == (
        f"mmfuse: error: {config}:{line}: 'hiden_dim' is not an option of ConcatFusion; did you mean 'hidden_dim'? "
        f"(ConcatFusion takes: input_dims, hidden_dim, dropout, layer_norm, pooling)"
    )
    assert "usage:" not in err and len(err.splitlines()) == 2  # the error and one tip
    code, err = _in_process(capsys, monkeypatch, "fit", "--config", str(quickstart), "--trainer.max_epochs=ten")
    assert err.splitlines()[0] == (
        "mmfuse: error: on the command line: option trainer.max_epochs takes int or null, not 'ten'"
    )
    monkeypatch.setenv("MMFUSE_DEBUG", "1")  # jsonargparse's own, whole message
    code, err = _in_process(capsys, monkeypatch, "fit", "--config", str(config))
    assert code == 2 and "usage:" in err and 'Parser key "model"' in err


def test_bf16_instructions_are_read_from_the_cpu_flags(tmp_path):
    from mmfuse.cli.checks import cpu_has_bf16

    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu sse avx2 avx512f\n\nprocessor\t: 1\nflags\t\t: fpu avx2\n")
    assert not cpu_has_bf16(str(cpuinfo))
    for flag in ("avx512_bf16", "amx_bf16"):
        cpuinfo.write_text(f"processor\t: 0\nflags\t\t: fpu avx512f {flag} amx_tile\n")
        assert cpu_has_bf16(str(cpuinfo))
    assert cpu_has_bf16(str(tmp_path / "missing"))  # not Linux: no warning rather than a wrong one


@pytest.mark.parametrize(
    ("old", "new"),
    [("mmfuse.tasks.RegressionTask", "mmfuse.training.RegressionTask"),
     ("mmfuse.tasks.task.RegressionTask", "mmfuse.training.task.RegressionTask")],  # fmt: skip
)
def test_a_class_path_of_a_module_that_moved_names_the_new_one(old, new, quickstart, capsys, monkeypatch):
    code, stderr = _in_process(capsys, monkeypatch, "fit", "--config", str(quickstart), f"--model.class_path={old}")
    assert code == 2, stderr[-2000:]
    errors = [line for line in stderr.splitlines() if line.startswith("mmfuse: error:")]
    short = old.rsplit(".", 1)[-1]
    assert len(errors) == 1 and errors[0].endswith(
        f"{old!r}: mmfuse's {old.rsplit('.', 1)[0]} is now {new.rsplit('.', 1)[0]}; write `{new}` (or `{short}`)"
    ), stderr


def test_a_failed_command_writes_its_error_for_its_caller(quickstart, capsys, monkeypatch, tmp_path):
    from mmfuse.cli.summary import ENV, read_summary

    monkeypatch.setenv(ENV, str(tmp_path / "summary.json"))
    override = "--model.init_args.backbones.protein.init_args.preset=esm2_8M"
    code, stderr = _in_process(capsys, monkeypatch, "fit", "--config", str(quickstart), override)
    assert code == 1
    failed = read_summary(tmp_path / "summary.json")
    assert failed["command"] == "fit" and failed["status"] == "failed"
    assert f"mmfuse: error: {failed['error']}" == stderr.strip().splitlines()[-1]
    code, stderr = _in_process(capsys, monkeypatch, "fit", "--config", str(quickstart), "--trainer.max_epocs=1")
    assert code == 2
    failed = read_summary(tmp_path / "summary.json")
    assert failed["causes"] and "max_epocs" in failed["causes"][0] and "max_epocs" in failed["error"]
    assert f"mmfuse: error: {failed['error']}" in stderr
