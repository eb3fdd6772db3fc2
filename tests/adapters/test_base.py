"""The adapter base class: input checks, masking, modality dropout."""

from __future__ import annotations

import pytest
import torch

from mmfuse.adapters import ConcatFusion, drop_modalities, presence


def _features(batch=6):
    return {
        "dna": (torch.randn(batch, 5, 4), torch.ones(batch, 5, dtype=torch.bool)),
        "rna": (torch.randn(batch, 3, 2), torch.ones(batch, 3, dtype=torch.bool)),
        "protein": (torch.randn(batch, 2, 3), torch.ones(batch, 2, dtype=torch.bool)),
    }


def test_inputs_are_checked_against_the_built_widths():
    fuse = ConcatFusion({"dna": 4, "rna": 2}, hidden_dim=3)
    f = _features()
    with pytest.raises(KeyError, match=r"built for \['dna', 'rna'\] but got no features for \['rna'\]"):
        fuse({"dna": f["dna"]})
    with pytest.raises(
        ValueError, match=r"rna embeddings have shape \(6, 3, 5\); ConcatFusion expects \(batch, length, 2\)"
    ):
        fuse({"dna": f["dna"], "rna": (torch.randn(6, 3, 5), f["rna"][1])})
    with pytest.raises(ValueError, match="batch sizes differ between modalities"):
        fuse({"dna": f["dna"], "rna": (torch.randn(2, 3, 2), torch.ones(2, 3, dtype=torch.bool))})
    with pytest.raises(ValueError, match=r"dna mask has shape \(6, 4\)"):
        fuse({"dna": (f["dna"][0], torch.ones(6, 4, dtype=torch.bool)), "rna": f["rna"]})


def test_concat_projects_pools_and_concatenates_in_sorted_order():
    fuse = ConcatFusion({"rna": 2, "dna": 4}, hidden_dim=3, layer_norm=False)
    f = _features()
    out = fuse(f)
    expected = torch.cat([fuse.projections[m](f[m][0]).mean(1) for m in ("dna", "rna")], dim=-1)
    torch.testing.assert_close(out, expected)


def test_modality_dropout_keeps_one_present_modality_per_sample():
    f = _features(batch=2000)
    f["protein"][1][:1000] = False  # half the samples have no protein
    generator = torch.Generator().manual_seed(0)
    dropped = presence(drop_modalities(f, p=0.5, generator=generator))
    before = presence(f)
    counts = torch.stack(list(dropped.values()), 1).sum(1)
    assert counts.min() >= 1
    assert not (dropped["protein"] & ~before["protein"]).any()  # nothing absent becomes present
    rate = 1 - dropped["dna"].float().mean().item()
    assert 0.3 < rate < 0.5, rate  # about p, less the samples that keep it as their last modality
    everything = presence(drop_modalities(f, p=1.0, generator=generator))
    assert (torch.stack(list(everything.values()), 1).sum(1) == 1).all()
    assert drop_modalities(f, p=0.0) == f


def test_modality_dropout_never_reads_values_back_to_the_host():
    """Meta tensors hold no values: any ``if tensor.any()`` (a host-device synchronisation at every
    training step on a GPU) would raise here."""
    f = {m: (torch.empty(4, 3, 2, device="meta"), torch.ones(4, 3, dtype=torch.bool, device="meta"))
         for m in ("dna", "rna")}  # fmt: skip
    dropped = drop_modalities(f, p=0.5)
    assert all(mask.device.type == "meta" for _, mask in dropped.values())
