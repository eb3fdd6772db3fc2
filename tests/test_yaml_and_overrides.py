"""YAML read safely (a key written twice, an alias bomb, a non-mapping top level, ``!!python`` tags refused in one
line naming the file) and every option a ``--config`` file sets settable on the command line, ``null`` included
(:mod:`mmfuse.io`, :mod:`mmfuse.cli.command_line`).

The overrides are compared on the parsed config (:meth:`MmfuseCLI.parse_arguments` on one parser, nothing built),
the refusals through the ``mmfuse`` command run in this process.
"""

from __future__ import annotations

import inspect
import time
import typing
from pathlib import Path
from typing import Any

import pytest
import yaml

from mmfuse.cli import main
from mmfuse.cli.components import load_components
from mmfuse.cli.lightning import MmfuseCLI
from mmfuse.cli.runs import load_config
from mmfuse.cli.sweep_space import load_space
from mmfuse.errors import ConfigError
from mmfuse.io import ALIAS_LIMIT, YamlError, YamlRefusedError, load_yaml, read_yaml
from mmfuse.registry import ADAPTERS, BACKBONES, HEADS, OBJECTIVES
from tests.helpers.in_process import QUICKSTART, bare_argv

#: nine levels of nine: 387,420,489 strings once expanded (the "billion laughs")
BOMB = "\n".join(
    ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    + [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 9)]
    + ["trainer: {max_epochs: 1, callbacks: *a8}"]
)
DUPLICATE = "trainer:\n  max_epochs: 1\n  max_epochs: 1000\n"


def _mmfuse(capsys, monkeypatch, *args: str) -> tuple[int, str]:
    """``mmfuse ARGS`` in this process: its exit code and standard error."""
    monkeypatch.setattr("sys.argv", ["mmfuse"])
    with pytest.raises(SystemExit) as exit_:
        main(list(args))
    return exit_.value.code, capsys.readouterr().err


def _refused_in_one_line(code: int, err: str, line: str) -> None:
    assert code == 1, err
    assert err.strip() == f"mmfuse: error: {line}", err
    assert "Traceback" not in err


# the loader ------------------------------------------------------------------------------------
def test_a_key_written_twice_is_refused_naming_the_key_and_both_lines(tmp_path):
    config = tmp_path / "dup.yaml"
    config.write_text(DUPLICATE)
    with pytest.raises(YamlRefusedError) as info:
        read_yaml(config)
    assert str(info.value) == (
        f"{config}:3: key 'trainer.max_epochs' is written twice (lines 2 and 3): the second would silently "
        f"replace the first; keep one"
    )
    with pytest.raises(YamlRefusedError, match=r"key 'a\[1\]\.b' is written twice \(line 1\)"):
        load_yaml("a: [1, {b: 1, b: 2}]")


def test_merge_keys_may_replace_what_they_merge_and_plain_values_load_as_before():
    text = "base: &base {lr: 0.1, wd: 0.0}\nrun: {<<: *base, lr: 0.2}\nn: [1, 2.5, true, null, text]\n"
    assert load_yaml(text) == {"base": {"lr": 0.1, "wd": 0.0}, "run": {"lr": 0.2, "wd": 0.0},
                               "n": [1, 2.5, True, None, "text"]}  # fmt: skip
    assert load_yaml("a: &x [1, 2]\nb: *x") == {"a": [1, 2], "b": [1, 2]}  # a few aliases are fine


def test_an_alias_bomb_is_refused_at_once_without_expanding_it():
    start = time.perf_counter()
    with pytest.raises(YamlRefusedError) as info:
        load_yaml(BOMB, "bomb.yaml")
    assert time.perf_counter() - start < 1.0
    message = str(info.value)
    assert message.startswith("bomb.yaml: its aliases (*name) stand for ") and f"over {ALIAS_LIMIT:,}" in message
    assert "write the repeated values out" in message
    with pytest.raises(YamlRefusedError, match="an alias refers to the value that holds it"):
        load_yaml("a: &a [1, *a]", "loop.yaml")


def test_python_tags_stay_refused_and_syntax_errors_name_the_line():
    with pytest.raises(YamlRefusedError) as info:
        load_yaml("trainer: !!python/object/apply:os.system [echo hi]\n", "x.yaml")
    assert str(info.value).startswith("x.yaml:1: the tag '!!python/object/apply:os.system' is not allowed")
    with pytest.raises(YamlError) as info:
        load_yaml("trainer:\n  max_epochs: [1\n", "x.yaml")
    assert str(info.value).startswith("x.yaml:3: not valid YAML: ") and not isinstance(info.value, YamlRefusedError)


