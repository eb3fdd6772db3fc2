"""The embedding cache of frozen backbones: the store on disk, its invalidation, and training with it."""

from __future__ import annotations

import pickle

import lightning as L
import numpy as np
import pytest
import torch

from mmfuse.adapters import ConcatFusion
from mmfuse.backbones import ESM2, Enformer, FineTuning, NucleotideTransformer
from mmfuse.cache import CachedBackbone, CacheOptions, EmbeddingStore, KeyTokenizer, cache_backbones, cached_backbones
from mmfuse.data import IsoformExpression
from mmfuse.data.collate import MultiModalCollate, sequence_key
from mmfuse.errors import ConfigError
from mmfuse.training import RegressionTask
from mmfuse.training.heads import MLPHead


def _key(i: int) -> bytes:
    return bytes.fromhex(sequence_key(f"SEQ{i}"))


# store ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("precision", ["float32", "float16", "bfloat16"])
def test_store_round_trip_keeps_values_in_its_precision(tmp_path, precision):
    store = EmbeddingStore(tmp_path, dim=3, precision=precision)
    values = [torch.randn(n, 3) for n in (1, 4, 2)]
    store.put([(_key(i), v) for i, v in enumerate(values)])
    reopened = EmbeddingStore(tmp_path, dim=3, precision=precision)  # a later run
    dtype = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}[precision]
    for i, v in enumerate(values):
        got = reopened.get(_key(i))
        assert got.dtype == dtype and got.shape == v.shape
        assert torch.equal(got, v.to(dtype))
    assert len(reopened) == 3 and _key(7) not in reopened
    assert store.disk_bytes() == 7 * 3 * torch.finfo(dtype).bits // 8


def test_stores_of_two_processes_share_their_shards(tmp_path):
    rank0 = EmbeddingStore(tmp_path, dim=2, precision="float32", shard="rank0")
    rank1 = EmbeddingStore(tmp_path, dim=2, precision="float32", shard="rank1")
    rank0.put([(_key(0), torch.ones(2, 2))])
    rank1.put([(_key(1), torch.full((3, 2), 2.0))])
    rank0.put([(_key(2), torch.full((1, 2), 3.0))])  # the memory map grows
    assert _key(1) not in rank0
    assert rank0.refresh() == 1 and rank1.refresh() == 2  # e.g. at the start of the next epoch
    for store in (rank0, rank1):
        assert torch.equal(store.get(_key(1)), torch.full((3, 2), 2.0))
        assert torch.equal(store.get(_key(2)), torch.full((1, 2), 3.0))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rank0.bin", "rank0.idx", "rank1.bin", "rank1.idx"]


def test_a_write_that_died_half_way_is_never_read_and_does_not_misalign_later_ones(tmp_path):
    store = EmbeddingStore(tmp_path, dim=4, precision="float32")
    store.put([(_key(0), torch.arange(8.0).reshape(2, 4))])
    with open(tmp_path / "rank0.bin", "ab") as f:  # a crash in the middle of the next write
        f.write(b"\1" * 7)
    with open(tmp_path / "rank0.idx", "ab") as f:
        f.write(b"\2" * 5)
    reader = EmbeddingStore(tmp_path, dim=4, precision="float32")
    assert len(reader) == 1  # the torn index record is not read
    store.put([(_key(1), torch.full((1, 4), 9.0))])
    fresh = EmbeddingStore(tmp_path, dim=4, precision="float32")
    assert torch.equal(fresh.get(_key(0)), torch.arange(8.0).reshape(2, 4))
    assert torch.equal(fresh.get(_key(1)), torch.full((1, 4), 9.0))
    assert (tmp_path / "rank0.idx").stat().st_size == 2 * 32


def test_a_cached_modality_is_batched_as_keys_and_sequences_not_tokens():
    protein, rna = ESM2("tiny").tokenizer, NucleotideTransformer("tiny", modality="rna").tokenizer
    keys = KeyTokenizer(protein)
    collate = MultiModalCollate({"protein": keys, "rna": rna})
    records = [{"id": "a", "sequences": {"protein": "MKV", "rna": "ACGU"}},
               {"id": "b", "sequences": {"protein": None, "rna": "ACG"}}]  # fmt: skip
    batch = collate(records)
    # the record without protein holds the batch's stand-in, marked absent
    assert batch["inputs"]["protein"] == {"keys": [sequence_key("MKV")] * 2, "sequences": ["MKV", "MKV"]}
    assert batch["present"]["protein"].tolist() == [True, False]
    assert set(batch["inputs"]["rna"]) == {"input_ids", "attention_mask"}
    # the data module checks sequences with what the wrapped tokenizer offers, in workers too
    assert repr(keys) == repr(protein) and keys.max_tokens == protein.max_tokens
    assert pickle.loads(pickle.dumps(keys))(["MV"]) == {"keys": [sequence_key("MV")], "sequences": ["MV"]}


