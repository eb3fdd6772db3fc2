"""Planted gene labels of the single-cell sample (:mod:`mmfuse.data.samples.cells`), for gene classification.

The sample's cells express, per lineage, two regulators (:data:`~mmfuse.data.samples.cells.REGULATORS`, at
:data:`~mmfuse.data.samples.cells.REGULATOR_MEAN` counts) and five markers
(:data:`~mmfuse.data.samples.cells.MARKERS`, at :data:`~mmfuse.data.samples.cells.MARKER_MEAN`) far above the
background genes, and other lineages' at a trickle. :data:`GENE_CLASSES` labels those 21 genes
``lineage_gene`` and the other 79 ``background``, as Geneformer's ``gene_class_dict`` does (class → genes).

A held-out gene's class is learnable from its context, not its identity (the genes of a test fold are never
labelled in training): in a cell of its lineage a lineage gene ranks among the first seven of the rank value
encoding (its position), above every background gene, and it is expressed together with the other genes of
that lineage (co-expression). In the other lineages' cells it is rare and low, where nothing but its identity
tells it from background: a per-token AUROC stays below 1, the per-gene mean over cells (the predictions'
``_genes`` table) separates the classes.
"""

from __future__ import annotations

from mmfuse.data.samples.cells import GENES, MARKERS, REGULATORS

__all__ = ["BACKGROUND", "GENE_CLASSES", "LINEAGE_GENE", "gene_classes"]

LINEAGE_GENE, BACKGROUND = "lineage_gene", "background"


def gene_classes() -> dict[str, list[str]]:
    """``{class: [genes]}``: the regulators and markers are ``lineage_gene``, the other genes ``background``.

    Examples:
        >>> classes = gene_classes()
        >>> len(classes["lineage_gene"]), len(classes["background"]), classes["lineage_gene"][:2]
        (21, 79, ['G0000', 'G0001'])
    """
    lineage = {g for markers in MARKERS.values() for g in markers} | set(REGULATORS)
    return {
        LINEAGE_GENE: [g for g in GENES if g in lineage],
        BACKGROUND: [g for g in GENES if g not in lineage],
    }


#: the planted labels, class → genes (a fresh copy: :func:`gene_classes`)
GENE_CLASSES: dict[str, list[str]] = gene_classes()
