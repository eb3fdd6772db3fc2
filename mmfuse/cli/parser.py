"""The argument parser of mmfuse's Lightning commands: jsonargparse's, with mmfuse's hints on its errors."""

from __future__ import annotations

import argparse
import os
import sys
from contextvars import ContextVar
from typing import Any, NoReturn

from lightning.pytorch import LightningDataModule
from lightning.pytorch.cli import LightningArgumentParser

from mmfuse.cli.checks import compact_message, where_written
from mmfuse.cli.hints import SECTIONS, config_hints, user_config
from mmfuse.cli.summary import write_failure

__all__ = ["COMMAND_LINE", "MmfuseParser"]

#: the command line of the parse under way, for the hints of the parser's error (set by MmfuseCLI.parse_arguments)
COMMAND_LINE: ContextVar[list[str] | None] = ContextVar("mmfuse_cli_args", default=None)
_REPORTING: ContextVar[bool] = ContextVar("mmfuse_cli_reporting", default=False)


def _sections(parser: argparse.ArgumentParser) -> dict[str, Any]:
    """The top-level keys of ``parser``'s config, each with the class it configures (``None``: a value)."""
    from lightning.pytorch import Trainer

    from mmfuse.training import FusionTask, PredictionWriter

    try:  # every key the parser really has, with its default (jsonargparse's public API)
        keys = [key.split(".")[0] for key in parser.get_defaults().keys()]
    except Exception:  # defaults that cannot be resolved: the sections every config has
        keys = []
    classes = {"trainer": Trainer, "model": FusionTask, "data": LightningDataModule, "predictions": PredictionWriter}
    return {key: classes.get(key) for key in dict.fromkeys([*SECTIONS, *keys])}


class MmfuseParser(LightningArgumentParser):
    """Adds to jsonargparse's message, once and at its end, mmfuse's hints for the config it refused:
    unknown component names with the registry's known ones, misspelled or moved options and sections with
    what to write instead (:mod:`mmfuse.cli.hints`)."""

    def error(self, message: str, ex: Exception | None = None) -> NoReturn:
        args = COMMAND_LINE.get()
        if not self.exit_on_error or args is None or os.environ.get("MMFUSE_DEBUG") or _REPORTING.get():
            super().error(message, ex)  # nested parsers raise theirs; MMFUSE_DEBUG: jsonargparse's own output
        token = _REPORTING.set(True)  # reading the defaults must not report an error of its own
        try:
            hints = config_hints(user_config(args), _sections(self))
        except BaseException:  # a hint must never hide the error itself
            hints = []
        finally:
            _REPORTING.reset(token)
        # the cause, where it is written, and no usage dump of every option above it
        lines = [f"mmfuse: error: {where_written(h, args)}{h}" for h in hints]
        causes = hints
        if not lines:
            first, _, rest = compact_message(message).strip().partition("\n")
            lines = [f"mmfuse: error: {where_written(message, args)}{first}", *([rest] if rest else [])]
            causes = [first]
        prog = self.prog.replace(" [options]", "")
        write_failure(prog.split()[-1], lines[0].removeprefix("mmfuse: error: "), causes=causes)
        sys.stderr.write("\n".join([*lines, f"tip: `{prog} --help` lists the options; MMFUSE_DEBUG=1 shows the "
                                              f"parser's whole message"]) + "\n")  # fmt: skip
        raise SystemExit(2)