# options and invalidation ------------------------------------------------------------------------------
def _backbones(freeze: bool = False):
    torch.manual_seed(0)
    return {"rna": NucleotideTransformer("tiny", modality="rna", finetune=FineTuning(freeze=True)),
            "protein": ESM2("tiny", finetune=FineTuning(freeze=freeze))}  # fmt: skip


def _cached(options: CacheOptions, freeze: bool = True) -> dict:
    return cache_backbones(_backbones(freeze), options)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"modalities": ["protein"]}, r"the \['protein'\] backbone\(s\) train.*\(`finetune: \{freeze: true\}`\)"),
        ({"modalities": ["dna"]}, r"names \['dna'\], which have no backbone"),
        ({"pool": {"protein": "mean"}}, r"embedding_cache.pool names \['protein'\], which are not cached"),
        ({"pool": {"rna": "median"}}, "must map modalities to one of"),
        ({"center_tokens": {"rna": 0}}, "positive whole numbers"),
        ({"precision": "float8"}, "precision must be one of"),
    ],
)
def test_bad_options_are_refused_naming_the_option(options, message):
    with pytest.raises(ConfigError, match=message):
        cache_backbones(_backbones(), CacheOptions(**options))


def test_no_frozen_backbone_is_refused():
    with pytest.raises(ConfigError, match="no backbone is frozen"):
        cache_backbones({"protein": ESM2("tiny")}, CacheOptions())


def test_default_modalities_are_the_frozen_backbones():
    def cached(backbones):
        return [m for m, b in backbones.items() if isinstance(b, CachedBackbone)]

    assert cached(_cached(CacheOptions(), freeze=False)) == ["rna"]
    assert cached(_cached(CacheOptions())) == ["rna", "protein"]


def test_the_fingerprint_follows_weights_options_and_compute_precision():
    a = _cached(CacheOptions())["protein"].fingerprint()
    assert a == _cached(CacheOptions())["protein"].fingerprint()  # same seed, same weights
    changed = _cached(CacheOptions())["protein"]
    with torch.no_grad():
        next(changed.parameters()).add_(1e-3)
    assert changed.fingerprint()["weights"] != a["weights"]
    mixed = _cached(CacheOptions())["protein"]
    mixed.precision = "bf16-mixed"  # the trainer's, set by the cache's callback
    assert mixed.fingerprint() != a and mixed.fingerprint()["compute_precision"] == "bf16-mixed"
    assert _cached(CacheOptions(pool={"protein": "mean"}))["protein"].fingerprint()["pool"] == "mean"


def test_embed_computes_misses_once_and_reads_hits(tmp_path, monkeypatch):
    cached = _cached(CacheOptions(directory=str(tmp_path)))["protein"]
    protein = cached.backbone
    sequences = ["MKTAYIAKQR", "MVLS", "MKTAYIAKQR"]  # the same protein twice (two isoforms)
    inputs = protein.tokenizer(sequences)
    keys = [sequence_key(s) for s in sequences]
    calls = []
    encode = protein.encode
    monkeypatch.setattr(protein, "encode", lambda batch: calls.append(len(batch["input_ids"])) or encode(batch))
    out = cached(cached.tokenizer(sequences))
    emb, mask = out.embeddings, out.mask
    assert calls == [2]  # two distinct sequences computed
    direct = encode(inputs)
    for i in range(3):
        n = int(direct.mask[i].sum())
        assert int(mask[i].sum()) == n
        torch.testing.assert_close(emb[i, :n], direct.embeddings[i][direct.mask[i]], rtol=1e-5, atol=1e-6)
    again = cached({"keys": [keys[1], None, keys[0]], "sequences": [sequences[1], None, sequences[0]]})
    assert calls == [2]  # nothing recomputed
    assert not again.mask[1].any() and torch.equal(again.embeddings[0], emb[1, : again.embeddings.shape[1]])
    assert cached.computed == 2 and cached.read == 2
    assert cached.summary().startswith("protein: 2 computed, 2 read, 0.0 MiB in ")


