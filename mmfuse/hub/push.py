"""Uploading an export to the Hugging Face hub (huggingface_hub), only when the user asks."""

from __future__ import annotations

import tempfile
from typing import Any

from mmfuse.hub.export import save_pretrained

__all__ = ["push_to_hub"]


def push_to_hub(model: Any, repo_id: str, private: bool = True, token: str | None = None,
                commit_message: str = "Upload mmfuse model", api: Any = None) -> str:  # fmt: skip
    """Writes ``model``'s export to a temporary directory and uploads it to ``repo_id`` (created if missing);
    ``api``: an ``huggingface_hub.HfApi`` (default: a new one with ``token``). Returns the commit URL."""
    from huggingface_hub import HfApi

    api = api if api is not None else HfApi(token=token)
    with tempfile.TemporaryDirectory() as tmp:
        directory = save_pretrained(model, f"{tmp}/export")
        api.create_repo(repo_id, private=private, exist_ok=True)
        info = api.upload_folder(repo_id=repo_id, folder_path=str(directory), commit_message=commit_message)
    return str(getattr(info, "commit_url", info))
