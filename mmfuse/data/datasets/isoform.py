"""Isoform-expression tables: one transcript per row, sequences per modality, one target per tissue."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd
from lightning.pytorch.utilities import rank_zero_info

from mmfuse.data.datasets.checks import fill_hint
from mmfuse.data.datasets.table import TableDataModule, read_table
from mmfuse.data.errors import DataError
from mmfuse.data.genomics.tissues import GTEX_TISSUES
from mmfuse.data.genomics.windows import GenomeWindows
from mmfuse.data.options import GeneSplit, LengthOptions, LoaderOptions, SampleOptions, TableSource, group, plain

__all__ = ["COLUMN_PRESETS", "ColumnPreset", "IsoformExpression", "read_table"]

_DEFAULT_MODALITIES = {"dna": "DNA", "rna": "RNA", "protein": "Protein"}
_DEFAULT_ID, _DEFAULT_GENE = "transcript_id", "gene_id"


@dataclass(frozen=True)
class ColumnPreset:
    """The column names (and file) of one public isoform-expression data set."""

    modalities: dict[str, str]
    target_columns: tuple[str, ...]
    id_column: str | None = _DEFAULT_ID
    gene_column: str | None = _DEFAULT_GENE
    #: the file read from the hub repository (or a local copy of it) instead of its loading script, or a
    #: pattern of the files fetched from the hub (read as a local copy of them is)
    file: str | None = None
    #: DNA cut from a genome by these columns, when the table gives coordinates instead of sequences
    coordinates: tuple[str, str, str, str] | None = None
    #: share of the training genes that validate when the data set has no validation split
    val_fraction: float = 0.1


COLUMN_PRESETS: dict[str, ColumnPreset] = {
    # InstaDeepAI/multi_omics_transcript_expression (IsoFormer, https://arxiv.org/abs/2406.14150), its
    # transcript_expression/GTEx_final.csv: transcript_id_gtex, gene_id_gtex, split (train/test), chr,
    # strand, start, end (1-based, inclusive), RNA, 5UTR, CDS, 3UTR, Protein, the 30 tissues. No DNA:
    # the loading script cuts it from GRCh38 (TSS = start on +, end on -); set `genome:`. Validation:
    # 5 % of the training genes, as the paper.
    "isoformer": ColumnPreset(
        {"rna": "RNA", "protein": "Protein"}, GTEX_TISSUES, "transcript_id_gtex", "gene_id_gtex",
        file="transcript_expression/GTEx_final.csv", coordinates=("chr", "strand", "start", "end"), val_fraction=0.05,
    ),  # fmt: skip
    # genbio-ai/transcript_isoform_expression_prediction (ModelGenerator): train_*.tsv, validation.tsv,
    # test.tsv (splits by chromosome) with dna_seq, rna_seq, protein_seq and labels_0 … labels_29
    # (log2(1e-4 + TPM) in 30 tissues); no id or gene column: ids are FILE:ROW.
    "modelgenerator": ColumnPreset(
        {"dna": "dna_seq", "rna": "rna_seq", "protein": "protein_seq"}, tuple(f"labels_{i}" for i in range(30)),
        id_column=None, gene_column=None, file="*.tsv",
    ),
}


class IsoformExpression(TableDataModule):
    """Transcript table → batches of sequences per modality and expression per tissue.

    The table is a local CSV/TSV/Parquet file; a Hugging Face data set, by hub id (``datasets.load_dataset``,
    at ``source.revision``) or as a local directory (saved by ``save_to_disk``, or of data files);
    or ``sample`` for the bundled synthetic data set (see :mod:`mmfuse.data.samples.isoform`). Without network
    access, download a hub data set first (``hf download ID --repo-type dataset --local-dir DIR``)
    and set ``source: DIR``.

    Column defaults are those of the bundled sample and of ``mmfuse data build-isoform``: ``DNA``,
    ``RNA``, ``Protein``, ``transcript_id``, ``gene_id`` and the 30 GTEx tissues. ``columns`` picks the
    layout of a published data set: ``isoformer`` (InstaDeepAI/multi_omics_transcript_expression's
    ``transcript_expression/GTEx_final.csv``, read from the hub id, a local copy of the repository or
    the file; it has coordinates, not DNA, so give ``source.genome``: GRCh38 to cut the windows) or
    ``modelgenerator`` (genbio-ai/transcript_isoform_expression_prediction: a directory of
    ``train_*.tsv``/``validation.tsv``/``test.tsv`` with ``dna_seq``, ``rna_seq``, ``protein_seq``,
    ``labels_0`` … ``labels_29``; ids are ``FILE:ROW``); ``modalities``, ``target_columns``,
    ``source.id_column``, ``split.group`` and ``split.val_fraction`` given explicitly win over it.

    Records are split by the data set's splits (``validation``, ``valid`` and ``dev`` read as val; a
    directory's files by their names), else by the ``split`` column when the table has one (values
    train/val/test; when none is val, ``val_fraction`` of the training genes validate), else
    deterministically by gene, so that all isoforms of a gene fall in the same split. Sequences are
    not held in memory: the table is read once into a memory-mapped records store
    (``source.records_dir``) and each record is read, its DNA window cut from the genome, when a DataLoader
    worker needs it. An empty
    sequence (a non-coding transcript has no protein) marks that modality absent for the record
    (``missing_modalities``). Sequences longer than ``lengths.max`` are cropped once, by modality:
    DNA keeps its middle (around the TSS), RNA its 3' end (the 3'UTR, as IsoFormer does), a protein
    its N-terminus (``lengths.crop``); the counts are logged and kept in ``crop_counts``.

    The task attaches its backbones' tokenizers (:meth:`attach_tokenizers`) before the loaders are
    built; every sequence is then checked once, and a bad one is reported with its record id.

    Args:
        source: the table (:class:`~mmfuse.data.options.TableSource`: a file, a local ``datasets``
            directory, a hub data set id, or ``sample``; its id column; a genome to cut DNA from), or
            just its path. With ``columns: isoformer`` and a genome path, the preset's coordinate columns
            are used.
        modalities: ``{modality: column}``; modalities must cover the task's backbones
            (default: the preset's, else ``{dna: DNA, rna: RNA, protein: Protein}``).
        target_columns: target columns, in output order (default: the preset's, else the 30 GTEx
            tissues).
        columns: column names of a known data set (``isoformer`` or ``modelgenerator``), see above.
        nan_targets: ``error`` on NaN/inf targets, or ``drop`` those records (counted and logged).
        missing_modalities: ``mask`` keeps records with an empty sequence, that modality marked
            absent (counted and logged); ``error`` refuses them.
        split: how records are split (:class:`~mmfuse.data.options.GeneSplit`: by ``gene_id``, the
            split column when the table has one; ``folds``/``fold`` for ``mmfuse cv``).
        loader: batch sizes, workers, bucketing (:class:`~mmfuse.data.options.LoaderOptions`).
        lengths: ``max`` letters per modality, e.g. ``{rna: 12000, protein: 1200}``, and ``crop``
            policies (:class:`~mmfuse.data.options.LengthOptions`).
        sample: genes (``size``, default 240) and ``seed`` of ``source: sample``.

    Examples:
        >>> dm = IsoformExpression("sample", sample={"size": 6}, lengths={"max": {"rna": 300}})
        >>> dm.setup("fit")
        >>> max(len(s) for s in dm.split_sequences("train", "rna")), dm.crop_counts["rna"] > 0
        (300, True)
    """

    def __init__(
        self,
        source: TableSource | str = TableSource(),
        modalities: dict[str, str] | None = None,
        target_columns: list[str] | None = None,
        columns: Literal["isoformer", "modelgenerator"] | None = None,
        nan_targets: Literal["error", "drop"] = "error",
        missing_modalities: Literal["mask", "error"] = "mask",
        split: GeneSplit = GeneSplit(),
        loader: LoaderOptions = LoaderOptions(),
        lengths: LengthOptions = LengthOptions(),
        sample: SampleOptions = SampleOptions(),
    ) -> None:
        preset = COLUMN_PRESETS[columns] if columns is not None else ColumnPreset(_DEFAULT_MODALITIES, GTEX_TISSUES)
        source, split = group(source, TableSource, "path"), group(split, GeneSplit)
        # the groups' defaults stand for "not given": the preset fills them
        fill: dict = {}
        if source.id_column == _DEFAULT_ID:
            fill["id_column"] = preset.id_column
        genome = source.genome
        if isinstance(genome, str) and preset.coordinates is not None:
            contig, strand, start, end = preset.coordinates
            fill["genome"] = GenomeWindows(genome, contig_column=contig, strand_column=strand, start_column=start,
                                           end_column=end)  # fmt: skip
        source = dataclasses.replace(source, **fill)
        split = dataclasses.replace(
            split, group=preset.gene_column if split.group == _DEFAULT_GENE else split.group,
            val_fraction=preset.val_fraction if split.val_fraction is None else split.val_fraction,
        )  # fmt: skip
        given = dict(modalities or preset.modalities)
        if source.genome is not None and modalities is None:
            given.pop(source.genome.modality if isinstance(source.genome, GenomeWindows) else "dna", None)
        self._preset_file = preset.file
        super().__init__(source, given, missing_modalities, split, loader, lengths, sample)
        self.save_hyperparameters(plain({
            "source": source, "modalities": modalities, "target_columns": target_columns, "columns": columns,
            "nan_targets": nan_targets, "missing_modalities": missing_modalities, "split": split,
            "loader": self.options["loader"], "lengths": self.options["lengths"], "sample": self.options["sample"],
        }))  # fmt: skip
        self.target_names: list[str] = list(target_columns or preset.target_columns)
        self.nan_targets = nan_targets

    _label_option = "target_columns"
    _numeric_label_columns = True

    def _label_columns(self) -> list[str]:
        return self.target_names

    def _labels(self, table: pd.DataFrame) -> tuple[pd.DataFrame, np.ndarray]:
        targets = table[self.target_names]
        if not all(pd.api.types.is_numeric_dtype(kind) for kind in targets.dtypes):  # text (CSV cells read as text)
            targets = targets.apply(pd.to_numeric, errors="coerce")
        with np.errstate(over="ignore"):  # beyond float32's range: inf, refused below
            values = targets.to_numpy(dtype=np.float32)
        bad = ~np.isfinite(values)
        bad_rows = np.flatnonzero(bad.any(axis=1))
        if len(bad_rows) and self.nan_targets == "error":
            examples = []
            for i in bad_rows[:3]:
                column = self.target_names[int(np.flatnonzero(bad[i])[0])]
                value = table[column].iloc[i]
                value = "nan" if value is None else value
                examples.append(f"{str(table[self.id_column].iloc[i])!r} ({column}: {value})")
            raise DataError(
                f"{len(bad_rows)} record(s) of {self.path} have missing, NaN or infinite targets, e.g. "
                f"{', '.join(examples)}. Fix the table, or set nan_targets: drop to leave those records out."
            )
        if len(bad_rows):
            rank_zero_info(f"IsoformExpression: dropped {len(bad_rows)} records with NaN/inf targets")
            keep = np.ones(len(table), dtype=bool)
            keep[bad_rows] = False
            table, values = table[keep].reset_index(drop=True), values[keep]
        return table, values

    def target_stats(self) -> tuple[np.ndarray, np.ndarray]:
        """Mean and standard deviation of each target over the training split."""
        targets = self.split_labels("train")
        if targets is None or len(targets) == 0:
            raise DataError(f"the 'train' split of {self.path} is empty, so no targets to standardise with; "
                            f"{fill_hint('train', self._split_by, self.split_column, self._too_small)}")  # fmt: skip
        with np.errstate(over="ignore", invalid="ignore"):  # an overflow is refused below
            std, mean = targets.std(axis=0), targets.mean(axis=0)
        wide = targets.astype(np.float64)  # checked in float64: float32 sums of values near its limit overflow
        limit = float(np.finfo(np.float32).max)
        spread = np.abs(wide - wide.mean(axis=0)).max(axis=0)
        too_wide = np.flatnonzero(~(spread < limit) | ~np.isfinite(std) | ~np.isfinite(mean))
        if len(too_wide):
            names = ", ".join(self.target_names[i] for i in too_wide[:3])
            raise DataError(
                f"the targets of {self.path} ({names}) reach {np.abs(wide).max():.3g}: standardising them (and "
                f"training in float32) overflows to infinity; rescale them (e.g. log1p of expression) in the table"
            )
        return mean, np.where(std > 0, std, 1.0)
