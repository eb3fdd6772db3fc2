"""Every registered adapter has a page in docs/adapters/ whose YAML example builds and runs."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest
import torch
import yaml

from mmfuse.registry import ADAPTERS, BUILTIN_SOURCE

#: mmfuse documents its own adapters; plugins document theirs
BUILTINS = [e.name for e in ADAPTERS.entries() if e.source == BUILTIN_SOURCE]

DOCS = Path(__file__).resolve().parents[2] / "docs" / "adapters"

#: adapter name -> its page under docs/adapters/; a newly registered adapter fails until it has one
PAGES = {
    "ConcatFusion": "concat.md",
    "TokenConcatFusion": "token_concat.md",
    "CrossAttentionFusion": "cross_attention.md",
    "PerceiverResampler": "perceiver_resampler.md",
    "CAbstractor": "c_abstractor.md",
    "InteractionFusion": "interaction.md",
    "GatedFusion": "gated.md",
    "LowRankTensorFusion": "tensor.md",
    "MulTFusion": "mult.md",
    "QFormer": "qformer.md",
    "BilinearFusion": "bilinear.md",
}

DIMS = {"dna": 16, "rna": 8, "protein": 12}
YAML_BLOCK = re.compile(r"^```yaml[ \t]*\n(.*?)^```[ \t]*$", re.DOTALL | re.MULTILINE)


def _page(name: str) -> str:
    assert name in PAGES, f"adapter {name} has no page: write docs/adapters/<page>.md and list it in PAGES"
    path = DOCS / PAGES[name]
    assert path.is_file(), f"{path} is missing"
    return path.read_text(encoding="utf-8")


def _snippet(name: str) -> dict:
    page = _page(name)
    assert page.count("```yaml") == 1, f"{PAGES[name]} must hold exactly one ```yaml block"
    blocks = YAML_BLOCK.findall(page)
    assert len(blocks) == 1, f"the ```yaml block of {PAGES[name]} is not closed"
    return yaml.safe_load(blocks[0])


@pytest.mark.parametrize("name", BUILTINS)
def test_page_example_builds_and_runs(name):
    config = _snippet(name)
    assert set(config) == {"adapter"}, "the example is the `adapter:` entry of `model.init_args`"
    assert config["adapter"]["class_path"] == name
    init_args = config["adapter"].get("init_args") or {}
    assert "input_dims" not in init_args, "input_dims is passed by the task, never written in YAML"
    torch.manual_seed(0)
    adapter = ADAPTERS.get(name)(DIMS, **init_args).eval()
    features = {m: (torch.randn(2, 5, d), torch.ones(2, 5, dtype=torch.bool)) for m, d in DIMS.items()}
    with torch.no_grad():
        out = adapter(features)
    assert out.shape == (2, adapter.output_dim)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", BUILTINS)
def test_page_documents_every_option(name):
    page = _page(name)
    options = [p for p in inspect.signature(ADAPTERS.get(name)).parameters if p != "input_dims"]
    missing = [p for p in options if f"`{p}`" not in page]
    assert not missing, f"{PAGES[name]} does not mention the options {missing}"


def test_pages_are_of_registered_adapters():
    assert not set(PAGES) - set(ADAPTERS.names()), "PAGES lists adapters that are not registered"


def test_index_links_every_page():
    index = (DOCS / "index.md").read_text(encoding="utf-8")
    unlinked = [page for page in PAGES.values() if f"]({page})" not in index]
    assert not unlinked, f"docs/adapters/index.md does not link {unlinked}"
