"""``mmfuse embed``: order, values, formats, atomicity and refusals (DDP joining: tests/test_ddp.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from mmfuse.analysis.embed import EmbeddingWriter, pool
from mmfuse.cli import main
from mmfuse.errors import ConfigError
from tests.helpers.in_process import QUICKSTART, SMALL, bare_argv, load_task, mmfuse_stdout


def _reference(checkpoint: Path) -> tuple[list[str], dict[str, np.ndarray]]:
    """The model of ``checkpoint`` run by hand over the predict loader: ids, mean-pooled and fused embeddings."""
    task, dm = load_task(checkpoint)
    ids, rows = [], {"rna": [], "protein": [], "fused": []}
    with torch.no_grad():
        for batch in dm.predict_dataloader():
            features = task.model.encode(batch["inputs"], batch["present"])
            ids += batch["ids"]
            for m in ("rna", "protein"):
                emb, mask = features[m]
                for e, k in zip(emb, mask, strict=True):
                    rows[m].append(e[k].mean(0).numpy() if k.any() else np.full(e.shape[-1], np.nan, np.float32))
            rows["fused"] += list(task.model.adapter(features).numpy())
    return ids, {k: np.stack(v) for k, v in rows.items()}


def test_embeddings_of_a_checkpoint_follow_the_records_and_equal_the_model(trained, tmp_path):
    out = tmp_path / "emb.parquet"
    printed = mmfuse_stdout("embed", "--config", str(QUICKSTART), *SMALL, "--ckpt_path", str(trained),
                      f"--embeddings.output={out}", "--embeddings.modalities=[rna, protein]",
                      "--embeddings.fused=true", f"--trainer.logger.init_args.save_dir={tmp_path}")  # fmt: skip
    ids, expected = _reference(trained)
    assert f"Wrote the mean embeddings of {len(ids)} records to {out}" in printed
    table = pd.read_parquet(out)
    assert list(table.columns) == ["transcript_id", "rna", "protein", "fused"]
    assert table["transcript_id"].tolist() == ids and len(ids) == 31  # every record, in the loader's order
    absent = table["protein"].isna().to_numpy()
    assert absent.sum() == 4 and np.isnan(expected["protein"][absent]).all()  # non-coding: null, not zeros
    for name in ("rna", "fused"):
        np.testing.assert_allclose(np.stack(table[name].to_numpy()), expected[name], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.stack(table["protein"][~absent].to_numpy()), expected["protein"][~absent],
                               rtol=1e-5, atol=1e-5)  # fmt: skip
    assert not list(tmp_path.glob(".*partial*")) and not list(tmp_path.glob("*staging*"))

    # the same numbers as .h5ad (obsm) and .npy (one embedding, ids beside it)
    mmfuse_stdout("embed", "--config", str(QUICKSTART), *SMALL, "--ckpt_path", str(trained),
            f"--embeddings.output={tmp_path / 'emb.h5ad'}", "--embeddings.fused=true",
            f"--trainer.logger.init_args.save_dir={tmp_path}")  # fmt: skip
    import anndata

    adata = anndata.read_h5ad(tmp_path / "emb.h5ad")
    assert list(adata.obs_names) == ids and set(adata.obsm) == {"dna", "rna", "protein", "fused"}
    np.testing.assert_allclose(adata.obsm["fused"], expected["fused"], rtol=1e-5, atol=1e-5)
    assert np.isnan(adata.obsm["protein"][absent]).all()
    mmfuse_stdout("embed", "--config", str(QUICKSTART), *SMALL, "--ckpt_path", str(trained),
            f"--embeddings.output={tmp_path / 'rna.npy'}", "--embeddings.modalities=[rna]",
            f"--trainer.logger.init_args.save_dir={tmp_path}")  # fmt: skip
    np.testing.assert_allclose(np.load(tmp_path / "rna.npy"), expected["rna"], rtol=1e-5, atol=1e-5)
    assert (tmp_path / "rna.npy.ids.txt").read_text().split() == ids
    assert not list(tmp_path.glob(".*staging*"))


def test_a_failed_run_leaves_the_earlier_file_and_no_partial_one(trained, tmp_path, monkeypatch):
    out = tmp_path / "emb.h5ad"
    out.write_bytes(b"an earlier run's file")
    calls = []

    def failing(self, pl_module, prediction):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("the machine went away")
        return original(self, pl_module, prediction)

    original = EmbeddingWriter._frame
    monkeypatch.setattr(EmbeddingWriter, "_frame", failing)
    with pytest.raises(RuntimeError, match="went away"):
        mmfuse_stdout("embed", "--config", str(QUICKSTART), *SMALL, "--ckpt_path", str(trained),
                f"--embeddings.output={out}", f"--trainer.logger.init_args.save_dir={tmp_path}")  # fmt: skip
    assert out.read_bytes() == b"an earlier run's file"
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_file()) == ["emb.h5ad"]


def test_pooling_keeps_the_valid_tokens_and_marks_absent_records():
    emb = torch.arange(2 * 5 * 2, dtype=torch.float32).reshape(2, 5, 2)
    mask = torch.tensor([[True, True, True, True, False], [False] * 5])
    mean, absent = pool(emb, mask, "mean")
    assert absent is None and np.allclose(mean, emb[0, :4].mean(0).numpy())
    assert np.allclose(pool(emb, mask, "cls")[0], emb[0, 0].numpy())
    assert np.allclose(pool(emb, mask, "center", center_bins=2)[0], emb[0, 1:3].mean(0).numpy())
    assert pool(emb, mask, "tokens")[0].shape == (4, 2)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--embeddings.pooling=cls"], "embeddings.pooling cls: Enformer (dna) has no CLS token; use mean"),
        (["--embeddings.pooling=center", "--embeddings.modalities=[rna]"],
         "embeddings.pooling center takes the central bins of a DNA model; NucleotideTransformer (rna) reads rna"),
        (["--embeddings.modalities=[cell]"], "embeddings.modalities names ['cell']; the model's backbones are"),
        (["--embeddings.fused=true"], "gives a random fused representation; pass --ckpt_path"),
        (["--embeddings.output=e.csv"], "embeddings.output 'e.csv' must end in .parquet, .npy, .h5ad"),
        (["--embeddings.output=e.npy"], "a .npy file holds one matrix and ['dna', 'rna', 'protein'] are 3"),
        (["--embeddings.pooling=tokens", "--embeddings.output=e.h5ad"], "write it to a .parquet file"),
    ],
    ids=["cls-without-cls-token", "center-on-rna", "unknown-modality", "fused-zero-shot", "csv", "npy-of-three",
         "tokens-to-h5ad"],
)
def test_a_bad_option_is_refused_with_the_fix(options, message, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with bare_argv(), pytest.raises(SystemExit) as exit_:
        main(["embed", "--config", str(QUICKSTART), *SMALL, f"--trainer.logger.init_args.save_dir={tmp_path}",
              *options])  # fmt: skip
    assert exit_.value.code == 1
    err = capsys.readouterr().err
    assert err.startswith("mmfuse: error: ") and message in err and len(err.splitlines()) == 1


def test_an_unknown_pooling_lists_the_choices(tmp_path, capsys):
    with bare_argv(), pytest.raises(SystemExit) as exit_:
        main(["embed", "--config", str(QUICKSTART), "--embeddings.pooling=max"])
    assert exit_.value.code == 2
    assert "option embeddings.pooling is one of mean, cls, center, tokens, not 'max'" in capsys.readouterr().err


def test_the_writer_refuses_bad_options_in_python_too():
    with pytest.raises(ConfigError, match="embeddings.pooling is one of mean, cls, center, tokens"):
        EmbeddingWriter(pooling="max")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="center_bins must be at least 1"):
        EmbeddingWriter(center_bins=0)


@pytest.mark.slow  # four commands on two Hugging Face checkpoints; their unit tests are in the fast suite
def test_letter_per_token_presets_fit_test_predict_and_embed(tmp_path, monkeypatch):
    """ProtT5 (an encoder of a T5) for the protein and SpliceBERT for the RNA, as tiny random checkpoints of
    their architectures and vocabularies in local directories, through every command."""
    import yaml

    from tests.backbones.conftest import make_tiny_preset

    config = yaml.safe_load(QUICKSTART.read_text())
    backbones = config["model"]["init_args"]["backbones"]
    for modality, preset in (("protein", "prot_t5_xl_u50"), ("rna", "splicebert_1024nt")):
        source = make_tiny_preset(preset, tmp_path / preset)
        backbones[modality] = {"class_path": "HuggingFaceEncoder", "init_args": {"preset": preset,
                                                                                 "source": str(source)}}  # fmt: skip
    config["trainer"]["logger"]["init_args"]["save_dir"] = str(tmp_path / "runs")
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    monkeypatch.chdir(tmp_path)
    small = [*SMALL, "--data.init_args.lengths.max={dna: 256, rna: 254, protein: 128}"]  # the tiny BERT: 256 positions
    printed = mmfuse_stdout("fit", "--config", str(path), *small, "--trainer.max_steps=2",
                            "--trainer.limit_val_batches=1", "--trainer.num_sanity_val_steps=0")  # fmt: skip
    (last,) = (tmp_path / "runs").glob("*/*/checkpoints/last.ckpt")
    assert "Test it with" in printed
    assert "Test metrics per target" in mmfuse_stdout("test", "--config", str(path), *small, "--ckpt_path", str(last))
    mmfuse_stdout("predict", "--config", str(path), *small, "--ckpt_path", str(last), "--predictions.output=p.csv")
    mmfuse_stdout("embed", "--config", str(path), *small, "--ckpt_path", str(last), "--embeddings.output=e.parquet",
            "--embeddings.modalities=[rna, protein]")  # fmt: skip
    predictions, embeddings = pd.read_csv(tmp_path / "p.csv"), pd.read_parquet(tmp_path / "e.parquet")
    assert predictions["transcript_id"].tolist() == embeddings["transcript_id"].tolist() and len(embeddings) == 31
    assert len(embeddings["protein"].dropna().iloc[0]) == 32 and embeddings["rna"].notna().all()
