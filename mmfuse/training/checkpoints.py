"""Checking that saved weights fit a model, with a message that says what differs and what to do."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

import torch

from mmfuse.errors import CheckpointMismatchError, MmfuseError
from mmfuse.io import describe_mismatch, state_dict_mismatch

__all__ = [
    "checkpoint_file",
    "load_trained_weights",
    "read_checkpoint_hparams",
    "CheckpointMismatchError",
    "compare_with_checkpoint",
    "describe_mismatch",
    "saved_model_config",
    "state_dict_mismatch",
]


# --- what a checkpoint's hyper-parameters may change ------------------------------------------------
#
# Lightning's CLI parses a checkpoint's ``hyper_parameters`` over the user's config. mmfuse does not: the
# config builds the model, the checkpoint brings weights and training state only. The saved
# hyper-parameters are compared with the config instead; a different class anywhere in the model
# (task, a backbone, the adapter, the head, the objective), a modality one side lacks, or a checkpoint
# that wants ``trust_remote_code`` the config does not give, is refused; any other difference is shown
# and the config's value is used. docs/reliability.md ("What a checkpoint may change") is the policy.

_IGNORED = ("model.init_args.target_names",)  # linked from the data module; checked against the weights


def saved_model_config(hyper_parameters: Mapping[str, Any]) -> dict[str, Any]:
    """A checkpoint's ``hyper_parameters`` as the ``{class_path, init_args}`` of the ``model`` section."""
    saved = {k: v for k, v in hyper_parameters.items() if k not in ("_instantiator", "_class_path")}
    return {"class_path": hyper_parameters.get("_class_path"), "init_args": saved}


def _flatten(tree: Any, prefix: str) -> dict[str, Any]:
    if isinstance(tree, Mapping):
        if not tree:
            return {prefix: {}}
        flat: dict[str, Any] = {}
        for key, value in tree.items():
            flat.update(_flatten(value, f"{prefix}.{key}"))
        return flat
    return {prefix: list(tree) if isinstance(tree, tuple) else tree}


def _same_class(a: Any, b: Any) -> bool:
    """Whether two class paths name one class, without importing either (a checkpoint's module is not
    imported to find out): equal, or one module a package of the other (``mmfuse.backbones.Enformer``
    and ``mmfuse.backbones.enformer.Enformer``)."""
    if a == b:
        return True
    if not (isinstance(a, str) and isinstance(b, str)) or a.rsplit(".", 1)[-1] != b.rsplit(".", 1)[-1]:
        return False
    ma, mb = a.rpartition(".")[0], b.rpartition(".")[0]
    return ma.startswith(mb + ".") or mb.startswith(ma + ".") or not ma or not mb


def _show(key: str, value: Any) -> str:
    if value is _MISSING:
        return "not set"
    if key.endswith(".class_path") and isinstance(value, str):
        return value.rsplit(".", 1)[-1]
    text = repr(value)  # strings whole (paths matter), long lists cut
    return text if isinstance(value, str) or len(text) <= 80 else text[:77] + "..."


def compare_with_checkpoint(
    config: Mapping[str, Any], hyper_parameters: Mapping[str, Any]
) -> tuple[list[str], list[str]]:
    """How the config's ``model`` section (``{class_path, init_args}``) differs from a checkpoint's
    hyper-parameters: ``(refused, notes)``, one-line descriptions naming each option as the command line
    does (``model.init_args.adapter.class_path``). Refused: a different class anywhere, a part only one
    side has, ``trust_remote_code`` the checkpoint sets and the config does not. Notes: other values."""
    ours = _flatten(dict(config), "model")
    theirs = _flatten(saved_model_config(hyper_parameters), "model")
    refused: list[str] = []
    notes: list[str] = []
    replaced: list[str] = []  # parts built from another class: their options are not compared
    for key in sorted(set(ours) | set(theirs), key=lambda k: (k.count("."), k)):
        if key in _IGNORED or any(key.startswith(p) for p in replaced):
            continue
        mine, saved = ours.get(key, _MISSING), theirs.get(key, _MISSING)
        if key.endswith(".class_path") and not _same_class(mine, saved):
            part = key.removesuffix(".class_path")
            if _MISSING in (mine, saved) or None in (mine, saved):
                only = "this config" if saved in (_MISSING, None) else "the checkpoint"
                refused.append(f"{part} is only in {only}")
            else:
                a, b = _show(key, saved), _show(key, mine)
                a, b = (saved, mine) if a == b else (a, b)  # one name in two packages: say which
                refused.append(f"{key} is {a} in the checkpoint, {b} in this config")
            replaced.append(part + ".")
        elif key.endswith(".trust_remote_code") and _on(saved) and not _on(mine):
            refused.append(
                f"the checkpoint sets {key}: {saved!r}, which mmfuse never takes from a checkpoint (it would "
                f"run the source's Python code); if you trust that source, set it in your own config"
            )
        elif mine != saved and not key.endswith(".class_path"):
            notes.append(f"{key}: {_show(key, mine)} (config), {_show(key, saved)} (checkpoint)")
    return refused, notes


