"""compile_backbones: torch.compile of backbones gives the eager outputs and trains."""

from __future__ import annotations

import pytest
import torch

from mmfuse.backbones import ESM2, NucleotideTransformer
from mmfuse.errors import ConfigError
from mmfuse.training import RegressionTask


def _task(**kwargs):
    torch.manual_seed(0)
    backbones = {"rna": NucleotideTransformer("tiny", modality="rna"), "protein": ESM2("tiny")}
    return RegressionTask(backbones, target_names=["a", "b"], **kwargs)


@pytest.mark.slow  # inductor compiles C++ kernels: 20 s to over a minute on two cores
def test_compiled_backbones_match_eager_and_keep_their_state_dict_keys():
    eager, compiled = _task(), _task(compile_backbones=["protein"])
    assert compiled.model.backbones["protein"]._compiled_call_impl is not None
    assert compiled.model.backbones["rna"]._compiled_call_impl is None
    assert list(compiled.state_dict()) == list(eager.state_dict())
    compiled.load_state_dict(eager.state_dict())
    eager.eval(), compiled.eval()
    sequences = {"rna": ["ACGUACGUAC", "ACG"], "protein": ["MKTAYIAKQR", "MVLS"]}
    inputs = {m: b.tokenizer(sequences[m]) for m, b in eager.model.backbones.items()}
    with torch.no_grad():
        torch.testing.assert_close(compiled(inputs), eager(inputs), rtol=1e-5, atol=1e-5)
    compiled.train()
    loss = compiled.model.fuse(inputs).pow(2).mean()
    loss.backward()
    assert compiled.model.backbones["protein"].model.embeddings.word_embeddings.weight.grad is not None


def test_unknown_modality_is_refused():
    with pytest.raises(ConfigError, match=r"compile_backbones names \['dna'\]"):
        _task(compile_backbones=["dna"])
