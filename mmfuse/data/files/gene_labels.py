"""Gene labels of gene classification: a table of (gene, label) rows, or Geneformer's ``{class: [genes]}``.

:func:`read_gene_labels` reads them from a CSV/TSV/Parquet table (a gene column and a label column), a JSON or
YAML file holding ``{class: [genes]}`` (Geneformer's ``gene_class_dict``, as its examples write it), or that
mapping given inline, and checks them: every gene has one class, every class a gene.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from lightning.pytorch.utilities import rank_zero_info

from mmfuse.data.errors import DataError
from mmfuse.data.files.tables import read_table

__all__ = ["GeneLabels", "read_gene_labels"]

_MAPPINGS = (".json", ".yaml", ".yml")


class GeneLabels:
    """Each labelled gene's class, in the order the genes were given.

    Attributes:
        genes: ``{gene: class name}``.
        classes: the class names, in class-index order.
        source: where the labels come from, in messages (a file, or ``gene_labels`` given inline).
    """

    def __init__(self, genes: Mapping[str, str], classes: Sequence[str], source: str) -> None:
        self.genes, self.classes, self.source = dict(genes), list(classes), source

    def index(self, gene: str) -> int:
        """The class index of ``gene``."""
        return self.classes.index(self.genes[gene])

    def counts(self, genes: Sequence[str] | None = None) -> dict[str, int]:
        """Labelled genes per class (of ``genes``; default: every labelled gene)."""
        chosen = self.genes if genes is None else {g: self.genes[g] for g in genes}
        return {c: sum(label == c for label in chosen.values()) for c in self.classes}


def _pairs_of_mapping(mapping: Mapping[Any, Any], where: str) -> list[tuple[str, str]]:
    pairs = []
    for label, genes in mapping.items():
        if isinstance(genes, str) or not isinstance(genes, Sequence):
            raise DataError(f"{where}: class {label!r} must list its genes (`{label}: [GENE1, GENE2]`), not {genes!r}")
        if not genes:
            raise DataError(f"{where}: class {label!r} has no gene; list some genes under it, or leave the class out")
        pairs += [(str(g).strip(), str(label).strip()) for g in genes]
    return pairs


def _pairs_of_table(path: Path, gene_column: str, label_column: str, where: str) -> list[tuple[str, str]]:
    table = read_table(path, text_columns=[gene_column, label_column])
    missing = [c for c in (gene_column, label_column) if c not in table.columns]
    if missing:
        options = {gene_column: "gene_column", label_column: "label_column"}
        named = " and ".join(f"{options[c]} ({c!r})" for c in missing)
        raise DataError(
            f"{where} has no column {', '.join(map(repr, missing))}; set {named} to the columns holding each gene "
            f"and its class. Its columns are: {', '.join(map(str, table.columns[:20]))}"
        )
    genes = table[gene_column].fillna("").astype(str).str.strip()
    labels = table[label_column].fillna("").astype(str).str.strip()
    empty = (genes == "") | (labels == "")
    if empty.any():
        rank_zero_info(f"GeneClassification: {int(empty.sum())} rows of {where} without a gene or a label left out")
    return list(zip(genes[~empty], labels[~empty], strict=True))


def read_gene_labels(
    gene_labels: str | Path | Mapping[str, Sequence[str]],
    gene_column: str = "gene",
    label_column: str = "label",
    classes: Sequence[str] | None = None,
) -> GeneLabels:
    """The labelled genes of ``gene_labels`` (a table, a JSON/YAML ``{class: [genes]}`` file, or that mapping).

    Args:
        gene_labels: the file, or the mapping itself.
        gene_column: a table's column of gene ids (the ids of the backbone's vocabulary, e.g. Ensembl ids).
        label_column: a table's column of classes.
        classes: the class names in class-index order (every one must label a gene); default: the labels, sorted.

    Raises:
        DataError: an unreadable file, missing columns, a gene in two classes, a class without a gene, labels
            outside ``classes``, or fewer than two classes; each naming the file (or ``gene_labels``) and the fix.

    Examples:
        >>> labels = read_gene_labels({"tf": ["G0001", "G0002"], "other": ["G0003"]})
        >>> labels.classes, labels.genes["G0002"]
        (['other', 'tf'], 'tf')
    """
    if isinstance(gene_labels, Mapping):
        where = "gene_labels"
        pairs = _pairs_of_mapping(gene_labels, where)
    else:
        path = Path(gene_labels).expanduser()
        where = str(path)
        if not path.is_file():
            raise DataError(f"the gene labels {where!r} do not exist; check `gene_labels`")
        suffix = path.suffix.lower()
        if suffix in (".pkl", ".pickle"):
            raise DataError(
                f"{where} is a pickle; mmfuse does not unpickle label files. Write Geneformer's gene_class_dict as "
                f"JSON once: json.dump(pickle.load(open('{path.name}', 'rb')), open('{path.stem}.json', 'w'))"
            )
        if suffix in _MAPPINGS:
            import yaml

            try:  # (JSON is YAML, but its own reader names the line of a syntax error better)
                data = json.loads(path.read_text()) if suffix == ".json" else yaml.safe_load(path.read_text())
            except (ValueError, yaml.YAMLError) as exc:
                raise DataError(f"cannot read {where}: {exc}") from None
            if not isinstance(data, Mapping):
                raise DataError(f"{where} must hold a mapping of class to genes ({{class: [genes]}}), not {data!r:.80}")
            pairs = _pairs_of_mapping(data, where)
        else:
            pairs = _pairs_of_table(path, gene_column, label_column, where)
    genes: dict[str, str] = {}
    for gene, label in pairs:
        if not gene:
            raise DataError(f"{where}: class {label!r} lists an empty gene id; remove it")
        if genes.setdefault(gene, label) != label:
            raise DataError(
                f"{where}: gene {gene!r} is labelled both {genes[gene]!r} and {label!r}; give each gene one class "
                f"(remove it from one of them)"
            )
    present = sorted(set(genes.values()))
    names = [str(c) for c in classes] if classes is not None else present
    if len(names) < 2 or len(set(names)) != len(names):
        raise DataError(f"{where}: gene classification needs at least 2 distinct classes, not {names}")
    outside = sorted(set(present) - set(names))
    if outside:
        example = next(g for g, label in genes.items() if label == outside[0])
        raise DataError(
            f"{where}: labels {outside} (e.g. gene {example!r}) are not among the classes {names}; add them to "
            f"`classes`, or fix the labels"
        )
    empty = [c for c in names if c not in present]
    if empty:
        raise DataError(f"{where}: class {empty[0]!r} has no gene; label some genes {empty[0]!r}, or leave it out of "
                        f"`classes`")  # fmt: skip
    return GeneLabels(genes, names, where)
