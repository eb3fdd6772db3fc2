"""examples/mmfuse-plugin-example, installed as a real distribution (`make install` does it): its components
are found through entry points, listed with the distribution's name, and train from YAML."""

from __future__ import annotations

from importlib import metadata
from pathlib import Path

import pytest

PLUGIN = Path(__file__).resolve().parents[1] / "examples" / "mmfuse-plugin-example"


@pytest.fixture(scope="module", autouse=True)
def _installed() -> None:
    try:
        metadata.distribution("mmfuse-plugin-example")
    except metadata.PackageNotFoundError:
        pytest.fail(f"the example plugin is not installed: pip install --no-deps -e {PLUGIN} (make install does it)")


def test_components_lists_the_plugin_with_its_distribution(run_mmfuse):
    result = run_mmfuse("components")
    assert result.returncode == 0, result.stderr
    lines = {line.split()[0]: line for line in result.stdout.splitlines() if line.startswith("  ")}
    for name in ("CharCNN", "GatedSumFusion"):
        assert "mmfuse-plugin-example 0.1.0" in lines[name], lines.get(name)


def test_registries_resolve_the_plugin_components():
    from mmfuse.registry import ADAPTERS, BACKBONES

    assert BACKBONES.get("CharCNN").__module__ == "mmfuse_plugin_example.backbone"
    assert ADAPTERS.get("GatedSumFusion").__module__ == "mmfuse_plugin_example.adapter"


def test_fit_with_a_config_naming_the_plugin_components(run_mmfuse, tmp_path):
    result = run_mmfuse(
        "fit", "--config", str(PLUGIN / "config.yaml"), "--data.init_args.sample.size=24",
        "--data.init_args.split.val_fraction=0.2", "--trainer.max_steps=2", "--trainer.val_check_interval=2",
        "--trainer.limit_val_batches=1", "--trainer.enable_progress_bar=false", "--trainer.accelerator=cpu",
        cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    saved = next(tmp_path.rglob("config.yaml")).read_text()  # the run's config, names resolved
    assert "class_path: mmfuse_plugin_example.CharCNN" in saved
    assert "class_path: mmfuse_plugin_example.GatedSumFusion" in saved
    best = next(line for line in result.stdout.splitlines() if line.startswith("Best checkpoint: "))
    assert (tmp_path / best.removeprefix("Best checkpoint: ")).is_file()
