"""Geneformer's inputs: its gene dictionaries read safely, and the rank value encoding of a cell.

The token dictionary (gene id → token id) and the gene median dictionary (gene id → non-zero median
expression) ship beside Geneformer's weights as Python pickles; :func:`read_dictionary` reads them with
an unpickler that builds nothing but dicts, strings and numbers, or reads the same dicts as JSON.
:class:`RankValueTokenizer` turns a cell's ``GENE:value`` list into token ids.
"""

from __future__ import annotations

import json
import math
import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from mmfuse.errors import ConfigError
from mmfuse.tokenizers import BatchEncoder, InvalidSequenceError

__all__ = ["TARGET_SUM", "RankValueTokenizer", "read_dictionary"]

#: Geneformer scales each cell to this many counts before dividing by the gene medians
TARGET_SUM = 10_000


# ---------------------------------------------------------------------------------------------
# dictionary files


class _DictUnpickler(pickle.Unpickler):
    """Builds dicts, strings and numbers only; any other global (a function, a class) is refused."""

    def find_class(self, module: str, name: str) -> Any:
        allowed = _NUMPY_GLOBALS.get((module, name))
        if allowed is None:
            raise pickle.UnpicklingError(
                f"the pickle asks for {module}.{name}; a Geneformer dictionary holds only gene ids and numbers, "
                f"so mmfuse refuses to build anything else (convert the file to JSON where you trust it)"
            )
        return allowed


def _numeric_dtype(*args: Any) -> np.dtype:
    dtype = np.dtype(*args)
    if dtype.kind not in "biuf":
        raise pickle.UnpicklingError(f"the pickle holds a numpy {dtype} value; only numbers are accepted")
    return dtype


def _numpy_scalar(dtype: np.dtype, data: bytes) -> Any:
    if not isinstance(dtype, np.dtype) or dtype.kind not in "biuf" or not isinstance(data, bytes):
        raise pickle.UnpicklingError("the pickle holds a numpy value that is not a number")
    return np.frombuffer(data, dtype=dtype, count=1)[0].item()


# numpy scalars (np.float32 medians) pickle as scalar(dtype('f4'), raw bytes)
_NUMPY_GLOBALS = {
    ("numpy", "dtype"): _numeric_dtype,
    ("numpy.core.multiarray", "scalar"): _numpy_scalar,
    ("numpy._core.multiarray", "scalar"): _numpy_scalar,
}