_MISSING: Any = object()


def _on(value: Any) -> bool:
    return value is not _MISSING and value not in (None, False, 0, "", "false", "False")


def read_checkpoint_hparams(path: str, aliases: Collection[str] = ()) -> dict[str, Any]:
    """Fails early, and clearly, on a checkpoint that is missing or that mmfuse cannot read safely (read with
    ``torch.load(weights_only=True)``); returns its hyper-parameters (none for ``aliases`` such as ``last``)."""
    if path in aliases or path.startswith("registry:"):
        return {}
    from mmfuse.hub.layout import is_exported

    if is_exported(path):  # a directory `mmfuse export` wrote
        from mmfuse.hub.load import as_checkpoint

        return dict(as_checkpoint(path)["hyper_parameters"])
    file = Path(path).expanduser()
    if not file.is_file():
        raise MmfuseError(f"checkpoint {path!r} does not exist; pass the .ckpt file written by `mmfuse fit`")
    try:
        checkpoint = torch.load(file, map_location="cpu", weights_only=True, mmap=True)
    except Exception as exc:
        if "weights_only" in str(exc) or "Unsupported global" in str(exc):
            raise MmfuseError(
                f"checkpoint {path!r} holds Python objects that only unpickling could restore; mmfuse reads "
                f"checkpoints with torch.load(weights_only=True) and will not run that code. Use a checkpoint "
                f"written by `mmfuse fit`."
            ) from None
        raise MmfuseError(
            f"cannot read checkpoint {path!r} ({type(exc).__name__}: {str(exc).splitlines()[0]}). It may be "
            f"truncated (a crash while writing it); use an earlier checkpoint."
        ) from None
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise MmfuseError(
            f"{path!r} is not a Lightning checkpoint (it has no state_dict); pass a .ckpt file written by "
            f"`mmfuse fit` (weights alone load through a backbone's `source`)"
        )
    saved = checkpoint.get("hyper_parameters")
    return dict(saved) if isinstance(saved, dict) else {}


def checkpoint_file(trainer: Any, ckpt_path: str) -> Path:
    """The file ``ckpt_path`` names: a path, or ``best``/``last`` of ``trainer``'s checkpoint callback (as
    Lightning's ``trainer.predict(ckpt_path=...)`` reads them)."""
    if ckpt_path in ("best", "last"):
        callback = getattr(trainer, "checkpoint_callback", None)
        found = getattr(callback, "best_model_path" if ckpt_path == "best" else "last_model_path", "") or ""
        if not found:
            raise MmfuseError(f"--ckpt_path {ckpt_path}: this trainer has written no {ckpt_path} checkpoint yet; "
                              f"pass the checkpoint's path")  # fmt: skip
        ckpt_path = found
    path = Path(ckpt_path)
    from mmfuse.hub.layout import is_exported

    if not path.is_file() and not is_exported(path):
        raise MmfuseError(f"--ckpt_path {str(ckpt_path)!r} is not a checkpoint file (a sharded checkpoint "
                          f"directory is read by fit/validate/test/predict only); pass the .ckpt file `mmfuse fit` "
                          f"wrote, or a directory `mmfuse export` wrote")  # fmt: skip
    return path


def load_trained_weights(task: Any, path: Path) -> None:
    """Loads the weights of the checkpoint at ``path`` into ``task`` as ``trainer.predict(ckpt_path=...)`` does:
    read with ``torch.load(weights_only=True)``, checked by the task's ``on_load_checkpoint`` (slim checkpoints,
    target names), then its ``state_dict`` loaded as strictly as the task asks (``strict_loading``)."""
    from mmfuse.training.checkpoint_io import AtomicCheckpointIO

    checkpoint = AtomicCheckpointIO().load_checkpoint(path)
    task.on_load_checkpoint(checkpoint)
    task.load_state_dict(checkpoint["state_dict"], strict=task.strict_loading)
