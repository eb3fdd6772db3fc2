"""The table of :class:`~mmfuse.data.TFBinding`: peaks, a genome and TF proteins → bound/unbound records.

:class:`PeakRecords` builds the records of :class:`~mmfuse.data.TFBinding` (whose module docstring
describes the inputs, the records and how unbound records are drawn), which writes them to its records
store once: it reads the peaks and the
proteins (:mod:`mmfuse.data.files.bed`), drops peaks on contigs the genome lacks or of TFs without a
protein (by policy), draws the unbound records and counts what it built and left out in a
:class:`TFBindingSummary`. A record holds no sequence: its window's centre (cut from the genome when the
record is read) and its TF (whose protein is held once per TF).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mmfuse.data.errors import DataError
from mmfuse.data.files.bed import read_peaks
from mmfuse.data.files.fasta import open_genome, read_proteins
from mmfuse.data.genomics.intervals import IntervalIndex, outside, sample_free
from mmfuse.data.splits import SplitRule, split_groups
from mmfuse.registry import suggest_name

__all__ = ["PeakRecords", "TFBindingSummary", "summary_lines"]

_LISTED = 8  # names listed in a message


@dataclass
class TFBindingSummary:
    """What :class:`TFBinding` built and what it left out (logged after reading)."""

    experiments: int = 0
    bound: int = 0
    unbound: int = 0
    negatives_short: int = 0
    duplicate_peaks: int = 0
    subsampled_out: int = 0
    overlapping_negatives: int = 0
    padded: int = 0
    repeated_proteins: int = 0
    skipped_tfs: Counter = field(default_factory=Counter)
    skipped_contigs: Counter = field(default_factory=Counter)

    def lines(self) -> list[str]:
        lines = [f"{self.experiments} experiments (TF, context): {self.bound} bound and {self.unbound} unbound records"]
        notes = [
            (self.negatives_short, "unbound records wanted but not found (too few regions bound elsewhere)"),
            (self.duplicate_peaks, "repeated peaks of an experiment dropped"),
            (self.subsampled_out, "peaks left out by max_peaks_per_experiment"),
            (self.overlapping_negatives, "negatives dropped: they overlap a peak of their own experiment"),
            (self.padded, "records whose window is padded with N past a contig end"),
            (self.repeated_proteins, "repeated protein names (the first sequence kept)"),
        ]
        lines += [f"{n} {what}" for n, what in notes if n]
        for counter, what in ((self.skipped_tfs, "TF without protein"), (self.skipped_contigs, "contig not in genome")):
            if counter:
                top = ", ".join(f"{k} ({v})" for k, v in counter.most_common(_LISTED))
                lines.append(f"skipped {sum(counter.values())} peaks, {what}: {top}")
        return lines


def _listing(names: Sequence[str]) -> str:
    more = f", … ({len(names) - _LISTED} more)" if len(names) > _LISTED else ""
    return ", ".join(map(str, names[:_LISTED])) + more


def summary_lines(meta: dict[str, Any]) -> tuple[TFBindingSummary, list[str]]:
    """The summary a records store keeps (:meth:`PeakRecords.build`'s metadata), and its lines to log."""
    counts = meta["summary"]
    summary = TFBindingSummary(**{k: Counter(v) if isinstance(v, dict) else v for k, v in counts.items()})
    lines = ([f"split {meta['split']}"] if meta["split"] else []) + summary.lines()
    return summary, lines + [f"contexts: {_listing(meta['contexts'])}"]


class PeakRecords:
    """Builds the records of :class:`~mmfuse.data.TFBinding` from its input files and options.

    Args:
        center: ``midpoint`` or ``summit`` (the window's centre).
        negatives: a BED of unbound regions, or ``None`` (drawn from other experiments).
        negatives_per_positive: unbound records drawn per bound one (per experiment and split).
        max_peaks_per_experiment: bound records kept per experiment, or ``None``.
        split: the split options (:class:`~mmfuse.data.options.ContigSplit`).
        contexts: the contexts kept, or ``None``.
        tfs: the TFs kept, or ``None``.
        missing_tf: ``error`` or ``skip``.
        missing_contig: ``error`` or ``skip``.
        seed: of the drawing.
    """

    def __init__(self, center: str, negatives: str | None, negatives_per_positive: int,
                 max_peaks_per_experiment: int | None, split: Any, contexts: list[str] | None, tfs: list[str] | None,
                 missing_tf: str, missing_contig: str, seed: int) -> None:  # fmt: skip
        self.center, self.negatives, self.negatives_per_positive = center, negatives, negatives_per_positive
        self.max_peaks_per_experiment, self.tf_split = max_peaks_per_experiment, split
        self.contexts, self.tfs = contexts, tfs
        self.missing_tf, self.missing_contig, self.seed = missing_tf, missing_contig, seed
        self.summary = TFBindingSummary()
        self._split_how = ""

    def build(self, peaks_path: Path, genome_path: Path, proteins_path: Path) -> tuple[pd.DataFrame, dict[str, Any]]:
        """The records of :class:`~mmfuse.data.TFBinding` from its three input files, and what the store keeps
        beside them: the summary, the split, the contexts and the protein of each TF the records name."""
        self.summary = summary = TFBindingSummary()
        self._source = str(peaks_path)
        proteins, summary.repeated_proteins = read_proteins(proteins_path)
        summit = self.center == "summit"
        peaks = read_peaks(peaks_path, summit, self.contexts, self.tfs)
        if peaks.empty:
            kept = " after the `contexts`/`tfs` filters" if self.contexts is not None or self.tfs is not None else ""
            raise DataError(f"{peaks_path} holds no peak{kept}")
        genome = open_genome(genome_path)
        try:
            peaks = self._known(peaks, peaks_path, genome, genome_path, proteins, proteins_path)
            negatives = None
            if self.negatives is not None:
                negatives_path = Path(self.negatives).expanduser()
                negatives = read_peaks(negatives_path, summit, self.contexts, self.tfs)
                negatives = self._known(negatives, negatives_path, genome, genome_path, proteins, proteins_path)
            if peaks.empty:
                raise DataError(f"no peak of {peaks_path} is left: {'; '.join(self.summary.lines()[1:])}")
            records = self._records(peaks, negatives)
        finally:
            genome.close()
        table = self._assemble(records)
        meta = {
            "summary": {k: dict(v) if isinstance(v, Counter) else v for k, v in vars(summary).items()},
            "split": self._split_how, "contexts": sorted(set(table["context"])),
            "proteins": {tf: proteins[tf] for tf in sorted(set(table["tf"]))},
        }  # fmt: skip
        return table, meta


    def _known(self, peaks: pd.DataFrame, path: Path, genome: Any, genome_path: Path, proteins: dict[str, str],
               proteins_path: Path) -> pd.DataFrame:  # fmt: skip
        """``peaks`` without those on contigs the genome lacks or of TFs without a protein (by policy)."""
        contigs = set(genome.keys())
        unknown = peaks[~peaks["contig"].isin(contigs)]
        if len(unknown):
            counts = Counter(unknown["contig"])
            if self.missing_contig == "error":
                names = sorted(counts)
                first = unknown.iloc[0]
                close = [c for c in (f"chr{names[0]}", names[0].removeprefix("chr")) if c in contigs and c != names[0]]
                hint = f" (the genome names it {close[0]!r}: rename the contigs of one file)" if close else ""
                raise DataError(
                    f"{len(unknown)} peak(s) of {path} lie on contigs missing from the genome {genome_path}: "
                    f"{_listing(names)}{hint}; e.g. line {first['line']}. Use the genome the peaks were called on, "
                    f"or set source: {{missing_contig: skip}} to leave those peaks out."
                )
            self.summary.skipped_contigs.update(counts)
            peaks = peaks[peaks["contig"].isin(contigs)]
        missing = peaks[~peaks["tf"].isin(proteins)]
        if len(missing):
            counts = Counter(missing["tf"])
            if self.missing_tf == "error":
                names = sorted(counts)
                close = [f"{n!r} (did you mean {s!r}?)" for n in names[:3] if (s := suggest_name(n, list(proteins)))]
                hint = f"; closest names: {', '.join(close)}" if close else ""
                raise DataError(
                    f"{len(names)} TF(s) of {path} have no sequence in {proteins_path}: {_listing(names)} "
                    f"({len(missing)} peaks){hint}. Add them to the proteins FASTA (the name is the first word of "
                    f"the header, or a UniProt header's GN=), or set source: {{missing_tf: skip}} to leave their "
                    f"peaks out."
                )
            self.summary.skipped_tfs.update(counts)
            peaks = peaks[peaks["tf"].isin(proteins)]
        return peaks.reset_index(drop=True)

    def _split_map(self, *frames: pd.DataFrame | None) -> None:
        """Each group's split (a contig's or a TF's, by ``split.group``), decided once over the groups of
        ``frames`` (bound peaks and given negatives) so records sharing a group share a split."""
        split = self.tf_split
        column = split.group
        keys = [k for frame in frames if frame is not None for k in frame[column].astype(str)]
        rule = SplitRule.of(replace(split, column=None), column, self._source, "TFBinding")
        self._splits_of_groups, self._split_how = split_groups(keys, rule, column)

    def _split_of(self, records: pd.DataFrame) -> np.ndarray:
        return records[self.tf_split.group].astype(str).map(self._splits_of_groups).to_numpy(dtype=object)

    def _records(self, peaks: pd.DataFrame, negatives: pd.DataFrame | None) -> pd.DataFrame:
        """Bound and unbound records: ``tf``, ``context``, ``contig``, ``start``, ``end``, ``summit``, ``label``."""
        summary = self.summary
        rng = np.random.default_rng(self.seed)
        keys = ["tf", "context", "contig", "start", "end"]
        repeated = peaks.duplicated(keys)
        summary.duplicate_peaks = int(repeated.sum())
        peaks = peaks[~repeated].reset_index(drop=True)
        self._split_map(peaks, negatives)
        peaks["split"] = self._split_of(peaks)
        names = set(peaks["contig"]) | (set(negatives["contig"]) if negatives is not None else set())
        code = {name: i for i, name in enumerate(sorted(names))}
        # candidate regions of unbound records: every distinct region bound in some experiment
        regions = peaks.drop_duplicates(["contig", "start", "end"]).reset_index(drop=True)
        region_contig = regions["contig"].map(code).to_numpy()
        region_start, region_end = regions["start"].to_numpy(), regions["end"].to_numpy()
        if self.tf_split.group == "contig":  # unbound regions of a split lie on its contigs
            by_split = {s: np.flatnonzero(regions["split"].to_numpy() == s) for s in ("train", "val", "test")}
        else:  # held-out TFs: any region bound by another experiment
            by_split = dict.fromkeys(("train", "val", "test"), np.arange(len(regions)))
        parts = []
        groups = dict(list(peaks.groupby(["tf", "context"], sort=True)))
        summary.experiments = len(groups)
        for (tf, context), bound in groups.items():
            index = IntervalIndex(bound["contig"].map(code).to_numpy(), bound["start"].to_numpy(),
                                  bound["end"].to_numpy())  # fmt: skip
            if self.max_peaks_per_experiment is not None and len(bound) > self.max_peaks_per_experiment:
                keep = np.sort(rng.choice(len(bound), self.max_peaks_per_experiment, replace=False))
                summary.subsampled_out += len(bound) - len(keep)
                bound = bound.iloc[keep]
            parts.append(bound.assign(label="bound"))
            if negatives is not None:
                mine = negatives[(negatives["tf"] == tf) & (negatives["context"] == context)]
                mine = mine.drop_duplicates(["contig", "start", "end"])
                clash = index.overlaps(mine["contig"].map(code).to_numpy(), mine["start"].to_numpy(),
                                       mine["end"].to_numpy())  # fmt: skip
                summary.overlapping_negatives += int(clash.sum())
                parts.append(mine[~clash].assign(label="unbound", split=self._split_of(mine[~clash])))
                continue
            free = outside(index, region_contig, region_start, region_end)
            for split, candidates in by_split.items():
                need = self.negatives_per_positive * int((bound["split"] == split).sum())
                picked = sample_free(rng, candidates, need, free)
                summary.negatives_short += need - len(picked)
                chosen = regions.iloc[np.sort(picked)]
                parts.append(chosen.assign(tf=tf, context=context, label="unbound", split=split))
        records = pd.concat(parts, ignore_index=True) if parts else peaks.iloc[:0].assign(label="")
        summary.bound = int((records["label"] == "bound").sum())
        summary.unbound = int((records["label"] == "unbound").sum())
        return records

    def _assemble(self, records: pd.DataFrame) -> pd.DataFrame:
        """The stored records (see the module docstring of :mod:`mmfuse.data.datasets.tf_binding`): ids, the
        experiment, the region, its window's centre (strand ``+``: a peak has no direction), label and split."""
        starts, ends, summits = (records[c].to_numpy(dtype=np.int64) for c in ("start", "end", "summit"))
        midpoints = (starts + ends) // 2
        centres = np.where(summits >= 0, summits, midpoints) if self.center == "summit" else midpoints
        ids = [f"{tf}:{context}@{contig}:{start}-{end}" for tf, context, contig, start, end in
               zip(records["tf"], records["context"], records["contig"], starts, ends, strict=True)]  # fmt: skip
        return pd.DataFrame({
            "id": ids, "Context": records["context"].to_numpy(), "label": records["label"].to_numpy(),
            "split": records["split"].to_numpy(), "tf": records["tf"].to_numpy(),
            "context": records["context"].to_numpy(), "contig": records["contig"].to_numpy(), "strand": "+",
            "centre": centres, "start": starts, "end": ends,
        })  # fmt: skip
