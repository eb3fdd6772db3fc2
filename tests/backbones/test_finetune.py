"""LoRA, partial freezing and gradient checkpointing, for every registered backbone."""

from __future__ import annotations

import copy
import dataclasses
import inspect

import pytest
import torch
from torch import nn

from mmfuse.backbones import Backbone
from mmfuse.backbones.finetune import FineTuning, LoraOptions, lora_parameters
from mmfuse.errors import ConfigError
from mmfuse.registry import BACKBONES


@pytest.fixture
def make_backbone(tiny_bert_dir):
    def build(name: str, **options) -> Backbone:
        """A tiny ``name`` with the fine-tuning ``options`` (fields of :class:`FineTuning`)."""
        finetune = FineTuning(**options) if options else None
        if name == "HuggingFaceEncoder":  # no presets: a tiny random BERT in a temporary directory
            return BACKBONES.get(name)(source=str(tiny_bert_dir), finetune=finetune)
        return BACKBONES.get(name)(preset="tiny", finetune=finetune)

    return build


def _layered() -> list[str]:
    """Registered backbones that list their layers (a lookup table, ContextEmbedding, has none to adapt)."""
    return [n for n in BACKBONES.names() if BACKBONES.get(n).blocks is not Backbone.blocks]


def _takes(option: str) -> list[str]:
    """Registered backbones the layer-wise fine-tuning ``option`` applies to; every backbone takes ``finetune``."""
    assert option in {f.name for f in dataclasses.fields(FineTuning)}
    assert all("finetune" in inspect.signature(BACKBONES.get(n)).parameters for n in BACKBONES.names())
    return _layered()


def _loss(backbone: Backbone, sequences) -> torch.Tensor:
    out = backbone(backbone.tokenizer(sequences[backbone.modality]))
    return (out.embeddings * out.mask[..., None]).square().mean()


def _step(backbone: Backbone, sequences) -> dict[str, torch.Tensor]:
    """One SGD step; returns the weights before it."""
    before = {n: p.detach().clone() for n, p in backbone.named_parameters()}
    optimizer = torch.optim.SGD([p for p in backbone.parameters() if p.requires_grad], lr=0.1)
    _loss(backbone, sequences).backward()
    optimizer.step()
    return before


@pytest.mark.parametrize("name", _takes("lora"))
def test_lora_trains_only_lora_weights_as_many_as_peft_counts(name, make_backbone, sequences):
    from peft import LoraConfig, get_peft_model

    backbone = make_backbone(name, lora=LoraOptions(r=2, alpha=4, dropout=0.0))
    trainable = [n for n, p in backbone.named_parameters() if p.requires_grad]
    assert trainable and trainable == lora_parameters(backbone)
    reference = get_peft_model(
        make_backbone(name), LoraConfig(r=2, lora_alpha=4, target_modules=list(backbone.lora_targets))
    )
    assert (
        sum(p.numel() for p in backbone.parameters() if p.requires_grad) == (reference.get_nb_trainable_parameters()[0])
    )
    before = _step(backbone, sequences)
    changed = {n for n, p in backbone.named_parameters() if not torch.equal(p, before[n])}
    assert changed and changed <= set(trainable), sorted(changed - set(trainable))[:3]
    for module in backbone.modules():  # BatchNorm layers with fixed weights keep their statistics
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            assert not module.training


@pytest.mark.parametrize("name", _takes("train_last_layers"))
def test_train_last_layer_changes_only_the_last_layer_and_what_follows(name, make_backbone, sequences):
    backbone = make_backbone(name, train_last_layers=1)
    blocks = backbone.blocks()
    assert blocks, f"{name} must list its layers in blocks()"
    last = {id(p) for p in blocks[-1].parameters()}
    earlier = {id(p) for b in blocks[:-1] for p in b.parameters()}
    trainable = {id(p) for p in backbone.parameters() if p.requires_grad}
    assert last <= trainable and not earlier & trainable
    before = _step(backbone, sequences)
    for n, p in backbone.named_parameters():
        if not p.requires_grad:
            assert torch.equal(p, before[n]), f"{n} is fixed but changed"
    with pytest.raises(ConfigError, match="train_last_layers must be between 0 and"):
        make_backbone(name, train_last_layers=len(blocks) + 1)


@pytest.mark.parametrize("name", _takes("gradient_checkpointing"))
def test_gradient_checkpointing_gives_the_same_outputs_and_gradients(name, make_backbone, sequences, monkeypatch):
    import mmfuse.backbones.finetune as finetune

    calls = []
    original = finetune.checkpoint
    monkeypatch.setattr(finetune, "checkpoint", lambda *a, **k: calls.append(1) or original(*a, **k))
    plain = make_backbone(name).eval()  # eval: no dropout, so both runs see the same function
    checkpointed = make_backbone(name, gradient_checkpointing=True).eval()
    checkpointed.load_state_dict(plain.state_dict())
    losses = [_loss(b, sequences) for b in (plain, checkpointed)]
    torch.testing.assert_close(losses[0], losses[1])
    assert len(calls) == len(checkpointed.blocks()), "every layer is checkpointed"
    for loss in losses:
        loss.backward()
    for (n, p), (_, q) in zip(plain.named_parameters(), checkpointed.named_parameters(), strict=True):
        if p.grad is not None:
            torch.testing.assert_close(q.grad, p.grad, msg=n)


def test_fine_tuning_options_exclude_each_other(make_backbone):
    name = "ESM2"
    with pytest.raises(ConfigError, match="choose one of freeze, train_last_layers and lora"):
        make_backbone(name, freeze=True, lora=LoraOptions())
    with pytest.raises(ConfigError, match=r"LoRA targets \['qkv'\] match no module of ESM2"):
        make_backbone(name, lora=LoraOptions(targets=["qkv"]))
    frozen_by_count = make_backbone(name, train_last_layers=0)
    assert frozen_by_count.frozen, "training no layer is freezing"
    assert copy.deepcopy(make_backbone(name, lora=LoraOptions(r=1))) is not None


@pytest.mark.parametrize(
    "options",
    [
        dict(freeze=True, lora=LoraOptions()),
        dict(freeze=True, train_last_layers=1),
        dict(train_last_layers=1, lora=LoraOptions()),
    ],
)
def test_fine_tuning_group_refuses_two_ways_of_choosing_what_trains(options):
    with pytest.raises(ConfigError, match=r"choose one of freeze, train_last_layers and lora for a backbone \(given: "):
        FineTuning(**options)
    assert FineTuning(**dict(list(options.items())[:1]), gradient_checkpointing=True).gradient_checkpointing


@pytest.mark.parametrize("name", [n for n in BACKBONES.names() if n not in _layered()])
@pytest.mark.parametrize("option", ["train_last_layers", "gradient_checkpointing"])
def test_layer_wise_options_are_refused_by_backbones_without_layers(name, option, make_backbone):
    kwargs = {"categories": ["HepG2", "K562"]} if name == "ContextEmbedding" else {"preset": "tiny"}
    finetune = FineTuning(**{option: 1 if option == "train_last_layers" else True})
    with pytest.raises(ConfigError, match=f"{option} needs them"):
        BACKBONES.get(name)(**kwargs, finetune=finetune)
