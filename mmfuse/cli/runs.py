"""Runs of ``mmfuse fit``/``test``/``predict`` made by ``mmfuse sweep`` and ``mmfuse cv``.

Each run is an ordinary ``mmfuse`` command in its own process, with its own directory and config file
(the user's config with some keys set, its logger, checkpoints and ``default_root_dir`` moved into that
directory): the run can be read, repeated or resumed alone with the same command line, it may use any
Lightning strategy (DDP included), and a crash in one run cannot take the others' memory or state with it.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import ctypes
import io
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

import mmfuse
from mmfuse.cli.summary import ENV as SUMMARY_ENV
from mmfuse.cli.summary import read_summary
from mmfuse.errors import ConfigError, MmfuseError
from mmfuse.io import atomic_path, read_yaml

__all__ = [
    "checkpoint_monitor",
    "config_error",
    "get_key",
    "load_config",
    "failure",
    "resolve_monitor",
    "run_parser",
    "run_command",
    "run_config",
    "run_name",
    "set_key",
    "write_config",
]

_CHECKPOINT = re.compile(r"(^|\.)ModelCheckpoint$")


def load_config(path: str | Path) -> dict[str, Any]:
    """The YAML config ``path`` as a mapping, read by :func:`mmfuse.io.read_yaml` (refused clearly if it is
    missing, not YAML, writes a key twice, expands aliases too far, or is not a mapping)."""
    file = Path(path)
    if not file.is_file():
        raise ConfigError(f"config {str(path)!r} does not exist; pass the YAML file you train with")
    config = read_yaml(file)
    if not isinstance(config, dict):
        kind = {"list": "a list", "str": "text", "NoneType": "empty"}.get(type(config).__name__, "a single value")
        raise ConfigError(
            f"{path}: the config's top level is {kind}; it must be a mapping of options such as trainer:, model:, data:"
        )
    return config


def run_name(config_file: Path) -> str:
    """A name for the runs of ``config_file``: its stem, or its folder's name for a ``config.yaml``
    (``experiments/quickstart/config.yaml`` → ``quickstart``)."""
    return config_file.resolve().parent.name if config_file.stem == "config" else config_file.stem


def write_config(config: Mapping[str, Any], path: Path) -> Path:
    """Writes ``config`` as YAML to ``path`` (atomically)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        tmp.write_text(yaml.safe_dump(dict(config), sort_keys=False))
    return path


def get_key(config: Mapping[str, Any], key: str) -> Any:
    """The value at the dotted ``key`` (``None`` where the path does not exist)."""
    node: Any = config
    for part in key.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


def set_key(config: dict[str, Any], key: str, value: Any) -> None:
    """Sets the dotted ``key`` of ``config`` to ``value``, making the mappings on the way. A component written
    by name only (``adapter: ConcatFusion``) becomes ``{class_path: ConcatFusion}`` to take ``init_args``."""
    parts = key.split(".")
    node = config
    for i, part in enumerate(parts[:-1]):
        child = node.get(part)
        if isinstance(child, str) and parts[i + 1] == "init_args":
            child = node[part] = {"class_path": child}
        elif child is None:
            child = node[part] = {}
        elif not isinstance(child, dict):
            where = ".".join(parts[: i + 1])
            raise ConfigError(
                f"key {key!r}: {where!r} holds {type(child).__name__} {child!r}, not options to set {parts[i + 1]!r} "
                f"in (keys into lists, such as trainer.callbacks, cannot be set one by one)"
            )
        node = child
    node[parts[-1]] = copy.deepcopy(value)


def _as_list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, list) else [] if value is None else [value]


def run_parser(prog: str, description: str, directory: str, default_dir: str | None = None) -> argparse.ArgumentParser:
    """The options ``mmfuse sweep`` and ``mmfuse cv`` share: ``--config``, ``--dir``, ``--monitor``, ``--mode``
    (``default_dir``: where ``--dir`` defaults to, ``<default_dir>/<config name>``; default ``<directory>s``)."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--config", required=True, help="the YAML config to train (as for mmfuse fit)")
    parser.add_argument(
        "--dir",
        help=f"the {directory}'s directory (default: {default_dir or directory + 's'}/<config name>; for a "
        f"config.yaml, its folder's name)",
    )
    parser.add_argument(
        "--monitor", help="the metric that decides (default: the config's ModelCheckpoint monitor, else val/loss)"
    )
    parser.add_argument(
        "--mode",
        choices=("max", "min"),
        help="whether --monitor is better high or low (default: the checkpoint's, else min for losses, max otherwise)",
    )
    return parser


def resolve_monitor(config: Mapping[str, Any], monitor: str | None, mode: str | None) -> tuple[str, str]:
    """``(monitor, mode)``: as given, else the config's ``ModelCheckpoint``'s, else ``val/loss``, ``min``; a
    metric given without a mode is minimised if it is a loss or an error, else maximised."""
    if monitor:
        return monitor, mode or ("min" if any(w in monitor for w in ("loss", "mse", "mae")) else "max")
    found = checkpoint_monitor(config) or ("val/loss", "min")
    return found[0], mode or found[1]


def checkpoint_monitor(config: Mapping[str, Any]) -> tuple[str, str] | None:
    """``(monitor, mode)`` of the config's first ``ModelCheckpoint`` that monitors a metric."""
    for callback in _as_list(get_key(config, "trainer.callbacks")):
        if isinstance(callback, Mapping) and _CHECKPOINT.search(str(callback.get("class_path", ""))):
            args = callback.get("init_args") or {}
            if args.get("monitor"):
                return str(args["monitor"]), str(args.get("mode") or "min")
    return None


