from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch
from lightning.fabric.utilities.data import _replace_dunder_methods
from lightning.pytorch.overrides.distributed import _IndexBatchSamplerWrapper
from lightning.pytorch.trainer.states import RunningStage
from lightning.pytorch.utilities.data import _update_dataloader
from torch.utils.data import BatchSampler, DataLoader, Dataset, DistributedSampler, RandomSampler, SequentialSampler

from mmfuse.backbones import ESM2, Enformer, NucleotideTransformer
from mmfuse.data import IsoformExpression
from mmfuse.data.sampler import BucketBatchSampler, record_lengths
from mmfuse.errors import ConfigError


def _transcript_lengths(n: int, seed: int = 0) -> np.ndarray:
    """Lognormal transcript lengths, median 2 kb, clipped to 200 nt – 12 kb."""
    rng = np.random.default_rng(seed)
    return np.clip(rng.lognormal(np.log(2000), 0.9, n), 200, 12_000).astype(np.int64)


def _padding(batches: list[list[int]], lengths: np.ndarray) -> tuple[int, int]:
    """(padded slots, all slots) when each batch is padded to its own longest record."""
    slots = sum(int(lengths[b].max()) * len(b) for b in batches)
    return slots - sum(int(lengths[b].sum()) for b in batches), slots


def _assert_bucketed(batches: list[list[int]], stream: list[int], lengths: np.ndarray, pool: int) -> None:
    """Batches drawn from consecutive pools of ``stream``; within a pool, their length ranges don't overlap."""
    at = 0
    while at < len(batches):
        members = set(stream[len(sum(batches[:at], [])) :][:pool])
        group = []
        while at < len(batches) and set(batches[at]) <= members:
            group.append(batches[at])
            at += 1
        assert group and sum(len(b) for b in group) == len(members)
        spans = sorted((int(lengths[b].min()), int(lengths[b].max())) for b in group)
        assert all(hi <= lo_next for (_, hi), (lo_next, _) in zip(spans, spans[1:], strict=False)), spans


