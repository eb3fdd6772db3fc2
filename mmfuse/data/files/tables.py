"""Where a table comes from, and reading it in blocks: CSV/TSV/Parquet files, a directory of them (split by
their names), a ``datasets`` directory or a Hugging Face hub data set (or one file of its repository).

:func:`source_parts` finds the files (or the ``datasets`` object), :func:`part_columns` and
:func:`part_batches` read one file's header and its record batches (CSV/TSV through pyarrow in small
blocks, cells as text); :mod:`mmfuse.data.store.records` writes them into the records store.
:func:`read_table` reads a whole small table into pandas (metadata tables, not sequences).

Text is UTF-8, with or without a byte-order mark (Excel's "CSV UTF-8" writes one): the mark is never part
of the first column's name. Id columns (``text_columns``) are read as written: ``NA``, ``nan``, ``None``
and ``NULL`` are ids like any other (only an empty cell has no id); in the other columns those spellings
(:data:`NULLS`, pandas' defaults) and an empty cell are missing.
"""

from __future__ import annotations

import csv
import gzip
import io
import re
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import pandas as pd

from mmfuse.data.errors import DataError

__all__ = ["BATCH_ROWS", "BLOCKS", "NULLS", "SPLIT_ALIASES", "RowTooLong", "SourcePart", "check_table_file",
           "open_text", "part_batches", "part_columns", "read_table", "reading_error", "source_parts"]  # fmt: skip

#: split names a table or a ``DatasetDict`` may use, and the split each means
SPLIT_ALIASES = {"train": "train", "training": "train", "val": "val", "valid": "val", "validation": "val",
                 "dev": "val", "test": "test"}  # fmt: skip
_TABLE_SUFFIXES = (".csv", ".tsv", ".tab", ".txt", ".parquet", ".pq", ".gz", ".bz2", ".zst", ".xz")
_HUB_ID = re.compile(r"^[\w.-]+/[\w.-]+$")
#: what is missing in a CSV/TSV cell outside id columns (pandas' default na_values), so both readers agree
NULLS = ["", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND", "1.#QNAN", "<NA>", "N/A",
          "NA", "NULL", "NaN", "None", "n/a", "nan", "null"]  # fmt: skip
#: CSV block sizes tried in turn: small blocks keep the conversion's memory small (a 1 GB table peaks about
#: 0.2 GB over the baseline with 4 MB), a larger one is needed only for a row longer than the block
BLOCKS = (4 << 20, 64 << 20, 1 << 30)


class RowTooLong(DataError):
    """A CSV/TSV row longer than the block it is read in (the reader retries with a larger block)."""
#: rows per Arrow batch when a table is streamed into the store
BATCH_ROWS = 4096
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
    if "\n" in path or len(path) > 4096:  # os.stat would fail on it (ENAMETOOLONG) with a traceback
        raise DataError(  # jsonargparse reads a file given as `source: FILE` as a config: its text arrives
            f"the data's source path is {path[:60]!r}…, the text of a table rather than its name: the config "
            f"parser read the file named as `source`. Write `source: {{path: FILE}}` (on the command line "
            f"--data.init_args.source.path=FILE)"
        )
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
        first = io.TextIOWrapper(stream, encoding="utf-8-sig", newline="").readline()  # a BOM is not a name
    return next(csv.reader([first], delimiter=delimiter), [])


# what a file's first bytes say it is, to check against what its name says
_COMPRESSIONS = {".gz": (b"\x1f\x8b", "gzip"), ".bz2": (b"BZh", "bzip2"), ".zst": (b"\x28\xb5\x2f\xfd", "zstd"),
                 ".xz": (b"\xfd7zXZ\x00", "xz")}  # fmt: skip


