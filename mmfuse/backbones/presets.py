"""Pretrained checkpoints described as data, and the one place that finds their files.

Each architecture (one backbone class) has named presets: a hub id or none (random init), the
architecture's sizes, maximum input length, license and paper. Selecting a preset needs no dimension
typed by hand. ``source`` may override where the weights come from: a hub id or a local directory
(the way to work offline).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mmfuse.errors import ConfigError, MmfuseError
from mmfuse.registry import suggest_name

__all__ = ["Preset", "WeightsNotFoundError", "fetch_file", "get_preset", "is_local", "preset_table"]


class WeightsNotFoundError(MmfuseError, OSError):
    """Pretrained weights that could not be found or downloaded."""


@dataclass(frozen=True)
class Preset:
    """One checkpoint of an architecture, built with keywords.

    Attributes:
        name: the name written in YAML (``preset: esm2_t30_150M_UR50D``).
        source: hub id of the weights, or ``None`` for a randomly initialised architecture.
        config: the architecture's hyper-parameters, used to build it without weights.
        embed_dim: width of the embeddings the backbone returns.
        max_tokens: longest input, in tokens (``None``: no fixed limit).
        modality: what the model reads.
        license: license of the weights.
        paper: where the model is described.
        revision: hub revision (commit, branch or tag) to pin, if known.

    Examples:
        >>> Preset(name="tiny", source=None, config={"dim": 32}, embed_dim=32, modality="dna").max_tokens is None
        True
    """

    name: str
    source: str | None
    config: Mapping[str, Any] = field(default_factory=dict)
    embed_dim: int = 0
    max_tokens: int | None = None
    modality: str = ""
    license: str = ""
    paper: str = ""
    revision: str | None = None


def preset_table(*presets: Preset) -> dict[str, Preset]:
    """``{name: preset}`` of an architecture's presets; a name given twice is refused, not overwritten.

    Examples:
        >>> sorted(preset_table(Preset(name="tiny", source=None), Preset(name="big", source="org/big")))
        ['big', 'tiny']
    """
    table: dict[str, Preset] = {}
    for preset in presets:
        if preset.name in table:
            raise ValueError(f"two presets are named {preset.name!r}")
        table[preset.name] = preset
    return table


def get_preset(presets: Mapping[str, Preset], name: str, architecture: str) -> Preset:
    """The preset ``name`` of ``architecture``; unknown names list the known ones."""
    if name in presets:
        return presets[name]
    known = sorted(presets)
    close = suggest_name(name, known)
    hint = f" Did you mean {close!r}?" if close is not None else ""
    raise ConfigError(
        f"Unknown {architecture} preset {name!r}. Known presets: {', '.join(known)}.{hint} "
        f"To load other weights, keep a preset of the same architecture and set `source` to a hub id "
        f"or a local directory."
    )


def is_local(source: str) -> bool:
    """Whether ``source`` names an existing local directory (otherwise it is read as a hub id)."""
    return Path(source).expanduser().is_dir()


def fetch_file(source: str, candidates: Sequence[str], revision: str | None = None) -> Path:
    """Path of the first of ``candidates`` found in a local directory or hub repository ``source``.

    Raises:
        WeightsNotFoundError: none of the files exists there, or the hub cannot be reached.
    """
    if is_local(source):
        directory = Path(source).expanduser()
        for name in candidates:
            if (directory / name).is_file():
                return directory / name
        raise WeightsNotFoundError(
            f"{directory} holds none of {', '.join(candidates)}; point `source` at the directory of a saved checkpoint."
        )
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError

    errors = []
    for name in candidates:
        try:
            return Path(hf_hub_download(source, name, revision=revision))
        except Exception as exc:
            if isinstance(exc, EntryNotFoundError) and not isinstance(exc, LocalEntryNotFoundError):
                errors.append(f"{name}: {exc.__class__.__name__}")  # not in the repository: try the next name
                continue
            raise weights_error(source, exc) from exc  # offline, unknown repository, gated model, ...
    raise WeightsNotFoundError(f"hub repository {source!r} has none of {', '.join(candidates)} ({'; '.join(errors)})")


def weights_error(source: str, exc: BaseException) -> WeightsNotFoundError:
    """An error explaining how to load ``source`` offline."""
    return WeightsNotFoundError(
        f"could not load weights from {source!r}: {type(exc).__name__}: {exc}\n"
        f"If {source!r} is meant as a local directory, it does not exist. If it is a hub id and this "
        f"machine is offline, download it where the hub is reachable "
        f"(`hf download {source} --local-dir DIR`), copy DIR here and set `source: DIR`."
    )
