"""The ``mmfuse`` command: one table from command name to the module that runs it.

The training commands (``fit``, ``validate``, ``test``, ``predict``) are LightningCLI subcommands
(:mod:`mmfuse.cli.lightning`); the analyses (``embed``, ``explain``, ``perturb``, ``score-variants``) parse the
same config with their own arguments and run :mod:`mmfuse.analysis`; ``sweep`` and ``cv`` run ``mmfuse fit`` per
trial or fold; ``components``, ``sample-data`` and ``data`` are plain argparse commands. Every command's module has a
``main(argv)``; :func:`main` picks it by the first argument.
"""

from __future__ import annotations

import importlib
import os
import sys
import warnings
from collections.abc import Sequence
from typing import Any, NamedTuple

from mmfuse.cli.summary import write_failure
from mmfuse.errors import MmfuseError
from mmfuse.registry import PluginLoadError, UnknownComponentError

__all__ = ["COMMANDS", "Command", "MmfuseCLI", "close_process_group", "load_components", "main"]


class Command(NamedTuple):
    """One command: the module whose function (``main`` unless named) runs it with the arguments after the
    command's name, and its line in ``mmfuse --help``."""

    module: str
    help: str
    function: str = "main"


_TRAINING = "mmfuse.cli.training"
#: every command of ``mmfuse``, in the order ``mmfuse --help`` lists them
COMMANDS: dict[str, Command] = {
    "fit": Command(_TRAINING, "train a fusion model (Lightning's fit: checkpoints, reports, resume)"),
    "validate": Command(_TRAINING, "evaluate a checkpoint on the validation split"),
    "test": Command(_TRAINING, "evaluate a checkpoint on the test split: metrics, report, modality contributions"),
    "predict": Command(_TRAINING, "write a checkpoint's predictions for the data's records to a file"),
    "serve": Command("mmfuse.cli.serve", "serve an exported model over HTTP: POST /predict, batching across requests"),
    "export": Command("mmfuse.cli.export", "write a trained checkpoint as a shareable directory (safetensors, card)"),
    "embed": Command("mmfuse.cli.embed", "write each record's embeddings (per backbone, and fused) to a file"),
    "explain": Command("mmfuse.cli.explain", "attribute a checkpoint's predictions to sequence letters (IG, ISM)"),
    "perturb": Command("mmfuse.cli.perturb", "delete or overexpress genes of cells in silico: how far each moves them"),
    "score-variants": Command("mmfuse.cli.score_variants", "score a VCF's variants through every modality they change"),
    "sweep": Command("mmfuse.cli.sweep", "search hyper-parameters with Optuna, one `mmfuse fit` per trial"),
    "cv": Command("mmfuse.cli.cv", "cross-validate: one `mmfuse fit` per fold of genes (or groups)"),
    "components": Command("mmfuse.cli.components", "list the registered backbones, adapters, heads and data modules"),
    "sample-data": Command("mmfuse.cli.data", "write the bundled synthetic sample data set", "sample_data"),
    "data": Command("mmfuse.cli.data", "build data tables from public files (`mmfuse data build-isoform`)", "data"),
}
#: the commands that accept ``--model DIR`` (a directory ``mmfuse export`` wrote) for the config's model
MODEL_DIRECTORY_COMMANDS = ("validate", "test", "predict", "embed", "explain", "perturb", "score-variants")
_USER_ERRORS = (MmfuseError, UnknownComponentError, PluginLoadError)


def usage() -> str:
    """``mmfuse --help``: every command with its line."""
    width = max(map(len, COMMANDS))
    lines = [f"  {name:<{width}}  {command.help}" for name, command in COMMANDS.items()]
    return "\n".join([
        "usage: mmfuse COMMAND [options]   (`mmfuse COMMAND --help` lists a command's options)", "",
        "mmfuse: fuse pretrained biological sequence models.", "", "commands:", *lines,
    ])  # fmt: skip


