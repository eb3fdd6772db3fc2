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
    tree = ast.parse((PACKAGE / "training" / "task.py").read_text())
    (task,) = [n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "FusionTask"]
    assert task.end_lineno - task.lineno + 1 <= 200


def _files(*folders: str) -> list[Path]:
    return [p for folder in folders for p in sorted((PACKAGE / folder).rglob("*.py"))]


@pytest.mark.parametrize(
    ("folders", "forbidden"),
    [
        (("backbones", "adapters", "data"), ("mmfuse.training", "mmfuse.cache", "mmfuse.cli", "mmfuse.model")),
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
    assert not _imports_any(PACKAGE / "model.py", ("lightning", "pytorch_lightning", "mmfuse.training", "mmfuse.cache"))
    assert not [m for m in _imports(PACKAGE / "registry.py") if m.startswith("mmfuse")]


def test_only_the_cli_knows_lightning_cli():
    users = [_module(p) for p in FILES if _imports_any(p, ("lightning.pytorch.cli", "jsonargparse"))]
    assert all(m.startswith("mmfuse.cli") for m in users), users


def test_what_the_task_needs_of_a_data_module_is_a_protocol_not_a_probe():
    for path in _files("training", "cache"):
        assert "hasattr(datamodule" not in path.read_text(), path


def _unit(module: str) -> str:
    """The package-level unit of a module: ``mmfuse.training.task`` → ``mmfuse.training``."""
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


def test_the_top_level_shows_the_design():
    modules = sorted(p.stem for p in PACKAGE.glob("*.py"))
    assert modules == ["__init__", "__main__", "errors", "io", "model", "registry"], modules
    packages = {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file()}
    assert packages == {"adapters", "analysis", "backbones", "cache", "cli", "data", "hub", "tokenizers", "training"}


@pytest.mark.parametrize(
    ("folder", "forbidden"),
    [("training", ("mmfuse.analysis", "mmfuse.cli")), ("analysis", ("mmfuse.cli",))],
    ids=["training-knows-no-analysis", "analyses-know-no-command"],
)
def test_analyses_sit_beside_the_training_task(folder, forbidden):
    offenders = {_module(p): _imports_any(p, forbidden) for p in _files(folder)}
    assert not {m: i for m, i in offenders.items() if i}


def _is_catch_warnings(item: ast.withitem) -> bool:
    call = item.context_expr
    return isinstance(call, ast.Call) and isinstance(call.func, ast.Attribute) and call.func.attr == "catch_warnings"


def _filters_outside_catch_warnings(tree: ast.AST) -> list[int]:
    """Lines of ``warnings.filterwarnings``/``simplefilter`` calls not inside ``with warnings.catch_warnings()``,
    nor inside a function of the module that is only called inside one."""
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}

    def guarded(node: ast.AST) -> bool:
        while node in parents:
            node = parents[node]
            if isinstance(node, ast.With) and any(_is_catch_warnings(i) for i in node.items):
                return True
        return False

    def function_of(node: ast.AST) -> ast.FunctionDef | None:
        while node in parents:
            node = parents[node]
            if isinstance(node, ast.FunctionDef):
                return node
        return None

    calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)]
    lines = []
    for call in calls:
        if call.func.attr not in ("filterwarnings", "simplefilter") or guarded(call):
            continue
        function = function_of(call)
        uses = [c for c in ast.walk(tree) if isinstance(c, ast.Call) and isinstance(c.func, ast.Name)
                and function is not None and c.func.id == function.name]  # fmt: skip
        if not uses or not all(guarded(u) for u in uses):
            lines.append(call.lineno)
    return lines


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_process_wide_warning_filters(path):
    lines = _filters_outside_catch_warnings(ast.parse(path.read_text()))
    assert not lines, f"{path.name}:{lines}: silence a warning inside `with warnings.catch_warnings():` only"


def test_the_warning_filter_check_can_fail():
    assert _filters_outside_catch_warnings(ast.parse("import warnings\nwarnings.filterwarnings('ignore')")) == [2]
    quiet = "def q():\n    warnings.simplefilter('ignore')\nq()\nwith warnings.catch_warnings():\n    q()"
    assert _filters_outside_catch_warnings(ast.parse(quiet)) == [2]  # called once outside a catch_warnings
    assert _filters_outside_catch_warnings(ast.parse(quiet.replace("\nq()\n", "\n"))) == []


#: the one module allowed to use other libraries' private attributes (with a test that names what it relies on)
SHIM = PACKAGE / "training" / "trainer.py"


def _defined_names() -> set[str]:
    """Every private name mmfuse itself defines: functions, classes, attributes it assigns, parameters."""
    names = set()
    for path in FILES:
        if path == SHIM:  # what it sets on Lightning's objects is Lightning's
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                names.add(node.name)
            elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
                names.add(node.attr)
            elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                names.add(node.id)
            elif isinstance(node, ast.alias):
                names.add(node.asname or node.name.split(".")[-1])
    return {n for n in names if n.startswith("_")}


def _foreign_private(tree: ast.AST, own: set[str]) -> list[str]:
    """``obj._name`` where mmfuse defines no ``_name``: another library's private attribute."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
            if node.attr not in own:
                found.append(f"{ast.unparse(node)} (line {node.lineno})")
        elif isinstance(node, ast.ImportFrom) and not (node.module or "").startswith("mmfuse"):
            found += [f"from {node.module} import {a.name}" for a in node.names if a.name.startswith("_")]
    return found


def test_no_private_attribute_of_another_library_outside_the_shim():
    own = _defined_names()
    offenders = {_module(p): _foreign_private(ast.parse(p.read_text()), own) for p in FILES if p != SHIM}
    assert not {m: f for m, f in offenders.items() if f}
    assert _foreign_private(ast.parse(SHIM.read_text()), own), "the shim uses none: remove the exception"
    assert _foreign_private(ast.parse("study._storage.set_trial_state_values(1)"), own) == [
        "study._storage (line 1)"]  # fmt: skip
