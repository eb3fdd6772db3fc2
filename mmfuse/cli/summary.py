"""What a command leaves for the next one to read: a JSON summary file, never its printed text.

``mmfuse fit`` writes ``summary_fit.json`` into its run directory (the logger's version folder, else
``trainer.default_root_dir``): the best and last checkpoints, the monitored metric and its best value,
the epochs and steps run and whether the run was interrupted. ``validate``/``test`` write
``summary_<command>.json`` with the metrics logged and the metrics table and report they wrote;
``predict`` its predictions file. A process that starts a command and needs its result (``mmfuse cv``,
``mmfuse sweep``) names a file in :data:`ENV`: the command writes its summary there as well, and on failure
the one-line error it printed (``"status": "failed"``), so the caller never reads another process's output.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from mmfuse.io import atomic_path

__all__ = ["ENV", "read_summary", "trainer_summary", "write_failure", "write_summary"]

#: the environment variable naming the file a command writes its summary (or its failure) to, for its caller
ENV = "MMFUSE_SUMMARY_FILE"
_VERSION = 1


def _write(path: Path, data: Mapping[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps({"mmfuse_summary": _VERSION, **data}, indent=1) + "\n")


def write_summary(data: Mapping[str, Any], directory: str | Path | None) -> Path | None:
    """Writes ``data`` (``command`` among its keys) as ``summary_<command>.json`` in ``directory`` and to the
    file :data:`ENV` names; returns the run directory's file."""
    written = None
    if directory is not None:
        written = Path(directory) / f"summary_{data['command']}.json"
        _write(written, data)
    if os.environ.get(ENV):
        _write(Path(os.environ[ENV]), data)
    return written


def write_failure(command: str, error: str, replace: bool = True, causes: Sequence[str] = ()) -> None:
    """For the caller that named a file in :data:`ENV`: the command failed with ``error`` (the first line it
    printed); ``causes``: each problem found, without where it is written; ``replace=False`` keeps a failure
    (or a fit's stop by a signal) already written there (the more precise message)."""
    if not os.environ.get(ENV):
        return
    path = Path(os.environ[ENV])
    if not replace and (read_summary(path) or {}).get("status") in ("failed", "stopped"):
        return
    _write(path, {"command": command, "status": "failed", "error": error, "causes": list(causes or [error])})


def read_summary(path: str | Path) -> dict[str, Any] | None:
    """The summary a command wrote to ``path`` (``None``: it wrote none, or not a summary)."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and "mmfuse_summary" in data else None


def _number(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def trainer_summary(command: str, trainer: Any) -> dict[str, Any]:
    """What ``trainer`` did for ``command``: its run directory, state and, by command, checkpoints or metrics."""
    run_dir = Path(trainer.log_dir or trainer.default_root_dir)
    data: dict[str, Any] = {
        "command": command,
        "status": "interrupted" if trainer.interrupted else "completed",
        "run_dir": str(run_dir),
        "epochs": trainer.current_epoch,
        "global_step": trainer.global_step,
    }
    if command == "fit":
        callback = trainer.checkpoint_callback
        data.update(
            best_checkpoint=getattr(callback, "best_model_path", "") or None,
            last_checkpoint=getattr(callback, "last_model_path", "") or None,
            monitor=getattr(callback, "monitor", None),
            mode=getattr(callback, "mode", None) if getattr(callback, "monitor", None) else None,
            best_score=_number(getattr(callback, "best_model_score", None)),
        )
    if command in ("validate", "test"):
        stage = "val" if command == "validate" else "test"
        table, report = run_dir / f"metrics_{stage}.csv", run_dir / f"report_{stage}"
        data.update(
            metrics={k: _number(v) for k, v in sorted(trainer.callback_metrics.items()) if k.startswith(stage)},
            metrics_table=str(table) if table.is_file() else None,
            report_dir=str(report) if report.is_dir() else None,
        )
    return data
