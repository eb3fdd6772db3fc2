"""A whole VCF scored with flat memory: variants paired with transcripts as they are read, never listed.

:func:`pairs_of` walks the VCF once, yielding each (variant, transcript) pair with its ordinal (its place in the
VCF's order) and counting what it leaves out. ``mmfuse score-variants`` walks it twice: once in the main process
to count (the summary, the progress bar's length, the refusal of a VCF nothing of which can be scored, all before
the first batch), then in the DataLoader's workers through :class:`StreamedPairs`, an ``IterableDataset`` that
builds each pair's inputs as it is read. Pairs are dealt to DDP ranks and workers by their transcript (a CRC-32 of
its id), so each process sees every variant of its transcripts and encodes their reference once
(:mod:`mmfuse.analysis.variant_reuse`). Memory holds the annotation's index and a batch, whatever the VCF's size.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from torch.utils.data import IterableDataset, get_worker_info

from mmfuse.data.files.annotation import Transcript
from mmfuse.data.files.fasta import open_genome
from mmfuse.data.files.vcf import Variant, VariantCounts, read_variants
from mmfuse.data.genomics.variant_effects import VariantPairs, buildable, touches

__all__ = ["Shares", "StreamedPairs", "pairs_of"]

#: the key of a pair's ordinal (its place in the VCF's order) in the output's fields
ORDINAL = "__pair"


class Shares:
    """How the pairs are dealt to ``shards`` (DDP ranks x DataLoader workers): by transcript, in the order each
    first appears in the VCF (round robin, so every shard gets some when there are as many transcripts), or by
    pair where there are fewer transcripts than shards. Built by the counting walk; ``sizes``: pairs per shard."""

    def __init__(self, shards: int) -> None:
        self.shards = max(shards, 1)
        self.transcripts: dict[str, int] = {}
        self.per_transcript: dict[str, int] = {}
        self.pairs = 0

    def add(self, transcript_id: str) -> None:
        self.transcripts.setdefault(transcript_id, len(self.transcripts))
        self.per_transcript[transcript_id] = self.per_transcript.get(transcript_id, 0) + 1
        self.pairs += 1

    @property
    def by_pair(self) -> bool:
        return len(self.transcripts) < self.shards

    def of(self, ordinal: int, transcript_id: str) -> int:
        if self.by_pair:
            return ordinal % self.shards
        return self.transcripts[transcript_id] % self.shards

    def sizes(self) -> dict[int, int]:
        if self.by_pair:
            return {s: len(range(s, self.pairs, self.shards)) for s in range(self.shards)}
        sizes = dict.fromkeys(range(self.shards), 0)
        for transcript, index in self.transcripts.items():
            sizes[index % self.shards] += self.per_transcript[transcript]
        return sizes


def pairs_of(vcf: str, genome: Any, trees: Mapping[str, Any], window: int, max_indel: int, dna: bool,
             counts: VariantCounts) -> Iterator[tuple[int, Variant, Transcript]]:  # fmt: skip
    """Each scorable (variant, transcript) pair with its ordinal, in the VCF's order; ``counts`` filled as it goes."""
    k = 0
    for variant in read_variants(vcf, genome, counts, max_indel):
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
            counts.rows += 1
            yield k, variant, transcript
            k += 1


class StreamedPairs(IterableDataset):
    """The pairs of :func:`pairs_of` as the model reads them (the items of
    :class:`~mmfuse.data.genomics.variant_effects.VariantPairs`, with the ordinal in ``row["__pair"]``), this
    process's and worker's share only.

    Args:
        vcf, fasta: the variants and the genome (reopened in each worker).
        trees: the annotation's index (:func:`mmfuse.analysis.variants._index`).
        window, inputs, crops: as :class:`VariantPairs` takes them.
        max_indel: as ``read_variants`` takes it.
        shares: how the pairs are dealt to the ``world_size * workers`` shards (:class:`Shares`, from the first walk).
        rank, world_size: this DDP process and how many there are.
        skip: ``(pairs,)`` bool, the ordinals already scored (``--variants.resume``), left out.
    """

    def __init__(self, vcf: str, fasta: str, trees: Mapping[str, Any], window: int, inputs: Mapping[str, str],
                 crops: Mapping[str, Any], max_indel: int, shares: Shares, rank: int = 0, world_size: int = 1,
                 workers: int = 0, skip: Any = None) -> None:  # fmt: skip
        self.vcf, self.fasta, self.trees, self.max_indel = vcf, fasta, trees, max_indel
        self.rank, self.world_size, self.workers = rank, world_size, max(workers, 1)
        self.shares, self.shard_sizes, self.skip = shares, shares.sizes(), skip
        self.builder = VariantPairs(fasta, [], window, inputs, crops)

    @property
    def shards(self) -> int:
        return self.world_size * self.workers

    def __len__(self) -> int:
        mine = range(self.rank * self.workers, (self.rank + 1) * self.workers)
        total = sum(self.shard_sizes.get(s, 0) for s in mine)
        if self.skip is None:
            return total
        # this process's log holds only its own pairs; at least 1, so that a finished share still ends its run
        return max(total - int(self.skip.sum()), 1)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = get_worker_info()
        worker = info.id if info is not None else 0
        workers = info.num_workers if info is not None else 1
        genome = open_genome(Path(self.fasta))
        dna = "dna" in self.builder.inputs.values()
        # one worker (no DataLoader workers) reads every shard of this rank
        mine = {self.rank * self.workers + w for w in range(self.workers) if w % workers == worker}
        walk = pairs_of(self.vcf, genome, self.trees, self.builder.window, self.max_indel, dna, VariantCounts())
        for k, variant, transcript in walk:
            if (self.skip is not None and self.skip[k]) or self.shares.of(k, transcript.transcript_id) not in mine:
                continue
            item = self.builder.item(variant, transcript)
            item["row"][ORDINAL] = k
            yield item

    def __getstate__(self) -> dict[str, Any]:
        return dict(self.__dict__)
