"""The model card (README.md) of an exported model, with Hugging Face front matter."""

from __future__ import annotations

from typing import Any

import yaml

__all__ = ["model_card"]

_KINDS = {"regression": "regression of {n} targets (predictions in the training table's units)",
          "classification": "classification into {n} classes (class probabilities and the predicted class)",
          "token_classification": "classification of each gene token into {n} classes"}  # fmt: skip


def _front_matter(config: Any) -> str:
    licences = sorted({str(b.get("license")) for b in config.backbones.values() if b.get("license")})
    tags = ["mmfuse", "biology", "multimodal", *config.modalities,
            *sorted({str(b.get("class")) for b in config.backbones.values() if b.get("class")})]  # fmt: skip
    meta: dict[str, Any] = {"library_name": "mmfuse", "tags": list(dict.fromkeys(tags))}
    if len(licences) == 1 and " " not in licences[0]:
        meta["license"] = licences[0].lower()
    else:
        meta["license"] = "other"
        meta["license_name"] = "; ".join(licences) or "not stated"
    if config.metrics:
        meta["model-index"] = [{"name": "mmfuse fusion model", "results": [{
            "task": {"type": config.kind},
            "metrics": [{"type": k, "value": round(float(v), 6)} for k, v in sorted(config.metrics.items())]}]}]
    return "---\n" + yaml.safe_dump(meta, sort_keys=False) + "---\n"


def _backbone_rows(config: Any) -> list[str]:
    rows = ["| modality | backbone | preset | weights | licence | paper |", "|---|---|---|---|---|---|"]
    references = config.weights.get("references") or {}
    for modality, info in config.backbones.items():
        ref = references.get(modality)
        weights = (f"not included: rebuilt from `{ref['source']}` (revision {ref.get('revision') or 'not pinned'}), "
                   f"checked by SHA-256" if ref else "included")  # fmt: skip
        rows.append(f"| {modality} | {info.get('class')} | {info.get('preset') or ''} | {weights} | "
                    f"{info.get('license') or 'not stated'} | {info.get('paper') or ''} |")  # fmt: skip
    return rows


def model_card(config: Any) -> str:
    """README.md of an export: front matter, what it predicts from what, how to use it, what it was trained on,
    its test metrics and modality contributions, and its limits."""
    init = config.model.get("init_args") or {}
    adapter = (init.get("adapter") or {}).get("class_path", "ConcatFusion").rsplit(".", 1)[-1]
    head = (init.get("head") or {}).get("class_path", "MLPHead").rsplit(".", 1)[-1]
    names = config.output_names
    shown = ", ".join(names[:8]) + (f", … ({len(names)} in all)" if len(names) > 8 else "")
    data = config.data or {}
    source = ((data.get("init_args") or {}).get("source") or {}).get("path")
    lines = [
        _front_matter(config),
        "# mmfuse fusion model", "",
        f"{_KINDS.get(config.kind, config.kind).format(n=len(names))} from {', '.join(config.modalities)}, "
        f"fused by {adapter} with a {head} head. Outputs: {shown}.", "",
        "## Backbones", "", *_backbone_rows(config), "",
        "## Use", "",
        "```python", "from mmfuse.model import FusionModel", "",
        'model = FusionModel.from_pretrained("path/to/this/directory")  # or a hub id',
        "model.predict([{" + ", ".join(f'"{m}": "..."' for m in config.modalities) + "}])  # a pandas DataFrame",
        "```", "",
        "From the command line: `mmfuse serve DIR` answers POST /predict; `mmfuse predict --model DIR "
        "--config <your data>.yaml` predicts a table (as `test`, `embed`, `explain` and `score-variants` do).", "",
        "## Inputs", "",
        *[f"- {m}: " + (f"cropped to {config.max_lengths[m]:,} letters ({config.crop.get(m, 'error')})"
                        if m in config.max_lengths else "as long as its backbone accepts") for m in config.modalities],
        "- any modality may be missing from a record (it is masked, as in training); at least one must be given.", "",
        "## Training data", "",
        f"Trained with `{str(data.get('class_path', 'unknown')).rsplit('.', 1)[-1]}` on `{source}`." if data
        else "Not recorded.", "",
    ]  # fmt: skip
    if config.metrics:
        lines += ["## Test metrics", "", "| metric | value |", "|---|---|",
                  *[f"| {k} | {v:.4f} |" for k, v in sorted(config.metrics.items())], ""]  # fmt: skip
    if config.contributions:
        lines += ["## Modality contributions (test split)", "", config.contributions.strip(), ""]
    lines += [
        "## Intended use and limits", "",
        "For research on the data set it was trained on and data like it. Predictions outside the training "
        "distribution (other species, tissues, assays, sequence lengths) are not validated. Not for clinical use.",
        "", f"Exported by mmfuse {config.mmfuse_version}.", "",
    ]
    return "\n".join(lines)