def test_pooling_and_central_tokens_bound_what_is_stored(tmp_path):
    options = CacheOptions(directory=str(tmp_path), pool={"protein": "mean"}, center_tokens={"rna": 2})
    cached = _cached(options)
    protein, rna = cached["protein"].backbone, cached["rna"].backbone
    inputs = protein.tokenizer(["MKTAYIAKQR", "MVLS"])
    out = cached["protein"](cached["protein"].tokenizer(["MKTAYIAKQR", "MVLS"]))
    emb, mask = out.embeddings, out.mask
    direct = protein.encode(inputs)
    assert emb.shape == (2, 1, protein.embed_dim) and mask.all()
    torch.testing.assert_close(emb[1, 0], direct.embeddings[1][direct.mask[1]].mean(0), rtol=1e-5, atol=1e-6)
    rna_inputs = rna.tokenizer(["ACGUACGUACGUACGUACGU"])
    emb = cached["rna"]({"keys": [sequence_key("x")], "sequences": ["ACGUACGUACGUACGUACGU"]}).embeddings
    tokens = rna.encode(rna_inputs)
    kept = tokens.embeddings[0][tokens.mask[0]]
    start = (len(kept) - 2) // 2
    assert emb.shape == (1, 2, rna.embed_dim)
    torch.testing.assert_close(emb[0], kept[start : start + 2], rtol=1e-5, atol=1e-6)



@pytest.mark.parametrize("precision", ["float32", "bfloat16"])
def test_without_a_directory_each_batch_is_shaped_as_a_store_gives_it(tmp_path, precision):
    """``directory: null`` (an exported model's view of its training cache): nothing written, and the embeddings
    equal the stored ones (pooled, cropped, rounded)."""
    shape = {"pool": {"protein": "mean"}, "center_tokens": {"rna": 2}, "precision": precision}
    stored, computed = _cached(CacheOptions(directory=str(tmp_path / "c"), **shape)), _cached(
        CacheOptions(directory=None, **shape))
    for modality, sequences in (("protein", ["MKTAYIAKQR", "MVLS", "MKTAYIAKQR"]), ("rna", ["ACGUACGUACGUAC", None])):
        keys = [sequence_key(s) if s is not None else None for s in sequences]
        batch = {"keys": keys, "sequences": [s or "A" for s in sequences]}
        computed[modality].backbone.load_state_dict(stored[modality].backbone.state_dict())
        a, b = stored[modality](batch), computed[modality](batch)
        assert torch.equal(a.mask, b.mask) and torch.equal(a.embeddings, b.embeddings)
        assert computed[modality].precompute(sequences, batch_size=2) == 0
        assert "not stored" in computed[modality].summary()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c"]


# training --------------------------------------------------------------------------------------------
def _fit(tmp_path, cache_dir, epochs=3, workers=0, monkeypatch=None):
    L.seed_everything(0)
    backbones = {
        "dna": Enformer("tiny", finetune=FineTuning(freeze=True)),
        "rna": NucleotideTransformer("tiny", modality="rna", finetune=FineTuning(freeze=True)),
        "protein": ESM2("tiny", finetune=FineTuning(freeze=True)),
    }
    dm = IsoformExpression("sample", loader={"batch_size": 16, "num_workers": workers}, sample={"size": 40})
    dm.setup("fit")
    options = CacheOptions(directory=str(cache_dir)) if cache_dir is not None else None
    task = RegressionTask(backbones, adapter=lambda dims: ConcatFusion(dims, hidden_dim=32),
                          head=lambda i, o: MLPHead(i, o, hidden_dims=[32], dropout=0.1),
                          target_names=dm.target_names, embedding_cache=options)  # fmt: skip
    calls = {"n": 0}
    for backbone in backbones.values():
        encode = backbone.encode

        def counted(batch, encode=encode):
            calls["n"] += 1
            return encode(batch)

        backbone.encode = counted
    losses, per_epoch = [], []

    class Record(L.Callback):
        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
            losses.append(outputs["loss"].item())

        def on_train_epoch_end(self, trainer, module):  # after the epoch's validation
            per_epoch.append(calls["n"] - sum(per_epoch))

    trainer = L.Trainer(max_epochs=epochs, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                        callbacks=[Record()], default_root_dir=tmp_path)  # fmt: skip
    trainer.fit(task, dm)
    return losses, per_epoch, task