def check_table_file(path: Path, kind: str = "table") -> None:
    """Refuses, naming the file and the fix, a table that is empty or whose bytes are not what its name
    says: Parquet named ``.csv`` (or the other way round), compressed without ``.gz`` (or named ``.gz``
    without being compressed). Readers choose the format by the name, so a wrong name would otherwise
    end in a decoding error of the reader."""
    if not path.is_file():
        fix = "; check the data module's `path`" if kind == "table" else ""
        raise DataError(f"{kind} {str(path)!r} does not exist{fix}")
    if path.stat().st_size == 0:  # other files: their reader says what they should hold
        if kind == "table":
            raise DataError(f"table {str(path)!r} is empty (0 bytes): it holds no header and no records")
        return
    with open(path, "rb") as handle:
        head = handle.read(8)
    found = next((f"{name}-compressed" for magic, name in _COMPRESSIONS.values() if head.startswith(magic)), None)
    found = found or ("a Parquet file" if head.startswith(b"PAR1") else None)
    suffix = path.suffix.lower()
    if suffix in _COMPRESSIONS:
        magic, name = _COMPRESSIONS[suffix]
        if not head.startswith(magic):
            raise DataError(f"{path} is named {suffix} but is not {name}-compressed (it is {found or 'plain text'}); "
                            f"rename it {path.with_suffix('').name}")  # fmt: skip
        return
    if found and found.endswith("-compressed"):
        extension = next(k for k, (m, _) in _COMPRESSIONS.items() if head.startswith(m))
        raise DataError(f"{path} is {found} but its name does not say so; rename it {path.name}{extension}")
    if _is_parquet(path) and found is None:
        text = head.decode("utf-8", "replace")
        raise DataError(f"{path} is named {suffix} but is not a Parquet file (it starts with {text!r}, as a text "
                        f"table does); rename it .csv or .tsv")  # fmt: skip
    if not _is_parquet(path) and found == "a Parquet file":
        raise DataError(f"{path} is a Parquet file but is named {suffix or 'without a suffix'}; rename it "
                        f"{path.with_suffix('.parquet').name}")  # fmt: skip


def open_text(path: Path, kind: str) -> IO[str]:
    """A text file (a GTF, a BED, a GCT: ``kind`` names it in messages), gunzipped when named ``.gz``,
    after :func:`check_table_file`; UTF-8, a leading byte-order mark skipped."""
    check_table_file(path, kind)
    # utf-8-sig: a byte-order mark (Excel, Windows editors) is dropped, not read as the first line's start
    return gzip.open(path, "rt", encoding="utf-8-sig") if path.suffix == ".gz" else path.open(encoding="utf-8-sig")


def reading_error(path: Path, exc: BaseException) -> DataError:
    """A reader's exception on ``path`` (decoding, decompression, parsing) as one line naming the file."""
    if isinstance(exc, UnicodeDecodeError):
        return DataError(f"{path} is not UTF-8 text (byte {exc.object[exc.start:exc.start + 1]!r} at offset "
                         f"{exc.start} of the text): save it as UTF-8")  # fmt: skip
    first = (str(exc).splitlines() or [type(exc).__name__])[0]
    if isinstance(exc, OSError | EOFError) or "compressed" in first.lower():
        return DataError(f"cannot read {path} ({first}): the file is damaged or truncated; write it again")
    return DataError(f"cannot read {path} as a table ({type(exc).__name__}: {first})")


_READ_ERRORS: tuple[type[BaseException], ...] = (UnicodeDecodeError, OSError, EOFError, ValueError)


def part_columns(part: SourcePart) -> list[str]:
    """The column names of one file (refused: a file that is not what its name says, repeated names)."""
    check_table_file(part.path)
    try:
        if _is_parquet(part.path):
            import pyarrow.parquet as pq

            names = list(pq.ParquetFile(part.path).schema_arrow.names)
        else:
            names = _header(part.path, _delimiter(part.path))
    except DataError:
        raise
    except _READ_ERRORS as exc:  # pyarrow's ArrowInvalid is a ValueError
        raise reading_error(part.path, exc) from None
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        where = ", ".join(f"{n!r} (columns {', '.join(str(i + 1) for i, m in enumerate(names) if m == n)})"
                          for n in twice[:3])  # fmt: skip
        raise DataError(f"{part.path} names {where} more than once; rename the columns so each name is unique")
    return names


def _is_parquet(path: Path) -> bool:
    return path.suffix.lower() in (".parquet", ".pq")


