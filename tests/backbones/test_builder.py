"""The one builder (preset, source, revision, pretrained or random) and the fine-tuning group, for every backbone."""

from __future__ import annotations

import dataclasses
import inspect
import json
from pathlib import Path

import pytest
import torch

from mmfuse.backbones import FineTuning, LoraOptions, Preset, PretrainedBackbone, plan_weights
from mmfuse.backbones._dna_trunk import DnaTrunkBackbone
from mmfuse.backbones._weights import save_config_and_weights
from mmfuse.errors import ConfigError
from mmfuse.registry import BACKBONES

#: the options the fine-tuning group replaced: no backbone takes them flat any more
_FLAT = {f.name for f in dataclasses.fields(FineTuning)}
#: registered backbones built by the builder (named presets, weights from a source)
BUILT = [n for n in BACKBONES.names() if issubclass(BACKBONES.get(n), PretrainedBackbone)]
#: of those, the ones that read a source (a plugin without weights, such as CharCNN, takes none)
WITH_SOURCE = [n for n in BUILT if "source" in inspect.signature(BACKBONES.get(n)).parameters]


@pytest.mark.parametrize("name", BACKBONES.names())
def test_every_backbone_takes_one_typed_fine_tuning_group_and_no_kwargs(name):
    parameters = inspect.signature(BACKBONES.get(name)).parameters
    assert "finetune" in parameters and parameters["finetune"].default is None
    assert not _FLAT & set(parameters), f"{name} still takes {sorted(_FLAT & set(parameters))} flat"
    kinds = {p.kind for p in parameters.values()}
    assert inspect.Parameter.VAR_KEYWORD not in kinds and inspect.Parameter.VAR_POSITIONAL not in kinds


@pytest.mark.parametrize("name", BUILT)
def test_presets_are_keyed_by_their_names_and_the_default_exists(name):
    cls = BACKBONES.get(name)
    assert cls.presets and all(key == p.name for key, p in cls.presets.items())
    assert cls.default_preset in cls.presets and "tiny" in cls.presets
    assert inspect.signature(cls).parameters["preset"].default in (None, "tiny")


@pytest.mark.parametrize("name", BUILT)
def test_unknown_preset_lists_the_known_ones_and_the_closest(name):
    cls = BACKBONES.get(name)
    with pytest.raises(ConfigError) as error:
        cls(preset="tinyy")
    message = str(error.value)
    assert message.startswith(f"Unknown {name} preset 'tinyy'. Known presets: {', '.join(sorted(cls.presets))}.")
    assert "Did you mean 'tiny'?" in message and "set `source` to a hub id or a local directory" in message


def _save(name: str, directory: Path) -> dict[str, torch.Tensor]:
    """Writes a tiny random checkpoint of ``name``'s architecture, as its hub checkpoints are laid out."""
    torch.manual_seed(0)
    builder = BACKBONES.get(name)(preset="tiny")
    model = builder._from_config(builder.preset.config)  # the library's model, before mmfuse trims it
    if isinstance(builder, DnaTrunkBackbone):  # config.json + state dict (transformers 5 cannot save them)
        save_config_and_weights(model, directory)
    else:
        model.save_pretrained(directory)
    if name == "Geneformer":  # the dictionaries lie beside the weights
        tokens, medians = ({"<pad>": 0, "<mask>": 1, "<cls>": 2, "<eos>": 3, "G0001": 4, "G0002": 5},
                           {"G0001": 1.0, "G0002": 2.0})  # fmt: skip
        (directory / "token_dictionary.json").write_text(json.dumps(tokens))
        (directory / "gene_median_dictionary.json").write_text(json.dumps(medians))
    return {k: v.clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("name", WITH_SOURCE)
def test_source_loads_its_weights_or_without_pretrained_its_config_at_random(name, tmp_path):
    cls = BACKBONES.get(name)
    saved = _save(name, tmp_path)
    tiny_width = cls(preset="tiny").embed_dim
    # the default preset is a large architecture: the source's config, not the preset's, is what is built
    torch.manual_seed(1)
    random = cls(preset=cls.default_preset, source=str(tmp_path), pretrained=False)
    assert random.embed_dim == tiny_width and random.preset.name == cls.default_preset
    assert random.weights_source is None and random.fixed_state_keys() == set()
    assert all(v.shape == saved[k].shape for k, v in random.model.state_dict().items())
    assert any(not torch.equal(v, saved[k]) for k, v in random.model.state_dict().items() if v.is_floating_point())

    loaded = cls(preset="tiny", source=str(tmp_path), finetune=FineTuning(freeze=True))
    assert loaded.weights_source == str(tmp_path)
    for key, value in loaded.model.state_dict().items():
        assert torch.equal(value, saved[key]), key
    assert loaded.fixed_state_keys(), "a frozen loaded backbone's weights come back from its source"


@pytest.mark.parametrize("name", BUILT)
def test_preset_without_weights_is_built_at_random_whatever_pretrained_says(name):
    cls = BACKBONES.get(name)
    torch.manual_seed(0)
    a = cls(preset="tiny")
    torch.manual_seed(0)
    b = cls(preset="tiny", **({"pretrained": False} if "pretrained" in inspect.signature(cls).parameters else {}))
    assert a.weights_source is None and a.preset is cls.presets["tiny"]
    for (key, x), y in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(x, y), key


_HUB = Preset(name="hub", source="org/model", revision="abc123", embed_dim=8)
_RANDOM = Preset(name="tiny", source=None, config={"dim": 8}, embed_dim=8)


@pytest.mark.parametrize(
    ("preset", "source", "pretrained", "expected"),
    [
        ("hub", None, True, ("org/model", "abc123", True)),  # the preset's weights at its pinned revision
        ("hub", "/data/other", True, ("/data/other", None, True)),  # another source: the pin is the preset's
        ("hub", None, False, (None, None, False)),  # the preset's config at random
        ("hub", "/data/other", False, ("/data/other", None, False)),  # the source's config at random
        ("tiny", None, True, (None, None, False)),  # nothing to load
        ("tiny", "/data/other", True, ("/data/other", None, True)),
    ],
)
def test_plan_weights_decides_what_is_built(preset, source, pretrained, expected):
    plan = plan_weights({"hub": _HUB, "tiny": _RANDOM}, preset, source, pretrained, "Toy")
    assert (plan.source, plan.revision, plan.pretrained) == expected
    assert plan.weights_source == (plan.source if plan.pretrained else None)
    assert plan.preset.name == preset


def test_fine_tuning_group_is_a_nested_key_of_the_yaml():
    from jsonargparse import ArgumentParser

    from mmfuse.backbones import ESM2

    parser = ArgumentParser(exit_on_error=False)
    parser.add_class_arguments(ESM2, "backbone")
    config = parser.parse_object({"backbone": {"preset": "tiny", "finetune": {"lora": {"r": 2}}}})
    backbone = parser.instantiate_classes(config).backbone
    assert backbone.finetune == FineTuning(lora=LoraOptions(r=2)) and backbone.lora_targets == ("query", "value")
    config = parser.parse_object({"backbone": {"preset": "tiny", "finetune": {"freeze": True, "lora": {"r": 2}}}})
    with pytest.raises(Exception, match=r"choose one of freeze, train_last_layers and lora for a backbone \(given: "):
        parser.instantiate_classes(config)
