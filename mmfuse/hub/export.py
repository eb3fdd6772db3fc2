"""Writing an exported directory: from a trained task (``mmfuse export``) or from a loaded model (``save_pretrained``).

The directory is written beside its destination under a temporary name and renamed into place when complete, so
a failed export leaves nothing half-written; an existing directory is replaced only if it is an export and the
caller asks (``overwrite``), never a directory holding anything else.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

import torch
import yaml

from mmfuse.cache import CachedBackbone
from mmfuse.errors import ConfigError, NonFiniteError
from mmfuse.hub.card import model_card
from mmfuse.hub.layout import (
    CARD_FILE,
    CONFIG_FILE,
    WEIGHTS_FILE,
    YAML_FILE,
    PretrainedConfig,
    file_sha256,
    is_exported,
    tensors_sha256,
)  # fmt: skip
from mmfuse.hub.load import MODEL

__all__ = ["export_task", "kind_of", "save_pretrained", "write_directory"]

#: options of the task that name this machine's files or state: reset in the export's model config
_LOCAL_ONLY = {"compile_backbones": False}


def _cache_view(options: Any) -> dict[str, Any] | None:
    """The embedding cache's options that change what the adapter sees (pooling, central tokens, rounding), with no
    directory (computed per batch, :class:`~mmfuse.cache.CacheOptions`); ``None`` when it changes nothing."""
    if not isinstance(options, Mapping):
        return None
    shapes = options.get("pool") or options.get("center_tokens") or options.get("precision") not in (None, "float32")
    return {**options, "directory": None} if shapes else None


def kind_of(objective: Any, token_modality: str | None) -> str:
    """``token_classification``, ``classification`` (an objective with class labels) or ``regression``."""
    if token_modality is not None:
        return "token_classification"
    return "classification" if hasattr(objective, "binary") else "regression"


def model_section(hyper_parameters: Mapping[str, Any]) -> dict[str, Any]:
    """The task's ``{class_path, init_args}`` from a checkpoint's hyper-parameters: compilation off, and the embedding
    cache without its directory (of this machine), kept only where it shapes the embeddings."""
    args = {k: v for k, v in hyper_parameters.items() if not k.startswith("_")} | _LOCAL_ONLY
    args["embedding_cache"] = _cache_view(args.get("embedding_cache"))
    return {"class_path": hyper_parameters.get("_class_path"), "init_args": args}


def _references(backbones: Mapping[str, Any], state: dict[str, torch.Tensor], full: bool) -> dict[str, Any]:
    """Removes from ``state`` (unless ``full``) the fixed weights of backbones loaded from a source; returns what
    rebuilds and checks them."""
    references = {}
    for modality, backbone in backbones.items():
        keys = sorted(backbone.fixed_state_keys())
        if full or not keys:
            continue
        prefix = f"{MODEL}backbones.{modality}."
        fixed = {k: state.pop(prefix + k) for k in keys if prefix + k in state}
        preset = getattr(backbone, "preset", None)
        references[modality] = {"source": backbone.weights_source, "revision": getattr(preset, "revision", None),
                                "sha256": tensors_sha256(fixed), "keys": sorted(fixed)}  # fmt: skip
    return references


def write_directory(output: str | Path, config: PretrainedConfig, state: dict[str, torch.Tensor],
                    overwrite: bool = False) -> Path:  # fmt: skip
    """Writes config.json, config.yaml, model.safetensors and README.md into ``output`` (renamed into place)."""
    from safetensors.torch import save_file

    output = Path(output).expanduser()
    if output.exists() and not (output.is_dir() and not any(output.iterdir())):
        if not (overwrite and is_exported(output)):
            what = "an earlier export" if is_exported(output) else "a file or a directory that is not an export"
            fix = "pass --overwrite to replace it" if is_exported(output) else "choose another --output"
            raise ConfigError(f"--output {str(output)!r} is {what}; {fix}")
    diverged = [k for k, v in state.items() if v.is_floating_point() and not bool(v.isfinite().all())]
    if diverged:
        raise NonFiniteError(f"the model holds NaN or infinite weights ({', '.join(diverged[:3])}); nothing written")
    parent = output.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        staging = parent / f".{output.name}.{uuid.uuid4().hex[:8]}.partial"
        staging.mkdir()
    except OSError as exc:
        raise ConfigError(f"cannot write into {str(parent)!r} ({exc.strerror or exc}); choose another "
                          f"--output") from None
    try:
        tensors = {k: v.detach().cpu().contiguous().clone() for k, v in state.items()}
        save_file(tensors, str(staging / WEIGHTS_FILE), metadata={"format": "pt", "mmfuse": config.format})
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(staging / WEIGHTS_FILE, 0o666 & ~umask)  # safetensors writes it readable by its owner only
        os.chmod(staging, 0o777 & ~umask)
        config.weights = {**config.weights, "file": WEIGHTS_FILE, "sha256": file_sha256(staging / WEIGHTS_FILE)}
        config.mmfuse_version = _version()
        (staging / CONFIG_FILE).write_text(config.to_json(), encoding="utf-8")
        header = ("# The model of an mmfuse export: mmfuse predict --config DIR/config.yaml --config <your data>.yaml "
                  "--ckpt_path DIR\n")  # fmt: skip
        (staging / YAML_FILE).write_text(header + yaml.safe_dump({"model": config.model}, sort_keys=False))
        (staging / CARD_FILE).write_text(model_card(config), encoding="utf-8")
        if output.exists():
            shutil.rmtree(output) if output.is_dir() else output.unlink()
        staging.rename(output)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return output


def _version() -> str:
    try:
        return metadata.version("mmfuse")
    except metadata.PackageNotFoundError:
        return "unknown"


def export_task(task: Any, hyper_parameters: Mapping[str, Any], output: str | Path, datamodule: Any = None,
                full: bool = False, test_summary: Mapping[str, Any] | None = None,
                overwrite: bool = False) -> Path:  # fmt: skip
    """Writes ``task`` (a trained :class:`~mmfuse.training.FusionTask`, weights loaded) to ``output``.

    Args:
        hyper_parameters: the task's checkpoint hyper-parameters (how to build it).
        datamodule: the data module it was trained on: its length limits, crop policies and section for the card.
        full: also write the fixed weights of backbones loaded from a source (default: referenced by checksum).
        test_summary: ``summary_test.json`` of ``mmfuse test`` on the checkpoint: its metrics and modality
            contributions go into the model card.
    """
    model = task.model
    state = dict(task.state_dict())
    references = _references(model.backbones, state, full)
    modalities = list(model.backbones)
    served = {m: v for m, v in (getattr(datamodule, "max_lengths", None) or {}).items() if m in modalities}
    crop = {m: p for m, p in (getattr(datamodule, "crop", None) or {}).items() if m in served}
    config = PretrainedConfig(
        model=model_section(hyper_parameters), modalities=modalities, output_names=list(task.target_names),
        kind=kind_of(task.objective, model.token_modality), max_lengths=dict(served), crop=dict(crop),
        weights={"full": full, "references": references}, data=_data_section(datamodule),
        backbones={m: backbone_card(b) for m, b in model.backbones.items()},
        **_test_report(test_summary),
    )  # fmt: skip
    return write_directory(output, config, state, overwrite)


def backbone_card(backbone: Any) -> dict[str, Any]:
    """What the model card says of a backbone: its class, preset, weights source, licence and paper."""
    inner = backbone.backbone if isinstance(backbone, CachedBackbone) else backbone
    preset = getattr(inner, "preset", None)
    return {"class": type(inner).__name__, "preset": getattr(preset, "name", None), "source": inner.weights_source,
            "license": getattr(preset, "license", None), "paper": getattr(preset, "paper", None)}  # fmt: skip


def _data_section(datamodule: Any) -> dict[str, Any] | None:
    if datamodule is None:
        return None
    hparams = getattr(datamodule, "hparams", None)
    args = json.loads(json.dumps(dict(hparams), default=str)) if hparams else {}
    return {"class_path": f"{type(datamodule).__module__}.{type(datamodule).__qualname__}", "init_args": args}


def _test_report(summary: Mapping[str, Any] | None) -> dict[str, Any]:
    if not summary:
        return {}
    metrics = {k: float(v) for k, v in (summary.get("metrics") or {}).items() if isinstance(v, int | float)}
    report = summary.get("report_dir")
    table = Path(report) / "modality_contribution.md" if report else None
    contributions = table.read_text(encoding="utf-8") if table is not None and table.is_file() else ""
    return {"metrics": metrics, "contributions": contributions}


def save_pretrained(model: Any, output: str | Path, overwrite: bool = False) -> Path:
    """Writes a model loaded with ``from_pretrained`` (perhaps fine-tuned further) as an export again."""
    config = getattr(model, "pretrained", None)
    objective = getattr(model, "objective", None)
    if not isinstance(config, PretrainedConfig) or objective is None:
        raise ConfigError(
            "save_pretrained writes a model that knows how it was built: one loaded with FusionModel.from_pretrained, "
            "or a trained checkpoint through `mmfuse export --config ... --ckpt_path ...`"
        )
    state = {f"{MODEL}{k}": v for k, v in model.state_dict().items() if not k.startswith("objective.")}
    state.update({f"objective.{k}": v for k, v in objective.state_dict().items()})
    full = bool(config.weights.get("full"))
    references = _references(model.backbones, state, full)
    fresh = PretrainedConfig(**{**config.__dict__, "weights": {"full": full, "references": references}})
    return write_directory(output, fresh, state, overwrite)
