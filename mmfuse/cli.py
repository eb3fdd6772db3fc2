"""The ``mmfuse`` command: LightningCLI (fit, validate, test, predict, and embed) over registered components.

Built-in components and plugins are imported before parsing, so a YAML file may name a component by
its class name (``class_path: ESM2``) or by its full import path. Three more commands:
``mmfuse components`` lists what is registered and where it comes from, ``mmfuse sample-data``
writes the bundled sample data set to a file, and ``mmfuse data build-isoform`` builds an
isoform-expression table from a genome, an annotation and GTEx expression (:mod:`mmfuse.data.genomics.isoform_table`).
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from collections.abc import Sequence
from contextvars import ContextVar
from pathlib import Path
from typing import Any, NoReturn

from lightning.pytorch import LightningDataModule
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI, SaveConfigCallback

from mmfuse.checkpoints import CheckpointMismatchError, compare_with_checkpoint, read_checkpoint_hparams
from mmfuse.cli_checks import check_output_dirs, compact_message, slow_precision_note, where_written
from mmfuse.cli_hints import SECTIONS, config_hints, user_config
from mmfuse.errors import MmfuseError
from mmfuse.registry import REGISTRIES, PluginLoadError, UnknownComponentError

__all__ = ["MmfuseCLI", "main"]

_DESCRIPTION = (
    "mmfuse: fuse pretrained biological sequence models. Subcommands: fit, validate, test, predict "
    "(Lightning), embed (each record's embeddings to a file), and `mmfuse components` (what is registered), "
    "`mmfuse sample-data --out FILE`, `mmfuse data build-isoform` (see its --help), `mmfuse sweep` "
    "(hyper-parameter search with Optuna) and `mmfuse cv` (cross-validation grouped by gene)."
)
_USER_ERRORS = (MmfuseError, UnknownComponentError, PluginLoadError)
_CKPT_ALIASES = {"last", "best", "hpc", "registry"}


def load_components() -> None:
    """Imports the built-in components and every plugin entry point (failures are only reported)."""
    import mmfuse.adapters  # noqa: F401
    import mmfuse.backbones  # noqa: F401
    import mmfuse.data  # noqa: F401
    import mmfuse.tasks  # noqa: F401

    for registry in REGISTRIES.values():
        registry.load_plugins()


# the command line of the parse under way, for the hints of the parser's error (set by parse_arguments)
_ARGS: ContextVar[list[str] | None] = ContextVar("mmfuse_cli_args", default=None)


def _sections(parser: argparse.ArgumentParser) -> dict[str, Any]:
    """The top-level keys of ``parser``'s config, each with the class it configures (``None``: a value)."""
    from lightning.pytorch import Trainer

    from mmfuse.tasks import FusionTask, PredictionWriter

    # argparse's list of the parser's actions: the one place holding every key the parser really has
    keys = [a.dest.split(".")[0] for a in getattr(parser, "_actions", []) if a.dest != "help"]
    classes = {"trainer": Trainer, "model": FusionTask, "data": LightningDataModule, "predictions": PredictionWriter}
    return {key: classes.get(key) for key in dict.fromkeys([*SECTIONS, *keys])}


class _Parser(LightningArgumentParser):
    """Adds to jsonargparse's message, once and at its end, mmfuse's hints for the config it refused:
    unknown component names with the registry's known ones, misspelled or moved options and sections with
    what to write instead (:mod:`mmfuse.cli_hints`)."""

    def error(self, message: str, ex: Exception | None = None) -> NoReturn:
        args = _ARGS.get()
        if not self.exit_on_error or args is None or os.environ.get("MMFUSE_DEBUG"):
            super().error(message, ex)  # nested parsers raise theirs; MMFUSE_DEBUG: jsonargparse's own output
        try:
            hints = config_hints(user_config(args), _sections(self))
        except Exception:  # a hint must never hide the error itself
            hints = []
        # the cause, where it is written, and no usage dump of every option above it
        lines = [f"mmfuse: error: {where_written(h, args)}{h}" for h in hints]
        if not lines:
            first, _, rest = compact_message(message).strip().partition("\n")
            lines = [f"mmfuse: error: {where_written(message, args)}{first}", *([rest] if rest else [])]
        prog = self.prog.replace(" [options]", "")
        sys.stderr.write("\n".join([*lines, f"tip: `{prog} --help` lists the options; MMFUSE_DEBUG=1 shows the "
                                              f"parser's whole message"]) + "\n")  # fmt: skip
        raise SystemExit(2)


