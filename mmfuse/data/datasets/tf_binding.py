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

The records are written once to a memory-mapped records store (:func:`~mmfuse.data.store.records.built_records`,
found again by every later run, DataLoader worker and DDP rank while the inputs and options that shape
the records are unchanged) and hold no sequence: ``id`` (``TF:context@contig:start-end``), ``Context``,
``label`` (``unbound``/``bound``, the latter the positive class), ``split``, ``tf``, ``context``,
``contig``, ``start``, ``end`` (the region, 0-based half-open) and ``centre`` (the window's centre). A
record's sequences are made when it is read: the ``DNA`` window cut from the indexed genome
(:class:`~mmfuse.data.genomics.windows.WindowReader`), the TF's ``Protein`` looked up in the proteins
kept once per TF. ``modalities`` map the modalities to ``DNA``, ``Protein`` and ``Context`` (or another
stored column, e.g. ``tf``). Memory therefore stays flat in the number of peaks (see docs/performance.md).

``path: sample`` builds the same from a small synthetic genome written by
:mod:`mmfuse.data.samples.tf_binding` (each TF's motif planted at the centre of its peaks, each
context's motif beside it), through the same file readers, which live in :mod:`mmfuse.data.files.bed`.
The records are built by :class:`~mmfuse.data.datasets.tf_records.PeakRecords`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
from lightning.pytorch.utilities import rank_zero_info

from mmfuse.data.datasets.classification import SequenceClassification
from mmfuse.data.datasets.tf_records import PeakRecords, TFBindingSummary, summary_lines
from mmfuse.data.errors import DataError
from mmfuse.data.genomics.windows import DEFAULT_WINDOW, GenomeWindows
from mmfuse.data.options import (
    ContigSplit,
    LengthOptions,
    LoaderOptions,
    PeakSource,
    SampleOptions,
    SplitOptions,
    TableSource,
    group,
    plain,
)  # fmt: skip
from mmfuse.data.store.records import RecordStore, built_records, content, default_records_dir
from mmfuse.data.store.rows import DerivedSequences, KeyedSequences, RecordReader
from mmfuse.errors import ConfigError

__all__ = ["CLASSES", "TFBinding", "TFBindingSummary"]

#: the class names in class-index order: ``bound`` is the positive class
CLASSES = ["unbound", "bound"]
#: the window of ``path: sample`` when ``window`` is not given (the sample's sites lie further apart)
SAMPLE_WINDOW = 256
_DEFAULT_MODALITIES = {"dna": "DNA", "protein": "Protein", "context": "Context"}
_SAMPLE_CONTIGS = ("chr1", "chr2", "chr3", "chr4")  # the sample's training contigs
SAMPLE_PEAKS = 96  # bound records of `source: sample` when `sample.size` is not given
_GROUPS = ("contig", "tf")
_CONTIG_DEFAULTS = (ContigSplit.val_groups, ContigSplit.test_groups)
_SAMPLE_V = 1  # the version of the sample's files (a change writes them again)


class TFBinding(SequenceClassification):
    """ReMap-style TF peaks → (DNA window, TF protein, context) records labelled ``bound``/``unbound``.

    See :mod:`mmfuse.data.datasets.tf_binding` for the inputs, the records and how unbound records are drawn.
    The table then goes through :class:`~mmfuse.data.SequenceClassification` (classes ``unbound``,
    ``bound``; the latter is the positive class): cropping (``max_lengths``, e.g. ``{protein: 1022}``
    for ESM2), tokenizer checks naming the record, bucketing and predictions (with the ``id``).
    Splits are by contig by default (``split: {group: contig, val_groups: [chr8], test_groups: [chr9]}``,
    all other contigs train); ``split: {group: tf}`` holds out whole TFs instead (``val_groups``/
    ``test_groups`` then name TFs, or leave them out to draw ``val_fraction``/``test_fraction`` of the
    TFs). ``split.folds``/``split.fold`` make cross-validation folds of contigs (or TFs) for ``mmfuse cv``.

    Args:
        source: the files (:class:`~mmfuse.data.options.PeakSource`: ``peaks``, ``genome``, ``proteins``,
            optional ``negatives``; the ``contexts``/``tfs`` kept; the ``missing_tf``/``missing_contig``
            policies), or ``sample`` for a small synthetic data set built with
            :mod:`mmfuse.data.samples.tf_binding` (contigs chr1-chr4 plus the val/test contigs).
        window: DNA bp per record, centred on the peak (default: Enformer's 196,608; with
            ``source: sample``, 256).
        center: centre windows on the peak's ``midpoint``, or on its ``summit`` (narrowPeak's
            10th column; peaks without one, ``-1``, use the midpoint).
        negatives_per_positive: unbound records drawn per bound record of each experiment and split,
            from regions bound in other experiments; ``0`` draws none (then ``source.negatives`` may
            give them).
        max_peaks_per_experiment: bound records kept per experiment, drawn with ``seed`` (default: all).
        seed: seed of the drawing of unbound records and of ``max_peaks_per_experiment``; the same
            inputs and seed give the same records.
        modalities: ``{modality: column}`` (default ``{dna: DNA, protein: Protein, context: Context}``).
        missing_modalities: ``mask`` or ``error`` for empty sequences (see
            :class:`~mmfuse.data.SequenceClassification`).
        split: how records are split (:class:`~mmfuse.data.options.ContigSplit`), see above.
        loader: batch sizes, workers, bucketing (:class:`~mmfuse.data.options.LoaderOptions`).
        lengths: ``max`` letters per modality, e.g. ``{protein: 1022}`` for ESM2, and ``crop``
            policies (dna ``center``, protein ``start``).
        sample: bound records (``size``, default 96, spread over the experiments and contigs) and
            ``seed`` of ``source: sample``.

    Examples:
        >>> dm = TFBinding("sample", sample={"size": 24})
        >>> dm.setup("fit")
        >>> dm.target_names, dm.context_categories, len(dm.split_ids("train"))
        (['unbound', 'bound'], ['HepG2', 'MCF-7'], 32)
    """

    def __init__(
        self,
        source: PeakSource | str = PeakSource(),
        window: int | None = None,
        center: Literal["midpoint", "summit"] = "midpoint",
        negatives_per_positive: int = 1,
        max_peaks_per_experiment: int | None = None,
        seed: int = 0,
        modalities: dict[str, str] | None = None,
        missing_modalities: Literal["mask", "error"] = "mask",
        split: ContigSplit = ContigSplit(),
        loader: LoaderOptions = LoaderOptions(),
        lengths: LengthOptions = LengthOptions(),
        sample: SampleOptions = SampleOptions(),
    ) -> None:
        files, split = group(source, PeakSource, "path"), group(split, ContigSplit)
        sampled = group(sample, SampleOptions)
        path, peaks, genome = files.path, files.peaks, files.genome
        proteins, negatives = files.proteins, files.negatives
        sample_peaks = sampled.size if sampled.size is not None else SAMPLE_PEAKS
        is_sample = path == "sample"
        if path is not None and not is_sample:
            raise ConfigError(
                f"TFBinding `source.path` is `sample` (the synthetic data set) or null, not {path!r}; give the data "
                f"as `source: {{peaks: ..., genome: ..., proteins: ...}}`"
            )
        absent = [name for name, value in (("peaks", peaks), ("genome", genome), ("proteins", proteins)) if not value]
        if not is_sample and absent:
            raise ConfigError(f"TFBinding needs {', '.join(f'`source.{a}`' for a in absent)} (or `source: sample`)")
        for option, value, least in (("window", window, 1), ("negatives_per_positive", negatives_per_positive, 0),
                                     ("max_peaks_per_experiment", max_peaks_per_experiment, 1)):  # fmt: skip
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < least):
                raise ConfigError(f"TFBinding `{option}` must be a whole number >= {least}, not {value!r}")
        if negatives is not None and negatives_per_positive:
            raise ConfigError(
                "TFBinding: `source.negatives` gives the unbound records; set negatives_per_positive: 0 to use it "
                "(or remove `source.negatives` to draw them from regions bound in other experiments)"
            )
        if split.group not in _GROUPS:
            raise ConfigError(f"TFBinding `split.group` is contig or tf (what is held out together), not "
                              f"{split.group!r}")  # fmt: skip
        if split.group != "contig" and (split.val_groups, split.test_groups) == _CONTIG_DEFAULTS:
            split = dataclasses.replace(split, val_groups=None, test_groups=None)  # they name contigs
        by_contig = split.group == "contig" and split.folds is None
        val_contigs = tuple(split.val_groups or ()) if by_contig else ()
        test_contigs = tuple(split.test_groups or ()) if by_contig else ()
        sample_contigs = list(dict.fromkeys([*_SAMPLE_CONTIGS, *(val_contigs or ("chr8",)),
                                             *(test_contigs or ("chr9",))]))  # fmt: skip
        if is_sample and sample_peaks < len(sample_contigs):
            raise ConfigError(
                f"`sample.size` must be at least {len(sample_contigs)}, one per contig of the sample "
                f"({', '.join(sample_contigs)}), not {sample_peaks}"
            )
        # the records carry their split (by contig or TF, or fold) in the `split` column
        table_split = SplitOptions(column="split", group=None, val_fraction=split.val_fraction, predict=split.predict)
        super().__init__(
            TableSource("sample" if is_sample else str(peaks), "id", records_dir=files.records_dir),
            dict(modalities or _DEFAULT_MODALITIES), "label", list(CLASSES), "error", missing_modalities, table_split,
            loader, lengths, SampleOptions(sample_peaks, sampled.seed),
        )  # fmt: skip
        self.save_hyperparameters(plain({
            "source": files, "window": window, "center": center, "negatives_per_positive": negatives_per_positive,
            "max_peaks_per_experiment": max_peaks_per_experiment, "seed": seed, "modalities": modalities,
            "missing_modalities": missing_modalities, "split": split,
            **{name: self.options[name] for name in ("loader", "lengths", "sample")},
        }))  # fmt: skip
        self.tf_split = split
        contexts, tfs = files.contexts, files.tfs
        missing_tf, missing_contig = files.missing_tf, files.missing_contig
        sample = is_sample
        self.sample = sample
        self.peaks, self.genome, self.proteins, self.negatives = peaks, genome, proteins, negatives
        self.window = window if window is not None else (SAMPLE_WINDOW if sample else DEFAULT_WINDOW)
        self.center = center
        self.negatives_per_positive = negatives_per_positive
        self.max_peaks_per_experiment = max_peaks_per_experiment
        self.contexts = list(contexts) if contexts is not None else None
        self.tfs = list(tfs) if tfs is not None else None
        self.missing_tf, self.missing_contig = missing_tf, missing_contig
        self.seed = seed
        self.sample_peaks, self._sample_contigs = sample_peaks, sample_contigs
        self.summary = TFBindingSummary()
        self._contexts: list[str] | None = None
        self._proteins: dict[str, str] = {}
        # DNA is cut from the genome and proteins looked up by TF when a record is read; other modalities
        # read stored columns
        named = dict(modalities or _DEFAULT_MODALITIES)
        dna = [m for m, c in named.items() if c == "DNA"]
        if len(dna) > 1:
            raise ConfigError(f"TFBinding `modalities` maps {dna} to the DNA window; map one modality to DNA")
        self._protein_modalities = [m for m, c in named.items() if c == "Protein"]
        self.modalities = {m: c for m, c in named.items() if c not in ("DNA", "Protein")}
        if sample:
            digest = json.dumps([self.sample_peaks, self.sample_seed, self._sample_contigs, self.window, _SAMPLE_V])
            where = Path(files.records_dir).expanduser() if files.records_dir is not None else default_records_dir()
            self._sample_dir = where / f"tf-sample-{hashlib.sha256(digest.encode()).hexdigest()[:16]}"
        fasta = str(self._sample_dir / "genome.fa") if sample else str(genome)
        self.genome_windows = GenomeWindows(fasta, self.window, contig_column="contig", strand_column="strand",
                                            one_based=False, tss_column="centre", modality=dna[0]) if dna else None
        self.served = [*self.modalities, *self._protein_modalities, *dna]

    @property
    def context_categories(self) -> list[str]:
        """The contexts of the records, sorted: what ``ContextEmbedding``'s ``categories`` should list
        (reads the data once, if not read yet)."""
        if self._contexts is None:
            self.setup()
        assert self._contexts is not None
        return list(self._contexts)

    # reading --------------------------------------------------------------------------------------
    def _files(self) -> tuple[Path, Path, Path]:
        """The peaks, genome and proteins files: the user's, or the sample's (written once under ``records_dir``)."""
        if self.sample:
            from mmfuse.data.samples.tf_binding import write_sample

            if not (self._sample_dir / "proteins.fasta").is_file():
                tmp = self._sample_dir.with_name(f".{self._sample_dir.name}.{os.getpid()}.tmp")
                shutil.rmtree(tmp, ignore_errors=True)
                tmp.mkdir(parents=True)
                write_sample(tmp, self.sample_peaks, self.sample_seed, self._sample_contigs, self.window)
                try:
                    os.replace(tmp, self._sample_dir)
                except OSError:  # another process wrote it first
                    shutil.rmtree(tmp, ignore_errors=True)
            return self._sample_dir / "peaks.bed", self._sample_dir / "genome.fa", self._sample_dir / "proteins.fasta"
        files = {"peaks": self.peaks, "genome": self.genome, "proteins": self.proteins, "negatives": self.negatives}
        absent = [f"{k} {v!r}" for k, v in files.items() if v is not None and not Path(v).expanduser().is_file()]
        if absent:
            raise DataError(f"TFBinding input file(s) not found: {', '.join(absent)}")
        return tuple(Path(str(files[k])).expanduser() for k in ("peaks", "genome", "proteins"))  # type: ignore[return-value]

    def records(self) -> RecordStore:
        """The records store: opened if built before from the same inputs and options, else built first."""
        if self._store is None:
            files = self._files()
            inputs = [*files, *([Path(self.negatives).expanduser()] if self.negatives is not None else [])]
            description = {
                "inputs": [content(f) for f in inputs], "center": self.center, "seed": self.seed,
                "negatives_per_positive": self.negatives_per_positive, "max": self.max_peaks_per_experiment,
                "contexts": self.contexts, "tfs": self.tfs, "missing": [self.missing_tf, self.missing_contig],
                "split": plain(self.tf_split),
            }  # fmt: skip
            source = "sample" if self.sample else str(self.peaks)
            builder = PeakRecords(self.center, self.negatives, self.negatives_per_positive,
                                  self.max_peaks_per_experiment, self.tf_split, self.contexts, self.tfs,
                                  self.missing_tf, self.missing_contig, self.seed)  # fmt: skip
            self._store = built_records("tf-binding", description, lambda: builder.build(*files), self.records_dir,
                                        source)  # fmt: skip
            meta = self._store.meta
            self.summary, lines = summary_lines(meta)
            self._contexts, self._proteins = list(meta["contexts"]), dict(meta["proteins"])
            for line in lines:
                rank_zero_info(f"TFBinding: {line}")
        return self._store

    def _derived(self, store: RecordStore, table: pd.DataFrame) -> dict[str, DerivedSequences]:
        """The TF's protein of each record, held once per TF."""
        if not self._protein_modalities:
            return {}
        tfs = store.frame(["tf"], categorical=["tf"])["tf"]
        names = sorted(self._proteins)
        codes = pd.Categorical(tfs.astype(str), categories=names).codes
        source = f"the proteins of {'the sample' if self.sample else self.proteins}"
        keyed = KeyedSequences(np.asarray(codes), [self._proteins[n] for n in names], source)
        return dict.fromkeys(self._protein_modalities, keyed)

    def _reader(self, store: RecordStore, table: pd.DataFrame, ids: Sequence[str]) -> RecordReader:
        reader = super()._reader(store, table, ids)
        if self.genome_windows is not None:
            self.summary.padded = self.padded_counts.get(self.genome_windows.modality, 0)
        return reader