def test_training_with_the_cache_follows_the_same_loss_curve_and_skips_the_backbones(tmp_path):
    plain, plain_calls, _ = _fit(tmp_path, None)
    cached, cached_calls, task = _fit(tmp_path, tmp_path / "cache")
    np.testing.assert_allclose(cached, plain, rtol=1e-4, atol=1e-5)
    assert plain_calls[0] == plain_calls[1] == plain_calls[2] > 0  # every batch, every epoch
    # the first epoch computes each distinct sequence once (batches of isoforms sharing one protein
    # or DNA window may need no call), later epochs none
    assert 0 < cached_calls[0] <= plain_calls[0] and cached_calls[1:] == [0, 0]
    computed = {c.modality: c.computed for c in cached_backbones(task)}
    assert 0 < computed["protein"] <= computed["rna"]  # isoforms of a gene often share their protein
    assert {c.modality: c.read for c in cached_backbones(task)}["rna"] >= 2 * computed["rna"]
    # a second run with the same backbones reads everything
    again, again_calls, _ = _fit(tmp_path, tmp_path / "cache", epochs=1)
    assert again_calls == [0]
    np.testing.assert_allclose(again, plain[: len(again)], rtol=1e-4, atol=1e-5)


def test_the_cache_works_with_dataloader_workers(tmp_path):
    losses, calls, task = _fit(tmp_path, tmp_path / "cache", epochs=2, workers=2)
    assert np.isfinite(losses).all() and calls[0] > 0 and calls[1] == 0
    assert {c.modality: c.read for c in cached_backbones(task)}["protein"] > 0


def test_keys_ending_in_zero_bytes_are_kept_whole(tmp_path):
    key = bytes(range(1, 15)) + b"\0\0"
    EmbeddingStore(tmp_path, dim=1, precision="float32").put([(key, torch.ones(1, 1))])
    assert key in EmbeddingStore(tmp_path, dim=1, precision="float32")


def test_a_batch_without_cached_sequences_runs_the_backbone_and_warns_once(tmp_path):
    backbones = _backbones(freeze=True)
    task = RegressionTask(dict(backbones), target_names=["t"], embedding_cache=CacheOptions(directory=str(tmp_path)))
    inputs = {m: b.tokenizer(["ACGU" if m == "rna" else "MKV"]) for m, b in backbones.items()}
    with pytest.warns(UserWarning, match="holds rna tokens instead of sequences and keys"):
        out = task(inputs)
    assert out.shape == (1, 1) and not list(tmp_path.iterdir())  # nothing cached


def test_a_cached_modality_no_sample_has_comes_back_fully_masked(tmp_path):
    rna = _cached(CacheOptions(directory=str(tmp_path)))["rna"]
    out = rna({"keys": [None, None], "sequences": [None, None]})
    assert out.embeddings.shape == (2, 1, rna.embed_dim) and not out.mask.any() and not out.embeddings.any()


def test_a_cached_backbone_keeps_the_state_dict_keys_of_the_backbone_it_wraps(tmp_path):
    plain = _backbones(freeze=True)["protein"]
    cached = CachedBackbone(_backbones(freeze=True)["protein"], CacheOptions(directory=str(tmp_path)))
    assert list(cached.state_dict()) == list(plain.state_dict())
    assert cached.fixed_state_keys() == plain.fixed_state_keys()
    with torch.no_grad():
        next(plain.parameters()).add_(1.0)
    cached.load_state_dict(plain.state_dict())  # a checkpoint of an uncached run loads, strictly
    assert torch.equal(next(cached.backbone.parameters()), next(plain.parameters()))


def test_a_truncated_data_file_is_detected_not_read_as_other_embeddings(tmp_path):
    store = EmbeddingStore(tmp_path, dim=4, precision="float32")
    store.put([(_key(0), torch.ones(2, 4)), (_key(1), torch.full((3, 4), 2.0))])
    with open(tmp_path / "rank0.bin", "r+b") as f:  # the index survives, the data file loses its end
        f.truncate(3 * 4 * 4)
    reader = EmbeddingStore(tmp_path, dim=4, precision="float32")
    assert torch.equal(reader.get(_key(0)), torch.ones(2, 4))  # rows still on disk read as before
    past_the_end = r"rank0.idx points at rows 2–4, past the end of rank0.bin \(3 rows\).*Delete"
    with pytest.raises(ConfigError, match=past_the_end):
        reader.get(_key(1))
