"""mmfuse's LightningCLI: fit, validate, test and predict over the registered components.

Built-in components and plugins are imported before parsing, so a YAML file may name a component by its
class name (``class_path: ESM2``) or by its full import path. The analyses (``mmfuse embed``, ``explain``,
``score-variants``) parse the same config with :class:`AnalysisCLI` (:mod:`mmfuse.cli.analyses`).
"""

from __future__ import annotations

import os
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lightning.pytorch import LightningDataModule
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI, SaveConfigCallback

from mmfuse.cli.checks import check_output_dirs, slow_precision_note
from mmfuse.cli.command_line import PARSER_MODE, normalise, use_safe_loader
from mmfuse.cli.components import load_components
from mmfuse.cli.parser import COMMAND_LINE, MmfuseParser
from mmfuse.cli.resume import resolve_last
from mmfuse.errors import CheckpointMismatchError
from mmfuse.training.checkpoints import compare_with_checkpoint, read_checkpoint_hparams

__all__ = ["MmfuseCLI"]

_DESCRIPTION = "mmfuse {command}: see `mmfuse --help` for every command"
_CKPT_ALIASES = {"last", "best", "hpc", "registry"}


def rank_zero() -> bool:
    """Whether this process is the first of its job (DDP ranks and nodes, as torchrun and SLURM set them)."""
    return os.environ.get("LOCAL_RANK", "0") == "0" and os.environ.get("NODE_RANK", "0") == "0"


class _SaveConfig(SaveConfigCallback):
    """Lightning's config saving, also with a logger that has no directory (MLflow on a database server or
    ``sqlite:///``): the run's config then goes to ``trainer.default_root_dir`` instead of failing."""

    def setup(self, trainer: Any, pl_module: Any, stage: str) -> None:
        if not self.already_saved and trainer.log_dir is None:  # every process asks (a collective)
            self.save_to_log_dir = False
        super().setup(trainer, pl_module, stage)

    def save_config(self, trainer: Any, pl_module: Any, stage: str) -> None:
        if not self.save_to_log_dir:
            directory = Path(trainer.default_root_dir)
            directory.mkdir(parents=True, exist_ok=True)
            self.parser.save(self.config, str(directory / self.config_filename), skip_none=False,
                             overwrite=self.overwrite, multifile=self.multifile)  # fmt: skip


