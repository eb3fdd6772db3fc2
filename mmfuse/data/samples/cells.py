"""The bundled single-cell sample: a synthetic CRISPR knockdown screen in differentiating progenitors.

It is generated deterministically from a seed (nothing is shipped) over the 100 made-up genes
``G0000`` … ``G0099`` of the tiny Geneformer preset. The story follows Perturb-seq screens (Dixit et
al. 2016; Replogle et al. 2022): every progenitor cell receives one CRISPR guide, against one of six
lineage regulators or a non-targeting control, and becomes one of three blood lineages (the label,
``cell_type``); then its transcriptome is read.

The planted signal:

* **Regulators drive their lineage (strong).** Each lineage has two regulators (transcription
  factors, :data:`REGULATORS`), expressed in its cells at a mean of :data:`REGULATOR_MEAN` counts and
  elsewhere at :data:`LEAK_MEAN`, and five marker genes (:data:`MARKERS`), at :data:`MARKER_MEAN` in
  the lineage (each detected in a cell with probability :data:`MARKER_DETECTION`, as scRNA-seq drops
  genes out) and :data:`LEAK_MEAN` elsewhere; the other genes are background with means between 0.2
  and 6. Counts are negative binomial (Poisson with gamma-distributed rates, shape
  :data:`DISPERSION`) times a per-cell library size. In Geneformer's rank value encoding (the tiny
  preset's medians are all 1) a cell's two regulators therefore rank first, then its markers: the
  genes whose in-silico deletion moves a cell away from its lineage most (``mmfuse perturb``).
* **Perturbation → lineage (weak; in the protein column).** Knocking down a regulator of a lineage
  (:data:`REGULATORS`) lowers a cell's chance of becoming that lineage from 1/3 to
  :data:`KNOCKDOWN_FATE`. The two regulators of a lineage share a motif in their protein sequence
  (:data:`REGULATOR_MOTIFS`), so a protein encoder sees which lineage a knocked-down regulator drives.
* **Perturbation → transcriptome.** The targeted regulator keeps :data:`KNOCKDOWN_LEFT` of its
  expression (the knockdown a screen checks first).

Columns: ``cell_id``, ``cell_type``, ``perturbation`` (the targeted gene, or ``non-targeting``) and
``perturbed_protein`` (the targeted gene's protein; empty for controls, which a fused model sees as
a missing modality).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

__all__ = [
    "CELL_TYPES",
    "CONTROL",
    "GENES",
    "KNOCKDOWN_FATE",
    "MARKERS",
    "MARKER_MEAN",
    "REGULATORS",
    "REGULATOR_MEAN",
    "REGULATOR_MOTIFS",
    "make_cell_sample",
    "regulator_protein",
]

#: the tiny Geneformer preset's genes
GENES: tuple[str, ...] = tuple(f"G{i:04d}" for i in range(100))
CELL_TYPES: tuple[str, ...] = ("erythroid", "lymphoid", "myeloid")
#: lineage → its marker genes
MARKERS: dict[str, tuple[str, ...]] = {t: GENES[5 * i : 5 * i + 5] for i, t in enumerate(CELL_TYPES)}
#: regulator gene → the lineage it drives (the screen's CRISPR targets)
REGULATORS: dict[str, str] = {GENES[90 + i]: CELL_TYPES[i // 2] for i in range(6)}
#: lineage → a motif both of its regulators' proteins carry
REGULATOR_MOTIFS: dict[str, str] = {"erythroid": "CRECGKSFT", "lymphoid": "KRPRTAYTS", "myeloid": "WKEFLDNLQ"}
CONTROL = "non-targeting"
CONTROL_SHARE = 0.25
MARKER_MEAN, LEAK_MEAN, REGULATOR_MEAN = 40.0, 0.5, 300.0
DISPERSION = 5.0
KNOCKDOWN_FATE = 0.1
KNOCKDOWN_LEFT = 0.05
MARKER_DETECTION = 0.5
LIBRARY_SD = 0.3
_AMINO_ACIDS = "ACDEFGHIKLMNPQRSTVWY"


def regulator_protein(gene: str) -> str:
    """The made-up protein of a regulator: 80-140 residues from ``M``, its lineage's motif at 20-30.

    The same gene always gives the same protein, whatever the sample's seed.
    """
    rng = np.random.default_rng(int(gene[1:]) + 1_000)
    body = "".join(rng.choice(list(_AMINO_ACIDS), size=int(rng.integers(80, 141))))
    at = int(rng.integers(20, 31))
    motif = REGULATOR_MOTIFS[REGULATORS[gene]]
    return "M" + body[:at] + motif + body[at + len(motif) :]


def _means() -> np.ndarray:
    """``(3, 100)`` mean counts of each gene in each lineage, before library size and knockdown."""
    background = np.clip(np.exp(np.random.default_rng(0).normal(0.5, 0.7, len(GENES))), 0.2, 6.0)
    means = np.tile(background, (len(CELL_TYPES), 1))
    for t, lineage in enumerate(CELL_TYPES):
        for other, markers in MARKERS.items():
            means[t, [GENES.index(g) for g in markers]] = MARKER_MEAN if other == lineage else LEAK_MEAN
    for t, lineage in enumerate(CELL_TYPES):
        for gene, driven in REGULATORS.items():
            means[t, GENES.index(gene)] = REGULATOR_MEAN if driven == lineage else LEAK_MEAN
    return means


def make_cell_sample(num_cells: int = 600, seed: int = 0) -> tuple[np.ndarray, list[str], pd.DataFrame]:
    """The sample screen: ``(counts (cells, 100) int64, gene ids, obs)``.

    Args:
        num_cells: cells to generate.
        seed: seed of the cells (the genes, markers and proteins are fixed).

    Examples:
        >>> counts, genes, obs = make_cell_sample(4)
        >>> counts.shape, genes[:2], list(obs.columns)
        ((4, 100), ['G0000', 'G0001'], ['cell_id', 'cell_type', 'perturbation', 'perturbed_protein'])
    """
    rng = np.random.default_rng(seed)
    regulators = list(REGULATORS)
    targeted = rng.random(num_cells) >= CONTROL_SHARE
    perturbation = np.where(targeted, np.array(regulators)[rng.integers(0, len(regulators), num_cells)], CONTROL)
    fate = np.full((num_cells, len(CELL_TYPES)), 1 / len(CELL_TYPES))
    for i in np.flatnonzero(targeted):
        lineage = CELL_TYPES.index(REGULATORS[perturbation[i]])
        fate[i] = (1 - KNOCKDOWN_FATE) / (len(CELL_TYPES) - 1)
        fate[i, lineage] = KNOCKDOWN_FATE
    types = (rng.random((num_cells, 1)) > np.cumsum(fate, axis=1)).sum(axis=1)
    means = _means()[types] * rng.lognormal(0.0, LIBRARY_SD, (num_cells, 1))
    for i in np.flatnonzero(targeted):
        means[i, GENES.index(perturbation[i])] *= KNOCKDOWN_LEFT
    # each of a cell's own markers is detected with MARKER_DETECTION (a stream of its own: the rest is unchanged)
    markers = np.array([[GENES.index(g) for g in MARKERS[CELL_TYPES[t]]] for t in types])
    missed = np.random.default_rng([seed, 1]).random(markers.shape) >= MARKER_DETECTION
    cells = np.repeat(np.arange(num_cells), markers.shape[1])
    means[cells[missed.ravel()], markers.ravel()[missed.ravel()]] = LEAK_MEAN
    counts = rng.poisson(means * rng.gamma(DISPERSION, 1 / DISPERSION, means.shape)).astype(np.int64)
    obs = pd.DataFrame({
        "cell_id": [f"cell_{i:05d}" for i in range(num_cells)],
        "cell_type": [CELL_TYPES[t] for t in types],
        "perturbation": perturbation,
        "perturbed_protein": [regulator_protein(p) if p != CONTROL else "" for p in perturbation],
    })  # fmt: skip
    return counts, list(GENES), obs