def test_sweep_and_cv_read_configs_and_spaces_through_the_same_loader(tmp_path):
    config, space, listed = tmp_path / "c.yaml", tmp_path / "space.yaml", tmp_path / "l.yaml"
    config.write_text(DUPLICATE)
    space.write_text(BOMB)
    listed.write_text("- trainer\n- model\n")
    with pytest.raises(YamlRefusedError, match=rf"^{config}:3: key 'trainer.max_epochs' is written twice"):
        load_config(config)
    with pytest.raises(YamlRefusedError, match=rf"^{space}: its aliases"):
        load_space(space)
    with pytest.raises(ConfigError, match=r"the config's top level is a list; it must be a mapping of options such as"):
        load_config(listed)


# the mmfuse command ----------------------------------------------------------------------------
def test_an_alias_bomb_config_is_one_line_in_under_seconds(tmp_path, capsys, monkeypatch):
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text(BOMB)
    start = time.perf_counter()
    code, err = _mmfuse(capsys, monkeypatch, "fit", "--config", str(QUICKSTART), "--config", str(bomb))
    assert time.perf_counter() - start < 5  # before the parser is even built (the reporter's took 109 s)
    assert code == 1 and err.startswith(f"mmfuse: error: {bomb}: its aliases (*name) stand for "), err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_the_installed_command_refuses_the_bomb_in_one_line(tmp_path, run_mmfuse):
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text(BOMB)
    result = run_mmfuse("fit", "--config", str(bomb), timeout=120)  # its own process, as a user runs it
    assert result.returncode == 1, result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(f"mmfuse: error: {bomb}: its aliases (*name) stand for ") and "write the repeated" in line


def test_a_duplicated_key_in_a_config_or_a_value_is_refused(tmp_path, capsys, monkeypatch):
    dup = tmp_path / "dup.yaml"
    dup.write_text(DUPLICATE)
    twice = "key 'trainer.max_epochs' is written twice (lines 2 and 3): the second would silently replace the first"
    code, err = _mmfuse(capsys, monkeypatch, "fit", "--config", str(QUICKSTART), "--config", str(dup))
    _refused_in_one_line(code, err, f"{dup}:3: {twice}; keep one")
    twice_in_a_value = "{max_epochs: 1, max_epochs: 2}"
    code, err = _mmfuse(capsys, monkeypatch, "fit", "--config", str(QUICKSTART), "--trainer", twice_in_a_value)
    _refused_in_one_line(code, err, "on the command line: --trainer: key 'max_epochs' is written twice (line 1): "
                                    "the second would silently replace the first; keep one")  # fmt: skip
    code, err = _mmfuse(capsys, monkeypatch, "fit", "--config", str(QUICKSTART), "--trainer", str(dup))  # a sub-config
    _refused_in_one_line(code, err, f"{dup}:3: {twice}; keep one")


def test_a_config_whose_top_level_is_not_a_mapping_is_named_as_such(tmp_path, capsys, monkeypatch):
    listed = tmp_path / "list.yaml"
    listed.write_text("- trainer\n- model\n")
    code, err = _mmfuse(capsys, monkeypatch, "fit", "--config", str(listed))
    _refused_in_one_line(code, err, f"{listed}: the config's top level is a list; it must be a mapping of options "
                                    f"such as trainer:, model:, data:")  # fmt: skip


def test_a_python_tag_in_a_config_is_refused(tmp_path, capsys, monkeypatch):
    tagged = tmp_path / "tag.yaml"
    tagged.write_text("seed_everything: 0\ntrainer: !!python/object/apply:os.system [echo owned]\n")
    code, err = _mmfuse(capsys, monkeypatch, "fit", "--config", str(tagged))
    _refused_in_one_line(code, err, f"{tagged}:2: the tag '!!python/object/apply:os.system' is not allowed: configs "
                                    f"hold plain values (mappings, lists, text, numbers, true/false, null), read by "
                                    f"YAML's safe loader")  # fmt: skip


def test_a_sub_config_file_jsonargparse_reads_is_checked_too(tmp_path, capsys, monkeypatch):
    (tmp_path / "logger.yaml").write_text("class_path: lightning.pytorch.loggers.CSVLogger\n"
                                          "init_args: {save_dir: runs, save_dir: other}\n")  # fmt: skip
    second = tmp_path / "second.yaml"
    second.write_text("trainer:\n  logger: logger.yaml\n")
    code, err = _mmfuse(capsys, monkeypatch, "fit", "--config", str(QUICKSTART), "--config", str(second))
    assert code == 2 and "Traceback" not in err, err
    assert err.splitlines()[0] == (
        f"mmfuse: error: {second}:2: sub-config file logger.yaml: key 'init_args.save_dir' is written twice "
        f"(line 2): the second would silently replace the first; keep one"
    )


