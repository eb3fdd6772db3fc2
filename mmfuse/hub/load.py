"""Loading an exported directory (or a Hugging Face hub repository holding one) as a plain FusionModel.

The weights file is checked against the SHA-256 config.json records before it is read; the backbones whose
fixed weights it leaves out are rebuilt from their sources and their weights checked against the recorded
checksums, so a changed source (another revision, a re-uploaded file) is refused instead of predicting with
weights the model was not trained with.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from mmfuse.errors import ConfigError, NonFiniteError
from mmfuse.hub.build import build_parts
from mmfuse.hub.layout import (
    CONFIG_FILE,
    WEIGHTS_FILE,
    PretrainedConfig,
    PretrainedError,
    check_kind,
    file_sha256,
    read_config,
    refuse_remote_code,
    tensors_sha256,
)  # fmt: skip
from mmfuse.io import state_dict_mismatch

__all__ = ["REFERENCES_KEY", "as_checkpoint", "check_references", "load_pretrained", "resolve_directory",
           "trained_state"]

#: the prefixes of the task's state dict (the keys of model.safetensors)
MODEL, OBJECTIVE = "model.", "objective."


def resolve_directory(path: str | Path, revision: str | None = None, cache_dir: str | None = None) -> Path:
    """A local exported directory, or the snapshot of a hub repository ``owner/name`` (huggingface_hub)."""
    local = Path(path).expanduser()
    if local.exists():
        return local
    text = str(path)
    if text.count("/") != 1 or text.startswith((".", "/", "~")):
        raise PretrainedError(f"{text!r} is neither a directory nor a hub id (owner/name); pass the directory "
                              f"`mmfuse export` wrote")  # fmt: skip
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    try:  # only the files an export holds: no code file of the repository is downloaded
        found = snapshot_download(text, revision=revision, cache_dir=cache_dir,
                                  allow_patterns=[CONFIG_FILE, WEIGHTS_FILE, "config.yaml", "README.md"])  # fmt: skip
    except (HfHubHTTPError, LocalEntryNotFoundError, OSError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise PretrainedError(f"cannot download {text!r} from the Hugging Face hub ({first}); check the id and "
                              f"your connection, or pass a local directory") from None  # fmt: skip
    return Path(found)


def _read_weights(directory: Path, config: PretrainedConfig) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    file = directory / config.weights.get("file", WEIGHTS_FILE)
    if file.parent != directory or not file.is_file():
        raise PretrainedError(f"{directory} has no weights file {file.name!r}; export the model again")
    expected = config.weights.get("sha256")
    if not expected or file_sha256(file) != expected:
        raise PretrainedError(
            f"{file} does not match the checksum in {directory / CONFIG_FILE} (it was changed or damaged after "
            f"export); download or export it again"
        )
    try:
        return load_file(str(file))
    except (SafetensorError, OSError, ValueError) as exc:
        raise PretrainedError(f"cannot read {file} ({exc}); export the model again") from None


def _check_references(model: Any, config: PretrainedConfig, state: dict[str, torch.Tensor], where: Path) -> None:
    """Adds the rebuilt backbones' fixed weights to ``state``, after checking them against the recorded checksums."""
    references = config.weights.get("references") or {}
    unknown = sorted(set(references) - set(model.backbones))
    if unknown:
        raise PretrainedError(f"{where / CONFIG_FILE} references weights of {unknown[0]!r}, which has no backbone")
    check_references(model.backbones, references)
    for modality, ref in references.items():
        own = model.backbones[modality].state_dict()
        state.update({f"{MODEL}backbones.{modality}.{k}": own[k] for k in ref["keys"]})


def trained_state(config: PretrainedConfig, directory: Path, model: Any) -> dict[str, torch.Tensor]:
    """The task's full state dict for ``model`` (built from ``config``): the file's tensors and the fixed weights
    of referenced backbones, each checked."""
    state = _read_weights(directory, config)
    diverged = [k for k, v in state.items() if v.is_floating_point() and not bool(v.isfinite().all())]
    if diverged:
        raise NonFiniteError(f"{directory / WEIGHTS_FILE} holds NaN or infinite weights ({', '.join(diverged[:3])})")
    _check_references(model, config, state, directory)
    return state


