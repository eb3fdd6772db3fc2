"""Gene (token) classification: cells as inputs, labelled genes as targets, the genes split (Geneformer's task).

Geneformer (Theodoris et al. 2023) fine-tunes on labelled genes (dosage-sensitive vs -insensitive transcription
factors, bivalent promoters, …): each cell's rank value encoding is the input and every gene token carrying a
label is classified; 5-fold cross-validation is by gene. :class:`GeneClassification` reads the cells as
:class:`~mmfuse.data.CellClassification` does (lazily, from the cell store) and gives each batch a token label
per token of the cell modality (``target`` ``(B, L)``, ``-100`` where a token has no label), built from the
tokenizer's own output, so the labels follow its tokens exactly: rank order, the cut to ``max_genes`` and the
special tokens included. The objective is :class:`~mmfuse.training.TokenClassification`.
"""

from __future__ import annotations

import difflib
from collections.abc import Collection, Mapping, Sequence
from dataclasses import fields
from typing import Any, Literal

import numpy as np
import pandas as pd
from lightning.pytorch.utilities import rank_zero_info
from torch.utils.data import DataLoader

from mmfuse.data.datasets.checks import validates
from mmfuse.data.datasets.loaders import deferred
from mmfuse.data.datasets.single_cell import EXPRESSION, CellClassification
from mmfuse.data.errors import DataError
from mmfuse.data.files.gene_labels import GeneLabels, read_gene_labels
from mmfuse.data.options import (
    CellSource,
    GeneLabelSource,
    GeneLabelSplit,
    LengthOptions,
    LoaderOptions,
    SampleOptions,
    group,
    plain,
)  # fmt: skip
from mmfuse.data.splits import SPLITS, SplitRule, split_groups
from mmfuse.data.store.cells import GENES
from mmfuse.data.store.rows import SequenceView, SplitRecords
from mmfuse.data.token_labels import TokenLabels, token_tables
from mmfuse.errors import ConfigError
from mmfuse.tokenizers import Tokenizer

__all__ = ["GeneClassification"]


def _split_genes(labels: GeneLabels, split: GeneLabelSplit) -> tuple[dict[str, str], str]:
    """Each labelled gene's split, the genes of each class split on their own (stratified: with ``folds``, each
    class is dealt evenly over the folds, and a share of each validates), and how they were split."""
    rule = SplitRule.of(split, "gene", labels.source, "GeneClassification", group="gene")
    splits: dict[str, str] = {}
    for name in labels.classes:
        genes = [g for g, c in labels.genes.items() if c == name]
        if split.folds is not None and len(genes) < split.folds:
            raise DataError(
                f"{labels.source}: class {name!r} has {len(genes)} gene(s), fewer than the {split.folds} folds (each "
                f"fold tests genes of every class); label more genes or lower split.folds"
            )
        splits.update(split_groups(genes, rule, "gene")[0])
    ordered = {g: splits[g] for g in labels.genes}
    counts = ", ".join(f"{sum(v == s for v in ordered.values())} {s}" for s in SPLITS)
    how = f"fold {split.fold} of {split.folds} tests" if split.folds is not None else "by val_fraction/test_fraction"
    return ordered, f"{len(ordered)} genes, split within each class {how}: {counts}"


def _expressing(store: Any, codes: np.ndarray) -> np.ndarray:
    """``(cells, 3)``: whether each cell of a cell ``store`` expresses a gene of each split (``codes``: each stored
    gene's split index, -1 for unlabelled genes), read over the store's gene indices a block at a time."""
    out = np.zeros((len(store), len(SPLITS)), dtype=bool)
    for start, block in store.blocks(GENES):
        offsets = block.offsets.to_numpy()
        split = codes[block.flatten().to_numpy(zero_copy_only=False)]
        for i in range(len(SPLITS)):
            hits = np.concatenate([[0], np.cumsum(split == i)])
            out[start : start + len(block), i] = hits[offsets[1:] - offsets[0]] > hits[offsets[:-1] - offsets[0]]
    store.release()
    return out


