"""``mmfuse score-variants``: variant effects carried through DNA, RNA and protein.

For each allele of a VCF and each transcript of the annotation whose DNA window or span holds it,
:func:`score_variants` builds the reference and alternate inputs of the model
(:mod:`mmfuse.data.genomics.variant_effects`: the DNA window, the spliced RNA and the protein, cropped as the
data module crops them), predicts both in one batch and :class:`VariantWriter` writes, per
variant, transcript and target, both predictions and their difference with the consequence class
and the modalities whose inputs changed. What cannot be scored is counted (:mod:`mmfuse.data.files.vcf`)
and the counts are printed at the end. The predict loop is Lightning's, so devices, precision and
DDP sharding follow the config; the output is streamed and renamed into place as ``predict``'s is.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from lightning.pytorch import LightningModule, Trainer

from mmfuse.analysis.module import find_writer, run_analysis
from mmfuse.analysis.variant_resume import ResumeLog, summary_lines, write_summary
from mmfuse.analysis.variant_reuse import Reuse, VariantCollate
from mmfuse.analysis.variant_stream import ORDINAL, Shares, StreamedPairs, pairs_of
from mmfuse.data.errors import DataError
from mmfuse.data.files.annotation import Transcript, read_annotation
from mmfuse.data.files.fasta import open_genome
from mmfuse.data.files.vcf import DEFAULT_MAX_INDEL, VariantCounts
from mmfuse.data.genomics.variant_effects import KINDS, VariantPairs
from mmfuse.data.genomics.windows import find_contig
from mmfuse.errors import ConfigError, NonFiniteError
from mmfuse.training.writer import ORDER_COLUMN, PredictionWriter, refuse_inputs

__all__ = ["OUTPUT_COLUMNS", "VariantWriter", "score_variants", "variant_pairs"]

#: the output's columns, in order (one row per variant, transcript and target)
OUTPUT_COLUMNS = ("variant", "vcf_id", "chrom", "pos", "ref", "alt", "filter", "transcript_id", "gene_id", "strand",
                  "consequence", "changed", "protein_change", "target", "ref_prediction", "alt_prediction",
                  "difference")  # fmt: skip
_SUFFIXES = (".csv", ".tsv", ".parquet")
#: batches per chunk: what each process keeps for reuse is forgotten at every chunk's start, and --variants.resume
#: continues from the last complete chunk, so a resumed run computes every pair as an uninterrupted one does
CHUNK_BATCHES = 64


class VariantWriter(PredictionWriter):
    """Writes one row per variant, transcript and target (columns: :data:`OUTPUT_COLUMNS`).

    Args:
        output: ``.csv``/``.tsv`` or ``.parquet``; default ``variant_effects.csv`` in the run's log
            directory.
        window: bp of DNA around each TSS the model reads (the sample data: 1024); default the data
            module's ``genome.window``. Needed when the model has a DNA backbone.
        max_indel: the longest REF or ALT allele scored, in bp beyond the VCF's anchor base; longer
            ones are counted and skipped.
        batch_size: variant-transcript pairs per batch (each is two records, reference and
            alternate); default half the data module's ``eval_batch_size``.
        reuse_mb: memory per process for the backbone outputs kept for later batches (each transcript's
            reference inputs, and the inputs a variant leaves unchanged, are encoded once:
            :mod:`mmfuse.analysis.variant_reuse`); the least recently used are dropped first.
        resume: continue a killed run of the same command from its last complete batch (the rows so far are kept
            in a partial file beside ``output``, :mod:`mmfuse.analysis.variant_resume`); needs ``output`` (CSV/TSV).
    """

    option = "--variants.output"

    def __init__(self, output: str | None = None, window: int | None = None, max_indel: int = DEFAULT_MAX_INDEL,
                 batch_size: int | None = None, reuse_mb: float = 1024.0, resume: bool = False) -> None:  # fmt: skip
        super().__init__(output)
        if isinstance(reuse_mb, bool) or not isinstance(reuse_mb, int | float) or not reuse_mb >= 0:
            raise ConfigError(f"variants.reuse_mb must be a number of megabytes, 0 or more, not {reuse_mb!r}")
        for name, value, least in (("window", window, 1), ("max_indel", max_indel, 0), ("batch_size", batch_size, 1)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < least):
                raise ConfigError(f"variants.{name} must be a whole number of at least {least}, not {value!r}")
        self.window, self.max_indel, self.batch_size, self.reuse_mb = window, max_indel, batch_size, reuse_mb
        self.reuse = Reuse(reuse_mb)
        self.resume, self.resume_log = bool(resume), None
        self._stepped = self._batches = 0
        self.skipped: list[dict[str, str]] = []
        self.counts = VariantCounts()
        self.inputs: list[Path] = []  # the VCF, FASTA and annotation: never overwritten
        self.datamodule: Any = None  # its table and genome, too
        self._unchanged = 0

    def step(self, task: Any, batch: Mapping[str, Any]) -> dict[str, Any]:
        """``predict_step``'s output: the pairs' fields, both predictions ``(B, targets)`` (the reference kept per
        transcript, each backbone run only on inputs no earlier batch encoded) and the pairs skipped."""
        if self._stepped % CHUNK_BATCHES == 0:  # a chunk starts afresh (see Reuse.reset)
            self.reuse.reset()
        self._stepped += 1
        ref, alt = self.reuse.predict(task.model, task.objective, batch)
        return {"rows": batch["rows"], "positions": batch["positions"], "ref": ref.cpu(), "alt": alt.cpu(),
                "skipped": batch["skipped"]}  # fmt: skip

    # the writer's hooks
    def _active(self, pl_module: LightningModule) -> bool:
        return getattr(pl_module, "analysis", None) is self

    def _resolve(self, trainer: Trainer) -> Path:
        default = Path(trainer.log_dir or trainer.default_root_dir) / "variant_effects.csv"
        return self.check_output(Path(self.output) if self.output else default)

    def check_output(self, path: Path) -> Path:
        """Refuses an output with another suffix than ``.csv``/``.tsv``/``.parquet``, or one of the inputs."""
        if path.suffix.lower() not in _SUFFIXES:
            raise ConfigError(f"--variants.output {str(path)!r} must end in {', '.join(_SUFFIXES)}")
        target = path.expanduser().resolve()
        for given in self.inputs:
            if given.exists() and target == given.expanduser().resolve():
                raise ConfigError(
                    f"--variants.output {str(path)!r} is the input {str(given)!r}; write the effects to another file "
                    f"(e.g. variant_effects.csv)"
                )
        refuse_inputs(path, self.datamodule, self.option)
        return path

    def write_on_batch_end(self, trainer: Trainer, pl_module: LightningModule, prediction: Any,
                           batch_indices: Sequence[int] | None, batch: Any, batch_idx: int,
                           dataloader_idx: int) -> None:  # fmt: skip
        if not self._active(pl_module):
            return
        self.skipped += prediction["skipped"]
        self._batches += 1
        if not prediction["rows"]:
            self._chunk_done(prediction, 0)
            return
        unchanged = self._unchanged
        frame = self._frame(pl_module, prediction)
        if trainer.world_size > 1:  # the pairs' order (in the VCF), restored when joining
            width = len(frame) // len(prediction["rows"])
            frame[ORDER_COLUMN] = [r[ORDINAL] * width + t for r in prediction["rows"] for t in range(width)]
        self._append(frame)
        self._chunk_done(prediction, self._unchanged - unchanged)

    def _chunk_done(self, prediction: Any, unchanged: int) -> None:
        """With ``resume``: the batch's pairs (scored or refused) noted, and a chunk's logged when it completes."""
        if self.resume_log is None:
            return
        self._pending += [r[ORDINAL] for r in prediction["rows"]] + [s["ordinal"] for s in prediction["skipped"]]
        self._pending_unchanged += unchanged
        if self._batches % CHUNK_BATCHES == 0:
            self.resume_log.batch_written(self._rows, self._pending, self._pending_unchanged)
            self._pending, self._pending_unchanged = [], 0

    def on_predict_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        super().on_predict_start(trainer, pl_module)
        log = self.resume_log
        if not self._active(pl_module) or log is None:
            return
        self._tmp, self._rows, self._unchanged = log.partial, log.rows, log.unchanged  # rows a killed run wrote
        self._pending, self._pending_unchanged = [], 0
        if not log.rows:
            log.start()

    def on_predict_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        super().on_predict_end(trainer, pl_module)
        if self._active(pl_module) and self.resume_log is not None:
            self.resume_log.finish()

    def on_exception(self, trainer: Trainer, pl_module: LightningModule, exception: BaseException) -> None:
        if self.resume_log is None:
            super().on_exception(trainer, pl_module, exception)  # the partial file is removed
        elif self._parquet is not None:
            self._parquet.close()

    def _frame(self, pl_module: LightningModule, prediction: Any) -> pd.DataFrame:
        ref, alt = prediction["ref"].numpy(), prediction["alt"].numpy()
        rows = prediction["rows"]
        if not (np.isfinite(ref).all() and np.isfinite(alt).all()):
            bad = [r["variant"] for r, a, b in zip(rows, ref, alt, strict=True) if not np.isfinite([a, b]).all()]
            raise NonFiniteError(
                f"the predictions of {len(bad)} variant(s) ({', '.join(bad[:3])}) are NaN or infinite: the "
                f"checkpoint's weights (or these inputs) are not finite; nothing was written"
            )
        names = list(getattr(pl_module, "target_names", []))
        if len(names) != ref.shape[1]:
            names = [f"output_{i}" for i in range(ref.shape[1])]
        width = len(names)
        frame = pd.DataFrame([row for row in rows for _ in range(width)], columns=list(OUTPUT_COLUMNS[:13]))
        frame["target"] = names * len(rows)
        frame["ref_prediction"] = ref.reshape(-1)
        frame["alt_prediction"] = alt.reshape(-1)
        frame["difference"] = frame["alt_prediction"] - frame["ref_prediction"]
        self._unchanged += sum(r["changed"] == "none" for r in rows)
        return frame

    def _done(self, path: Path, rows: int, how: str) -> None:
        counts = self.counts
        if how:  # joined from several processes: count what all of them wrote
            columns = ["variant", "transcript_id", "changed"]
            written = pd.read_parquet(path, columns=columns) if path.suffix.lower() == ".parquet" else pd.read_csv(
                path, usecols=columns, sep="\t" if path.suffix.lower() == ".tsv" else ",", dtype=str)  # fmt: skip
            pairs = written.drop_duplicates(["variant", "transcript_id"])
            counts.unchanged = int(pairs["changed"].eq("none").sum())
        else:
            counts.unchanged = self._unchanged
        scored = counts.rows - len(self.skipped)
        write_summary(self, path, rows, scored, bool(how))
        print(f"Wrote {rows} variant effects ({scored} variant-transcript pairs x "
              f"{rows // max(scored, 1)} targets) to {path}{how}", *counts.lines(), *summary_lines(self, bool(how)),
              sep="\n")  # fmt: skip

def _inputs(model: Any) -> dict[str, str]:
    """``{model modality: what it reads}`` (dna, rna or protein); refuses any other backbone."""
    inputs = {}
    for key, backbone in model.backbones.items():
        kind = getattr(backbone.unwrapped(), "modality", key)  # a cached backbone: the one it wraps
        if kind not in KINDS:
            raise ConfigError(
                f"the model's {key!r} backbone ({type(backbone).__name__}) reads {kind!r}; score-variants builds "
                f"{', '.join(KINDS)} inputs from a genome and an annotation, so it cannot score this model"
            )
        inputs[key] = kind
    return inputs


def _window(writer: VariantWriter, datamodule: Any, inputs: Mapping[str, str]) -> int:
    genome = getattr(datamodule, "genome_windows", None)
    trained = getattr(genome, "window", None)
    if writer.window is not None and trained is not None and writer.window != trained:
        raise ConfigError(
            f"--variants.window {writer.window} differs from the data's genome window {trained} the model reads; "
            f"leave variants.window out"
        )
    window = writer.window or trained
    if window is None and "dna" in inputs.values():
        dna = [m for m, k in inputs.items() if k == "dna"]
        raise ConfigError(
            f"the model reads DNA ({dna[0]}) but the length of its DNA window is not known: the data module reads the "
            f"DNA from a table; pass --variants.window with the bp around each TSS it holds (the sample data: 1024)"
        )
    return int(window or 0)


def _crops(datamodule: Any, inputs: Mapping[str, str]) -> dict[str, tuple[int, Any]]:
    limits, policies = getattr(datamodule, "max_lengths", None) or {}, getattr(datamodule, "crop", None) or {}
    return {m: (limits[m], policies.get(m, "error")) for m in inputs if m in limits}


def _opened(option: str, opener: Any, path: str) -> Any:
    try:
        return opener(path)
    except DataError as exc:
        raise DataError(f"{option}: {exc}") from None


def _index(transcripts: Mapping[str, Transcript], genome: Any, window: int) -> dict[str, Any]:
    """``{FASTA contig: IntervalTree of the transcripts' window-or-span}``; contigs renamed as the FASTA's."""
    from intervaltree import IntervalTree

    trees: dict[str, Any] = {}
    for transcript in transcripts.values():
        contig = find_contig(transcript.contig, genome)
        if contig is None or transcript.end > len(genome[contig]):
            continue  # no variant of the FASTA can reach it, or it is of another assembly
        transcript = dataclasses.replace(transcript, contig=contig)
        half = window // 2
        start = transcript.tss - (window - half - 1) if transcript.strand == "-" else transcript.tss - half
        lo, hi = min(start, transcript.start), max(start + window, transcript.end)
        trees.setdefault(contig, IntervalTree()).addi(lo - 1, hi + 1, transcript)  # +-1: insertions at the ends
    return trees


def _prepared(model: Any, datamodule: Any, writer: VariantWriter, vcf: str | None, fasta: str | None,
              annotation: str | None) -> dict[str, Any]:  # fmt: skip
    """Every input checked (one line naming the option for what cannot be scored); what the pairs are made from."""
    missing = [f"--{n}" for n, v in (("vcf", vcf), ("fasta", fasta), ("annotation", annotation)) if not v]
    if missing:
        raise ConfigError(
            f"mmfuse score-variants needs {', '.join(missing)}: --vcf VARIANTS.vcf --fasta GENOME.fa --annotation "
            f"GENES.gtf (`mmfuse sample-data --genome DIR` writes an example of each)"
        )
    assert vcf and fasta and annotation
    writer.inputs, writer.datamodule = [Path(p) for p in (vcf, fasta, annotation)], datamodule
    if writer.output:
        writer.check_output(Path(writer.output))
    inputs = _inputs(model.model)
    window = _window(writer, datamodule, inputs)
    genome = _opened("--fasta", open_genome, fasta)
    transcripts = _opened("--annotation", read_annotation, annotation)
    if not transcripts:
        raise DataError(
            f"--annotation {annotation!r} holds no transcript with exons; give the GTF or GFF3 of the genome's genes "
            f"(exon lines with transcript_id, or Parent=)"
        )
    return {"vcf": vcf, "fasta": fasta, "genome": genome, "trees": _index(transcripts, genome, window),
            "window": window, "inputs": inputs, "crops": _crops(datamodule, inputs)}  # fmt: skip


def _walk(prepared: Mapping[str, Any], writer: VariantWriter, counts: VariantCounts) -> Any:
    dna = "dna" in prepared["inputs"].values()
    return pairs_of(prepared["vcf"], prepared["genome"], prepared["trees"], prepared["window"], writer.max_indel,
                    dna, counts)  # fmt: skip


def _refuse_none(prepared: Mapping[str, Any], counts: VariantCounts) -> None:
    if not counts.rows:
        why = counts.why_none(list(prepared["genome"].keys()))
        skipped = "; ".join(line.replace("\n", "") for line in counts.lines()[2:7])
        raise DataError(f"no variant of {prepared['vcf']} was scored, so nothing was written: {why} ({skipped})")


def variant_pairs(model: Any, datamodule: Any, writer: VariantWriter, vcf: str | None, fasta: str | None,
                  annotation: str | None) -> VariantPairs:  # fmt: skip
    """The pairs to score as one indexable data set (a few variants: tests, notebooks; ``mmfuse score-variants``
    streams them instead, :class:`~mmfuse.analysis.variant_stream.StreamedPairs`), every input checked and every
    policy counted in ``writer.counts``; refuses, naming the option, what cannot be scored."""
    prepared = _prepared(model, datamodule, writer, vcf, fasta, annotation)
    counts = writer.counts = VariantCounts()
    pairs = [(variant, transcript) for _, variant, transcript in _walk(prepared, writer, counts)]
    _refuse_none(prepared, counts)
    return VariantPairs(fasta, pairs, prepared["window"], prepared["inputs"], prepared["crops"])  # type: ignore[arg-type]


def streamed_pairs(trainer: Any, model: Any, datamodule: Any, writer: VariantWriter, vcf: str | None,
                   fasta: str | None, annotation: str | None, workers: int) -> StreamedPairs:  # fmt: skip
    """This process's share of the pairs, streamed: the VCF is walked once here to count (the summary, each
    share's size, a VCF nothing of which can be scored refused before the first batch), then in the workers."""
    prepared = _prepared(model, datamodule, writer, vcf, fasta, annotation)
    counts = writer.counts = VariantCounts()
    world = int(getattr(trainer, "world_size", 1) or 1)
    shares = Shares(world * max(workers, 1))
    for _, _, transcript in _walk(prepared, writer, counts):
        shares.add(transcript.transcript_id)
    _refuse_none(prepared, counts)
    skip = None
    if writer.resume:
        writer.resume_log = _resume_log(writer, trainer, world, workers)
        kept = writer.resume_log.recover()
        skip = writer.resume_log.skip(counts.rows)
        if kept:
            print(f"Resuming: {int(skip.sum())} pairs ({kept} rows) of an earlier run kept in "
                  f"{writer.resume_log.partial}")  # fmt: skip
    if counts.rows < world:
        raise ConfigError(f"{counts.rows} variant-transcript pair(s) to score on {world} processes: some would have "
                          f"none; score them on one device (--trainer.devices 1)")  # fmt: skip
    return StreamedPairs(prepared["vcf"], prepared["fasta"], prepared["trees"], prepared["window"],
                         prepared["inputs"], prepared["crops"], writer.max_indel, shares,
                         rank=int(trainer.global_rank), world_size=world, workers=workers, skip=skip)  # fmt: skip


def _resume_log(writer: VariantWriter, trainer: Any, world: int, workers: int) -> ResumeLog:
    if not writer.output:
        raise ConfigError("--variants.resume needs --variants.output: the file the killed run was writing")
    path = Path(writer.output)
    if world > 1:  # each rank's part, as the writer names it
        path = path.with_name(f"{path.stem}.rank{int(trainer.global_rank)}{path.suffix}")
    return ResumeLog(path, {"processes": world, "workers": max(workers, 1)})


def score_variants(
    trainer: Any,
    model: Any,
    datamodule: Any,
    ckpt_path: str | None,
    vcf: str | None = None,
    fasta: str | None = None,
    annotation: str | None = None,
) -> None:
    """Scores the VCF's variants with the model of ``ckpt_path`` (see the module docstring).

    Args:
        trainer: the trainer whose predict loop runs the model; the :class:`VariantWriter` among its callbacks
            (the output's options) writes the rows.
        model: the task.
        datamodule: the config's data module: its genome window, crops and loader settings.
        ckpt_path: the trained checkpoint.
        vcf: the variants (``.vcf``, ``.vcf.gz``, ``.bcf``).
        fasta: the genome the VCF was called against.
        annotation: GTF or GFF3 of the transcripts.
    """
    writer = find_writer(trainer, model, VariantWriter, "variants", "score-variants")
    if ckpt_path is None:
        raise ConfigError(
            "mmfuse score-variants needs --ckpt_path: the trained checkpoint whose predictions it compares"
        )
    from torch.utils.data import DataLoader

    size = writer.batch_size or max(1, int(getattr(datamodule, "eval_batch_size", 8) or 8) // 2)
    workers = int(getattr(datamodule, "num_workers", 0) or 0)
    dataset = streamed_pairs(trainer, model, datamodule, writer, vcf, fasta, annotation, workers)
    writer.reuse, writer.skipped, writer._stepped, writer._batches = Reuse(writer.reuse_mb), [], 0, 0
    loader = DataLoader(dataset, batch_size=size, collate_fn=VariantCollate(model.model.tokenizers()),
                        num_workers=workers)  # fmt: skip
    run_analysis(trainer, model, writer, ckpt_path, dataloaders=loader)
