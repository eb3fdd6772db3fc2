"""``--ckpt_path last``: the newest ``last*.ckpt`` of the earlier runs of a config."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from mmfuse.errors import MmfuseError

__all__ = ["last_checkpoints", "resolve_last"]


def _get(namespace: Any, key: str) -> Any:
    return namespace.get(key) if hasattr(namespace, "get") else None


def last_checkpoints(config: Any) -> list[Path]:
    """``last*.ckpt`` files where a run of ``config`` (a command's namespace) writes checkpoints."""
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


def resolve_last(config: Any, command: str) -> str | None:
    """The checkpoint ``--ckpt_path last`` means for ``config`` (the command's namespace), written back into it.

    Lightning looks for ``last`` only in the new run's own checkpoint directory, which a logger
    with versions (``version_0``, ``version_1``…) makes a fresh, empty one; so a restarted job
    would silently train from scratch. mmfuse looks where this config's earlier runs wrote:
    ``<save_dir>/<name>/*/checkpoints/`` of its logger, the ``dirpath`` of its ``ModelCheckpoint``
    callbacks and ``<default_root_dir>/lightning_logs/*/checkpoints/``. The run resumes from the
    newest one it finds, in a new version directory (the loggers would otherwise overwrite the
    earlier run's metrics); with none, ``fit`` starts from scratch and says so (so a job script
    may always pass ``--ckpt_path last``), and the other commands fail.
    """
    found = sorted(last_checkpoints(config), key=lambda f: f.stat().st_mtime)
    if found:
        path: str | None = str(found[-1])
        print(f"Resuming from {path} (the newest last checkpoint of this config's runs)", file=sys.stderr)
    elif command == "fit":
        print("--ckpt_path last: no checkpoint of an earlier run found; training from scratch", file=sys.stderr)
        path = None
    else:
        raise MmfuseError(
            "--ckpt_path last: no last.ckpt found where this config's runs write checkpoints (its logger's "
            "save_dir/name, its ModelCheckpoint dirpath, or default_root_dir); pass the checkpoint's path"
        )
    config["ckpt_path"] = path
    return path
