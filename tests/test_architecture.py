"""The layout rules of ARCHITECTURE.md and issue 15, checked on the source: sizes and dependency directions."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "mmfuse"
FILES = sorted(PACKAGE.rglob("*.py"))


def _module(path: Path) -> str:
    return ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts).removesuffix(".__init__")


def _imports(path: Path) -> set[str]:
    """Every module ``path`` imports, at the top or inside functions (relative imports resolved)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
    return found


def _imports_any(path: Path, prefixes: tuple[str, ...]) -> list[str]:
    return sorted(m for m in _imports(path) if any(m == p or m.startswith(p + ".") for p in prefixes))


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_file_is_over_400_lines_and_no_class_over_250(path):
    lines = len(path.read_text().splitlines())
    assert lines <= 400, f"{path.name} has {lines} lines; split it along a seam"
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ClassDef):
            size = node.end_lineno - node.lineno + 1
            assert size <= 250, f"class {node.name} has {size} lines"


def test_the_task_class_stays_small():
    tree = ast.parse((PACKAGE / "tasks" / "task.py").read_text())
    (task,) = [n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "FusionTask"]
    assert task.end_lineno - task.lineno + 1 <= 200


def _files(*folders: str) -> list[Path]:
    return [p for folder in folders for p in sorted((PACKAGE / folder).rglob("*.py"))]


@pytest.mark.parametrize(
    ("folders", "forbidden"),
    [
        (("backbones", "adapters", "data"), ("mmfuse.tasks", "mmfuse.cache", "mmfuse.cli", "mmfuse.model")),
        (("adapters",), ("mmfuse.backbones",)),
        (("backbones",), ("mmfuse.adapters",)),
        (("data",), ("mmfuse.backbones", "mmfuse.adapters")),
    ],
    ids=["no-upward-imports", "adapters-know-no-backbone", "backbones-know-no-adapter", "data-knows-no-model"],
)
def test_dependency_rules(folders, forbidden):
    offenders = {_module(p): _imports_any(p, forbidden) for p in _files(*folders)}
    assert not {m: i for m, i in offenders.items() if i}


def test_the_model_knows_nothing_of_lightning_and_the_registry_nothing_of_mmfuse():
    assert not _imports_any(PACKAGE / "model.py", ("lightning", "pytorch_lightning", "mmfuse.tasks", "mmfuse.cache"))
    assert not [m for m in _imports(PACKAGE / "registry.py") if m.startswith("mmfuse")]


def test_only_the_cli_knows_lightning_cli():
    users = [_module(p) for p in FILES if _imports_any(p, ("lightning.pytorch.cli", "jsonargparse"))]
    assert all(m.startswith("mmfuse.cli") for m in users), users


def test_what_the_task_needs_of_a_data_module_is_a_protocol_not_a_probe():
    for path in _files("tasks", "cache"):
        assert "hasattr(datamodule" not in path.read_text(), path


def _unit(module: str) -> str:
    """The package-level unit of a module: ``mmfuse.tasks.task`` → ``mmfuse.tasks``."""
    return ".".join(module.split(".")[:2])


def test_no_cycles_between_the_packages():
    edges: dict[str, set[str]] = {}
    for path in FILES:
        source = _unit(_module(path))
        targets = {_unit(m) for m in _imports(path) if m.startswith("mmfuse.") and m.count(".") >= 1}
        edges.setdefault(source, set()).update(t for t in targets if t != source and t.count(".") == 1)
    modules = {_unit(_module(p)) for p in FILES}
    edges = {s: {t for t in ts if t in modules} for s, ts in edges.items()}
    state: dict[str, int] = {}

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(edges.get(node, ())):
            assert state.get(nxt) != 1, f"import cycle: {' -> '.join([*trail, node, nxt])}"
            if nxt not in state:
                visit(nxt, [*trail, node])
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node, [])


def _data_modules() -> list[type]:
    import lightning as L

    import mmfuse.data as data

    return [obj for name in data.__all__ if isinstance(obj := getattr(data, name), type)
            and issubclass(obj, L.LightningDataModule)]  # fmt: skip


@pytest.mark.parametrize("cls", _data_modules(), ids=lambda c: c.__name__)
def test_data_module_constructors_take_option_groups_not_flat_options(cls):
    import inspect

    from mmfuse.data.options import RENAMED

    parameters = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
    assert len(parameters) <= 12, f"{cls.__name__} takes {len(parameters)} parameters; group them"
    assert {"source", "split", "loader", "lengths", "sample"} <= set(parameters)
    flat = sorted(set(parameters) & set(RENAMED))
    assert not flat, f"{cls.__name__} takes {flat}, which belong in an option group"



@pytest.mark.parametrize("cls", _data_modules(), ids=lambda c: c.__name__)
def test_data_modules_compose_rather_than_mix_in(cls):
    """Every mmfuse class a data module inherits from is itself a data module: the store, checks, splitter
    and loader builder are objects it holds (ARCHITECTURE.md, STYLE.md), not mixins."""
    import lightning as L

    mixins = [b.__name__ for b in cls.__mro__ if b.__module__.startswith("mmfuse.")
              and not issubclass(b, L.LightningDataModule)]  # fmt: skip
    assert not mixins, f"{cls.__name__} mixes in {mixins}; compose them instead"

def test_the_data_folder_shows_the_design():
    data = PACKAGE / "data"
    assert {p.name for p in data.iterdir() if p.is_dir() and not p.name.startswith("_")} >= {
        "files", "genomics", "store", "datasets", "samples"}  # fmt: skip
    loose = sorted(p.name for p in data.glob("*.py"))
    assert len(loose) <= 8, f"mmfuse/data/ holds {loose}: put modules in its subfolders"
