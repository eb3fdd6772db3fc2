"""mmfuse export and FusionModel.from_pretrained: the directory, predictions equal to mmfuse predict, and every way
a directory can be refused (tampered weights, unknown components, remote code, changed weight sources)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from mmfuse.errors import ConfigError, InputError
from mmfuse.hub import PretrainedError, read_config
from mmfuse.model import FusionModel
from tests.helpers.in_process import QUICKSTART, bare_argv

from .conftest import DATA


def test_the_directory_holds_config_weights_and_card(exported_dir):
    files = sorted(p.name for p in exported_dir.iterdir())
    assert files == ["README.md", "config.json", "config.yaml", "model.safetensors"]
    config = read_config(exported_dir)
    assert config.modalities == ["dna", "rna", "protein"] and len(config.output_names) == 30
    assert config.kind == "regression" and config.max_lengths == {"dna": 256, "rna": 256, "protein": 128}
    assert config.model["class_path"].endswith("RegressionTask")
    assert config.model["init_args"]["embedding_cache"] is None
    card = (exported_dir / "README.md").read_text()
    front = yaml.safe_load(card.split("---\n")[1])
    assert front["library_name"] == "mmfuse" and {"dna", "rna", "protein", "ESM2"} <= set(front["tags"])
    assert "from_pretrained" in card and "Not for clinical use" in card
    from safetensors.torch import load_file

    keys = set(load_file(str(exported_dir / "model.safetensors")))
    assert {"objective.target_mean", "objective.target_std"} <= keys
    assert any(k.startswith("model.backbones.dna.") for k in keys)  # random tiny backbones: all weights kept
    section = yaml.safe_load((exported_dir / "config.yaml").read_text())
    assert section["model"] == config.model


def test_predictions_equal_mmfuse_predict_in_a_fresh_process(exported, tmp_path):
    from mmfuse.cli import main

    out = tmp_path / "predictions.csv"
    with bare_argv():
        main(["predict", "--config", str(QUICKSTART), *DATA, "--ckpt_path", str(exported["ckpt"]),
              f"--predictions.output={out}", f"--trainer.default_root_dir={tmp_path}"])
    script = tmp_path / "load.py"
    script.write_text(
        "import sys, pandas as pd\n"
        "from mmfuse.data import IsoformExpression\n"
        "from mmfuse.model import FusionModel\n"
        "model = FusionModel.from_pretrained(sys.argv[1])\n"
        "dm = IsoformExpression(source={'path': 'sample'}, sample={'size': 12}, loader={'batch_size': 4},\n"
        "                       lengths={'max': {'dna': 256, 'rna': 256, 'protein': 128}})\n"
        "dm.attach_tokenizers(model.tokenizers())\n"
        "data = dm.predict_dataloader().dataset\n"
        "records = [{'id': r['id'], **r['sequences']} for r in (data[i] for i in range(len(data)))]\n"
        "model.predict(records, batch_size=4).to_csv(sys.argv[2], index=False)\n"
    )
    mine = tmp_path / "mine.csv"
    subprocess.run([sys.executable, str(script), str(exported["export"]), str(mine)], check=True, timeout=300,
                   capture_output=True, cwd=Path(__file__).resolve().parents[2])
    theirs, ours = pd.read_csv(out).set_index("transcript_id"), pd.read_csv(mine).set_index("id")
    assert sorted(ours.index) == sorted(theirs.index) and len(ours) == len(theirs) > 20
    ours = ours.loc[theirs.index]
    assert list(ours.columns) == list(theirs.columns)
    assert np.abs(ours.to_numpy() - theirs.to_numpy()).max() <= 1e-6


def test_commands_take_the_exported_directory_as_the_model(exported, tmp_path, capsys):
    from mmfuse.cli import main

    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    data_only = tmp_path / "data.yaml"
    data_only.write_text(yaml.safe_dump({"data": yaml.safe_load(QUICKSTART.read_text())["data"]}))
    with bare_argv():
        main(["predict", "--config", str(QUICKSTART), *DATA, "--ckpt_path", str(exported["ckpt"]),
              f"--predictions.output={a}", f"--trainer.default_root_dir={tmp_path}"])
        main(["predict", "--config", str(data_only), "--model", str(exported["export"]), *DATA,
              f"--predictions.output={b}", f"--trainer.default_root_dir={tmp_path}"])
        main(["test", "--config", str(data_only), "--model", str(exported["export"]), *DATA,
              f"--trainer.default_root_dir={tmp_path / 'test'}", "--trainer.logger=false"])
        main(["embed", "--config", str(data_only), "--model", str(exported["export"]), *DATA,
              f"--embeddings.output={tmp_path / 'e.parquet'}", "--embeddings.fused=true"])
    pd.testing.assert_frame_equal(pd.read_csv(a), pd.read_csv(b))
    summary = tmp_path / "test" / "summary_test.json"
    assert summary.is_file() and (tmp_path / "e.parquet").is_file()
    # the test's metrics and modality contributions go into the model card
    with bare_argv():
        main(["export", "--config", str(QUICKSTART), *DATA, "--ckpt_path", str(exported["ckpt"]),
              "--output", str(tmp_path / "carded"), f"--test_summary={summary}"])
    config, card = read_config(tmp_path / "carded"), (tmp_path / "carded" / "README.md").read_text()
    assert "test/spearman" in config.metrics and "## Test metrics" in card and "| test/spearman |" in card
    assert "## Modality contributions (test split)" in card and "protein" in config.contributions
    front = yaml.safe_load(card.split("---\n")[1])
    assert {m["type"] for m in front["model-index"][0]["results"][0]["metrics"]} >= {"test/spearman"}
    capsys.readouterr()
    with bare_argv(), pytest.raises(SystemExit) as exit_:
        main(["export", "--config", str(QUICKSTART), *DATA, "--ckpt_path", str(exported["ckpt"]),
              "--output", str(tmp_path / "other"), f"--test_summary={a}"])
    assert exit_.value.code == 1 and "is not the summary_test.json" in capsys.readouterr().err
    assert not (tmp_path / "other").exists()


def test_predict_checks_every_record_before_computing(exported_dir):
    model = FusionModel.from_pretrained(exported_dir)
    good = {"dna": "ACGT" * 10, "rna": "ACGU" * 5, "protein": "MKV"}
    assert len(model.predict([good, {"protein": "MKVL"}])) == 2  # a missing modality is masked
    columns = model.predict({"dna": ["ACGT", None], "protein": [None, "MKV"]})
    assert columns["id"].tolist() == ["0", "1"]
    cases = [
        ([{"dan": "ACGT"}], "'dan' is no modality of this model (it reads dna, rna, protein)"),
        ([{"dna": 12}], "record 0, dna sequence: expected text, not int"),
        ([good, {"id": "x"}], "record 1 ('x') has none of the modalities dna, rna, protein"),
        ([{"protein": "MK*V!"}], "record 0, protein sequence:"),
        ("ACGT", "records must be a list"),
        ({"dna": ["A"], "rna": ["A", "C"]}, "different numbers of records"),
    ]
    for records, message in cases:
        with pytest.raises(InputError, match=None) as info:
            model.predict(records)
        assert message in str(info.value), (records, str(info.value))
        assert "\n" not in str(info.value)
    # a sequence over the trained length is cropped as the data module cropped it (protein: the N-terminus)
    long, cropped = model.predict([{"protein": "MKV" * 50}]), model.predict([{"protein": ("MKV" * 50)[:128]}])
    assert np.array_equal(long.iloc[:, 1:].to_numpy(), cropped.iloc[:, 1:].to_numpy())


def test_a_sequence_over_the_length_with_crop_error_is_refused(exported_dir, tmp_path):
    target = _copy(exported_dir, tmp_path)
    _edit_config(target, lambda config: config["crop"].update(protein="error"))
    model = FusionModel.from_pretrained(target)
    with pytest.raises(InputError, match="record 0, protein sequence: 129 letters, over the 128 the model was trained"):
        model.predict([{"protein": "M" * 129}])


def test_save_pretrained_round_trips_and_never_overwrites_what_is_not_an_export(exported_dir, tmp_path):
    model = FusionModel.from_pretrained(exported_dir)
    again = Path(model.save_pretrained(str(tmp_path / "again")))
    reloaded = FusionModel.from_pretrained(again)
    records = [{"dna": "ACGTAC" * 20, "rna": "AUGGCU" * 9, "protein": "MKTAYIAK"}]
    first, second = model.predict(records), reloaded.predict(records)
    assert np.array_equal(first.iloc[:, 1:].to_numpy(), second.iloc[:, 1:].to_numpy())
    with pytest.raises(ConfigError, match="an earlier export; pass --overwrite"):
        model.save_pretrained(str(again))
    model.save_pretrained(str(again), overwrite=True)
    other = tmp_path / "results"
    other.mkdir()
    (other / "keep.csv").write_text("x\n1\n")
    with pytest.raises(ConfigError, match="not an export; choose another --output"):
        model.save_pretrained(str(other), overwrite=True)
    assert (other / "keep.csv").read_text() == "x\n1\n"
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".partial")]
    with pytest.raises(ConfigError, match="one loaded with FusionModel.from_pretrained"):
        FusionModel(model.backbones, 3).save_pretrained(str(tmp_path / "bare"))


def _copy(exported_dir: Path, tmp_path: Path) -> Path:
    target = tmp_path / "copy"
    shutil.copytree(exported_dir, target)
    return target


def _edit_config(directory: Path, edit) -> None:
    config = json.loads((directory / "config.json").read_text())
    edit(config)
    (directory / "config.json").write_text(json.dumps(config))


def test_a_tampered_weights_file_is_refused(exported_dir, tmp_path):
    target = _copy(exported_dir, tmp_path)
    data = bytearray((target / "model.safetensors").read_bytes())
    data[-5] ^= 0x01
    (target / "model.safetensors").write_bytes(bytes(data))
    with pytest.raises(PretrainedError, match="does not match the checksum"):
        FusionModel.from_pretrained(target)
    from mmfuse.cli import main

    with bare_argv(), pytest.raises(SystemExit) as exit_:
        main(["predict", "--config", str(QUICKSTART), "--model", str(target), *DATA])
    assert exit_.value.code == 1


def test_an_unknown_component_is_refused_without_importing_it(exported_dir, tmp_path):
    target = _copy(exported_dir, tmp_path)

    def evil(config):
        config["model"]["init_args"]["adapter"] = {"class_path": "os.system", "init_args": {}}

    _edit_config(target, evil)
    with pytest.raises(ConfigError, match="model.init_args.adapter") as info:
        FusionModel.from_pretrained(target)
    assert "system" in str(info.value) and "registered" in str(info.value)

    def misspelt(config):
        config["model"]["init_args"]["backbones"]["protein"]["class_path"] = "mmfuse.backbones.ESM3"

    target2 = tmp_path / "two"
    shutil.copytree(exported_dir, target2)
    _edit_config(target2, misspelt)
    with pytest.raises(ConfigError, match="ESM2"):  # the known name is suggested
        FusionModel.from_pretrained(target2)


def test_remote_code_is_refused_and_no_file_of_the_directory_runs(exported_dir, tmp_path):
    target = _copy(exported_dir, tmp_path)
    marker = tmp_path / "ran"
    (target / "modeling.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\n")

    def remote(config):
        config["model"]["init_args"]["backbones"]["protein"]["init_args"]["trust_remote_code"] = True

    _edit_config(target, remote)
    with pytest.raises(PretrainedError, match="trust_remote_code: true") as info:
        FusionModel.from_pretrained(target)
    assert "modeling.py" in str(info.value)
    assert not marker.exists()


def test_a_foreign_or_missing_directory_is_named(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"architectures": ["BertModel"]}))
    with pytest.raises(PretrainedError, match="is not an mmfuse export"):
        FusionModel.from_pretrained(tmp_path)
    with pytest.raises(PretrainedError, match="neither a directory nor a hub id"):
        FusionModel.from_pretrained(str(tmp_path / "nothing" / "here"))
    with pytest.raises(PretrainedError, match="cannot download 'someone/model'"):  # HF_HUB_OFFLINE in tests
        FusionModel.from_pretrained("someone/model")


def test_push_to_hub_uploads_the_export(exported_dir):
    calls = []

    class FakeApi:
        def create_repo(self, repo_id, private, exist_ok):
            calls.append(("create", repo_id, private))

        def upload_folder(self, repo_id, folder_path, commit_message):
            calls.append(("upload", repo_id, sorted(p.name for p in Path(folder_path).iterdir())))
            return type("Info", (), {"commit_url": f"https://huggingface.co/{repo_id}/commit/1"})()

    from mmfuse.hub.push import push_to_hub

    model = FusionModel.from_pretrained(exported_dir)
    assert push_to_hub(model, "me/model", api=FakeApi()).endswith("/commit/1")
    assert calls == [("create", "me/model", True),
                     ("upload", "me/model", ["README.md", "config.json", "config.yaml", "model.safetensors"])]


def test_export_refuses_missing_options(exported, tmp_path):
    from mmfuse.cli import main

    for args, message in [([], "needs --output"), (["--output", str(tmp_path / "x")], "needs --ckpt_path")]:
        with bare_argv(), pytest.raises(ConfigError, match=message):
            from mmfuse.cli.export import main as export

            export(["--config", str(QUICKSTART), *DATA, *args])
    assert main  # the command table holds it
    from mmfuse.cli import COMMANDS

    assert "export" in COMMANDS


def test_from_pretrained_moves_to_a_device_and_is_in_eval_mode(exported_dir):
    model = FusionModel.from_pretrained(exported_dir, device="cpu")
    assert not model.training and next(model.parameters()).device == torch.device("cpu")
    assert model.pretrained.limits == {"dna": 256, "rna": 256, "protein": 128}


def test_explain_reads_the_exported_directory_as_the_checkpoint(exported, tmp_path):
    from tests.helpers.in_process import mmfuse_stdout

    frames = []
    sources = {"ckpt": ["--ckpt_path", str(exported["ckpt"])], "dir": ["--model", str(exported["export"])]}
    for name, model in sources.items():
        out = tmp_path / f"{name}.parquet"
        mmfuse_stdout("explain", "--config", str(QUICKSTART), *model, *DATA, "--ids=SYNT00000.1",
                      "--attributions.methods=ism", "--attributions.modalities=[protein]",
                      f"--attributions.output={out}", f"--trainer.logger.init_args.save_dir={tmp_path}")  # fmt: skip
        frames.append(pd.read_parquet(out))
    assert len(frames[0]) > 0
    pd.testing.assert_frame_equal(frames[0], frames[1])