class GeneClassification(CellClassification):
    """Single cells → batches of cell strings with a label per gene token (Geneformer's gene classification).

    The cells are read as :class:`~mmfuse.data.CellClassification` reads them (``source``: an ``.h5ad`` file, a
    dense cells x genes table, or ``sample``); the labels belong to genes, and it is the genes that are split,
    within each class (stratified): ``split.val_fraction``/``test_fraction`` of each class's genes validate/test
    (``val_groups``/``test_groups`` name genes), and ``split.folds``/``fold`` deal each class's genes evenly over
    the folds for ``mmfuse cv``, so no gene is in two folds. Cells are not partitioned: each split's loader reads
    the cells that express at least one of its genes, and their batches label only that split's genes (a
    training cell and a test cell may be the same cell). ``target_names`` are the classes.

    Each batch carries ``target`` int64 ``(B, L)`` aligned with the cell modality's tokens (``-100``: no label),
    built from the backbone tokenizer's own output (its ``genes``: gene → token id), so a gene cut by
    ``max_genes`` has no label and ``<cls>``/``<eos>`` have none. Prediction (``split.predict``) names the
    labelled genes of the predicted split in each cell (or every gene, ``predict_genes: all``); the writer puts
    one row per (cell, gene) and a table per gene (``<predictions>_genes.csv``).

    Policies: a labelled gene the backbone's vocabulary lacks is an error naming it and the closest known ids
    (``unknown_genes: drop`` leaves such genes out, counted and logged); a labelled gene that no cell expresses
    is counted and logged; a gene in two classes, a class without a gene and a split without a labelled gene
    (or without a cell expressing one) are errors naming the file, the gene or split, and the fix.

    Args:
        source: the cells (:class:`~mmfuse.data.options.CellSource`), or just the path.
        gene_labels: the labelled genes: a file (:class:`~mmfuse.data.options.GeneLabelSource`: a CSV/TSV/Parquet
            table with ``gene_column`` and ``label_column``, or a JSON/YAML file holding ``{class: [genes]}``,
            Geneformer's ``gene_class_dict``), just its path, or ``{class: [genes]}`` inline; gene ids as the
            backbone's vocabulary writes them (Ensembl ids for Geneformer). Default for ``source: sample``: the
            planted labels (:mod:`mmfuse.data.samples.gene_labels`).
        classes: the class names in class-index order (with two, the second is the positive class); default:
            the labels, sorted.
        unknown_genes: a labelled gene the backbone's vocabulary lacks: ``error``, or ``drop`` it.
        split: how the labelled genes are split (:class:`~mmfuse.data.options.GeneLabelSplit`).
        loader: batch sizes, workers, bucketing (:class:`~mmfuse.data.options.LoaderOptions`).
        lengths: as :class:`~mmfuse.data.CellClassification`'s: a cell is cut to the backbone's ``max_genes`` by
            its tokenizer, not by letters, so ``lengths.max`` may not name the cell modality.
        sample: cells (``size``, default 600) and ``seed`` of ``source: sample``.
        modality: the name of the cell modality (the backbone whose tokens are labelled).
        predict_genes: the genes ``predict`` writes a row for in each cell: the ``labelled`` genes of
            ``split.predict``, or ``all`` its genes (the unlabelled ones with an empty true label).

    Examples:
        >>> dm = GeneClassification("sample", sample={"size": 30})
        >>> dm.target_names
        ['background', 'lineage_gene']
    """

    def __init__(
        self,
        source: CellSource | str = CellSource(),
        gene_labels: GeneLabelSource | str | dict[str, list[str]] | None = None,
        classes: list[str] | None = None,
        unknown_genes: Literal["error", "drop"] = "error",
        split: GeneLabelSplit = GeneLabelSplit(),
        loader: LoaderOptions = LoaderOptions(),
        lengths: LengthOptions = LengthOptions(),
        sample: SampleOptions = SampleOptions(),
        modality: str = "cell",
        predict_genes: Literal["labelled", "all"] = "labelled",
    ) -> None:
        split = group(split, GeneLabelSplit)
        if split.group is not None:
            raise ConfigError(f"GeneClassification splits the labelled genes, so `split.group` does not apply "
                              f"({split.group!r}); set it to null")  # fmt: skip
        super().__init__(source, {modality: EXPRESSION}, "cell_type", None, "error", "mask", split, loader, lengths,
                         sample)  # fmt: skip
        cells = group(source, CellSource, "path")
        self.save_hyperparameters(plain({
            "source": cells, "gene_labels": gene_labels, "classes": classes, "unknown_genes": unknown_genes,
            "split": split,
            **{name: self.options[name] for name in ("loader", "lengths", "sample")}, "modality": modality,
            "predict_genes": predict_genes,
        }))  # fmt: skip
        if gene_labels is None and cells.path != "sample":
            raise ConfigError(
                "GeneClassification needs `gene_labels`: a table of genes and their classes, a JSON/YAML "
                "{class: [genes]} file (Geneformer's gene_class_dict) or that mapping inline"
            )
        if gene_labels is None:
            from mmfuse.data.samples.gene_labels import gene_classes

            gene_labels = gene_classes()
        self.modality, self.unknown_genes, self.predict_genes = modality, unknown_genes, predict_genes
        if isinstance(gene_labels, Mapping) and set(gene_labels) <= {f.name for f in fields(GeneLabelSource)}:
            gene_labels = GeneLabelSource(**gene_labels)  # the file's options, not {class: [genes]}
        if isinstance(gene_labels, str):
            gene_labels = GeneLabelSource(gene_labels)
        self.gene_labels: GeneLabels = (
            read_gene_labels(gene_labels.path, gene_labels.gene_column, gene_labels.label_column, classes)
            if isinstance(gene_labels, GeneLabelSource)
            else read_gene_labels(gene_labels, classes=classes)
        )
        self._classes = self.gene_labels.classes
        #: each labelled gene's split (``train``/``val``/``test``), and how they were split
        self.gene_splits, self._genes_split_by = _split_genes(self.gene_labels, split)
        #: ``{split: (V,) class per token id}`` once a tokenizer is attached (``all``: every split's genes)
        self._token_labels: dict[str, np.ndarray] = {}
        self._token_names = np.zeros(0, dtype=object)
        self._every: SplitRecords | None = None  # every cell read, once (setup)
        self._stage: str | None = None

    # labels and splits ----------------------------------------------------------------------------
    @property
    def target_names(self) -> list[str]:
        """The classes, in class-index order."""
        return list(self.gene_labels.classes)

    def split_genes(self, split: str) -> list[str]:
        """The labelled genes of ``split`` (``all``: every one), in the labels' order."""
        return [g for g, s in self.gene_splits.items() if split in ("all", s)]

    def class_counts(self, split: str = "train") -> dict[str, int]:
        """Labelled genes per class in one split, e.g. to choose ``class_weights`` (in genes, not tokens)."""
        return self.gene_labels.counts(self.split_genes(split))

    def _metadata_columns(self) -> list[str]:
        return [self.id_column]

    def _categorical_columns(self) -> list[str]:
        return []

    def _label_columns(self) -> list[str]:
        return []

    def _labels(self, table: pd.DataFrame) -> tuple[pd.DataFrame, None]:  # type: ignore[override]
        return table, None

    def _assign_splits(self, table: pd.DataFrame) -> np.ndarray:
        # every cell is kept here; setup gives each split the cells that express its genes
        self._rule = SplitRule.of(self.options["split"], self.id_column, self.path, type(self).__name__)
        self._split_by = f"by labelled gene ({self._genes_split_by})"
        return np.full(len(table), "train", dtype=object)

    def setup(self, stage: str | None = None) -> None:
        """Reads the cells (once) and gives each split the cells expressing at least one of its genes."""
        if self._splits is not None:
            return
        super().setup(stage)
        assert self._splits is not None and self._cells is not None
        self._too_small = None
        kept = self._splits["train"]
        codes = np.full(len(self._cells.genes), -1, dtype=np.int8)  # each stored gene's split, -1: unlabelled
        position = {g: i for i, g in enumerate(self._cells.genes) if g is not None}
        absent = [g for g in self.gene_splits if g not in position]
        for gene, split in self.gene_splits.items():
            if gene in position:
                codes[position[gene]] = SPLITS.index(split)
        if absent:
            rank_zero_info(f"GeneClassification: {len(absent)} labelled genes are not genes of {self.path} "
                           f"(e.g. {', '.join(absent[:3])}); no cell can label them")  # fmt: skip
        expresses = _expressing(self._cells.store, codes)[kept.rows]
        self._every, self._stage = kept, stage
        self._splits = {s: SplitRecords(kept.reader, kept.rows[expresses[:, i]], None) for i, s in enumerate(SPLITS)}
        self._check_splits(stage)
        counts = ", ".join(f"{s} {len(self.split_genes(s))} genes in {len(self._splits[s])} cells" for s in SPLITS)
        rank_zero_info(f"GeneClassification: {counts}")

    def _check_splits(self, stage: str | None, vocabulary: Collection[str] | None = None) -> None:
        """Refuses a split the run reads that has no labelled gene (of the ``vocabulary``, once a tokenizer is
        attached), or no cell expressing one."""
        name = str(getattr(stage, "value", stage))
        if name == "fit":
            needed = self._rule.needed(stage, validates(self.trainer))
        else:
            read = {"test": "test", "validate": "val"}.get(name) or (
                self.predict_split if name == "predict" and self.predict_genes == "labelled" else None)  # fmt: skip
            needed = {read: f"for {name}"} if read not in (None, "all") else {}
        for split, why in needed.items():
            genes = [g for g in self.split_genes(split) if vocabulary is None or g in vocabulary]
            fix = ("raise split.val_fraction" if split == "val" else "raise split.test_fraction" if split == "test"
                   else "lower split.val_fraction and split.test_fraction")  # fmt: skip
            if not genes:
                known = " the backbone's vocabulary has" if vocabulary is not None else ""
                raise DataError(
                    f"{self.gene_labels.source}: the {split} split ({why}) has no labelled gene{known} of the "
                    f"{len(self.gene_splits)} ({self._genes_split_by}); {fix}, name genes in split.{split}_groups, "
                    f"or label more genes"
                )
            if not len(self._splits[split]):  # type: ignore[index]
                raise DataError(
                    f"no cell of {self.path} expresses any of the {len(genes)} labelled {split} genes "
                    f"({', '.join(genes[:3])}{', …' if len(genes) > 3 else ''}); check that gene_labels uses the "
                    f"data's gene ids, or {fix}"
                )

    # tokenizers and loaders -----------------------------------------------------------------------
    def attach_tokenizers(self, tokenizers: Mapping[str, Tokenizer]) -> None:
        """As :class:`~mmfuse.data.CellClassification`'s, and builds each split's token labels from the cell
        tokenizer's ``genes`` (gene → token id).

        Raises:
            DataError: the model has no backbone for ``modality``, its tokenizer lists no genes, or (with
                ``unknown_genes: error``) a labelled gene is not in its vocabulary.
        """
        if self.modality not in tokenizers:
            raise DataError(
                f"GeneClassification labels the genes of the {self.modality!r} modality, which the model has no "
                f"backbone for ({sorted(tokenizers)}); set the data module's `modality` to the Geneformer's"
            )
        super().attach_tokenizers(tokenizers)
        tokenizer = tokenizers[self.modality]
        vocabulary = getattr(tokenizer, "genes", None)
        if not isinstance(vocabulary, Mapping):
            raise DataError(f"the {self.modality} tokenizer ({tokenizer.name}) lists no genes; gene classification "
                            f"needs a tokenizer whose tokens are genes (Geneformer's)")  # fmt: skip
        unknown = [g for g in self.gene_labels.genes if g not in vocabulary]
        if unknown and self.unknown_genes == "error":
            close = difflib.get_close_matches(unknown[0], [str(g) for g in vocabulary], n=3)
            hint = f" (closest known ids: {', '.join(close)})" if close else ""
            raise DataError(
                f"{self.gene_labels.source}: {len(unknown)} labelled gene(s) are not in the vocabulary of "
                f"{tokenizer.name}, e.g. {', '.join(map(repr, unknown[:3]))}{hint}; use the vocabulary's gene ids "
                f"(Ensembl ids for Geneformer), remove them, or set unknown_genes: drop"
            )
        if unknown:
            rank_zero_info(f"GeneClassification: {len(unknown)} labelled genes not in {tokenizer.name}'s vocabulary "
                           f"left out (e.g. {', '.join(unknown[:3])})")  # fmt: skip
        self._token_names, self._token_labels = token_tables(vocabulary, self.gene_labels, self.gene_splits)
        self._check_splits(self._stage, vocabulary)

    def split_sequences(self, splits: str | Sequence[str], modality: str) -> SequenceView:
        """As :class:`~mmfuse.data.CellClassification`'s; ``all`` reads each cell once (a cell may be in
        several splits)."""
        self.setup()
        if splits == "all" or "all" in splits:
            return SequenceView(self._every.reader, modality, self._every.rows)
        return super().split_sequences(splits, modality)

    def _loader(self, split: str, shuffle: bool = False, predict: bool = False) -> DataLoader:
        builder = self._loaders()
        if not self._token_labels:
            raise RuntimeError("GeneClassification has no token labels: attach the model's tokenizers first")
        if split == "all":  # every cell once, not the splits concatenated
            empty = SplitRecords(self._every.reader, self._every.rows[:0], None)
            builder.splits = {"train": self._every, "val": empty, "test": empty}
        builder.collate = TokenLabels(builder.collate, self.modality, self._token_labels[split], self._token_names,
                                      predict, self.predict_genes == "all")  # type: ignore[assignment]  # fmt: skip
        return builder.loader(split, shuffle, getattr(self, "trainer", None) if shuffle else None)

    def train_dataloader(self) -> DataLoader:
        return deferred(lambda: self._loader("train", shuffle=True), self)

    def val_dataloader(self) -> DataLoader:
        return deferred(lambda: self._loader("val"), self)

    def test_dataloader(self) -> DataLoader:
        return deferred(lambda: self._loader("test"), self)

    def predict_dataloader(self) -> DataLoader:
        return deferred(lambda: self._loader(self.predict_split, predict=True), self)
