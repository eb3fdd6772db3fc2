"""Where a table comes from, and reading it in blocks: CSV/TSV/Parquet files, a directory of them (split by
their names), a ``datasets`` directory or a Hugging Face hub data set (or one file of its repository).

:func:`source_parts` finds the files (or the ``datasets`` object), :func:`part_columns` and
:func:`part_batches` read one file's header and its record batches (CSV/TSV through pyarrow in small
blocks, cells as text); :mod:`mmfuse.data.records` writes them into the records store.
:func:`read_table` reads a whole small table into pandas (metadata tables, not sequences).
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from mmfuse.data.errors import DataError

__all__ = ["BLOCKS", "SPLIT_ALIASES", "RowTooLong", "SourcePart", "part_batches", "part_columns", "read_table",
           "source_parts"]

#: split names a table or a ``DatasetDict`` may use, and the split each means
SPLIT_ALIASES = {"train": "train", "training": "train", "val": "val", "valid": "val", "validation": "val",
                 "dev": "val", "test": "test"}  # fmt: skip
_TABLE_SUFFIXES = (".csv", ".tsv", ".tab", ".txt", ".parquet", ".pq", ".gz", ".bz2", ".zst", ".xz")
_HUB_ID = re.compile(r"^[\w.-]+/[\w.-]+$")
#: what pandas reads as missing in a CSV cell (its default na_values), so both readers agree
_NULLS = ["", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND", "1.#QNAN", "<NA>", "N/A",
          "NA", "NULL", "NaN", "None", "n/a", "nan", "null"]  # fmt: skip
#: CSV block sizes tried in turn: small blocks keep the conversion's memory small (a 1 GB table peaks about
#: 0.2 GB over the baseline with 4 MB), a larger one is needed only for a row longer than the block
BLOCKS = (4 << 20, 64 << 20, 1 << 30)


class RowTooLong(DataError):
    """A CSV/TSV row longer than the block it is read in (the reader retries with a larger block)."""
_BATCH_ROWS = 4096
_DATA_SUFFIXES = (".csv", ".tsv", ".tab", ".txt", ".parquet", ".pq")


@dataclass(frozen=True)
class SourcePart:
    """One file of a source, with the split its name (or its ``DatasetDict`` key) gives."""

    path: Path
    split: str | None = None


# sources --------------------------------------------------------------------------------------------
def _split_of_name(name: str) -> str | None:
    """The split a data file's name gives (``train_0.tsv`` → train, ``validation.tsv`` → val), as ``datasets``."""
    for token in re.split(r"[^a-z]+", name.lower()):
        if token in SPLIT_ALIASES:
            return SPLIT_ALIASES[token]
    return None


def _directory_parts(directory: Path, preset_file: str | None) -> list[SourcePart]:
    if preset_file and not _is_pattern(preset_file) and (directory / preset_file).is_file():  # a repository copy
        return [SourcePart(directory / preset_file)]
    files = sorted(p for p in directory.iterdir() if p.is_file() and _is_data_file(p))
    if not files and (directory / "data").is_dir():
        files = sorted(p for p in (directory / "data").iterdir() if p.is_file() and _is_data_file(p))
    if not files:
        hint = f" (it should hold {preset_file})" if preset_file else ""
        raise DataError(
            f"directory {str(directory)!r} holds no CSV/TSV/Parquet file nor a saved `datasets` data set{hint}; "
            f"check the data module's `path`"
        )
    splits = [_split_of_name(p.name) for p in files]
    if any(splits) and not all(splits):
        odd = [p.name for p, s in zip(files, splits, strict=True) if s is None]
        raise DataError(
            f"in {directory}, the names of {', '.join(odd[:3])} give no split while others do "
            f"({', '.join(p.name for p, s in zip(files, splits, strict=True) if s)[:200]}); name every file "
            f"train*/validation*/test*, or move the others out"
        )
    return [SourcePart(p, s) for p, s in zip(files, splits, strict=True)]


def _is_data_file(path: Path) -> bool:
    suffixes = [s.lower() for s in path.suffixes if s.lower() not in (".gz", ".bz2", ".zst", ".xz")]
    return bool(suffixes) and suffixes[-1] in _DATA_SUFFIXES and not path.name.startswith(".")


def _is_pattern(name: str) -> bool:
    return any(c in name for c in "*?[")


