"""``mmfuse export``: a trained checkpoint as a self-contained, shareable directory (:mod:`mmfuse.hub`)."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from lightning.pytorch.cli import LightningArgumentParser

from mmfuse.cli.lightning import MmfuseCLI
from mmfuse.errors import ConfigError

__all__ = ["ExportCLI", "expand_model_directory", "main"]


def expand_model_directory(args: Sequence[str]) -> list[str]:
    """``--model DIR`` (a directory ``mmfuse export`` wrote) as ``--config DIR/config.yaml`` in its place and, unless
    given, ``--ckpt_path DIR``: the export's model section and weights, the rest of the config the user's."""
    from mmfuse.hub.layout import YAML_FILE, is_exported, read_config

    out, directory = [], None
    items = list(args)
    i = 0
    while i < len(items):
        arg = items[i]
        value = arg.split("=", 1)[1] if arg.startswith("--model=") else items[i + 1] if (
            arg == "--model" and i + 1 < len(items)) else None  # fmt: skip
        if value is not None and Path(value).expanduser().is_dir():
            if not is_exported(value):
                raise ConfigError(f"--model {value!r} is a directory but not an export (it has no config.json); pass "
                                  f"the directory `mmfuse export` wrote, or a model config")  # fmt: skip
            read_config(value)  # refuses a foreign or damaged config.json in one line
            directory = value
            out += ["--config", str(Path(value).expanduser() / YAML_FILE)]
            i += 1 if arg.startswith("--model=") else 2
            continue
        out.append(arg)
        i += 1
    if directory is not None and not any(a == "--ckpt_path" or a.startswith("--ckpt_path=") for a in out):
        out += ["--ckpt_path", directory]
    return out


class ExportCLI(MmfuseCLI):
    """The training config (trainer, model, data), the checkpoint, and where to write the export."""

    command = "export"

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.link_arguments("data.target_names", "model.init_args.target_names", apply_on="instantiate")
        parser.add_argument("--ckpt_path", type=str | None, default=None,
                            help="the trained checkpoint (`last`: the newest last.ckpt of the config's runs)")
        parser.add_argument("--output", type=str | None, default=None, help="the directory to write (required)")
        parser.add_argument("--full", type=bool, default=False,
                            help="also write the fixed weights of backbones loaded from a source (default: "
                                 "referenced by source, revision and checksum)")  # fmt: skip
        parser.add_argument("--overwrite", type=bool, default=False, help="replace an earlier export at --output")
        parser.add_argument("--test_summary", type=str | None, default=None,
                            help="summary_test.json of `mmfuse test` on this checkpoint: its metrics and modality "
                                 "contributions go into the model card")  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    from mmfuse.cli.summary import read_summary
    from mmfuse.hub.export import export_task
    from mmfuse.training.checkpoints import checkpoint_file, load_trained_weights

    cli = ExportCLI(list(sys.argv[2:] if argv is None else argv), run=False)
    config = cli.config
    if not config.get("output"):
        raise ConfigError("mmfuse export needs --output DIR: the directory to write the model into")
    if not cli.given_ckpt_path:
        raise ConfigError("mmfuse export needs --ckpt_path: the trained checkpoint (`mmfuse fit` printed it)")
    summary = None
    if config.get("test_summary"):
        summary = read_summary(config["test_summary"])
        if summary is None or summary.get("command") != "test":
            raise ConfigError(f"--test_summary {config['test_summary']!r} is not the summary_test.json `mmfuse test` "
                              f"writes in its run directory")  # fmt: skip
    task = cli.model
    load_trained_weights(task, checkpoint_file(cli.trainer, str(cli.given_ckpt_path)))
    hparams = {**dict(task.hparams), "target_names": list(task.target_names)}
    hparams.setdefault("_class_path", f"{type(task).__module__}.{type(task).__qualname__}")
    written = export_task(task, hparams, Path(config["output"]), cli.datamodule, full=bool(config.get("full")),
                          test_summary=summary, overwrite=bool(config.get("overwrite")))  # fmt: skip
    print(f"Exported to {written}: config.json, config.yaml, model.safetensors, README.md")
    print(f"Load it with: FusionModel.from_pretrained({str(written)!r}); serve it with: mmfuse serve {written}")
    return 0
