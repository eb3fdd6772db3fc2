"""Transcription-factor binding: ReMap-style peaks + a genome + TF proteins → bound/unbound records.

As tf-bind-transformer (lucidrains) frames it, a record asks whether a transcription factor (TF)
binds a genomic region in a given context (cell type). :class:`TFBinding` builds the table from

* ``peaks``: a BED file (optionally gzipped) whose name column is ``TF:context``, as ReMap writes it
  (``FOXA1:MCF-7``; several contexts separated by commas, ``FOXA1:MCF-7,T-47D``, give one record
  each). Each (TF, context) pair is an *experiment*.
* ``genome``: the FASTA the peaks' coordinates refer to (indexed by pyfaidx).
* ``proteins``: the TFs' protein sequences (FASTA; UniProt headers are read by their ``GN=`` gene
  name, other headers by their first word).

Each peak of an experiment is a **bound** record: ``window`` bp of genome centred on the peak's
midpoint (or its summit), ``N`` past a contig's ends; the TF's protein; the context's name.
**Unbound** records are, as in the original, regions bound in *other* experiments where this
experiment has no overlapping peak: for each experiment and split, ``negatives_per_positive`` per
bound record, drawn with a seed from the peaks of the other experiments on that split's contigs. A
region that other experiments share is one candidate. Records are split by contig (held-out
chromosomes, the usual genomics split), so a region never lies in two splits.

The table has the columns ``id`` (``TF:context@contig:start-end``), ``DNA``, ``Protein``,
``Context``, ``label`` (``unbound``/``bound``, the latter the positive class), ``split``, and
``tf``, ``context``, ``contig``, ``start``, ``end`` (the region, 0-based half-open). It is built in
memory, windows included (each distinct window once): 196,608 bp a record adds up quickly, so keep
to the experiments you train on (``contexts``, ``tfs``, ``max_peaks_per_experiment``).

``path: sample`` builds the same from a small synthetic genome written by
:mod:`mmfuse.data.samples.tf_binding` (each TF's motif planted at the centre of its peaks, each
context's motif beside it), through the same file readers, which live in :mod:`mmfuse.data.files.bed`.
The table is built by :class:`~mmfuse.data.datasets.tf_records.TFBindingTable`.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Literal

import pandas as pd

from mmfuse.data.datasets.classification import SequenceClassification
from mmfuse.data.datasets.tf_records import TFBindingSummary, TFBindingTable
from mmfuse.data.errors import DataError
from mmfuse.data.genomics.windows import DEFAULT_WINDOW
from mmfuse.data.store.rows import Crop
from mmfuse.errors import ConfigError

__all__ = ["CLASSES", "TFBinding", "TFBindingSummary"]

#: the class names in class-index order: ``bound`` is the positive class
CLASSES = ["unbound", "bound"]
#: the window of ``path: sample`` when ``window`` is not given (the sample's sites lie further apart)
SAMPLE_WINDOW = 256
_DEFAULT_MODALITIES = {"dna": "DNA", "protein": "Protein", "context": "Context"}
_SAMPLE_CONTIGS = ("chr1", "chr2", "chr3", "chr4")  # the sample's training contigs


class TFBinding(TFBindingTable, SequenceClassification):
    """ReMap-style TF peaks → (DNA window, TF protein, context) records labelled ``bound``/``unbound``.

    See :mod:`mmfuse.data.datasets.tf_binding` for the inputs, the records and how unbound records are drawn.
    The table then goes through :class:`~mmfuse.data.SequenceClassification` (classes ``unbound``,
    ``bound``; the latter is the positive class): cropping (``max_lengths``, e.g. ``{protein: 1022}``
    for ESM2), tokenizer checks naming the record, bucketing and predictions (with the ``id``).
    Splits are by contig: ``test_contigs`` to test, ``val_contigs`` to validation, all others train.

    Args:
        path: ``null`` to read ``peaks``/``genome``/``proteins``, or ``sample`` for a small synthetic
            data set built with :mod:`mmfuse.data.samples.tf_binding` (``peaks``, ``genome`` and
            ``proteins`` are then ignored; contigs chr1-chr4 plus the val/test contigs).
        peaks: BED file of peaks (optionally ``.gz``), name column ``TF:context`` (ReMap).
        genome: FASTA of the genome the peaks refer to (``.fai`` is built beside it if missing).
        proteins: FASTA of the TFs' protein sequences (UniProt headers: the ``GN=`` gene name).
        window: DNA bp per record, centred on the peak (default: Enformer's 196,608; with
            ``path: sample``, 256).
        center: centre windows on the peak's ``midpoint``, or on its ``summit`` (narrowPeak's
            10th column; peaks without one, ``-1``, use the midpoint).
        negatives_per_positive: unbound records drawn per bound record of each experiment and split,
            from regions bound in other experiments; ``0`` draws none (then ``negatives`` may give them).
        negatives: BED of explicit unbound regions, name ``TF:context`` like ``peaks`` (only with
            ``negatives_per_positive: 0``); those overlapping a peak of their experiment are dropped
            (counted and logged).
        max_peaks_per_experiment: bound records kept per experiment, drawn with ``seed`` (default:
            all); bounds memory, since each record holds its window.
        val_contigs: contigs of the validation split.
        test_contigs: contigs of the test split.
        contexts: keep only these contexts (default: all of the peaks file).
        tfs: keep only these TFs (default: all).
        missing_tf: a TF with no sequence in ``proteins``: ``error`` (naming the TFs), or ``skip``
            its experiments (counted and logged).
        missing_contig: a peak on a contig the genome lacks: ``error``, or ``skip`` the peak (counted
            and logged).
        seed: seed of the drawing of unbound records and of ``max_peaks_per_experiment``; the same
            inputs and seed give the same records.
        modalities: ``{modality: column}`` (default ``{dna: DNA, protein: Protein, context: Context}``).
        missing_modalities: ``mask`` or ``error`` for empty sequences (see
            :class:`~mmfuse.data.SequenceClassification`).
        predict_split: records to predict: ``all`` or one split.
        batch_size: training batch size.
        eval_batch_size: batch size of validation/test/predict (default: ``batch_size``).
        num_workers: DataLoader worker processes (tokenization runs there).
        sample_peaks: bound records of ``path: sample`` (spread over its experiments and contigs).
        sample_seed: seed of the sample data set.
        max_lengths: ``{modality: letters}``; longer sequences are cropped by ``crop``.
        crop: ``{modality: center | end | start | error}`` (dna ``center``, protein ``start``).
        bucketing: batch records of similar total length together.
        bucket_pool: with ``bucketing``, batches' worth of records sorted by length together.

    Examples:
        >>> dm = TFBinding("sample", sample_peaks=24)
        >>> dm.setup("fit")
        >>> dm.target_names, dm.context_categories, len(dm.split_ids("train"))
        (['unbound', 'bound'], ['HepG2', 'MCF-7'], 32)
    """

    def __init__(
        self,
        path: str | None = None,
        peaks: str | None = None,
        genome: str | None = None,
        proteins: str | None = None,
        window: int | None = None,
        center: Literal["midpoint", "summit"] = "midpoint",
        negatives_per_positive: int = 1,
        negatives: str | None = None,
        max_peaks_per_experiment: int | None = None,
        val_contigs: tuple[str, ...] = ("chr8",),
        test_contigs: tuple[str, ...] = ("chr9",),
        contexts: list[str] | None = None,
        tfs: list[str] | None = None,
        missing_tf: Literal["error", "skip"] = "error",
        missing_contig: Literal["error", "skip"] = "error",
        seed: int = 0,
        modalities: dict[str, str] | None = None,
        missing_modalities: Literal["mask", "error"] = "mask",
        predict_split: Literal["all", "train", "val", "test"] = "all",
        batch_size: int = 8,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        sample_peaks: int = 96,
        sample_seed: int = 0,
        max_lengths: dict[str, int] | None = None,
        crop: dict[str, Crop] | None = None,
        bucketing: bool = False,
        bucket_pool: int = 100,
    ) -> None:
        sample = path == "sample"
        if path is not None and not sample:
            raise ConfigError(
                f"TFBinding `path` is `sample` (the synthetic data set) or null, not {path!r}; give the data as "
                f"`peaks`, `genome` and `proteins`"
            )
        absent = [name for name, value in (("peaks", peaks), ("genome", genome), ("proteins", proteins)) if not value]
        if not sample and absent:
            raise ConfigError(f"TFBinding needs {', '.join(f'`{a}`' for a in absent)} (or `path: sample`)")
        for option, value, least in (("window", window, 1), ("negatives_per_positive", negatives_per_positive, 0),
                                     ("max_peaks_per_experiment", max_peaks_per_experiment, 1),
                                     ("sample_peaks", sample_peaks, 1)):  # fmt: skip
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < least):
                raise ConfigError(f"TFBinding `{option}` must be a whole number >= {least}, not {value!r}")
        if negatives is not None and negatives_per_positive:
            raise ConfigError(
                "TFBinding: `negatives` gives the unbound records; set negatives_per_positive: 0 to use it (or "
                "remove `negatives` to draw them from regions bound in other experiments)"
            )
        both = sorted(set(val_contigs) & set(test_contigs))
        if both:
            raise ConfigError(f"contigs {both} are in both val_contigs and test_contigs; give each to one split")
        sample_contigs = list(dict.fromkeys([*_SAMPLE_CONTIGS, *val_contigs, *test_contigs]))
        if sample and sample_peaks < len(sample_contigs):
            raise ConfigError(
                f"`sample_peaks` must be at least {len(sample_contigs)}, one per contig of the sample "
                f"({', '.join(sample_contigs)}), not {sample_peaks}"
            )
        super().__init__(
            path="sample" if sample else str(peaks), modalities=dict(modalities or _DEFAULT_MODALITIES),
            label_column="label", classes=list(CLASSES), id_column="id", gene_column=None, split_column="split",
            missing_modalities=missing_modalities, predict_split=predict_split, batch_size=batch_size,
            eval_batch_size=eval_batch_size, num_workers=num_workers, sample_seed=sample_seed,
            max_lengths=max_lengths, crop=crop, bucketing=bucketing, bucket_pool=bucket_pool,
        )  # fmt: skip
        self.save_hyperparameters()
        self.sample = sample
        self.peaks, self.genome, self.proteins, self.negatives = peaks, genome, proteins, negatives
        self.window = window if window is not None else (SAMPLE_WINDOW if sample else DEFAULT_WINDOW)
        self.center = center
        self.negatives_per_positive = negatives_per_positive
        self.max_peaks_per_experiment = max_peaks_per_experiment
        self.val_contigs, self.test_contigs = tuple(val_contigs), tuple(test_contigs)
        self.contexts = list(contexts) if contexts is not None else None
        self.tfs = list(tfs) if tfs is not None else None
        self.missing_tf, self.missing_contig = missing_tf, missing_contig
        self.seed = seed
        self.sample_peaks, self._sample_contigs = sample_peaks, sample_contigs
        self.summary = TFBindingSummary()
        self._contexts: list[str] | None = None

    @property
    def context_categories(self) -> list[str]:
        """The contexts of the records, sorted: what ``ContextEmbedding``'s ``categories`` should list
        (reads the data once, if not read yet)."""
        if self._contexts is None:
            self.setup()
        assert self._contexts is not None
        return list(self._contexts)

    # reading --------------------------------------------------------------------------------------
    def _read(self) -> pd.DataFrame:
        if not self.sample:
            files = {"peaks": self.peaks, "genome": self.genome, "proteins": self.proteins, "negatives": self.negatives}
            absent = [f"{k} {v!r}" for k, v in files.items() if v is not None and not Path(v).expanduser().is_file()]
            if absent:
                raise DataError(f"TFBinding input file(s) not found: {', '.join(absent)}")
            return self._build(*(Path(str(files[k])).expanduser() for k in ("peaks", "genome", "proteins")))
        from mmfuse.data.samples.tf_binding import write_sample

        with tempfile.TemporaryDirectory(prefix="mmfuse-tf-binding-") as directory:
            files = write_sample(directory, self.sample_peaks, self.sample_seed, self._sample_contigs, self.window)
            return self._build(*files)