class MmfuseCLI(LightningCLI):
    """LightningCLI with mmfuse's components, argument links and prediction writer.

    ``data.target_names`` is linked to the task's ``target_names``; ``--predictions.output`` sets
    where ``predict`` writes (default ``predictions.csv`` in the run's log directory). A checkpoint's
    hyper-parameters never change the config: they are compared with it (:meth:`before_instantiate_classes`).
    """

    #: the command's name in messages (``None``: LightningCLI's subcommands)
    command: str | None = None

    def __init__(self, args: Sequence[str] | None = None, run: bool = True, **kwargs: Any) -> None:
        from mmfuse.training import FusionTask
        from mmfuse.training.trainer import MmfuseTrainer

        # the --config files' YAML is refused (a key written twice, an alias bomb) before the parser is built
        if args is None or isinstance(args, list | tuple):
            normalise(sys.argv[1:] if args is None else list(args))
        load_components()  # before parsing: YAML may name any registered class by its short name
        use_safe_loader()  # every YAML text the parser reads is checked (duplicate keys, aliases, tags)
        parser_kwargs = {
            "description": _DESCRIPTION.format(command=self.command or "fit|validate|test|predict"),
            "parser_mode": PARSER_MODE,
        }
        if self.command:
            parser_kwargs["prog"] = f"mmfuse {self.command}"
        super().__init__(
            FusionTask,
            LightningDataModule,
            trainer_class=MmfuseTrainer,
            subclass_mode_model=True,
            subclass_mode_data=True,
            parser_class=MmfuseParser,
            parser_kwargs=parser_kwargs,
            save_config_callback=_SaveConfig,
            save_config_kwargs={"overwrite": True},
            auto_configure_optimizers=False,
            args=list(args) if args is not None else None,
            run=run,
            **kwargs,
        )

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        from mmfuse.training import PredictionWriter

        parser.link_arguments("data.target_names", "model.init_args.target_names", apply_on="instantiate")
        parser.add_lightning_class_args(PredictionWriter, "predictions")

    def command_config(self) -> Any:
        """The namespace of the command being run (a subcommand's, or the whole config's)."""
        subcommand = self.config.get("subcommand")
        return self.config[subcommand] if subcommand else self.config

    def parse_arguments(self, parser: LightningArgumentParser, args: Any) -> None:
        command_line = sys.argv[1:] if args is None else args  # or a dict / Namespace (parse_object)
        given = list(command_line) if isinstance(command_line, list | tuple) else None
        token = COMMAND_LINE.set(given)  # the hints of an error are about what the user wrote
        try:
            # --config files checked, `null` below a component and a later config's backbones as meant
            # (mmfuse.cli.command_line); LightningCLI warns of arguments given beside sys.argv's: they are those
            parsed = normalise(given) if given is not None else None
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message="LightningCLI's args parameter is intended")
                super().parse_arguments(parser, args if parsed is None or parsed == given else parsed)
        finally:
            COMMAND_LINE.reset(token)
        # before anything reads the checkpoint: `last` is found, the file checked, and its hyper-parameters read
        # for the comparison with the config; Lightning's own merge of them into the config finds no ckpt_path
        config = self.command_config()
        ckpt_path = config.get("ckpt_path")
        if ckpt_path == "last":
            ckpt_path = resolve_last(config, self.config.get("subcommand") or self.command or "")
        self.saved_hparams = read_checkpoint_hparams(str(ckpt_path), _CKPT_ALIASES) if ckpt_path else {}
        self.given_ckpt_path = ckpt_path
        if "ckpt_path" in config:
            config["ckpt_path"] = None

    def before_instantiate_classes(self) -> None:
        config = self.command_config()
        if "ckpt_path" in config:
            config["ckpt_path"] = self.given_ckpt_path
        self.compare_with_checkpoint()
        if self.config.get("subcommand") or self.command:
            check_output_dirs(config)
            note = slow_precision_note(config)
            if note and rank_zero():
                print(note, file=sys.stderr)

    def compare_with_checkpoint(self) -> None:
        """The config builds the model, a checkpoint's hyper-parameters are only compared with it
        (:func:`mmfuse.training.checkpoints.compare_with_checkpoint`): a checkpoint cannot swap a part of it, turn
        on ``trust_remote_code`` or change a weights source, and the options that differ are shown."""
        if not self.saved_hparams:
            return
        ckpt_path = str(self.given_ckpt_path)
        refused, notes = compare_with_checkpoint(self.command_config()["model"].as_dict(), self.saved_hparams)
        run_config = Path(ckpt_path).parent.parent / "config.yaml"
        trained_with = (
            f"its run's config is {run_config}" if run_config.is_file()
            else "use the config it was trained with (`mmfuse fit` saves it as config.yaml in the run's directory)"
        )  # fmt: skip
        if refused:
            raise CheckpointMismatchError(
                f"checkpoint {ckpt_path!r} holds another model than this config builds: {'; '.join(refused)}. "
                f"mmfuse builds the model from the config, never from a checkpoint; {trained_with}"
            )
        if notes and rank_zero():
            shown = [*notes[:8], *([f"... and {len(notes) - 8} more"] if len(notes) > 8 else [])]
            print(f"mmfuse: note: this config differs from what checkpoint {ckpt_path!r} was trained with; the "
                  f"config's values are used ({trained_with}):", *(f"  {n}" for n in shown), sep="\n",
                  file=sys.stderr)  # fmt: skip

    def instantiate_trainer(self, **kwargs: Any) -> Any:
        # checkpoints are written crash-safe and read with weights_only=True unless the user chose a
        # CheckpointIO, or a strategy that writes its own (sharded, TPU)
        from lightning.fabric.plugins import CheckpointIO

        from mmfuse.analysis.contribution import contribution_callback
        from mmfuse.training import AtomicCheckpointIO

        config = {**(self.config_init.get(str(self.subcommand), self.config_init).get("trainer") or {}), **kwargs}
        plugins = config.get("plugins") or []
        plugins = list(plugins) if isinstance(plugins, list | tuple) else [plugins]
        strategy = str(config.get("strategy") or "").lower()
        accelerator = str(config.get("accelerator") or "").lower()
        if not any(isinstance(p, CheckpointIO) for p in plugins) and not any(
            name in strategy or name in accelerator for name in ("deepspeed", "xla", "tpu")
        ):
            kwargs["plugins"] = [*plugins, AtomicCheckpointIO()]
        trainer = super().instantiate_trainer(**kwargs)
        # `mmfuse validate`/`test` report what each modality contributes (an analysis beside the evaluation)
        contribution = contribution_callback(self.model) if self.command is None else None
        if contribution is not None:
            trainer.callbacks.append(contribution)
        return trainer

    def _write_summary(self, extra: dict[str, Any] | None = None) -> dict[str, Any]:
        """Writes the command's :mod:`~mmfuse.cli.summary` (every process computes it: ``log_dir`` is a
        collective under DDP; rank zero writes)."""
        from mmfuse.cli.summary import trainer_summary, write_summary

        data = {**trainer_summary(str(self.subcommand), self.trainer), **(extra or {})}
        if self.trainer.is_global_zero:
            write_summary(data, data["run_dir"])
        return data

    def after_fit(self) -> None:
        summary = self._write_summary()
        best, last = summary["best_checkpoint"], summary["last_checkpoint"]
        if not self.trainer.is_global_zero or not (best or last):
            return
        lines = [f"Best checkpoint: {best}"] if best else []
        if last and last != best:
            lines.append(f"Last checkpoint: {last}")
        configs = [c for c in self.config[self.subcommand].get("config") or [] if c is not None]  # None: a text
        config = " ".join(f"--config {getattr(c, 'relative', c)}" for c in configs) or "--config <your config>"
        print("\n".join(lines))
        print(f"Test it with: mmfuse test {config} --ckpt_path {best or last}")

    def after_validate(self) -> None:
        self._write_summary()

    def after_test(self) -> None:
        self._write_summary()

    def after_predict(self) -> None:
        from mmfuse.training import PredictionWriter

        writers = [c for c in self.trainer.callbacks if isinstance(c, PredictionWriter)]
        written = next((str(w.written) for w in writers if w.written is not None), None)
        self._write_summary({"predictions": written})
