"""Running the ``mmfuse`` command inside a test's process."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator


@contextlib.contextmanager
def bare_argv() -> Iterator[None]:
    """``sys.argv`` of a bare ``mmfuse`` during an in-process run (LightningCLI warns about pytest's), and
    ``os.environ`` restored after it (``seed_everything`` sets PL_GLOBAL_SEED)."""
    saved, argv = dict(os.environ), sys.argv
    sys.argv = ["mmfuse"]
    try:
        yield
    finally:
        sys.argv = argv
        os.environ.clear()
        os.environ.update(saved)
