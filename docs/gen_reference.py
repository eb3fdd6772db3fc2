"""Writes docs/reference.md, the YAML reference, from the registries and the components' signatures.

    python docs/gen_reference.py          # rewrite docs/reference.md
    python docs/gen_reference.py --check  # exit 1 if it is out of date (CI: tests/test_docs_site.py)

Every built-in backbone, adapter and head (plugins document their own), the tasks, the data
modules and the option groups get a table of their YAML options: name, type, default, and the
description from the docstring's ``Args:`` section.
"""

from __future__ import annotations

import inspect
import re
import sys
import typing
from collections.abc import Callable
from pathlib import Path

OUT = Path(__file__).resolve().parent / "reference.md"
#: arguments the task or the CLI fills in, never written in YAML
_GIVEN = {"self", "input_dims", "in_dim", "out_dim", "target_names", "dims"}


def _args_section(doc: str) -> dict[str, str]:
    """``{name: description}`` from a Google-style ``Args:`` section."""
    lines = inspect.cleandoc(doc or "").splitlines()
    out: dict[str, str] = {}
    inside, current, indent = False, None, None
    for line in lines:
        if re.match(r"^(Args|Arguments):\s*$", line):
            inside, current = True, None
            continue
        if inside and re.match(r"^[A-Z][A-Za-z ]+:\s*$", line):  # the next section
            break
        if not inside or not line.strip():
            continue
        match = re.match(r"^(\s+)(\w+)(?: \([^)]*\))?:\s*(.*)$", line)
        if match and (indent is None or len(match.group(1)) == indent):
            indent = len(match.group(1))
            current = match.group(2)
            out[current] = match.group(3).strip()
        elif current is not None:
            out[current] += " " + line.strip()
    return out


def _type(annotation: object) -> str:
    if annotation is inspect.Parameter.empty:
        return ""
    if isinstance(annotation, str) or typing.get_origin(annotation) is not None:
        text = str(annotation)
    else:
        text = getattr(annotation, "__name__", repr(annotation))
    text = re.sub(r"\b(?:[a-z_][a-z0-9_]*\.)+([A-Za-z_]\w*)", r"\1", text)  # module paths off
    return text.replace("NoneType", "None").replace("|", "\\|")


def _default(value: object) -> str:
    if value is inspect.Parameter.empty:
        return "required"
    if isinstance(value, type) or callable(value):
        return getattr(value, "__qualname__", repr(value))
    return repr(value).replace("|", "\\|")


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def component(cls: type | Callable, heading: str, source: str = "") -> str:
    """A Markdown section for ``cls``: its summary line and a table of its YAML options."""
    doc = inspect.getdoc(cls) or ""
    summary = doc.split("\n\n")[0].replace("\n", " ")
    described = _args_section(doc) | _args_section(inspect.getdoc(getattr(cls, "__init__", None)) or "")
    try:
        hints = typing.get_type_hints(cls.__init__) if isinstance(cls, type) else {}
    except Exception:
        hints = {}
    parameters = [p for p in inspect.signature(cls).parameters.values() if p.name not in _GIVEN
                  and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]  # fmt: skip
    origin = f" ({source})" if source else ""
    lines = [f"### {heading}", "", f"`class_path: {cls.__name__}`{origin}. {_cell(summary)}", ""]
    if parameters:
        lines += ["| option | type | default | description |", "| --- | --- | --- | --- |"]
        for p in parameters:
            annotation = hints.get(p.name, p.annotation)
            lines.append(f"| `{p.name}` | {_type(annotation)} | `{_default(p.default)}` | "
                         f"{_cell(described.get(p.name, ''))} |")  # fmt: skip
    return "\n".join(lines) + "\n"


