"""The embedding cache under Lightning's DDP strategy: two CPU processes (gloo), one shard each, every
sequence embedded by exactly one rank, and nothing embedded once training has started."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

SCRIPT = textwrap.dedent(
    """
    import json, sys
    from pathlib import Path
    import lightning as L
    from mmfuse.adapters import ConcatFusion
    from mmfuse.backbones import ESM2, FineTuning, NucleotideTransformer
    from mmfuse.data import IsoformExpression
    from mmfuse.cache import CacheOptions, cached_backbones
    from mmfuse.training import RegressionTask

    out = Path(sys.argv[1])
    L.seed_everything(0)
    backbones = {"rna": NucleotideTransformer("tiny", modality="rna", finetune=FineTuning(freeze=True)),
                 "protein": ESM2("tiny", finetune=FineTuning(freeze=True))}
    dm = IsoformExpression("sample", sample={"size": 40}, loader={"batch_size": 8},
                           modalities={"rna": "RNA", "protein": "Protein"})
    task = RegressionTask(backbones, adapter=lambda d: ConcatFusion(d, hidden_dim=16), target_names=dm.target_names,
                          embedding_cache=CacheOptions(directory=str(out / "cache")))
    counts = []

    class Count(L.Callback):
        def on_train_epoch_end(self, trainer, module):
            counts.append({c.modality: c.computed for c in cached_backbones(module)})

    trainer = L.Trainer(accelerator="cpu", devices=2, strategy="ddp", max_epochs=3, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        num_sanity_val_steps=0, callbacks=[Count()], default_root_dir=out)
    trainer.fit(task, dm)
    (out / f"rank{trainer.global_rank}.json").write_text(json.dumps(counts))
    """
)


# two-process runs (half a minute): with the learning runs in `make test-slow`, which CI runs too
pytestmark = pytest.mark.slow

def test_two_ranks_write_their_own_shards_and_reuse_each_others(tmp_path):
    script = tmp_path / "ddp_cache.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, str(script), str(tmp_path)], capture_output=True, text=True,
                            timeout=300, env=env, cwd=tmp_path)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    counts = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    for modality in ("rna", "protein"):
        # cumulative per rank after each epoch: both ranks embed their share before the first epoch,
        # nothing afterwards
        first = [c[0][modality] for c in counts]
        assert all(n > 0 for n in first)
        assert all(c[1][modality] == c[0][modality] == c[2][modality] for c in counts)
        store = next((tmp_path / "cache").glob(f"{modality}-*"))
        assert sorted(p.name for p in store.glob("rank*")) == ["rank0.bin", "rank0.idx", "rank1.bin", "rank1.idx"]
        records = [np.fromfile(store / f"rank{r}.idx", dtype=np.uint8).reshape(-1, 32)[:, :16] for r in (0, 1)]
        keys = [{bytes(k) for k in r} for r in records]
        assert not keys[0] & keys[1]  # no sequence embedded twice
        assert first == [len(r) for r in records] == [len(k) for k in keys]
