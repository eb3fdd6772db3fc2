"""A callback that stalls a training run at a chosen step, so a test can kill it there (SIGKILL) or stop it
(SIGTERM, SIGINT: the stall ends as soon as a stop is asked for, and the step runs to its end).

Used by tests/test_resume.py through ``PYTHONPATH=tests/helpers``; the step comes from the
``MMFUSE_TEST_STALL_AT`` environment variable, so the resumed run (without it) never stalls.
"""

from __future__ import annotations

import os
import time

from lightning.pytorch import Callback


class StallAtStep(Callback):
    """Sleeps for a minute at the start of optimiser step ``$MMFUSE_TEST_STALL_AT`` (0-based)."""

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        step = os.environ.get("MMFUSE_TEST_STALL_AT")
        if step is not None and trainer.global_step == int(step):
            print(f"stalling at step {trainer.global_step}", flush=True)
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and not trainer.received_sigterm:
                time.sleep(0.05)
