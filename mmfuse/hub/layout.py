"""The exported directory: what each file holds, and the checksums that say it is whole.

A directory written by ``mmfuse export`` (or :meth:`FusionModel.save_pretrained <mmfuse.model.FusionModel>`)::

    config.json         format, the model's config (``{class_path, init_args}`` of the task, as trained), the
                        inputs (modalities, lengths and crop policies of the data module), the outputs (names,
                        kind), the weights file's SHA-256 and, for each backbone whose fixed weights are left
                        out, its source, revision and the SHA-256 of those weights
    config.yaml         the same model as an mmfuse config section: ``mmfuse predict --config DIR/config.yaml``
    model.safetensors   the weights (safetensors: no pickle), keyed as the task's state dict
                        (``model.adapter.…``, ``objective.target_mean``)
    README.md           the model card, with Hugging Face front matter

Nothing in the directory is ever executed: components are looked up by name in mmfuse's registries, weights are
read by safetensors, and a config asking for remote code is refused unless the caller passes
``trust_remote_code=True``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from torch import Tensor

from mmfuse.errors import ConfigError, MmfuseError

__all__ = [
    "CONFIG_FILE", "CARD_FILE", "FORMAT", "WEIGHTS_FILE", "YAML_FILE", "PretrainedConfig", "PretrainedError",
    "check_kind", "file_sha256", "is_exported", "read_config", "refuse_remote_code", "tensors_sha256",
]  # fmt: skip

CONFIG_FILE, YAML_FILE, WEIGHTS_FILE, CARD_FILE = "config.json", "config.yaml", "model.safetensors", "README.md"
#: the value of config.json's ``format`` key: the layout above, version 1
FORMAT = "mmfuse-pretrained/1"


class PretrainedError(MmfuseError, ValueError):
    """An exported directory that cannot be used as it is (missing, damaged, tampered with, or unsafe)."""


@dataclass
class PretrainedConfig:
    """config.json of an exported model.

    Args:
        model: the task's ``{class_path, init_args}``, as its checkpoint's hyper-parameters hold them.
        modalities: the modalities the model reads (its backbones), in order.
        output_names: one name per output (the targets, or the classes).
        kind: ``regression``, ``classification`` or ``token_classification`` (predictions per token).
        max_lengths: ``{modality: letters}`` the data module cropped to (``lengths.max``); none: no crop.
        crop: ``{modality: policy}`` for sequences over ``max_lengths`` (``error``: refused).
        weights: ``{"file", "sha256", "full"}``; ``references``: ``{modality: {"source", "revision", "sha256",
            "keys"}}`` of the backbones whose fixed weights the file leaves out.
        backbones: ``{modality: {"class", "preset", "source", "license", "paper"}}`` (for the model card).
        data: the data module the model was trained on (``{class_path, init_args}``; for the model card).
        metrics: test metrics from the run's test report, if there was one.
        contributions: the test report's modality contributions (its markdown table), if any.
        mmfuse_version: the version that wrote it.
    """

    model: dict[str, Any]
    modalities: list[str]
    output_names: list[str]
    kind: str
    max_lengths: dict[str, int] = field(default_factory=dict)
    crop: dict[str, str] = field(default_factory=dict)
    weights: dict[str, Any] = field(default_factory=dict)
    backbones: dict[str, dict[str, Any]] = field(default_factory=dict)
    data: dict[str, Any] | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    contributions: str = ""
    mmfuse_version: str = ""
    format: str = FORMAT

    @property
    def limits(self) -> dict[str, int | None]:
        """Letters each modality is cropped to (``None``: no crop; the backbone's tokenizer may still refuse)."""
        return {m: self.max_lengths.get(m) for m in self.modalities}

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=False) + "\n"

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], where: str) -> PretrainedConfig:
        if not isinstance(data, Mapping) or data.get("format") != FORMAT:
            found = data.get("format") if isinstance(data, Mapping) else type(data).__name__
            raise PretrainedError(f"{where} is not an mmfuse export (format {found!r}, not {FORMAT!r}); write one "
                                  f"with `mmfuse export`")  # fmt: skip
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - known)
        if unknown:
            raise PretrainedError(f"{where} has keys this mmfuse does not know ({', '.join(unknown)}); it was written "
                                  f"by a newer mmfuse: upgrade mmfuse")  # fmt: skip
        missing = sorted({"model", "modalities", "output_names", "kind"} - set(data))
        if missing:
            raise PretrainedError(f"{where} lacks {', '.join(missing)}; export the model again")
        return cls(**dict(data))


def is_exported(path: str | Path) -> bool:
    """Whether ``path`` is a directory holding an export's config.json."""
    p = Path(path).expanduser()
    return p.is_dir() and (p / CONFIG_FILE).is_file()


def read_config(directory: str | Path) -> PretrainedConfig:
    """The config.json of the exported ``directory``, checked (a missing or foreign file named with the fix)."""
    directory = Path(directory).expanduser()
    if not directory.is_dir():
        raise PretrainedError(f"{str(directory)!r} is not a directory; pass the directory `mmfuse export` wrote")
    file = directory / CONFIG_FILE
    if not file.is_file():
        raise PretrainedError(f"{str(directory)!r} has no {CONFIG_FILE}; pass the directory `mmfuse export` wrote")
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PretrainedError(f"{file} is not valid JSON ({exc}); export the model again") from None
    return PretrainedConfig.from_mapping(data, str(file))


def file_sha256(path: Path) -> str:
    """The SHA-256 (hex) of a file's bytes, read in blocks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def tensors_sha256(tensors: Mapping[str, Tensor]) -> str:
    """The SHA-256 of named tensors: each name, dtype, shape and bytes, in sorted name order (the checksum of
    a backbone's fixed weights, which the source gives back when the model is rebuilt)."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        tensor = tensors[name].detach().cpu().contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(-1).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()


def refuse_remote_code(config: PretrainedConfig, directory: Path, trust_remote_code: bool) -> None:
    """Refuses a config that sets ``trust_remote_code`` anywhere unless the caller trusts it itself."""
    if trust_remote_code:
        return
    found = _remote_code_keys(config.model, "model")
    if found:
        scripts = sorted(p.name for p in directory.glob("*.py"))
        held = f"; the directory also holds Python files ({', '.join(scripts[:3])})" if scripts else ""
        raise PretrainedError(
            f"{directory / CONFIG_FILE} sets {found[0]}: true, which would run the weights source's Python code"
            f"{held}. mmfuse never runs code from a model directory; if you trust it, pass trust_remote_code=True"
        )


def _remote_code_keys(tree: Any, prefix: str) -> list[str]:
    if isinstance(tree, Mapping):
        found = []
        for key, value in tree.items():
            where = f"{prefix}.{key}"
            if key == "trust_remote_code" and value not in (None, False, 0, "", "false", "False"):
                found.append(where)
            found += _remote_code_keys(value, where)
        return found
    if isinstance(tree, list):
        return [k for i, v in enumerate(tree) for k in _remote_code_keys(v, f"{prefix}[{i}]")]
    return []


def check_kind(kind: str, where: str) -> None:
    if kind not in ("regression", "classification", "token_classification"):
        raise ConfigError(f"{where}: kind {kind!r} is not regression, classification or token_classification")