def part_batches(part: SourcePart, columns: list[str], block: int = BLOCKS[0],
                 text_columns: Collection[str] = ()) -> Iterator[Any]:  # fmt: skip
    """Record batches of ``columns`` of one file, read in ``block`` bytes. CSV/TSV cells are text: in
    ``text_columns`` (ids) as written, only an empty cell null; in the others an empty cell or one of
    :data:`NULLS` is null."""
    import pyarrow as pa

    if _is_parquet(part.path):
        import pyarrow.parquet as pq

        try:
            yield from pq.ParquetFile(part.path).iter_batches(batch_size=BATCH_ROWS, columns=columns)
        except _READ_ERRORS as exc:
            raise reading_error(part.path, exc) from None
        return
    from pyarrow import csv as pcsv

    delimiter = _delimiter(part.path)
    verbatim = [c for c in columns if c in set(text_columns)]
    try:
        batches = pcsv.open_csv(
            pa.input_stream(str(part.path)),
            read_options=pcsv.ReadOptions(block_size=block, use_threads=False),  # one block in memory at a time
            parse_options=pcsv.ParseOptions(delimiter=delimiter, newlines_in_values=False),
            convert_options=pcsv.ConvertOptions(
                column_types=dict.fromkeys(columns, pa.string()), include_columns=columns,
                null_values=NULLS, strings_can_be_null=not verbatim, quoted_strings_can_be_null=not verbatim,
            ),  # fmt: skip
        )
        # pyarrow's null spellings hold for every column of a read: with id columns, every cell is read as
        # written and the others' null spellings are made null here
        yield from (_with_nulls(batch, verbatim) for batch in batches) if verbatim else batches
    except pa.ArrowInvalid as exc:
        if "straddl" in str(exc) and block < BLOCKS[-1]:
            raise RowTooLong(f"{part.path} has a row longer than {block >> 20} MB") from None
        kind = "TSV" if delimiter == "\t" else "CSV"
        row = re.search(r"Row #(\d+): CSV conversion error to string: invalid UTF8", str(exc))
        if row:
            raise DataError(f"{part.path} is not UTF-8 text (line {row.group(1)}): save it as UTF-8") from None
        raise DataError(f"cannot read {part.path} as a {kind} table: {exc}") from None
    except (UnicodeDecodeError, OSError, EOFError) as exc:
        raise reading_error(part.path, exc) from None


_LONGEST_NULL = max(map(len, NULLS))


def _with_nulls(batch: Any, verbatim: Collection[str]) -> Any:
    """``batch`` (text read as written) with the cells of :data:`NULLS` made null, except in ``verbatim`` columns;
    a column is copied only when it holds such a cell (sequence columns seldom do)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    spellings = pa.array(NULLS, pa.string())
    arrays = []
    for name, column in zip(batch.schema.names, batch.columns, strict=True):
        if name not in verbatim:
            # only short cells can be a null spelling: the long ones (sequences) are never hashed or copied
            short = pc.less_equal(pc.binary_length(column), _LONGEST_NULL)
            if pc.any(short).as_py():
                prefix = pc.utf8_slice_codeunits(column, 0, _LONGEST_NULL + 1)
                null = pc.and_(short, pc.is_in(prefix, value_set=spellings))
                if pc.any(null).as_py():
                    column = pc.if_else(null, pa.scalar(None, pa.string()), column)
        arrays.append(column)
    return pa.RecordBatch.from_arrays(arrays, schema=batch.schema)


def read_table(path: str | Path, dtype: Mapping[str, Any] | None = None,
               text_columns: Collection[str] = ()) -> pd.DataFrame:  # fmt: skip
    """Reads a CSV, TSV or Parquet table, choosing the format by the file's suffixes.

    Args:
        path: the file.
        dtype: ``{column: type}`` for CSV/TSV columns not to be inferred, e.g. ``{"label": str}`` keeps
            ``007`` as written (Parquet columns keep their stored types).
        text_columns: CSV/TSV columns (ids) read as text as written: ``NA`` or ``nan`` is an id, only an
            empty cell is missing (``""``); in the other columns :data:`NULLS` are missing.
    """
    path = Path(path).expanduser()
    suffixes = [s.lower() for s in path.suffixes if s.lower() not in (".gz", ".bz2", ".zst", ".xz")]
    kind = suffixes[-1] if suffixes else ""
    if path.is_file() and kind not in (".parquet", ".pq", ".tsv", ".tab", ".txt", ".csv"):
        raise DataError(f"cannot tell the format of {str(path)!r}: name it .csv, .tsv or .parquet (optionally .gz)")
    names = part_columns(SourcePart(path))  # the file is what its name says, its names unique (pandas renames)
    try:
        if kind in (".parquet", ".pq"):
            table = pd.read_parquet(path)
        else:
            verbatim = [c for c in names if c in set(text_columns)]
            # (pandas reads a leading byte-order mark as none, as pyarrow does)
            na = {"keep_default_na": False, "na_values": {c: NULLS for c in names if c not in verbatim}} \
                if verbatim else {}  # fmt: skip
            table = pd.read_csv(path, sep="," if kind == ".csv" else "\t",
                                dtype={**(dtype or {}), **dict.fromkeys(verbatim, str)}, **na)  # fmt: skip
    except _READ_ERRORS as exc:  # pandas' EmptyDataError and ParserError are ValueErrors
        raise reading_error(path, exc) from None
    return table
