"""What the ``mmfuse`` command checks and says before anything runs: where a refused option is written
(``file:line`` of a ``--config`` file, or the command line), jsonargparse's type errors as one line, and
output directories that cannot be written (named with their option before a run starts, not as an
``OSError`` of Lightning's loggers minutes later), and bfloat16 asked of a CPU that has no bfloat16
matrix instructions."""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from mmfuse.errors import ConfigError

__all__ = ["check_output_dirs", "compact_message", "cpu_has_bf16", "slow_precision_note", "where_written"]


def where_written(message: str, args: Sequence[str]) -> str:
    """Where the option or name a message is about is written: ``'<file>:<line>: '`` in a ``--config``
    file, ``'on the command line: '``, or ``''``. The message names it first, quoted (``'hiden_dim' is
    not an option…``, ``Unknown backbone 'ESM3'``) or as jsonargparse's ``Parser key "trainer.max_epochs"``."""
    found = re.match(r'\s*Parser key "([^"]+)"', message) or re.search(r"'([^']+)'", message)
    if found is None:
        return ""
    token = found.group(1).rsplit(".", 1)[-1]
    pattern = re.compile(rf"(^|[\s{{,\[-])['\"]?{re.escape(token)}['\"]?\s*(:|,|}}|]|$)")
    args = list(args)
    files = [args[i + 1] for i, a in enumerate(args[:-1]) if a in ("--config", "-c")]
    files += [a.partition("=")[2] for a in args if a.startswith("--config=")]
    overrides = [a for a in args if a.startswith("--") and not a.startswith("--config")]
    if any(token in a for a in overrides) or any(token in a for a in args if not a.startswith("-") and a not in files):
        return "on the command line: "
    for file in reversed(files):  # a later config's value is the one that counts
        path = Path(file).expanduser()
        try:
            lines = path.read_text().splitlines() if path.is_file() else []
        except OSError:
            continue
        for number, line in enumerate(lines, 1):
            if pattern.search(line.split(" #")[0]):
                return f"{file}:{number}: "
    return ""


def compact_message(message: str) -> str:
    """jsonargparse's tree for a plain value of the wrong type, as one line:
    ``option trainer.max_epochs takes int or null, not 'ten'``; a sub-config file that was found but not read
    (its YAML refused: a key written twice, an alias bomb), as that file's problem; other messages unchanged."""
    sub_config = re.search(r"Invalid content in sub-config file (.+?): (.*)$", message, flags=re.M)
    if sub_config is not None:
        return f"sub-config file {sub_config.group(1)}: {sub_config.group(2).strip()}"
    key = re.match(r'\s*Parser key "([^"]+)":', message)
    choice = re.search(r"Expected a typing\.Literal\[(.*)\]\. Got value: (.*)$", message, flags=re.M)
    if key is not None and choice is not None:
        choices = ", ".join(c.strip().strip("'\"") for c in choice.group(1).split(","))
        return f"option {key.group(1)} is one of {choices}, not {choice.group(2).strip()!r}"
    expected = re.findall(r"^\s*- Expected a <class '([\w.]+)'>\s*$", message, flags=re.M)
    errors = re.findall(r"^\s*- ", message, flags=re.M)
    given = re.search(r"^\s*Given value: (.*)$", message, flags=re.M)
    if key is None or not expected or len(expected) != len(errors) or given is None:
        return message
    names = [{"NoneType": "null", "str": "text"}.get(t, t) for t in expected]
    return f"option {key.group(1)} takes {' or '.join(names)}, not {given.group(1).strip()!r}"


def _get(node: Any, key: str) -> Any:
    return node.get(key) if hasattr(node, "get") else None


def _output_dirs(config: Any) -> Iterator[tuple[str, Path]]:
    """``(option, directory)`` for each place a run of ``config`` (a subcommand's namespace) writes."""
    trainer = _get(config, "trainer") or {}
    if _get(trainer, "default_root_dir"):
        yield "trainer.default_root_dir", Path(str(trainer["default_root_dir"]))
    loggers = _get(trainer, "logger")
    for logger in loggers if isinstance(loggers, list) else [loggers]:
        args = _get(logger, "init_args") or {}
        for key in ("save_dir", "root_dir"):
            if _get(args, key):
                yield f"trainer.logger.init_args.{key}", Path(str(args[key]))
    callbacks = _get(trainer, "callbacks") or []
    for callback in callbacks if isinstance(callbacks, list) else [callbacks]:
        if _get(_get(callback, "init_args") or {}, "dirpath"):
            yield "trainer.callbacks[].init_args.dirpath", Path(str(callback["init_args"]["dirpath"]))
    for section in ("predictions", "embeddings"):
        output = _get(_get(config, section) or {}, "output")
        if output:
            yield f"{section}.output", Path(str(output)).expanduser().parent


def check_output_dirs(config: Any) -> None:
    """Creates the directories a run writes to and checks that a file can be written in each; a
    :class:`ConfigError` names the option, the directory and the reason otherwise."""
    for option, directory in _output_dirs(config):
        directory = directory.expanduser()
        try:
            directory.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryFile(dir=directory):
                pass
        except OSError as exc:
            reason = exc.strerror or type(exc).__name__
            raise ConfigError(
                f"{option}: cannot write in {directory} ({reason}{f': {exc.filename}' if exc.filename else ''}); "
                f"choose a directory you can write to"
            ) from None
        if not os.access(directory, os.W_OK):
            raise ConfigError(f"{option}: {directory} is not writable; choose a directory you can write to")


def cpu_has_bf16(cpuinfo: str = "/proc/cpuinfo") -> bool:
    """Whether this CPU has bfloat16 matrix instructions (AVX-512 BF16 or AMX), as its ``cpuinfo`` flags say;
    where there is no such file (not Linux) it is taken to have them: no warning rather than a wrong one."""
    try:
        text = Path(cpuinfo).read_text(errors="replace")
    except OSError:
        return True
    flags = {word for line in text.splitlines() if line.startswith("flags") for word in line.split()}
    return bool(flags & {"avx512_bf16", "amx_bf16"})


def slow_precision_note(config: Any) -> str | None:
    """A warning when ``trainer.precision`` is bfloat16 and the run will be on a CPU without bfloat16 matrix
    instructions: PyTorch then emulates them, and a bf16 matrix product runs at about 1 GFLOP/s against
    160 in fp32 on a 2-core AVX2 machine (``benchmarks/_utilisation.py``; a Linear layer 6× slower under
    autocast), so ``bf16-mixed`` costs time instead of saving it."""
    trainer = _get(config, "trainer") or {}
    precision, accelerator = str(_get(trainer, "precision") or ""), str(_get(trainer, "accelerator") or "auto")
    if not precision.startswith("bf16") or accelerator not in ("cpu", "auto"):
        return None
    import torch

    if accelerator == "auto" and (torch.cuda.is_available() or torch.backends.mps.is_available()):
        return None
    if cpu_has_bf16():
        return None
    return (
        f"mmfuse: warning: trainer.precision is {precision} but this CPU has no bfloat16 matrix instructions "
        "(AVX-512 BF16 or AMX): PyTorch emulates them and training runs several times slower than in 32-true; "
        "use --trainer.precision 32-true here (bf16-mixed pays on GPUs and on CPUs with AMX or AVX-512 BF16)"
    )