def run_config(
    config: Mapping[str, Any],
    directory: Path,
    monitor: tuple[str, str] | None = None,
    callbacks: Sequence[Mapping[str, Any]] = (),
) -> dict[str, Any]:
    """``config`` made to write everything into ``directory``: ``trainer.default_root_dir``, the loggers'
    ``save_dir`` and the ``ModelCheckpoint`` directories (``directory/checkpoints``). With ``monitor``, a
    checkpoint of the best epoch by that metric (``best.ckpt``) is added when the config saves none;
    ``callbacks`` are appended to ``trainer.callbacks``."""
    config = copy.deepcopy(dict(config))
    trainer = config.setdefault("trainer", {}) or {}
    config["trainer"] = trainer
    trainer["default_root_dir"] = str(directory)
    loggers = trainer.get("logger")
    for logger in loggers if isinstance(loggers, list) else [loggers]:
        if isinstance(logger, dict):
            logger.setdefault("init_args", {})
            logger["init_args"] = dict(logger["init_args"] or {}, save_dir=str(directory))
    kept = _as_list(trainer.get("callbacks"))
    has_checkpoint = False
    for callback in kept:
        if isinstance(callback, dict) and _CHECKPOINT.search(str(callback.get("class_path", ""))):
            callback["init_args"] = dict(callback.get("init_args") or {}, dirpath=str(directory / "checkpoints"))
            has_checkpoint = True
    if monitor is not None and not has_checkpoint and trainer.get("enable_checkpointing") is not False:
        kept.append(
            {
                "class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
                "init_args": {
                    "dirpath": str(directory / "checkpoints"),
                    "monitor": monitor[0],
                    "mode": monitor[1],
                    "filename": "best",
                    "save_last": True,
                },
            }
        )
    trainer["callbacks"] = [*kept, *map(dict, callbacks)]
    return config


def config_error(cli: Any, config_file: str | Path, overrides: Sequence[str], command: str = "fit") -> str | None:
    """What ``mmfuse <command> --config config_file <overrides>`` would refuse, as its ``mmfuse: error:`` text,
    or ``None`` if it parses (nothing is built: the config is only parsed and checked, in this process, by
    ``cli``, the ``mmfuse`` command's LightningCLI class, which :mod:`mmfuse.cli` passes in)."""
    out, err = io.StringIO(), io.StringIO()
    os.environ.setdefault("JSONARGPARSE_DEPRECATION_WARNINGS", "off")
    previous = os.environ.get(SUMMARY_ENV)
    with tempfile.TemporaryDirectory() as directory:
        summary = Path(directory) / "summary.json"
        os.environ[SUMMARY_ENV] = str(summary)  # the parser's error writes its message there
        try:
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), warnings.catch_warnings():
                warnings.filterwarnings("ignore", message="LightningCLI's args parameter is intended")
                cli([command, "--config", str(config_file), *overrides, "--print_config"])
        except SystemExit as exc:
            if exc.code:
                failed = read_summary(summary) or {}
                return "; ".join(failed.get("causes") or []) or f"`mmfuse {command}` refused it"
        except MmfuseError as exc:
            return str(exc)
        finally:
            if previous is None:
                os.environ.pop(SUMMARY_ENV, None)
            else:
                os.environ[SUMMARY_ENV] = previous
    return None


def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    """Linux: the run gets SIGTERM if the process that started it dies (even by SIGKILL)."""
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def run_command(command: str, config: Path, log: Path, extra: Sequence[str] = ()) -> tuple[int, dict[str, Any]]:
    """Runs ``mmfuse <command> --config <config> <extra>`` in a new process (this Python), its output into
    ``log``; returns its exit status and the :mod:`~mmfuse.cli.summary` it wrote (``summary_<command>.json``
    beside ``log``; ``{}`` if it wrote none). The run ends if this process is killed."""
    log.parent.mkdir(parents=True, exist_ok=True)
    summary = log.with_name(f"summary_{command}.json")
    summary.unlink(missing_ok=True)  # a summary of an earlier, interrupted attempt is not this run's
    # this process's mmfuse, whatever the working directory holds (``python -m`` would look there first)
    root = str(Path(mmfuse.__file__).resolve().parents[1])  # the folder holding the mmfuse package
    code = f"import sys; sys.path.insert(0, {root!r}); sys.argv[0] = 'mmfuse'; from mmfuse.cli import main; main()"
    args = [sys.executable, "-c", code, command, "--config", str(config), *extra]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", SUMMARY_ENV: str(summary)}
    with open(log, "ab") as out:
        out.write(f"$ mmfuse {' '.join([command, '--config', str(config), *extra])}\n".encode())
        out.flush()
        process = subprocess.Popen(
            args,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
        )
        try:
            code = process.wait()
        except BaseException:  # interrupted (Ctrl-C): the run stops too, then the interruption goes on
            process.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=30)
            if process.poll() is None:
                process.kill()
            raise
    return code, read_summary(summary) or {}


def failure(code: int, summary: Mapping[str, Any]) -> str:
    """Why a run failed: the error its summary holds, else its exit status."""
    return str(summary.get("error") or f"exit status {code}, with no error message of mmfuse's (a crash)")


def write_json(path: Path, data: Mapping[str, Any]) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(dict(data), indent=1))