# overrides ---------------------------------------------------------------------------------------
class _ParseOnly(MmfuseCLI):
    """The mmfuse parser, parsing only (no model or data built)."""

    def instantiate_classes(self) -> None:
        pass


def _registered(registry: Any) -> list[tuple[str, type]]:
    load_components()
    return [(entry.name, entry.obj) for entry in registry.entries() if inspect.isclass(entry.obj)]


def _nullable(cls: type) -> list[str]:
    """The constructor options of ``cls`` whose type admits ``None``."""
    hints = typing.get_type_hints(cls.__init__)
    return [
        name for name in inspect.signature(cls).parameters
        if name in hints and (hints[name] is Any or type(None) in typing.get_args(hints[name]))
    ]  # fmt: skip


def _required_values(cls: type) -> dict[str, Any]:
    """Values for the options of ``cls`` without a default that YAML sets (the task fills in the others)."""
    given = {"categories": ["a", "b"]}  # ContextEmbedding
    parameters = inspect.signature(cls).parameters.values()
    return {p.name: given[p.name] for p in parameters if p.default is p.empty and p.name in given}


BACKBONE_KEYS = {name: f"m_{name.lower()}" for name, _ in _registered(BACKBONES)}


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    """The quickstart with one backbone of every registered class besides its three (keys ``m_<name>``)."""
    config = yaml.safe_load(QUICKSTART.read_text())
    backbones = config["model"]["init_args"]["backbones"]
    for name, cls in _registered(BACKBONES):
        backbones[BACKBONE_KEYS[name]] = {"class_path": name, "init_args": _required_values(cls)}
    path = tmp_path_factory.mktemp("configs") / "base.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def cli(base) -> _ParseOnly:
    with bare_argv():
        return _ParseOnly(["--config", str(base)], run=False)


def _parsed(cli: MmfuseCLI, *args: str) -> dict[str, Any]:
    with bare_argv():
        cli.parse_arguments(cli.parser, list(args))
    parsed = cli.config.as_dict()
    parsed.pop("config")  # the files and texts read
    return parsed


def _second_config(directory: Path, option: str, value: Any) -> Path:
    config: Any = value
    for key in reversed(option.split(".")):
        config = {key: config}
    path = directory / f"second_{abs(hash(option))}.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def _get(config: dict[str, Any], option: str) -> Any:
    for key in option.split("."):
        config = config[key]
    return config


def _cases() -> list[tuple[str, list[str], str]]:
    """``(id, options that set up the component, option to set to null)`` for every nullable option of every
    registered backbone, adapter, head and objective (the heads have none today)."""
    cases = []
    for name, cls in _registered(BACKBONES):
        prefix = f"model.init_args.backbones.{BACKBONE_KEYS[name]}.init_args"
        cases += [(f"{name}.{option}", [], f"{prefix}.{option}") for option in _nullable(cls)]
    for registry, section in ((ADAPTERS, "adapter"), (HEADS, "head"), (OBJECTIVES, "objective")):
        for name, cls in _registered(registry):
            setup = [f"--model.init_args.{section}", name]
            for option in _nullable(cls):
                cases.append((f"{name}.{option}", setup, f"model.init_args.{section}.init_args.{option}"))
    return cases


CASES = _cases()


def test_the_registries_have_options_that_take_null():
    kinds = {case_id.split(".")[0] for case_id, _, _ in CASES}
    assert {"Enformer", "ESM2", "Geneformer", "HuggingFaceEncoder", "CrossAttentionFusion", "Classification"} <= kinds