@pytest.mark.parametrize("shuffle", [True, False])
@pytest.mark.parametrize("drop_last", [False, True])
@pytest.mark.parametrize(("n", "pool_size"), [(1, 100), (37, 1), (64, 2), (103, 3), (500, 100)])
def test_each_index_once_and_len_matches(shuffle, drop_last, n, pool_size):
    lengths = _transcript_lengths(n)
    sampler = RandomSampler(range(n)) if shuffle else SequentialSampler(range(n))
    batch_sampler = BucketBatchSampler(sampler, 8, drop_last, lengths=lengths, pool_size=pool_size,
                                       shuffle_batches=shuffle)  # fmt: skip
    batches = list(batch_sampler)
    seen = [i for b in batches for i in b]
    assert len(batches) == len(batch_sampler) == (n // 8 if drop_last else -(-n // 8))
    assert len(seen) == len(set(seen)) == (n // 8 * 8 if drop_last else n)
    assert sum(len(b) < 8 for b in batches) == (0 if drop_last else int(n % 8 != 0))
    if not drop_last:
        assert sorted(seen) == list(range(n))
    elif not shuffle:  # dropped: the sampler's last n % 8, whatever their lengths
        assert sorted(seen) == list(range(n // 8 * 8))


def test_pools_are_sorted_into_batches_of_similar_length():
    lengths = _transcript_lengths(1000)
    stream = torch.randperm(1000).tolist()  # any iterable of indices with a length works as the sampler
    batches = list(BucketBatchSampler(stream, 8, lengths=lengths, pool_size=10))
    _assert_bucketed(batches, stream, lengths, pool=80)
    in_order = list(BucketBatchSampler(stream, 8, lengths=lengths, pool_size=10, shuffle_batches=False))
    assert sorted(map(tuple, in_order)) == sorted(map(tuple, batches))  # shuffling moves batches, not records
    first_pool = [i for b in in_order[:10] for i in b]
    assert [lengths[i] for i in first_pool] == sorted(lengths[stream[:80]], reverse=True)  # longest first
    ties = BucketBatchSampler([3, 0, 1, 2], 2, lengths=[1, 1, 1, 1], shuffle_batches=False)
    assert list(ties) == [[3, 0], [1, 2]]  # equal lengths keep the sampler's order (a stable sort)


def test_bucketing_cuts_padding_of_transcript_lengths():
    lengths = _transcript_lengths(5000)
    plain = list(BatchSampler(RandomSampler(range(5000)), 8, drop_last=False))
    bucketed = list(BucketBatchSampler(RandomSampler(range(5000)), 8, lengths=lengths, pool_size=100))
    pad_plain, slots_plain = _padding(plain, lengths)
    pad_bucketed, slots_bucketed = _padding(bucketed, lengths)
    assert pad_plain / slots_plain > 0.5  # random batches of lognormal lengths: most slots are padding
    assert pad_bucketed / slots_bucketed < 0.04
    assert slots_bucketed < 0.45 * slots_plain  # the tokens a model reads (and its memory) shrink as much
    small_pool = list(BucketBatchSampler(RandomSampler(range(5000)), 8, lengths=lengths, pool_size=10))
    assert pad_bucketed < _padding(small_pool, lengths)[0] < pad_plain  # larger pools pad less


def test_batch_order_is_reproducible_under_the_torch_seed():
    lengths = _transcript_lengths(300)

    def epoch(seed: int) -> list[list[int]]:
        torch.manual_seed(seed)
        return list(BucketBatchSampler(RandomSampler(range(300)), 8, lengths=lengths, pool_size=4))

    assert epoch(1) == epoch(1)
    assert epoch(1) != epoch(2)
    torch.manual_seed(1)
    sampler = BucketBatchSampler(RandomSampler(range(300)), 8, lengths=lengths, pool_size=4)
    assert list(sampler) != list(sampler)  # a new order every epoch


def test_record_lengths_sum_modalities_and_count_absent_as_zero():
    sequences = {"dna": ["ACGT", "AC", "A"], "rna": ["ACGU", None, ""], "protein": [None, "MKV", None]}
    np.testing.assert_array_equal(record_lengths(sequences), [8, 5, 1])
    assert record_lengths({}).shape == (0,)
    with pytest.raises(ValueError, match="different numbers of records"):
        record_lengths({"dna": ["A"], "rna": []})


def test_invalid_pool_size_is_refused():
    with pytest.raises(ConfigError, match="pool_size must be a positive whole number"):
        BucketBatchSampler(range(4), 2, lengths=[1, 2, 3, 4], pool_size=0)
    with pytest.raises(ConfigError, match="`loader.bucket_pool` must be a whole number of at least 1"):
        IsoformExpression("sample", loader={"bucketing": True, "bucket_pool": 0})


class _Indices(Dataset):
    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> int:
        return i


def _lightning_loader(dataset: Dataset, lengths: np.ndarray) -> DataLoader:
    """A loader built as Lightning builds one in a ``*_dataloader`` hook (`_request_dataloader`)."""
    with _replace_dunder_methods(DataLoader, "dataset"), _replace_dunder_methods(BatchSampler):
        sampler = BucketBatchSampler(RandomSampler(dataset), 4, lengths=lengths, pool_size=3)
        return DataLoader(dataset, batch_sampler=sampler, collate_fn=list)


def test_lightning_swaps_in_a_distributed_sampler_and_keeps_the_bucketing():
    n = 103  # odd: DistributedSampler pads the two ranks to 52 indices each by repeating one
    dataset, lengths = _Indices(n), _transcript_lengths(n)
    loader = _lightning_loader(dataset, lengths)
    seen = Counter()
    for rank in range(2):
        distributed = DistributedSampler(dataset, num_replicas=2, rank=rank, shuffle=True, seed=7)
        ddp_loader = _update_dataloader(loader, distributed)
        swapped = ddp_loader.batch_sampler
        assert type(swapped) is BucketBatchSampler and swapped.sampler is distributed
        options = (swapped.batch_size, swapped.pool_size, swapped.shuffle_batches, swapped.drop_last)
        assert options == (4, 3, True, False)
        np.testing.assert_array_equal(swapped.lengths, lengths)
        batches = list(ddp_loader)
        assert len(batches) == len(ddp_loader) == 13
        _assert_bucketed(batches, list(distributed), lengths, pool=12)
        seen.update(i for b in batches for i in b)
    assert set(seen) == set(range(n)) and sum(seen.values()) == 104
    assert sorted(seen.values()) == [1] * (n - 1) + [2]  # DistributedSampler's padding repeats one index


def test_outside_a_dataloader_hook_lightning_cannot_recreate_it_and_says_so():
    dataset = _Indices(20)
    sampler = BucketBatchSampler(RandomSampler(dataset), 4, lengths=_transcript_lengths(20))
    loader = DataLoader(dataset, batch_sampler=sampler, collate_fn=list)  # no saved init arguments
    with pytest.raises(TypeError, match="missing 1 required keyword-only argument: 'lengths'"):
        _update_dataloader(loader, DistributedSampler(dataset, num_replicas=2, rank=0))


def test_lightning_wraps_it_for_prediction_without_losing_records():
    n = 30
    dataset, lengths = _Indices(n), _transcript_lengths(n)
    loader = _lightning_loader(dataset, lengths)
    predicting = _update_dataloader(loader, SequentialSampler(dataset), mode=RunningStage.PREDICTING)
    assert isinstance(predicting.batch_sampler, _IndexBatchSamplerWrapper)
    batches = list(predicting)
    assert sorted(i for b in batches for i in b) == list(range(n))
    assert predicting.batch_sampler.seen_batch_indices == batches  # what Lightning writes predictions by


@pytest.fixture(scope="module")
def tokenizers():
    return {"dna": Enformer("tiny").tokenizer, "rna": NucleotideTransformer("tiny").tokenizer,
            "protein": ESM2("tiny").tokenizer}  # fmt: skip


def _padded_tokens(batches: list[dict], modalities: tuple[str, ...] = ("dna", "rna", "protein")) -> int:
    return sum(int((~b["inputs"][m]["attention_mask"]).sum()) for b in batches for m in modalities if m in b["inputs"])


def test_data_module_buckets_its_batches(tokenizers):
    dms = {}
    for bucketing in (False, True):
        dms[bucketing] = IsoformExpression("sample", loader={"bucketing": bucketing, "batch_size": 8})
        dms[bucketing].attach_tokenizers(tokenizers)
    train = dms[True].train_dataloader()
    assert isinstance(train.batch_sampler, BucketBatchSampler)
    assert isinstance(train.batch_sampler.sampler, RandomSampler)
    batches = list(train)
    ids = [rid for b in batches for rid in b["ids"]]
    assert sorted(ids) == sorted(dms[True].split_ids("train"))
    plain = list(dms[False].train_dataloader())
    assert len(batches) == len(plain) == len(train)
    # the sample's lengths vary little (RNA 0.6-1.5 kb, DNA fixed) and proteins pad by their own lengths, so the
    # gain is smaller than on real transcripts (measured: about 0.3x the RNA padding, 0.45x over all modalities)
    assert _padded_tokens(batches, ("rna",)) < 0.4 * _padded_tokens(plain, ("rna",))
    assert _padded_tokens(batches) < 0.6 * _padded_tokens(plain)
    # evaluation: every record once, longest first (one pool): lengths line up with the concatenated splits
    predict = list(dms[True].predict_dataloader())
    records = dms[True]._splits
    length = {rid: n for r in records.values() for rid, n in zip(r.ids, record_lengths(r.sequences), strict=True)}
    order = [length[rid] for b in predict for rid in b["ids"]]
    assert sorted(length) == sorted(rid for b in predict for rid in b["ids"])
    assert order == sorted(order, reverse=True)
