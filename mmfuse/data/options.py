"""The typed option groups every data module shares: ``source``, ``split``, ``loader``, ``lengths``, ``sample``.

Each group is declared once here, so a word means the same in every data module::

    data:
      class_path: mmfuse.data.IsoformExpression
      init_args:
        source: {path: GTEx_final.csv, genome: GRCh38.fa}   # or just `source: GTEx_final.csv`
        split: {group: gene_id, folds: 5, fold: 0}
        loader: {batch_size: 8, num_workers: 4, bucketing: true}
        lengths: {max: {protein: 1022}}

A data module's own defaults (the id column of cells, the held-out contigs of TF binding) live in
a subclass of the group that only changes defaults (:class:`GeneSplit`, :class:`ContigSplit`); the
words and their meaning do not change. Options of the flat constructors of earlier releases
(``batch_size``, ``split_seed``, ``max_lengths``, …) are listed in :data:`RENAMED`: a config that
still uses one fails with a line naming what to write instead.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from mmfuse.data.genomics.windows import GenomeWindows
from mmfuse.data.store.rows import Crop
from mmfuse.errors import ConfigError

__all__ = [
    "RENAMED", "CellSource", "ContigSplit", "GeneLabelSource", "GeneLabelSplit", "GeneSplit", "LengthOptions",
    "LoaderOptions", "PeakSource", "SampleOptions", "SplitOptions", "TableSource", "group", "plain", "renamed_hint",
]  # fmt: skip

T = TypeVar("T")
Split = Literal["all", "train", "val", "test"]


def _whole(owner: str, name: str, value: Any, least: int, optional: bool = False) -> None:
    if value is None and optional:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise ConfigError(f"`{owner}.{name}` must be a whole number of at least {least}, not {value!r}")


@dataclass(frozen=True)
class TableSource:
    """Where a table's records come from.

    Args:
        path: the table file (CSV/TSV/Parquet, optionally compressed), a local ``datasets``
            directory, a Hugging Face hub data set id, or ``sample`` for the bundled synthetic data set.
        id_column: unique record id, written next to predictions; ``null``: the file and data row
            (``train_0.tsv:17``, rows counted from 0), for tables without ids.
        genome: cut a modality's sequences (DNA) from a genome FASTA by each record's coordinates,
            when the record is read: a FASTA path, or
            :class:`~mmfuse.data.genomics.windows.GenomeWindows` options
            (``{fasta: GRCh38.fa, window: 196608, contig_column: chr, ...}``).
        revision: branch, tag or commit of a hub data set ``path``.
        records_dir: where the records store (the table in a memory-mapped Arrow file, written once
            per source) is kept; default ``$MMFUSE_CACHE/records`` or ``~/.cache/mmfuse/records``.
    """

    path: str = "sample"
    id_column: str | None = "transcript_id"
    genome: GenomeWindows | str | None = None
    revision: str | None = None
    records_dir: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.path, str) or not self.path.strip():
            raise ConfigError(f"`source.path` must name a table, a data set or `sample`, not {self.path!r}")
        if isinstance(self.genome, Mapping):
            object.__setattr__(self, "genome", GenomeWindows(**self.genome))


@dataclass(frozen=True)
class CellSource:
    """Where cells come from: an ``.h5ad`` (AnnData) or a dense CSV/TSV of cells x genes.

    Args:
        path: the ``.h5ad`` file, a dense table of cells x genes, or ``sample`` for the bundled
            synthetic cells.
        id_column: the column (``obs`` column of an ``.h5ad``; ``obs_names`` when absent) naming each cell.
        layer: the ``.h5ad`` layer holding the counts (default: ``X``).
        gene_id_column: the ``var`` column naming genes (default: ``var_names``), e.g. Ensembl ids.
        records_dir: where the records store is written once per source (see :class:`TableSource`).
    """

    path: str = "sample"
    id_column: str = "cell_id"
    layer: str | None = None
    gene_id_column: str | None = None
    records_dir: str | None = None


@dataclass(frozen=True)
class PeakSource:
    """The files of TF binding: ReMap-style peaks, the genome they refer to and the TFs' proteins.

    Args:
        path: ``null`` to read ``peaks``/``genome``/``proteins``, or ``sample`` for a small
            synthetic data set (``peaks``, ``genome`` and ``proteins`` are then ignored).
        peaks: BED file of peaks (optionally ``.gz``), name column ``TF:context`` (ReMap).
        genome: FASTA of the genome the peaks refer to (``.fai`` is built beside it if missing).
        proteins: FASTA of the TFs' protein sequences (UniProt headers: the ``GN=`` gene name).
        negatives: BED of explicit unbound regions, name ``TF:context`` like ``peaks`` (only with
            ``negatives_per_positive: 0``); those overlapping a peak of their experiment are dropped
            (counted and logged).
        contexts: keep only these contexts (default: all of the peaks file).
        tfs: keep only these TFs (default: all).
        missing_tf: a TF with no sequence in ``proteins``: ``error`` (naming the TFs), or ``skip``
            its experiments (counted and logged).
        missing_contig: a peak on a contig the genome lacks: ``error``, or ``skip`` the peak
            (counted and logged).
        records_dir: where the records store is written once per source (see :class:`TableSource`).
    """

    path: Literal["sample"] | None = None
    peaks: str | None = None
    genome: str | None = None
    proteins: str | None = None
    negatives: str | None = None
    contexts: tuple[str, ...] | None = None
    tfs: tuple[str, ...] | None = None
    missing_tf: Literal["error", "skip"] = "error"
    missing_contig: Literal["error", "skip"] = "error"
    records_dir: str | None = None


@dataclass(frozen=True)
class SplitOptions:
    """How records are split into train/val/test, or into cross-validation folds.

    Args:
        column: a column holding ``train``/``val``/``test``, used when the data has it (``null``: none).
        group: records sharing this column's value (a gene's isoforms, a contig, a TF, a donor) never
            lie in two splits or folds; ``null`` splits record by record.
        val_fraction: share of the groups in the validation split (when splitting by group, and carved
            from the training groups when the split column marks none val); default 0.1 (or the data
            set preset's).
        test_fraction: share of the groups in the test split (when splitting by group).
        val_groups: the groups (e.g. contigs) of the validation split, instead of ``val_fraction``.
        test_groups: the groups (e.g. contigs) of the test split, instead of ``test_fraction``.
        seed: seed of the split and of the folds.
        folds: cross-validation: the groups in this many folds of equal size; fold ``fold`` is the test
            split, ``val_fraction`` of the other groups validate, and ``column``/``*_groups`` are not used.
            ``mmfuse cv`` runs one ``fit`` per fold.
        fold: with ``folds``, the fold that tests (0 … folds - 1).
        predict: records ``predict`` reads: ``all`` or one split.
    """

    column: str | None = "split"
    group: str | None = None
    val_fraction: float | None = None
    test_fraction: float = 0.1
    val_groups: tuple[str, ...] | None = None
    test_groups: tuple[str, ...] | None = None
    seed: int = 0
    folds: int | None = None
    fold: int = 0
    predict: Split = "all"

    def __post_init__(self) -> None:
        if self.folds is not None:
            _whole("split", "folds", self.folds, 2)
            if isinstance(self.fold, bool) or not isinstance(self.fold, int) or not 0 <= self.fold < self.folds:
                raise ConfigError(f"`split.fold` must be one of 0 … {self.folds - 1} (the fold that tests), "
                                  f"not {self.fold!r}")  # fmt: skip
        val = 0.1 if self.val_fraction is None else self.val_fraction
        if not 0 <= val < 1 or not 0 <= self.test_fraction < 1 or val + self.test_fraction >= 1:
            raise ConfigError("`split.val_fraction` and `split.test_fraction` must be in [0, 1) and sum to less than 1")
        for name in ("val_groups", "test_groups"):
            value = getattr(self, name)
            if isinstance(value, str):
                raise ConfigError(f"`split.{name}` is a list of names, e.g. [{value}], not the string {value!r}")
            if value is not None:
                object.__setattr__(self, name, tuple(str(v) for v in value))
        both = sorted(set(self.val_groups or ()) & set(self.test_groups or ()))
        if both:
            raise ConfigError(f"{both} are in both split.val_groups and split.test_groups; give each to one split")
        if self.predict not in ("all", "train", "val", "test"):
            raise ConfigError(f"`split.predict` is all, train, val or test, not {self.predict!r}")


@dataclass(frozen=True)
class GeneSplit(SplitOptions):
    """:class:`SplitOptions` of tables of transcripts: grouped by ``gene_id`` (isoforms of a gene
    never straddle splits)."""

    group: str | None = "gene_id"


@dataclass(frozen=True)
class ContigSplit(SplitOptions):
    """:class:`SplitOptions` of genomic regions: grouped by contig, chr8 validates and chr9 tests
    (held-out chromosomes, the usual genomics split). ``group: tf`` holds out TFs instead."""

    column: str | None = None
    group: str | None = "contig"
    val_groups: tuple[str, ...] | None = ("chr8",)
    test_groups: tuple[str, ...] | None = ("chr9",)


@dataclass(frozen=True)
class GeneLabelSource:
    """Where gene classification's labelled genes come from (``gene_labels:`` of
    :class:`~mmfuse.data.GeneClassification`), when they are a file; ``{class: [genes]}`` may also be given inline.

    Args:
        path: a CSV/TSV/Parquet table of genes and their classes, or a JSON/YAML file holding ``{class: [genes]}``
            (Geneformer's ``gene_class_dict``).
        gene_column: a table's column of gene ids (the ids of the backbone's vocabulary, e.g. Ensembl ids).
        label_column: a table's column of classes.
    """

    path: str
    gene_column: str = "gene"
    label_column: str = "label"


@dataclass(frozen=True)
class GeneLabelSplit(SplitOptions):
    """:class:`SplitOptions` of gene classification (:class:`~mmfuse.data.GeneClassification`): the labelled
    *genes* are split, not the cells, so neither a split column nor a group applies; ``val_groups`` and
    ``test_groups`` name genes, ``folds``/``fold`` deal the genes into folds (``mmfuse cv``: by gene)."""

    column: str | None = None


@dataclass(frozen=True)
class LoaderOptions:
    """How records are batched.

    Args:
        batch_size: training batch size.
        eval_batch_size: batch size of validation/test/predict (default: ``batch_size``).
        num_workers: DataLoader worker processes (records are read and tokenized there).
        bucketing: batch records of similar total length (letters summed over modalities) together,
            so each batch is padded only to its own longest sequence (the Hugging Face Trainer's
            ``group_by_length``; see :class:`~mmfuse.data.sampler.BucketBatchSampler`). Training
            batches still come in random order; evaluation batches come longest first.
        bucket_pool: with ``bucketing``, how many batches' worth of records are sorted by length
            together; larger pools pad less but make batches less random.
    """

    batch_size: int = 8
    eval_batch_size: int | None = None
    num_workers: int = 0
    bucketing: bool = False
    bucket_pool: int = 100

    def __post_init__(self) -> None:
        _whole("loader", "batch_size", self.batch_size, 1)
        _whole("loader", "eval_batch_size", self.eval_batch_size, 1, optional=True)
        _whole("loader", "num_workers", self.num_workers, 0)
        _whole("loader", "bucket_pool", self.bucket_pool, 1)


@dataclass(frozen=True)
class LengthOptions:
    """How long a modality's sequences may be.

    Args:
        max: ``{modality: letters}``, e.g. ``{rna: 12000, protein: 1022}``: longer sequences are cropped
            by ``crop`` when read (counted and logged); default: no limit.
        crop: ``{modality: policy}`` for sequences over ``max``: ``center`` keeps the middle, ``end`` the
            end, ``start`` the start, ``error`` leaves them whole (the tokenizer then rejects them,
            naming the record). Defaults: dna ``center`` (around the TSS or peak), rna ``end`` (the 3'
            end with the 3'UTR, as IsoFormer), protein ``start`` (the N-terminus), others ``error``.
    """

    max: dict[str, int] | None = None
    crop: dict[str, Crop] | None = None


@dataclass(frozen=True)
class SampleOptions:
    """The bundled synthetic data set (``source: {path: sample}``).

    Args:
        size: genes (tables), cells, or bound peaks (TF binding) to simulate; default the data
            module's (240 genes, 600 cells, 96 peaks).
        seed: seed of the simulation.
    """

    size: int | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        _whole("sample", "size", self.size, 1, optional=True)


def group(value: Any, cls: type[T], shorthand: str | None = None) -> T:
    """``value`` as an instance of the option group ``cls``: given as one, as a mapping of its fields,
    ``None`` (its defaults) or, for groups with a ``shorthand`` field, a bare value of that field
    (``source: data.csv``)."""
    if isinstance(value, cls):
        return value
    if value is None:
        return cls()
    if isinstance(value, Mapping):
        fields = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        unknown = sorted(set(value) - fields)
        if unknown:
            raise ConfigError(f"{cls.__name__} has no option {unknown[0]!r}; it takes {', '.join(sorted(fields))}")
        return cls(**value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return cls(**dataclasses.asdict(value))  # a sibling group (SplitOptions given for a GeneSplit)
    if shorthand is not None:
        return cls(**{shorthand: value})
    raise ConfigError(f"expected {cls.__name__} options (a mapping), not {value!r}")


def plain(value: Any) -> Any:
    """Option groups as plain dicts (nested), so hyper-parameters saved in a checkpoint are plain data."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {k: plain(v) for k, v in dataclasses.asdict(value).items()}
    if isinstance(value, Mapping):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return list(value)
    return value


#: the flat options of earlier data modules: ``old key -> (group, key in the group)``
RENAMED: dict[str, tuple[str, str]] = {
    "path": ("source", "path"),
    "id_column": ("source", "id_column"),
    "genome": ("source", "genome"),
    "dataset_revision": ("source", "revision"),
    "records_dir": ("source", "records_dir"),
    "layer": ("source", "layer"),
    "gene_id_column": ("source", "gene_id_column"),
    "peaks": ("source", "peaks"),
    "proteins": ("source", "proteins"),
    "negatives": ("source", "negatives"),
    "contexts": ("source", "contexts"),
    "tfs": ("source", "tfs"),
    "missing_tf": ("source", "missing_tf"),
    "missing_contig": ("source", "missing_contig"),
    "split_column": ("split", "column"),
    "gene_column": ("split", "group"),
    "group_column": ("split", "group"),
    "val_fraction": ("split", "val_fraction"),
    "test_fraction": ("split", "test_fraction"),
    "val_contigs": ("split", "val_groups"),
    "test_contigs": ("split", "test_groups"),
    "split_seed": ("split", "seed"),
    "folds": ("split", "folds"),
    "fold": ("split", "fold"),
    "predict_split": ("split", "predict"),
    "batch_size": ("loader", "batch_size"),
    "eval_batch_size": ("loader", "eval_batch_size"),
    "num_workers": ("loader", "num_workers"),
    "bucketing": ("loader", "bucketing"),
    "bucket_pool": ("loader", "bucket_pool"),
    "max_lengths": ("lengths", "max"),
    "crop": ("lengths", "crop"),
    "sample_genes": ("sample", "size"),
    "sample_cells": ("sample", "size"),
    "sample_peaks": ("sample", "size"),
    "sample_seed": ("sample", "seed"),
}


def renamed_hint(key: str, value: Any, takes: set[str] | None = None) -> str | None:
    """The one line telling a config with the flat option ``key`` what to write instead, or ``None``.
    ``takes``: the parameters of the data module (a key it still takes is not renamed)."""
    if key not in RENAMED or (takes is not None and key in takes):
        return None
    parent, child = RENAMED[key]
    if takes is not None and parent not in takes:
        return None
    shown = value if not isinstance(value, str) else value
    return f"'{key}' is now `{parent}.{child}`: write `{parent}: {{{child}: {shown}}}`"