def read_dictionary(path: str | Path) -> dict[str, Any]:
    """A ``{str: number}`` dictionary from a ``.json`` file or, restricted to plain data, a ``.pkl`` file.

    Raises:
        ConfigError: the file is missing, is neither JSON nor pickle, holds something other than a dict
            keyed by strings, or (pickle) asks to build any object besides dicts, strings and numbers.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise ConfigError(f"dictionary file {str(path)!r} does not exist")
    try:
        if path.suffix.lower() == ".json":
            data = json.loads(path.read_text())
        elif path.suffix.lower() in (".pkl", ".pickle"):
            with path.open("rb") as f:
                data = _DictUnpickler(f).load()
        else:
            raise ConfigError(f"cannot read {str(path)!r}: give a .json or .pkl file")
    except (pickle.UnpicklingError, json.JSONDecodeError, EOFError) as exc:
        raise ConfigError(f"cannot read {str(path)!r}: {exc}") from exc
    if not isinstance(data, dict) or not all(isinstance(k, str) for k in data):
        raise ConfigError(f"{str(path)!r} does not hold a dictionary keyed by gene ids")
    return data


# ---------------------------------------------------------------------------------------------
# tokenizer


def _number(text: Any, entry: str, index: int | None) -> float:
    try:
        value = float(text)
    except (TypeError, ValueError):
        raise InvalidSequenceError(f"entry {entry!r}: the value is not a number; write GENE:value", index) from None
    if not math.isfinite(value) or value < 0:
        raise InvalidSequenceError(f"entry {entry!r}: expression must be a finite number ≥ 0", index)
    return value


def _parse(cell: str | Mapping[str, float], index: int | None) -> dict[str, float]:
    """``{gene: expression}`` of one cell; a gene given twice is summed."""
    if isinstance(cell, Mapping):
        pairs = [(str(g), _number(v, f"{g}:{v}", index)) for g, v in cell.items()]
    elif isinstance(cell, str):
        pairs = []
        for entry in cell.split(";"):
            entry = entry.strip()
            if not entry:
                continue  # tolerates a trailing ';'
            gene, colon, value = entry.partition(":")
            if not colon or not gene.strip() or ":" in value:
                raise InvalidSequenceError(
                    f"entry {entry!r} is not a GENE:value pair; a cell is written 'GENE:value;GENE:value;…'", index
                )
            pairs.append((gene.strip(), _number(value.strip(), entry, index)))
    else:
        raise InvalidSequenceError(f"a cell is a 'GENE:value;…' string or a mapping, not {type(cell).__name__}", index)
    expression: dict[str, float] = {}
    for gene, value in pairs:
        expression[gene] = expression.get(gene, 0.0) + value
    return expression


class RankValueTokenizer(BatchEncoder):
    """Geneformer's rank value encoding of one cell per input (``TranscriptomeTokenizer`` semantics).

    Each gene's expression is divided by the cell's total (the sum of all values given, known genes or
    not), scaled to 10,000 and divided by the gene's median; genes with no expression, no token or no
    median are dropped; the rest are sorted by that value, largest first, and the first ``max_genes``
    kept, between ``<cls>`` and ``<eos>`` when ``special_tokens``. Scaling a cell by a constant does not
    change the order, so raw counts and normalised values give the same tokens. Ties keep the order the
    genes are given in (a stable sort; Geneformer's ``np.argsort`` leaves tie order unspecified).

    Args:
        name: model name used in error messages.
        tokens: gene id → token id, with ``<pad>`` (and ``<cls>``, ``<eos>`` if ``special_tokens``).
        medians: gene id → the gene's non-zero median expression in the pretraining corpus.
        max_genes: most genes kept per cell.
        special_tokens: frame each cell with ``<cls>`` … ``<eos>`` (Geneformer V2).

    Examples:
        >>> tok = RankValueTokenizer("gf", {"<pad>": 0, "A": 1, "B": 2, "C": 3}, {"A": 1.0, "B": 4.0, "C": 1.0}, 8)
        >>> tok(["A:2; B:4; C:3"])["input_ids"].tolist()  # scaled: A 2, B 1, C 3
        [[3, 1, 2]]
    """

    def __init__(
        self,
        name: str,
        tokens: Mapping[str, int],
        medians: Mapping[str, float],
        max_genes: int,
        special_tokens: bool = False,
    ) -> None:
        specials = ["<pad>", "<cls>", "<eos>"] if special_tokens else ["<pad>"]
        missing = [s for s in specials if s not in tokens]
        if missing:
            hint = " (V1 dictionaries have none: set special_tokens false)" if "<cls>" in missing else ""
            raise ConfigError(f"the {name} token dictionary has no {', '.join(missing)}{hint}")
        if max_genes < 1:
            raise ConfigError(f"max_genes must be at least 1, not {max_genes}")
        self.name = name
        self.max_genes = max_genes
        self.special_tokens = special_tokens
        self.pad_id = int(tokens["<pad>"])
        self.prefix = [int(tokens["<cls>"])] if special_tokens else []
        self.suffix = [int(tokens["<eos>"])] if special_tokens else []
        #: gene → (token id, median), for genes that have both
        self.genes = {
            g: (int(tokens[g]), float(m)) for g, m in medians.items() if g in tokens and not g.startswith("<")
        }

    def encode(self, sequence: str | Mapping[str, float], index: int | None = None) -> np.ndarray:
        """Token ids of one cell, special tokens included: :meth:`frame` of :meth:`ranked`."""
        return self.frame(self.ranked(sequence, index))

    def frame(self, ranked: np.ndarray) -> np.ndarray:
        """The model's input of a cell's genes in rank order (:meth:`ranked`, perhaps perturbed): the first
        ``max_genes``, between ``<cls>`` and ``<eos>`` when ``special_tokens``."""
        return np.concatenate([self.prefix, np.asarray(ranked, dtype=np.int64)[: self.max_genes],
                               self.suffix]).astype(np.int64)  # fmt: skip

    def ranked(self, sequence: str | Mapping[str, float], index: int | None = None) -> np.ndarray:
        """The token ids of every expressed gene of a cell the dictionaries know, in rank order (highest
        first), before the cut to ``max_genes`` and without special tokens."""
        expression = _parse(sequence, index)
        total = sum(expression.values())
        known = [(g, v) for g, v in expression.items() if v > 0 and g in self.genes]
        if not known:
            unknown = sum(1 for g in expression if g not in self.genes)
            raise InvalidSequenceError(
                f"no expressed gene of the {self.name} token dictionary is left ({len(expression)} genes given, "
                f"{unknown} not in the token/median dictionaries, {sum(v == 0 for v in expression.values())} "
                f"with zero expression); check the gene ids (Ensembl ids like ENSG00000000003) or drop the cell",
                index,
            )
        ids = np.array([self.genes[g][0] for g, _ in known], dtype=np.int64)
        scaled = np.array([v / total * TARGET_SUM / self.genes[g][1] for g, v in known])
        return ids[np.argsort(-scaled, kind="stable")]

    def __repr__(self) -> str:
        return (f"RankValueTokenizer({self.name!r}, genes={len(self.genes)}, max_genes={self.max_genes}, "
                f"special_tokens={self.special_tokens})")  # fmt: skip