def load_pretrained(cls: type, path: str | Path, device: str | torch.device | None = None,
                    trust_remote_code: bool = False, revision: str | None = None,
                    cache_dir: str | None = None) -> Any:  # fmt: skip
    """An exported model as ``cls`` (:class:`~mmfuse.model.FusionModel`) in eval mode, with ``objective`` (its
    predictions in the data's terms) and ``pretrained`` (the :class:`~mmfuse.hub.layout.PretrainedConfig`)."""
    directory = resolve_directory(path, revision, cache_dir)
    config = read_config(directory)
    check_kind(config.kind, str(directory / CONFIG_FILE))
    refuse_remote_code(config, directory, trust_remote_code)
    where = str(directory / CONFIG_FILE)
    parts = build_parts(config.model, where)
    objective = parts.pop("objective")
    if list(objective.target_names) != list(config.output_names) and config.kind != "classification":
        raise ConfigError(f"{where}: output_names differ from the model's target_names")
    model = cls(**parts)
    unexpected = sorted(set(parts["backbones"]) ^ set(config.modalities))
    if unexpected:
        raise ConfigError(f"{where}: modalities {config.modalities} do not match the backbones "
                          f"{sorted(parts['backbones'])}")
    state = trained_state(config, directory, model)
    model_state = {k[len(MODEL):]: v for k, v in state.items() if k.startswith(MODEL)}
    objective_state = {k[len(OBJECTIVE):]: v for k, v in state.items() if k.startswith(OBJECTIVE)}
    other = sorted(k for k in state if not k.startswith((MODEL, OBJECTIVE)))
    problem = (state_dict_mismatch(model.state_dict(), model_state)
               or state_dict_mismatch(objective.state_dict(), objective_state)
               or (f"unexpected keys {', '.join(other[:4])}" if other else None))  # fmt: skip
    if problem:
        raise PretrainedError(f"{directory / WEIGHTS_FILE} does not fit the model its config builds: {problem}; "
                              f"export the model again")  # fmt: skip
    model.load_state_dict(model_state)
    objective.load_state_dict(objective_state)
    model.objective = objective
    model.pretrained = config
    if device is not None:
        model.to(device)
    return model.eval()



def as_checkpoint(directory: str | Path) -> dict[str, Any]:
    """An exported directory as the Lightning checkpoint its task loads (``--ckpt_path DIR``): the weights file's
    tensors (checked against its checksum), the task's hyper-parameters, the sources of the fixed weights left out
    (the task rebuilds them; :func:`check_references` checks them)."""
    import lightning

    directory = Path(directory).expanduser()
    config = read_config(directory)
    refuse_remote_code(config, directory, trust_remote_code=False)
    state = _read_weights(directory, config)
    references = config.weights.get("references") or {}
    model = config.model
    checkpoint: dict[str, Any] = {
        "state_dict": state,
        "hyper_parameters": {**(model.get("init_args") or {}), "_class_path": model.get("class_path")},
        "pytorch-lightning_version": lightning.__version__,
        "epoch": 0, "global_step": 0,
    }  # fmt: skip
    if references:
        checkpoint["mmfuse_reloaded_weights"] = {m: ref.get("source") for m, ref in references.items()}
        checkpoint[REFERENCES_KEY] = references
    return checkpoint


#: the checkpoint key holding an export's references (source, revision, checksum of the fixed weights)
REFERENCES_KEY = "mmfuse_weight_references"


def check_references(backbones: Any, references: Any) -> None:
    """Refuses backbones whose rebuilt fixed weights differ from an export's recorded checksums."""
    for modality, ref in (references or {}).items():
        if modality not in backbones:
            continue
        own = backbones[modality].state_dict()
        keys = [k for k in ref.get("keys") or [] if k in own]
        if len(keys) != len(ref.get("keys") or []) or tensors_sha256({k: own[k] for k in keys}) != ref.get("sha256"):
            raise PretrainedError(
                f"the {modality} backbone's weights from {ref.get('source')!r} (revision {ref.get('revision')!r}) are "
                f"not those the exported model was trained with (checksum differs); use that source and revision, or "
                f"export the model with --full to include them"
            )
