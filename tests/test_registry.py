from __future__ import annotations

import warnings
from types import SimpleNamespace

import pytest

from mmfuse import registry as registry_module
from mmfuse.registry import (
    BACKBONES,
    OBJECTIVES,
    REGISTRIES,
    DuplicateComponentError,
    PluginLoadError,
    Registry,
    UnknownComponentError,
    suggest,
    suggest_name,
)


class Alpha:
    pass


class Beta:
    pass


def _entry_point(name, value, loader, dist=("fake-plugin", "1.2")):
    return SimpleNamespace(
        name=name, value=value, load=loader, dist=SimpleNamespace(metadata={"Name": dist[0]}, version=dist[1])
    )


def test_register_get_and_names():
    reg = Registry("widget", group="mmfuse.test-none")
    reg.register()(Alpha)
    reg.register("B")(Beta)
    assert reg.get("Alpha") is Alpha and reg.get("B") is Beta
    assert reg.names() == ["Alpha", "B"]
    reg.register()(Alpha)  # the same object again is harmless
    assert reg.names() == ["Alpha", "B"]


def test_duplicate_name_fails_naming_both():
    reg = Registry("widget", group="mmfuse.test-none")
    reg.add("Alpha", Alpha)
    with pytest.raises(DuplicateComponentError, match=r"'Alpha' is already registered by .*Alpha.*Beta"):
        reg.add("Alpha", Beta)


def test_unknown_name_lists_known_and_closest():
    with pytest.raises(UnknownComponentError) as info:
        BACKBONES.get("ESM3")
    message = str(info.value)
    assert message.startswith(f"Unknown backbone 'ESM3'. Known backbones: {', '.join(BACKBONES.names())}")
    assert message.endswith("Did you mean 'ESM2'?")
    assert "Did you mean 'Enformer'?" in BACKBONES.unknown_message("enformer")


def test_suggest_searches_all_registries():
    assert "Known adapters" in suggest("ConcatFusoin") and "'ConcatFusion'" in suggest("ConcatFusoin")
    assert "'MLPHead'" in suggest("MlpHead")
    assert suggest("ESM2") is None
    assert (
        suggest("Zzyzx")
        == "Unknown component 'Zzyzx', and no registered name is close; `mmfuse components` lists them."
    )


def test_one_matcher_case_first_then_the_most_similar_above_one_cutoff():
    assert suggest_name("esm2", ["ESM1", "esm2x", "ESM2"]) == "ESM2"  # case-insensitive equality wins
    assert suggest_name("hiden_dim", ["dropout", "hidden_dims", "hidden_dim"]) == "hidden_dim"
    assert suggest_name("max_epoch", ["max_steps", "max_epochs"]) == "max_epochs"
    assert suggest_name("lr", ["dropout", "hidden_dim"]) is None and suggest_name("x", []) is None
    assert suggest_name("ab", ["abcde"]) is None  # difflib's ratio 0.57: below the cutoff (0.6)
    assert suggest_name("abc", ["abcde"]) == "abcde"  # 0.75


def test_objectives_registry_is_listed_with_the_others():
    assert REGISTRIES["objectives"] is OBJECTIVES and OBJECTIVES.kind == "objective"
    assert OBJECTIVES.group == "mmfuse.objectives" and "mmfuse.training" in OBJECTIVES.builtins


def test_plugins_load_lazily_and_failures_name_the_distribution(monkeypatch):
    calls = []

    def good():
        calls.append("good")
        return Beta

    def bad():
        raise ModuleNotFoundError("No module named 'missing_dep'")

    points = [_entry_point("Beta", "plug.mod:Beta", good), _entry_point("Broken", "plug.broken:Thing", bad)]
    monkeypatch.setattr(registry_module.metadata, "entry_points", lambda group: points)
    reg = Registry("widget")
    assert calls == []  # nothing imported before the first lookup
    with pytest.warns(UserWarning, match=r"'Broken' \(plug.broken:Thing\) from fake-plugin 1.2 failed to import"):
        assert reg.get("Beta") is Beta
    assert [e.source for e in reg.entries()] == ["fake-plugin 1.2"]
    with pytest.raises(PluginLoadError, match=r"fake-plugin 1.2, which failed to import: ModuleNotFoundError"):
        reg.get("Broken")
    assert reg.failures() == ["Broken = plug.broken:Thing (fake-plugin 1.2): ModuleNotFoundError: No module named "
                              "'missing_dep'"]  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # loaded once: no second warning
        assert reg.names() == ["Beta"]


def test_builtins_are_registered_with_their_source():
    import mmfuse.backbones  # noqa: F401

    sources = {e.name: e.source for e in BACKBONES.entries()}
    assert sources["ESM2"] == "mmfuse (built-in)"
