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
from mmfuse.data.collate import MultiModalCollate
from mmfuse.data.errors import DataError
from mmfuse.data.files.annotation import Transcript, read_annotation
from mmfuse.data.files.fasta import open_genome
from mmfuse.data.files.vcf import DEFAULT_MAX_INDEL, Variant, VariantCounts, read_variants
from mmfuse.data.genomics.variant_effects import KINDS, VariantPairs, buildable, touches
from mmfuse.data.genomics.windows import find_contig
from mmfuse.errors import ConfigError, NonFiniteError
from mmfuse.training.writer import ORDER_COLUMN, PredictionWriter, refuse_inputs

__all__ = ["OUTPUT_COLUMNS", "VariantWriter", "score_variants", "variant_pairs"]

#: the output's columns, in order (one row per variant, transcript and target)
OUTPUT_COLUMNS = ("variant", "vcf_id", "chrom", "pos", "ref", "alt", "filter", "transcript_id", "gene_id", "strand",
                  "consequence", "changed", "protein_change", "target", "ref_prediction", "alt_prediction",
                  "difference")  # fmt: skip
_SUFFIXES = (".csv", ".tsv", ".parquet")


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
    """

    option = "--variants.output"

    def __init__(self, output: str | None = None, window: int | None = None, max_indel: int = DEFAULT_MAX_INDEL,
                 batch_size: int | None = None) -> None:  # fmt: skip
        super().__init__(output)
        for name, value, least in (("window", window, 1), ("max_indel", max_indel, 0), ("batch_size", batch_size, 1)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < least):
                raise ConfigError(f"variants.{name} must be a whole number of at least {least}, not {value!r}")
        self.window, self.max_indel, self.batch_size = window, max_indel, batch_size
        self.counts = VariantCounts()
        self.inputs: list[Path] = []  # the VCF, FASTA and annotation: never overwritten
        self.datamodule: Any = None  # its table and genome, too
        self._unchanged = 0

    def step(self, task: Any, batch: Mapping[str, Any]) -> dict[str, Any]:
        """``predict_step``'s output: the pairs' fields and both predictions ``(B, targets)``."""
        outputs = task.model(batch["inputs"], batch.get("present")).float()
        preds = task.objective.prediction(outputs, batch["ids"])["preds"]
        n = len(batch["rows"])
        return {"rows": batch["rows"], "ref": preds[:n], "alt": preds[n:]}

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
        frame = self._frame(pl_module, prediction)
        if trainer.world_size > 1 and batch_indices is not None:  # the pairs' order, restored when joining
            width = len(frame) // max(len(batch_indices), 1)
            frame[ORDER_COLUMN] = [i * width + t for i in batch_indices for t in range(width)]
        self._append(frame)

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
        print(f"Wrote {rows} variant effects ({counts.rows} variant-transcript pairs x "
              f"{rows // max(counts.rows, 1)} targets) to {path}{how}", *counts.lines(), sep="\n")  # fmt: skip


class _PairCollate:
    """A batch of pairs: the reference records, then the alternate ones, tokenized together."""

    def __init__(self, tokenizers: Mapping[str, Any]) -> None:
        self.collate = MultiModalCollate(tokenizers)

    def __call__(self, items: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        batch = self.collate([i["ref"] for i in items] + [i["alt"] for i in items])
        batch["rows"] = [i["row"] for i in items]
        return batch


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


def _pairs(variants: Any, trees: Mapping[str, Any], window: int, genome: Any, dna: bool,
           counts: VariantCounts) -> list[tuple[Variant, Transcript]]:  # fmt: skip
    pairs = []
    for variant in variants:
        tree = trees.get(variant.contig)
        found = [] if tree is None else [iv.data for iv in tree.overlap(variant.start - 1, variant.end + 1)]
        found = sorted((t for t in found if touches(t, variant, window)), key=lambda t: t.transcript_id)
        if not found:
            counts.outside_transcripts += 1
            continue
        kept = [t for t in found if buildable(t, variant)]
        counts.unbuildable += len(found) - len(kept)
        counts.scored_variants += bool(kept)
        for transcript in kept:
            half = window // 2
            start = transcript.tss - (window - half - 1) if transcript.strand == "-" else transcript.tss - half
            counts.padded += dna and (start < 0 or start + window > len(genome[transcript.contig]))
            pairs.append((variant, transcript))
    counts.rows = len(pairs)
    return pairs


def variant_pairs(model: Any, datamodule: Any, writer: VariantWriter, vcf: str | None, fasta: str | None,
                  annotation: str | None) -> VariantPairs:  # fmt: skip
    """The pairs to score, as the model reads them: every input checked and every policy counted in
    ``writer.counts`` (see :func:`score_variants`); refuses, naming the option, what cannot be scored."""
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
    counts = writer.counts = VariantCounts()
    trees = _index(transcripts, genome, window)
    dna = "dna" in inputs.values()
    pairs = _pairs(read_variants(vcf, genome, counts, writer.max_indel), trees, window, genome, dna, counts)
    if not pairs:
        why = counts.why_none(list(genome.keys()))
        skipped = "; ".join(line.replace("\n", "") for line in counts.lines()[2:7])
        raise DataError(f"no variant of {vcf} was scored, so nothing was written: {why} ({skipped})")
    return VariantPairs(fasta, pairs, window, inputs, _crops(datamodule, inputs))


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
    dataset = variant_pairs(model, datamodule, writer, vcf, fasta, annotation)
    from torch.utils.data import DataLoader

    size = writer.batch_size or max(1, int(getattr(datamodule, "eval_batch_size", 8) or 8) // 2)
    workers = int(getattr(datamodule, "num_workers", 0) or 0)
    loader = DataLoader(dataset, batch_size=size, collate_fn=_PairCollate(model.model.tokenizers()),
                        num_workers=workers)  # fmt: skip
    run_analysis(trainer, model, writer, ckpt_path, dataloaders=loader)
