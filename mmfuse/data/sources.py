"""Reading a table: a CSV/TSV/Parquet file, a local ``datasets`` directory or a Hugging Face hub data set."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from mmfuse.data.errors import DataError

__all__ = ["SPLIT_ALIASES", "read_source", "read_table"]

#: split names a table or a ``DatasetDict`` may use, and the split each means
SPLIT_ALIASES = {"train": "train", "training": "train", "val": "val", "valid": "val", "validation": "val",
                 "dev": "val", "test": "test"}  # fmt: skip
_TABLE_SUFFIXES = (".csv", ".tsv", ".tab", ".txt", ".parquet", ".pq", ".gz", ".bz2", ".zst", ".xz")
_HUB_ID = re.compile(r"^[\w.-]+/[\w.-]+$")


def read_table(path: str | Path, dtype: Mapping[str, Any] | None = None) -> pd.DataFrame:
    """Reads a CSV, TSV or Parquet table, choosing the format by the file's suffixes.

    Args:
        path: the file.
        dtype: ``{column: type}`` for CSV/TSV columns not to be inferred, e.g. ``{"label": str}`` keeps
            ``007`` as written (Parquet columns keep their stored types).
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise DataError(f"table {str(path)!r} does not exist; check the data module's `path`")
    suffixes = [s.lower() for s in path.suffixes if s.lower() not in (".gz", ".bz2", ".zst", ".xz")]
    kind = suffixes[-1] if suffixes else ""
    if kind in (".parquet", ".pq"):
        return pd.read_parquet(path)
    if kind in (".tsv", ".tab", ".txt"):
        return pd.read_csv(path, sep="\t", dtype=dtype)
    if kind == ".csv":
        return pd.read_csv(path, dtype=dtype)
    raise DataError(f"cannot tell the format of {str(path)!r}: name it .csv, .tsv or .parquet (optionally .gz)")


def read_source(
    path: str, revision: str | None = None, dtype: Mapping[str, Any] | None = None, split_column: str = "split"
) -> pd.DataFrame:
    """Reads a table file, a local ``datasets`` directory or a Hugging Face hub data set into one table.

    A data set with several splits (a ``DatasetDict``) gets a ``split_column`` holding each record's
    split (``validation``, ``valid`` and ``dev`` read as ``val``; any such column it had is replaced);
    one with a single split does not, so its records are split as those of a table file.

    Args:
        path: a CSV/TSV/Parquet file; a directory saved by ``Dataset.save_to_disk`` or
            ``DatasetDict.save_to_disk``, or holding data files ``datasets.load_dataset`` reads; or a
            hub id such as ``InstaDeepAI/multi_omics_transcript_expression``.
        revision: branch, tag or commit of a hub data set (ignored for local paths).
        dtype: ``{column: type}`` for CSV/TSV files (see :func:`read_table`).
        split_column: the column that receives the split names of a ``DatasetDict``.

    Raises:
        DataError: a missing file, or a hub data set that cannot be loaded (e.g. offline), with the
            command that downloads it.
    """
    local = Path(path).expanduser()
    if local.is_dir():
        import datasets  # lazy: a heavy import that `mmfuse --help` does without

        if (local / "dataset_dict.json").is_file() or (local / "state.json").is_file():
            return _dataset_table(datasets.load_from_disk(str(local)), split_column)
        return _dataset_table(datasets.load_dataset(str(local)), split_column)
    if local.exists() or not _HUB_ID.match(path) or path.lower().endswith(_TABLE_SUFFIXES):
        return read_table(local, dtype)
    import datasets

    try:
        loaded = datasets.load_dataset(path, revision=revision)
    except Exception as exc:  # offline, unknown id, gated, a loading script datasets no longer runs, ...
        at = f" at revision {revision!r}" if revision else ""
        raise DataError(
            f"cannot load the Hugging Face data set {path!r}{at} ({type(exc).__name__}: {exc}). "
            f"{path!r} is neither a local file nor a directory, so it was taken for a hub id. To use it "
            f"offline, download it first: `hf download {path} --repo-type dataset --local-dir DIR"
            f"{f' --revision {revision}' if revision else ''}` and set `path: DIR`."
        ) from exc
    return _dataset_table(loaded, split_column)


def _dataset_table(loaded: Any, split_column: str) -> pd.DataFrame:
    """A ``Dataset`` or ``DatasetDict`` as one table (with ``split_column`` filled for several splits)."""
    if not hasattr(loaded, "keys"):  # a Dataset
        return loaded.to_pandas()
    names = list(loaded.keys())
    if len(names) == 1:
        return loaded[names[0]].to_pandas()
    unknown = [n for n in names if n.lower() not in SPLIT_ALIASES]
    if unknown:
        raise DataError(
            f"the data set has splits {names}; {unknown} cannot be read as train, validation or test. "
            f"Rename them (e.g. with DatasetDict.save_to_disk), or save one table with a split column."
        )
    parts = []
    for name in names:
        part = loaded[name].to_pandas()
        part[split_column] = SPLIT_ALIASES[name.lower()]
        parts.append(part)
    return pd.concat(parts, ignore_index=True)
