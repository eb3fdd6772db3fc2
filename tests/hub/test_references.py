"""A frozen backbone loaded from a source is referenced, not copied: its weights come back from the source and are
checked against the checksum recorded at export; --full writes them into the file instead."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from mmfuse.backbones import ESM2
from mmfuse.hub import PretrainedError, read_config
from mmfuse.model import FusionModel
from tests.helpers.in_process import QUICKSTART, SMALL, bare_argv

RECORDS = [{"dna": "ACGTAC" * 20, "rna": "AUGGCU" * 9, "protein": "MKTAYIAKQR"}, {"protein": "MVLSPADK"}]


@pytest.fixture(scope="module")
def frozen_source(tmp_path_factory):
    """A fit whose protein backbone is ESM2 read from a local source (standing in for the hub) and frozen; its
    export by reference and with --full."""
    from mmfuse.cli import main

    root = tmp_path_factory.mktemp("frozen")
    source = root / "esm2"
    torch.manual_seed(3)
    ESM2("tiny").model.save_pretrained(source)
    protein = ["--model.init_args.backbones.protein.init_args.source=" + str(source),
               "--model.init_args.backbones.protein.init_args.finetune={freeze: true}"]  # fmt: skip
    with bare_argv():
        main(["fit", "--config", str(QUICKSTART), *SMALL, *protein, "--trainer.max_steps=2",
              "--trainer.limit_val_batches=0", "--trainer.logger=false", f"--trainer.default_root_dir={root}",
              "--trainer.callbacks=[{class_path: lightning.pytorch.callbacks.ModelCheckpoint, "
              "init_args: {save_last: true}}]"])
        ckpt = next(root.rglob("last.ckpt"))
        for name, extra in (("ref", []), ("full", ["--full=true"])):
            main(["export", "--config", str(QUICKSTART), *SMALL, *protein, "--ckpt_path", str(ckpt),
                  "--output", str(root / name), *extra])
    return {"source": source, "ref": root / "ref", "full": root / "full"}


def test_the_fixed_weights_are_referenced_by_source_and_checksum(frozen_source):
    config = read_config(frozen_source["ref"])
    ref = config.weights["references"]["protein"]
    assert ref["source"] == str(frozen_source["source"]) and len(ref["sha256"]) == 64 and ref["keys"]
    keys = set(load_file(str(frozen_source["ref"] / "model.safetensors")))
    assert not [k for k in keys if k.startswith("model.backbones.protein.")]
    full = set(load_file(str(frozen_source["full"] / "model.safetensors")))
    assert {f"model.backbones.protein.{k}" for k in ref["keys"]} <= full
    sizes = {name: (frozen_source[name] / "model.safetensors").stat().st_size for name in ("ref", "full")}
    assert sizes["full"] > sizes["ref"]
    card = (frozen_source["ref"] / "README.md").read_text()
    assert f"rebuilt from `{frozen_source['source']}`" in card
    a = FusionModel.from_pretrained(frozen_source["ref"]).predict(RECORDS)
    b = FusionModel.from_pretrained(frozen_source["full"]).predict(RECORDS)
    assert np.array_equal(a.iloc[:, 1:].to_numpy(), b.iloc[:, 1:].to_numpy())


def test_a_source_whose_weights_changed_is_refused(frozen_source, tmp_path):
    from mmfuse.cli import main

    torch.manual_seed(4)  # another "revision" of the checkpoint at the same place
    ESM2("tiny").model.save_pretrained(frozen_source["source"])
    try:
        with pytest.raises(PretrainedError, match="not those the exported model was trained with"):
            FusionModel.from_pretrained(frozen_source["ref"])
        with bare_argv(), pytest.raises(SystemExit) as exit_:
            main(["predict", "--config", str(QUICKSTART), "--model", str(frozen_source["ref"]), *SMALL,
                  f"--predictions.output={tmp_path / 'p.csv'}"])
        assert exit_.value.code == 1 and not (tmp_path / "p.csv").exists()
        FusionModel.from_pretrained(frozen_source["full"])  # --full holds its own weights
    finally:
        torch.manual_seed(3)
        ESM2("tiny").model.save_pretrained(frozen_source["source"])
