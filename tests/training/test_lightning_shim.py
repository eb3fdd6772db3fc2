"""The one use of Lightning internals (mmfuse.training.trainer) fails here, clearly, when Lightning changes it."""

from __future__ import annotations

import lightning
from lightning.pytorch.callbacks import ModelCheckpoint

from mmfuse.training.trainer import SHIMMED, MmfuseTrainer


def test_the_checkpoint_internals_the_shim_relies_on_still_exist(tmp_path):
    callback = ModelCheckpoint(dirpath=tmp_path, monitor="val/loss", save_last=True)
    missing = [name for name in SHIMMED if not hasattr(callback, name)]
    assert not missing, (
        f"Lightning {lightning.__version__} has no ModelCheckpoint.{', '.join(missing)}: "
        f"mmfuse.training.trainer.keep_last_checkpoint_current must be rewritten for it"
    )
    trainer = MmfuseTrainer(callbacks=[callback], logger=False, enable_progress_bar=False, default_root_dir=tmp_path)
    assert trainer.checkpoint_callback is callback
    assert callback._save_topk_checkpoint.__name__ == "top_k_then_last"