#: how config files and the command line combine, and the rules every YAML file mmfuse reads follows
_CONFIG_RULES = [
    "## Config files and the command line",
    "",
    "`mmfuse fit --config a.yaml --config b.yaml --trainer.max_epochs 5` reads `a.yaml`, then `b.yaml` over it, "
    "then the options on the command line, in that order; `--print_config` prints the result and stops.",
    "",
    "- **Any option a config sets can be given on the command line, `null` included.** "
    "`--model.init_args.backbones.dna.init_args.crop_bins null` switches the option off exactly as `crop_bins: "
    "null` in a second `--config` does, and so does a component's whole `init_args` given as YAML or JSON "
    '(`--model.init_args.backbones.dna.init_args \'{"preset": "tiny", "crop_bins": null}\'`).',
    "- **Later sources are merged key by key, the backbones included.** A second config that names `dna:` changes "
    "that backbone and keeps `rna:` and `protein:`, and `--model.init_args.backbones.rna.init_args.preset tiny` "
    "after it still finds `rna`. A backbone whose `class_path` changes keeps only the options its new class also "
    "takes. Lists (`trainer.callbacks`) and plain mappings (`lengths.max`) are replaced as a whole. To train on "
    "fewer modalities, write a config that names only those.",
    "- **A key written twice is refused.** `max_epochs: 1` and then `max_epochs: 1000` in one mapping stops with "
    "`mmfuse: error: x.yaml:3: key 'trainer.max_epochs' is written twice (lines 2 and 3)…` instead of silently "
    "taking the last. Keys merged in with `<<: *base` may be replaced: that is what a merge is for.",
    "- **Aliases are limited.** Anchors and aliases (`&base`, `*base`, `<<: *base`) work, but a file whose aliases "
    'stand for more than 100,000 values beyond those it writes out (a "billion laughs" bomb) is refused at once, '
    "before anything expands it; an alias inside the value it names is refused too.",
    "- **Plain values only.** YAML is read with its safe loader: mappings, lists, text, numbers, true/false and "
    "null; a tag such as `!!python/object` is refused.",
    "- **A config is a mapping** of sections (`trainer:`, `model:`, `data:`, …): a file whose top level is a list "
    "or a single value is refused as such.",
    "",
    "These rules hold for every YAML file mmfuse reads: the configs of the training commands and the analyses, "
    "the sub-config files they name, and the configs and search spaces of `mmfuse sweep` and `mmfuse cv`. Each "
    "refusal is one `mmfuse: error:` line naming the file and the line.",
    "",
]


def render() -> str:
    from mmfuse.backbones.finetune import FineTuning, LoraOptions
    from mmfuse.cache import CacheOptions
    from mmfuse.data import CellClassification, GeneClassification, IsoformExpression, SequenceClassification, TFBinding
    from mmfuse.registry import ADAPTERS, BACKBONES, BUILTIN_SOURCE, HEADS, OBJECTIVES
    from mmfuse.training import ClassificationTask, RegressionTask, TokenClassificationTask

    parts = [
        "# YAML reference",
        "",
        "Generated from the registries by `python docs/gen_reference.py`; do not edit by hand. Each "
        "component is chosen by its `class_path` and configured by `init_args`. Arguments the task fills "
        "in (embedding widths, the number of outputs, `target_names`) are not listed.",
        "",
        *_CONFIG_RULES,
        "## Tasks (`model:`)",
        "",
    ]
    parts += [component(cls, cls.__name__) for cls in (RegressionTask, ClassificationTask, TokenClassificationTask)]
    parts += ["## Data modules (`data:`)", ""]
    data_modules = (IsoformExpression, SequenceClassification, TFBinding, CellClassification, GeneClassification)
    parts += [component(cls, cls.__name__) for cls in data_modules]
    for title, registry in (("Backbones (`model.init_args.backbones.<modality>`)", BACKBONES),
                            ("Fusion adapters (`model.init_args.adapter`)", ADAPTERS),
                            ("Heads (`model.init_args.head`)", HEADS),
                            ("Objectives (`model.init_args.objective`)", OBJECTIVES)):  # fmt: skip
        parts += [f"## {title}", ""]
        for entry in registry.entries():
            if entry.source == BUILTIN_SOURCE:  # plugins document their own components
                parts.append(component(entry.obj, entry.name))
    parts += ["## Option groups", ""]
    parts.append(component(FineTuning, "FineTuning (`finetune:` of a backbone)"))
    parts.append(component(LoraOptions, "LoraOptions (`finetune.lora:` of a backbone)"))
    parts.append(component(CacheOptions, "CacheOptions (`embedding_cache:` of a task)"))
    from mmfuse.data import options as data

    for cls, where in ((data.TableSource, "`source:` of a table data module"),
                       (data.CellSource, "`source:` of CellClassification and GeneClassification"),
                       (data.PeakSource, "`source:` of TFBinding"),
                       (data.SplitOptions, "`split:` of every data module; GeneSplit groups by `gene_id`, ContigSplit "
                                           "by contig with chr8/chr9 held out, GeneLabelSplit (of GeneClassification) "
                                           "splits the labelled genes"),
                       (data.LoaderOptions, "`loader:` of every data module"),
                       (data.LengthOptions, "`lengths:` of every data module"),
                       (data.SampleOptions, "`sample:` of every data module")):  # fmt: skip
        parts.append(component(cls, f"{cls.__name__} ({where})"))
    return "\n".join(parts).rstrip() + "\n"


def main() -> int:
    text = render()
    if "--check" in sys.argv[1:]:
        if not OUT.is_file() or OUT.read_text() != text:
            print(f"{OUT} is out of date: run `python docs/gen_reference.py`", file=sys.stderr)
            return 1
        return 0
    OUT.write_text(text)
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