def source_parts(path: str, revision: str | None = None, preset_file: str | None = None) -> list[SourcePart] | Any:
    """The files of a source, or a ``datasets`` object for saved and hub data sets.

    Args:
        path: a table file; a directory of table files (split by their names, as ``datasets`` does:
            ``train*``, ``validation*``/``valid*``/``dev*``, ``test*``), a local copy of a hub data set
            repository holding ``preset_file``, or one saved by ``save_to_disk``; or a hub id.
        revision: branch, tag or commit of a hub data set.
        preset_file: the file of a known hub data set (e.g. ``transcript_expression/GTEx_final.csv``
            for IsoFormer's), fetched alone from the hub instead of running its loading script; or a
            pattern of its files (``*.tsv``), fetched and read as a local copy would be (the same
            splits from the file names, the same ``FILE:ROW`` ids).
    """
    local = Path(path).expanduser()
    if local.is_dir():
        if (local / "dataset_dict.json").is_file() or (local / "state.json").is_file():
            import datasets  # lazy: a heavy import that `mmfuse --help` does without

            return datasets.load_from_disk(str(local))
        return _directory_parts(local, preset_file)
    if local.exists() or not _HUB_ID.match(path) or path.lower().endswith(_TABLE_SUFFIXES):
        if not local.is_file():
            raise DataError(f"table {str(local)!r} does not exist; check the data module's `path`")
        return [SourcePart(local)]
    at = f" at revision {revision!r}" if revision else ""
    fix = (f"download it first: `hf download {path} --repo-type dataset --local-dir DIR"
           f"{f' --revision {revision}' if revision else ''}` and set `path: DIR`")  # fmt: skip
    try:
        if preset_file and _is_pattern(preset_file):
            from huggingface_hub import snapshot_download

            copy = snapshot_download(path, repo_type="dataset", revision=revision, allow_patterns=[preset_file])
            return _directory_parts(Path(copy), None)
        if preset_file:
            from huggingface_hub import hf_hub_download

            return [SourcePart(Path(hf_hub_download(path, preset_file, repo_type="dataset", revision=revision)))]
        import datasets

        return datasets.load_dataset(path, revision=revision)
    except Exception as exc:  # offline, unknown id, gated, a loading script datasets no longer runs, ...
        raise DataError(
            f"cannot load the Hugging Face data set {path!r}{at} ({type(exc).__name__}: {exc}). {path!r} is neither "
            f"a local file nor a directory, so it was taken for a hub id. To use it offline, {fix}."
        ) from exc


def _delimiter(path: Path) -> str:
    suffixes = [s.lower() for s in path.suffixes if s.lower() not in (".gz", ".bz2", ".zst", ".xz")]
    kind = suffixes[-1] if suffixes else ""
    if kind in (".tsv", ".tab", ".txt"):
        return "\t"
    if kind == ".csv":
        return ","
    raise DataError(f"cannot tell the format of {str(path)!r}: name it .csv, .tsv or .parquet (optionally .gz)")


def _header(path: Path, delimiter: str) -> list[str]:
    import pyarrow as pa

    with pa.input_stream(str(path)) as stream:  # decompresses by the suffix
        first = io.TextIOWrapper(stream, encoding="utf-8", newline="").readline()
    return next(csv.reader([first], delimiter=delimiter), [])


def part_columns(part: SourcePart) -> list[str]:
    if _is_parquet(part.path):
        import pyarrow.parquet as pq

        return list(pq.ParquetFile(part.path).schema_arrow.names)
    return _header(part.path, _delimiter(part.path))


def _is_parquet(path: Path) -> bool:
    return path.suffix.lower() in (".parquet", ".pq")


def part_batches(part: SourcePart, columns: list[str], block: int = BLOCKS[0]) -> Iterator[Any]:
    """Record batches of ``columns`` of one file (CSV/TSV cells as text, missing as null), read in ``block`` bytes."""
    import pyarrow as pa

    if _is_parquet(part.path):
        import pyarrow.parquet as pq

        yield from pq.ParquetFile(part.path).iter_batches(batch_size=_BATCH_ROWS, columns=columns)
        return
    from pyarrow import csv as pcsv

    delimiter = _delimiter(part.path)
    try:
        yield from pcsv.open_csv(
            pa.input_stream(str(part.path)),
            read_options=pcsv.ReadOptions(block_size=block, use_threads=False),  # one block in memory at a time
            parse_options=pcsv.ParseOptions(delimiter=delimiter, newlines_in_values=False),
            convert_options=pcsv.ConvertOptions(
                column_types=dict.fromkeys(columns, pa.string()), include_columns=columns,
                null_values=_NULLS, strings_can_be_null=True, quoted_strings_can_be_null=True,
            ),  # fmt: skip
        )
    except pa.ArrowInvalid as exc:
        if "straddl" in str(exc) and block < BLOCKS[-1]:
            raise RowTooLong(f"{part.path} has a row longer than {block >> 20} MB") from None
        kind = "TSV" if delimiter == "\t" else "CSV"
        raise DataError(f"cannot read {part.path} as a {kind} table: {exc}") from None


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
