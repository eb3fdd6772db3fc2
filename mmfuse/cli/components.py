"""``mmfuse components``: what is registered (built in and from plugins), and the import of all of it."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from mmfuse.registry import REGISTRIES

__all__ = ["load_components", "main"]


def load_components() -> None:
    """Imports the built-in components and every plugin entry point (failures are only reported)."""
    import mmfuse.adapters  # noqa: F401
    import mmfuse.backbones  # noqa: F401
    import mmfuse.data  # noqa: F401
    import mmfuse.training  # noqa: F401

    for registry in REGISTRIES.values():
        registry.load_plugins()


def main(argv: Sequence[str]) -> int:
    """Lists every registered component with where it comes from and the first line of its docstring."""
    argparse.ArgumentParser(prog="mmfuse components", description="List registered components.").parse_args(argv)
    load_components()
    for kind, registry in REGISTRIES.items():
        print(f"{kind}:")
        for entry in registry.entries():
            doc = (entry.obj.__doc__ or "").strip().splitlines()
            print(f"  {entry.name:<24} {entry.source:<22} {doc[0] if doc else ''}")
        for failure in registry.failures():
            print(f"  (failed) {failure}")
    return 0