@pytest.mark.parametrize(("setup", "option"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_null_on_the_command_line_is_null_in_a_second_config(setup, option, cli, base, tmp_path):
    before = _parsed(cli, "--config", str(base), *setup)
    on_the_command_line = _parsed(cli, "--config", str(base), *setup, f"--{option}", "null")
    in_a_config = _parsed(cli, "--config", str(base), *setup, "--config", str(_second_config(tmp_path, option, None)))
    assert on_the_command_line == in_a_config
    assert _get(on_the_command_line, option) is None
    # nothing else changed: the other backbones, in their order, and every other option of this component
    component = option.rsplit(".init_args.", 1)[0]
    before_component, after_component = _get(before, component), _get(on_the_command_line, component)
    assert {**before_component["init_args"], option.rsplit(".", 1)[1]: None} == after_component["init_args"]
    backbones = "model.init_args.backbones"
    assert list(_get(before, backbones)) == list(_get(on_the_command_line, backbones))
    others = {k: v for k, v in _get(before, backbones).items() if not option.startswith(f"{backbones}.{k}.")}
    assert all(_get(on_the_command_line, backbones)[k] == v for k, v in others.items())


def test_a_backbone_option_set_in_a_config_is_switched_off_on_the_command_line(cli, tmp_path):
    crop = "model.init_args.backbones.dna.init_args.crop_bins"
    five = _second_config(tmp_path, crop, 5)
    assert _get(_parsed(cli, "--config", str(QUICKSTART), "--config", str(five)), crop) == 5
    null = _parsed(cli, "--config", str(QUICKSTART), "--config", str(five), f"--{crop}", "null")
    as_json = _parsed(cli, "--config", str(QUICKSTART), "--config", str(five),
                      "--model.init_args.backbones.dna.init_args", '{"preset": "tiny", "crop_bins": null}')  # fmt: skip
    in_a_config = _parsed(cli, "--config", str(QUICKSTART), "--config", str(five),
                          "--config", str(_second_config(tmp_path, crop, None)))  # fmt: skip
    assert null == as_json == in_a_config and _get(null, crop) is None
    split = "data.init_args.split.val_fraction"
    assert _get(_parsed(cli, "--config", str(QUICKSTART), f"--{split}=null"), split) is None


def test_a_second_config_naming_one_backbone_keeps_the_others(cli, tmp_path):
    quickstart = _parsed(cli, "--config", str(QUICKSTART))
    backbones = "model.init_args.backbones"
    second = tmp_path / "second.yaml"
    second.write_text("model:\n  init_args:\n    backbones:\n      dna:\n        class_path: Enformer\n"
                      "        init_args: {preset: tiny, crop_bins: 4}\n")  # fmt: skip
    merged = _parsed(cli, "--config", str(QUICKSTART), "--config", str(second))
    assert list(_get(merged, backbones)) == ["dna", "rna", "protein"]
    assert _get(merged, f"{backbones}.dna.init_args.crop_bins") == 4
    assert {k: v for k, v in _get(merged, backbones).items() if k != "dna"} == {
        k: v for k, v in _get(quickstart, backbones).items() if k != "dna"
    }
    # a nested key of another backbone after it (refused before: "Not a valid subclass of Backbone")
    rna = f"{backbones}.rna.init_args.max_length"
    after = _parsed(cli, "--config", str(QUICKSTART), "--config", str(second), f"--{rna}", "512")
    assert _get(after, rna) == 512 and _get(after, f"{backbones}.rna.init_args.modality") == "rna"
    assert _get(after, f"{backbones}.dna.init_args.crop_bins") == 4
    # a backbone whose class changes drops the old class's options, as a first config would
    borzoi = tmp_path / "borzoi.yaml"
    borzoi.write_text("model: {init_args: {backbones: {dna: {class_path: Borzoi, init_args: {preset: tiny}}}}}\n")
    changed = _parsed(cli, "--config", str(QUICKSTART), "--config", str(borzoi))
    assert _get(changed, f"{backbones}.dna.class_path") == "mmfuse.backbones.Borzoi"
    assert _get(changed, f"{backbones}.protein") == _get(quickstart, f"{backbones}.protein")


def test_print_config_shows_the_null_given_on_the_command_line(capsys, monkeypatch):
    monkeypatch.setattr("sys.argv", ["mmfuse"])
    with pytest.raises(SystemExit) as info:
        main(["fit", "--config", str(QUICKSTART), "--model.init_args.backbones.protein.init_args.max_length", "null",
              "--model.init_args.backbones.dna.init_args.crop_bins", "7", "--print_config"])  # fmt: skip
    assert info.value.code == 0
    printed = yaml.safe_load(capsys.readouterr().out)["model"]["init_args"]["backbones"]
    assert list(printed) == ["dna", "rna", "protein"]
    assert printed["protein"]["init_args"]["max_length"] is None and printed["dna"]["init_args"]["crop_bins"] == 7


def test_a_source_given_as_just_its_path_stays_the_path_not_the_files_text(cli, tmp_path, monkeypatch):
    # jsonargparse reads a string given for an option that also takes an option group as a config file's path
    # and passed the table's text on as `source`; the path as written is what the data module must get
    monkeypatch.chdir(tmp_path)
    Path("t.csv").write_text("transcript_id,gene_id,RNA\nT1,G1,ACGT\nT2,G2,ACGA\n")
    Path("d.yaml").write_text("data:\n  class_path: IsoformExpression\n  init_args:\n    source: t.csv\n")
    for args in (["--data.init_args.source", "t.csv"], ["--config", "d.yaml"]):
        assert _parsed(cli, "--config", str(QUICKSTART), *args)["data"]["init_args"]["source"] == "t.csv", args
    nested = _parsed(cli, "--config", str(QUICKSTART), "--data.init_args.source.path", "t.csv")["data"]["init_args"]
    nested = nested["source"]
    assert nested["path"] == "t.csv" and nested["id_column"] == "transcript_id"