def _get(namespace: Any, key: str) -> Any:
    return namespace.get(key) if hasattr(namespace, "get") else None


def _last_checkpoints(config: Any) -> list[Path]:
    """``last*.ckpt`` files where a run of ``config`` (a subcommand's namespace) writes checkpoints."""
    trainer = config.get("trainer") or {}
    root = Path(_get(trainer, "default_root_dir") or os.getcwd())
    directories = [root / "checkpoints", *root.glob("lightning_logs/*/checkpoints")]
    loggers = _get(trainer, "logger")
    for logger in loggers if isinstance(loggers, list) else [loggers]:
        args = _get(logger, "init_args") or {}
        save_dir = _get(args, "save_dir") or _get(args, "root_dir")
        if save_dir:
            name = _get(args, "name")
            base = Path(save_dir) / name if name else Path(save_dir)
            directories += list(base.glob("*/checkpoints"))
    callbacks = _get(trainer, "callbacks") or []
    for callback in callbacks if isinstance(callbacks, list) else [callbacks]:
        dirpath = _get(_get(callback, "init_args") or {}, "dirpath")
        if dirpath:
            directories.append(Path(dirpath))
    return [f for d in dict.fromkeys(directories) if d.is_dir() for f in d.glob("last*.ckpt") if f.is_file()]


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
    where ``predict`` writes (default ``predictions.csv`` in the run's log directory).
    """

    def __init__(self, args: Sequence[str] | None = None, run: bool = True) -> None:
        from mmfuse.tasks import FusionTask
        from mmfuse.tasks.trainer import MmfuseTrainer

        load_components()  # before parsing: YAML may name any registered class by its short name
        super().__init__(
            FusionTask,
            LightningDataModule,
            trainer_class=MmfuseTrainer,
            subclass_mode_model=True,
            subclass_mode_data=True,
            parser_class=_Parser,
            parser_kwargs={"description": _DESCRIPTION},
            save_config_callback=_SaveConfig,
            save_config_kwargs={"overwrite": True},
            auto_configure_optimizers=False,
            args=list(args) if args is not None else None,
            run=run,
        )

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        from mmfuse.tasks import PredictionWriter

        parser.link_arguments("data.target_names", "model.init_args.target_names", apply_on="instantiate")
        parser.add_lightning_class_args(PredictionWriter, "predictions")

    @staticmethod
    def subcommands() -> dict[str, set[str]]:
        given = {"model", "datamodule"}
        return {**LightningCLI.subcommands(), "embed": given, "explain": given, "score-variants": given}

    def _prepare_subcommand_parser(self, klass: type, subcommand: str, **kwargs: Any) -> LightningArgumentParser:
        parser = super()._prepare_subcommand_parser(klass, subcommand, **kwargs)
        # each command's writer options: `embeddings.*` only in `mmfuse embed`, and so on
        if subcommand == "embed":
            from mmfuse.tasks.embed import EmbeddingWriter

            parser.add_lightning_class_args(EmbeddingWriter, "embeddings")
        elif subcommand == "explain":
            from mmfuse.tasks.explain import ExplanationWriter

            parser.add_lightning_class_args(ExplanationWriter, "attributions")
        elif subcommand == "score-variants":
            from mmfuse.tasks.variants import VariantWriter

            parser.add_lightning_class_args(VariantWriter, "variants")
        return parser

    def before_instantiate_classes(self) -> None:
        if self.subcommand is not None:
            check_output_dirs(self.config[self.subcommand])
            note = slow_precision_note(self.config[self.subcommand])
            if note and os.environ.get("LOCAL_RANK", "0") == "0" and os.environ.get("NODE_RANK", "0") == "0":
                print(note, file=sys.stderr)
        if self.subcommand != "fit":
            # test/predict restore callback state from the checkpoint; a ModelCheckpoint in a new run
            # directory then warns that it will not resume its bookkeeping, which is irrelevant here
            warnings.filterwarnings("ignore", message="The dirpath has changed from")

    def parse_arguments(self, parser: LightningArgumentParser, args: Any) -> None:
        command_line = sys.argv[1:] if args is None else args  # or a dict / Namespace (parse_object)
        token = _ARGS.set(list(command_line) if isinstance(command_line, list | tuple) else None)
        try:
            super().parse_arguments(parser, args)
        finally:
            _ARGS.reset(token)
        # before Lightning reads the checkpoint's hyperparameters: `last` is found, and the file checked
        subcommand = self.config.get("subcommand")
        ckpt_path = self.config[subcommand].get("ckpt_path") if subcommand else None
        if ckpt_path == "last":
            ckpt_path = self._resolve_last(subcommand)
        self._saved_hparams = read_checkpoint_hparams(str(ckpt_path), _CKPT_ALIASES) if ckpt_path else {}

    def _parse_ckpt_path(self) -> None:
        """Lightning parses a checkpoint's hyper-parameters over the config here; mmfuse compares them with
        it instead (:func:`mmfuse.checkpoints.compare_with_checkpoint`): the config builds the model, a
        checkpoint cannot swap a part of it, turn on ``trust_remote_code`` or change a weights source, and
        the options that differ are shown."""
        subcommand = self.config.get("subcommand")
        saved = getattr(self, "_saved_hparams", None)
        if not subcommand or not saved:
            return
        ckpt_path = str(self.config[subcommand]["ckpt_path"])
        refused, notes = compare_with_checkpoint(self.config[subcommand]["model"].as_dict(), saved)
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
        if notes and os.environ.get("LOCAL_RANK", "0") == "0" and os.environ.get("NODE_RANK", "0") == "0":
            shown = [*notes[:8], *([f"... and {len(notes) - 8} more"] if len(notes) > 8 else [])]
            print(f"mmfuse: note: this config differs from what checkpoint {ckpt_path!r} was trained with; the "
                  f"config's values are used ({trained_with}):", *(f"  {n}" for n in shown), sep="\n",
                  file=sys.stderr)  # fmt: skip

    def _resolve_last(self, subcommand: str) -> str | None:
        """``--ckpt_path last``: the newest ``last*.ckpt`` of the earlier runs of this config.

        Lightning looks for ``last`` only in the new run's own checkpoint directory, which a logger
        with versions (``version_0``, ``version_1``…) makes a fresh, empty one; so a restarted job
        would silently train from scratch. mmfuse looks where this config's earlier runs wrote:
        ``<save_dir>/<name>/*/checkpoints/`` of its logger, the ``dirpath`` of its ``ModelCheckpoint``
        callbacks and ``<default_root_dir>/lightning_logs/*/checkpoints/``. The run resumes from the
        newest one it finds, in a new version directory (the loggers would otherwise overwrite the
        earlier run's metrics); with none, ``fit`` starts from scratch and says so (so a job script
        may always pass ``--ckpt_path last``), and the other commands fail.
        """
        found = sorted(_last_checkpoints(self.config[subcommand]), key=lambda f: f.stat().st_mtime)
        if found:
            path = str(found[-1])
            print(f"Resuming from {path} (the newest last checkpoint of this config's runs)", file=sys.stderr)
        elif subcommand == "fit":
            print("--ckpt_path last: no checkpoint of an earlier run found; training from scratch", file=sys.stderr)
            path = None
        else:
            raise MmfuseError(
                "--ckpt_path last: no last.ckpt found where this config's runs write checkpoints (its logger's "
                "save_dir/name, its ModelCheckpoint dirpath, or default_root_dir); pass the checkpoint's path"
            )
        self.config[subcommand]["ckpt_path"] = path
        return path

    def instantiate_trainer(self, **kwargs: Any) -> Any:
        # checkpoints are written crash-safe and read with weights_only=True unless the user chose a
        # CheckpointIO, or a strategy that writes its own (sharded, TPU)
        from lightning.fabric.plugins import CheckpointIO

        from mmfuse.tasks import AtomicCheckpointIO

        config = {**(self.config_init.get(str(self.subcommand), self.config_init).get("trainer") or {}), **kwargs}
        plugins = config.get("plugins") or []
        plugins = list(plugins) if isinstance(plugins, list | tuple) else [plugins]
        strategy = str(config.get("strategy") or "").lower()
        accelerator = str(config.get("accelerator") or "").lower()
        if not any(isinstance(p, CheckpointIO) for p in plugins) and not any(
            name in strategy or name in accelerator for name in ("deepspeed", "xla", "tpu")
        ):
            kwargs["plugins"] = [*plugins, AtomicCheckpointIO()]
        return super().instantiate_trainer(**kwargs)

    def after_fit(self) -> None:
        callback = self.trainer.checkpoint_callback
        if callback is None or not self.trainer.is_global_zero:
            return
        best = getattr(callback, "best_model_path", "")
        last = getattr(callback, "last_model_path", "")
        lines = [f"Best checkpoint: {best}"] if best else []
        if last and last != best:
            lines.append(f"Last checkpoint: {last}")
        if lines:
            configs = self.config[self.subcommand].get("config") or []
            config = " ".join(f"--config {getattr(c, 'relative', c)}" for c in configs) or "--config <your config>"
            print("\n".join(lines))
            print(f"Test it with: mmfuse test {config} --ckpt_path {best or last}")


def _components(argv: Sequence[str]) -> int:
    argparse.ArgumentParser(prog="mmfuse components", description="List registered components.").parse_args(argv)
    load_components()
    for kind, registry in REGISTRIES.items():
        print(f"{kind}:")
        for entry in registry.entries():
            doc = (entry.obj.__doc__ or "").strip().splitlines()
            print(f"  {entry.name:<24} {entry.source:<22} {doc[0] if doc else ''}")
        for failure in registry.failures():
            print(f"  (failed) {failure}")
    return 0


def main(argv: Sequence[str] | None = None) -> Any:
    """Entry point of the ``mmfuse`` command."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["components"]:
        return _components(args[1:])
    if args[:1] == ["sample-data"]:
        from mmfuse.data_commands import sample_data

        return sample_data(args[1:])
    if args[:1] == ["data"]:
        from mmfuse.data_commands import data

        return data(args[1:])
    # deprecations inside Lightning's own CLI code and on recent torch: nothing a user can act on
    os.environ.setdefault("JSONARGPARSE_DEPRECATION_WARNINGS", "off")
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")
    try:
        if args[:1] in (["sweep"], ["cv"]):  # runs of `mmfuse fit`: Optuna trials, cross-validation folds
            from mmfuse import cv, sweep

            return (sweep if args[0] == "sweep" else cv).main(args[1:], MmfuseCLI)
        MmfuseCLI(None if argv is None else args)  # None: LightningCLI reads sys.argv itself
    except Exception as exc:
        user_error = _user_error(exc)
        if user_error is None or os.environ.get("MMFUSE_DEBUG"):
            raise
        print(f"mmfuse: error: {_message(user_error)}", file=sys.stderr)
        raise SystemExit(1) from None
    return 0


def _message(exc: BaseException) -> str:
    """``exc``'s message; for one re-raised from a DataLoader worker (torch puts the worker's traceback in
    the message), the original message alone."""
    text = str(exc)
    prefix = f"{type(exc).__module__}.{type(exc).__qualname__}: "
    if text.startswith("Caught ") and "Original Traceback" in text and prefix in text:
        return text[text.rindex(prefix) + len(prefix) :].strip()
    return text


def _user_error(exc: BaseException) -> BaseException | None:
    """The error about the user's input behind ``exc`` (jsonargparse and workers wrap them), if any."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, _USER_ERRORS):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


if __name__ == "__main__":
    main()