def main(argv: Sequence[str] | None = None) -> Any:
    """Entry point of the ``mmfuse`` command."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print(usage())
        return 0 if args else 2
    name, rest = args[0], args[1:]
    command = COMMANDS.get(name)
    if command is None:
        import difflib

        close = difflib.get_close_matches(name, COMMANDS, n=1)
        hint = f"; did you mean `mmfuse {close[0]}`?" if close else ""
        print(f"mmfuse: error: no command {name!r}{hint} (`mmfuse --help` lists them)", file=sys.stderr)
        raise SystemExit(2)
    if name in MODEL_DIRECTORY_COMMANDS:  # `--model DIR`: an exported model's config and weights
        from mmfuse.cli.export import expand_model_directory

        expanded = expand_model_directory(rest)
        if expanded != rest:
            rest, args, argv = expanded, [name, *expanded], [name, *expanded]
    module = importlib.import_module(command.module)
    # deprecations inside Lightning's own CLI code: nothing a user can act on
    os.environ.setdefault("JSONARGPARSE_DEPRECATION_WARNINGS", "off")
    try:
        with warnings.catch_warnings():
            _quiet_known_warnings()
            if command.module == _TRAINING:  # LightningCLI's subcommands: the whole command line
                result = module.main(None if argv is None else args)  # None: LightningCLI reads sys.argv itself
            else:
                result = getattr(module, command.function)(rest)
        close_process_group()
        return result
    except SystemExit as exc:
        if exc.code not in (0, None):  # the parser's error wrote its own message already
            write_failure(name, f"`mmfuse {name}` exited with status {exc.code}", replace=False)
        raise
    except Exception as exc:
        user_error = _user_error(exc)
        write_failure(name, _message(user_error) if user_error is not None else f"{type(exc).__name__}: {exc}")
        if user_error is None or os.environ.get("MMFUSE_DEBUG"):
            raise
        print(f"mmfuse: error: {_message(user_error)}", file=sys.stderr)
        raise SystemExit(1) from None


def close_process_group() -> None:
    """Ends a DDP run's process group once its command has finished on every process (a barrier, then
    ``destroy_process_group``). Lightning destroys NCCL groups at exit but leaves gloo's (CPU DDP) to the
    interpreter's shutdown, where its threads, torn down in no fixed order, abort the process now and then
    ("terminate called without an active exception", status -6) after a run that succeeded."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def _quiet_known_warnings() -> None:
    """Inside a command's run only: Lightning's warnings about what mmfuse does on purpose."""
    # frozen backbones stay in eval mode (dropout off, BatchNorm statistics fixed)
    warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode at the start of training")
    # the task's batch transfer (strings left unwalked) replaces the data module's
    warnings.filterwarnings("ignore", message=r"You have overridden `transfer_batch_to_device` in `LightningMod")
    # test/predict restore a ModelCheckpoint's state into a new run directory: its bookkeeping is not resumed
    warnings.filterwarnings("ignore", message="The dirpath has changed from")
    # an analysis passes LightningCLI the arguments after its name, which Lightning warns about
    warnings.filterwarnings("ignore", message="LightningCLI's args parameter is intended")
    # score-variants' streamed pairs count each process's (and worker's) share exactly
    warnings.filterwarnings("ignore", message=r"Your `IterableDataset` has `__len__` defined")
    # ... and carry their own order (the pair's place in the VCF), which Lightning's batch indices cannot give
    warnings.filterwarnings("ignore", message=r"Couldn't infer the batch indices fetched from your dataloader")
    # recent torch deprecates what Lightning's own code calls
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")


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


def __getattr__(name: str) -> Any:  # the classes and functions most code imports from here, loaded on use
    if name == "MmfuseCLI":
        from mmfuse.cli.lightning import MmfuseCLI

        return MmfuseCLI
    if name == "load_components":
        from mmfuse.cli.components import load_components

        return load_components
    raise AttributeError(name)
