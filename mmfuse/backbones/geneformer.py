"""Geneformer single-cell encoders (Theodoris et al., Nature 2023) through ``transformers.BertModel``.

A cell is one "sequence": its transcriptome as a rank value encoding, the genes it expresses ordered by
expression scaled by each gene's median across the pretraining corpus. The tokenizer needs two files
Geneformer ships beside its weights: the token dictionary (gene id → token id) and the gene median
dictionary (gene id → non-zero median expression). They are Python pickles; mmfuse reads them with an
unpickler that builds nothing but dicts, strings and numbers, or reads the same dicts as JSON.
"""

from __future__ import annotations

import json
import math
import pickle
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from torch import Tensor, nn

from mmfuse.backbones.base import Backbone, BackboneOutput
from mmfuse.backbones.finetune import LoraOptions
from mmfuse.backbones.presets import Preset, fetch_file, get_preset, is_local, weights_error
from mmfuse.errors import ConfigError
from mmfuse.registry import BACKBONES
from mmfuse.tokenizers import BatchEncoder, InvalidSequenceError

__all__ = ["GENEFORMER_PRESETS", "Geneformer", "GeneformerPreset", "RankValueTokenizer", "read_dictionary"]

_PAPER = "Theodoris et al. 2023, Nature 618:616, https://doi.org/10.1038/s41586-023-06139-9"
_PAPER_V2 = "Chen et al. 2024, bioRxiv, https://doi.org/10.1101/2024.08.16.608180"
_REPO = "ctheodoris/Geneformer"
#: Geneformer scales each cell to this many counts before dividing by the gene medians
TARGET_SUM = 10_000
_V1_FILES = ("geneformer/gene_dictionaries_30m/token_dictionary_gc30M.pkl",
             "geneformer/gene_dictionaries_30m/gene_median_dictionary_gc30M.pkl")  # fmt: skip
_V2_FILES = ("geneformer/token_dictionary_gc104M.pkl", "geneformer/gene_median_dictionary_gc104M.pkl")
_GENERIC = (("token_dictionary.json", "token_dictionary.pkl"), ("gene_median_dictionary.json", "gene_medians.json",
            "gene_median_dictionary.pkl"))  # fmt: skip


@dataclass(frozen=True)
class GeneformerPreset(Preset):
    """A Geneformer checkpoint: a :class:`Preset` plus where its files lie and how cells are framed.

    Attributes:
        subfolder: folder of the weights inside the hub repository (``None``: its root).
        token_dictionary: path of the token dictionary inside the hub repository.
        gene_medians: path of the gene median dictionary inside the hub repository.
        special_tokens: frame each cell with ``<cls>`` … ``<eos>`` (Geneformer V2).
    """

    subfolder: str | None = None
    token_dictionary: str | None = None
    gene_medians: str | None = None
    special_tokens: bool = False


def _bert(layers: int, width: int, heads: int, positions: int, vocab: int) -> dict[str, Any]:
    return dict(vocab_size=vocab, hidden_size=width, num_hidden_layers=layers, num_attention_heads=heads,
                intermediate_size=2 * width, hidden_act="relu", hidden_dropout_prob=0.02,
                attention_probs_dropout_prob=0.02, max_position_embeddings=positions, pad_token_id=0,
                layer_norm_eps=1e-12)  # fmt: skip


def _preset(name: str, config: dict[str, Any], subfolder: str | None, files: tuple[str, str] | None,
            special: bool, paper: str) -> GeneformerPreset:  # fmt: skip
    source = _REPO if files is not None else None
    token_file, median_file = files or (None, None)
    return GeneformerPreset(name, source, config, config["hidden_size"], config["max_position_embeddings"], "cell",
                            "Apache-2.0", paper, None, subfolder, token_file, median_file, special)  # fmt: skip


#: Named Geneformer checkpoints (all in the hub repository ``ctheodoris/Geneformer``, Apache-2.0).
#: ``tiny`` is a random 2-layer model over 100 made-up genes ``G0000`` … ``G0099`` for tests.
#: V1 reads 2,048 genes and no special tokens (token dictionary of 25,426 entries); V2 reads ``<cls>``,
#: 4,094 genes and ``<eos>`` (20,275 entries). The V1 12L weights lie in ``gf-12L-30M-i2048`` in the
#: repository's 2024 layout; if the hub's current layout lacks them, download a revision that has them
#: and set ``source`` to that directory.
GENEFORMER_PRESETS = {
    p.name: p
    for p in (
        _preset("tiny", dict(_bert(2, 32, 2, 64, 104), intermediate_size=64), None, None, True, _PAPER),
        _preset("geneformer_v1_6L", _bert(6, 256, 4, 2048, 25426), "Geneformer-V1-10M", _V1_FILES, False, _PAPER),
        _preset("geneformer_v1_12L", _bert(12, 512, 8, 2048, 25426), "gf-12L-30M-i2048", _V1_FILES, False, _PAPER),
        _preset(
            "geneformer_v2_104M",
            dict(_bert(12, 768, 12, 4096, 20275), intermediate_size=3072),
            "Geneformer-V2-104M",
            _V2_FILES,
            True,
            _PAPER_V2,
        ),  # fmt: skip
    )
}
_TINY_GENES = tuple(f"G{i:04d}" for i in range(100))


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
        """Token ids of one cell, special tokens included."""
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
        order = np.argsort(-scaled, kind="stable")[: self.max_genes]
        return np.concatenate([self.prefix, ids[order], self.suffix]).astype(np.int64)

    def __repr__(self) -> str:
        return (f"RankValueTokenizer({self.name!r}, genes={len(self.genes)}, max_genes={self.max_genes}, "
                f"special_tokens={self.special_tokens})")  # fmt: skip


# ---------------------------------------------------------------------------------------------
# model


def _tiny_dictionaries() -> tuple[dict[str, int], dict[str, float]]:
    tokens = {"<pad>": 0, "<mask>": 1, "<cls>": 2, "<eos>": 3}
    tokens.update({g: 4 + i for i, g in enumerate(_TINY_GENES)})
    return tokens, dict.fromkeys(_TINY_GENES, 1.0)


def _model_dir(source: str, subfolder: str | None) -> tuple[str, str]:
    """``(model directory, subfolder)`` of a local ``source``: a model folder or a whole-repository copy."""
    root = Path(source).expanduser()
    if not (root / "config.json").is_file() and subfolder and (root / subfolder / "config.json").is_file():
        return str(root), subfolder
    return str(root), ""


def _find_file(given: str | None, src: str | None, record: GeneformerPreset, local_dirs: list[Path],
               revision: str | None, index: int) -> Path:  # fmt: skip
    """The token dictionary (``index`` 0) or gene medians (1): given, shipped with the checkpoint, or an error."""
    if given is not None:
        return Path(given).expanduser()
    shipped = (record.token_dictionary, record.gene_medians)[index]
    names = [n for n in (shipped, Path(shipped).name if shipped else None) if n] + list(_GENERIC[index])
    if src is not None and not local_dirs:  # a hub repository
        return fetch_file(src, names, revision)
    for directory in local_dirs:
        for name in names:
            if (directory / name).is_file():
                return directory / name
    option, kind = (("token_dictionary", "token dictionary"), ("gene_medians", "gene median dictionary"))[index]
    where = f"{src} holds none of {', '.join(names)}" if src else "this preset ships no files"
    raise ConfigError(
        f"Geneformer needs its {kind} file: {where}. Set `{option}` to the file (Geneformer's "
        f"{Path(shipped or _V2_FILES[index]).name} from the hub repository {_REPO}, or a JSON of the same dict)."
    )


@BACKBONES.register()
class Geneformer(Backbone):
    """Geneformer: a BERT encoder over one cell's rank value encoded transcriptome; one embedding per gene.

    Input format: each cell is one string of ``GENE:value`` pairs separated by ``;`` (whitespace
    around either is ignored), e.g. ``"ENSG00000000003:3; ENSG00000000005:1.5"``, in the table
    column of the modality; from Python a ``{gene: value}`` mapping works too. Values are counts (or
    any per-cell scaling of them: the ranks are the same) and must be finite and ≥ 0. Genes are the
    keys of the token dictionary (Ensembl ids for the released models); unknown genes are skipped, a
    gene given twice is summed, and a cell with no known expressed gene is an error. See
    :class:`RankValueTokenizer` for the encoding.

    Args:
        preset: a name from ``GENEFORMER_PRESETS`` (``tiny``, ``geneformer_v1_6L``,
            ``geneformer_v1_12L``, ``geneformer_v2_104M``).
        source: a hub id or local directory instead of the preset's (a model folder, or a copy of the
            whole hub repository, where the preset's subfolder is used).
        pretrained: load weights; ``False`` builds the architecture with random weights.
        token_dictionary: gene id → token id file (``.json`` or Geneformer's ``.pkl``); default: the
            file shipped with the checkpoint.
        gene_medians: gene id → non-zero median file (``.json`` or ``.pkl``); default: as above.
        max_genes: most genes kept per cell (default: the model's input size less special tokens:
            2,048 for V1, 4,094 for V2).
        modality: the modality name this encoder reads.
        freeze: keep the weights fixed and the module in eval mode.
        train_last_layers: train only the last N transformer layers.
        lora: adapt the query and value projections with LoRA.
        gradient_checkpointing: recompute layer activations in the backward pass.

    Examples:
        >>> backbone = Geneformer("tiny")
        >>> out = backbone(backbone.tokenizer(["G0001:5;G0002:1;G0003:2", "G0004:1"]))
        >>> tuple(out.embeddings.shape), out.mask.sum(1).tolist()
        ((2, 5, 32), [5, 3])
    """

    presets = GENEFORMER_PRESETS
    lora_targets: ClassVar[tuple[str, ...]] = ("query", "value")
    model: nn.Module

    def __init__(
        self,
        preset: str = "geneformer_v2_104M",
        source: str | None = None,
        pretrained: bool = True,
        token_dictionary: str | None = None,
        gene_medians: str | None = None,
        max_genes: int | None = None,
        modality: str = "cell",
        freeze: bool = False,
        train_last_layers: int | None = None,
        lora: LoraOptions | None = None,
        gradient_checkpointing: bool = False,
    ) -> None:
        super().__init__(modality, freeze, train_last_layers, lora, gradient_checkpointing)
        record = get_preset(GENEFORMER_PRESETS, preset, "Geneformer")
        assert isinstance(record, GeneformerPreset)
        self.preset = record
        src = source or record.source
        revision = record.revision if source is None else None
        subfolder = record.subfolder or ""
        local_dirs: list[Path] = []
        if src is not None and is_local(src):
            src, subfolder = _model_dir(src, record.subfolder)
            local_dirs = [Path(src) / subfolder, Path(src)]
        self.model = self._load(record, src if (pretrained or source) else None, pretrained, subfolder, revision)
        if pretrained and src is not None:
            self.weights_source = str(local_dirs[0]) if local_dirs else f"{src}/{subfolder}".rstrip("/")
        builtin = _tiny_dictionaries() if source is None and record.source is None else None
        files = (token_dictionary, gene_medians)
        tokens, medians = (
            read_dictionary(_find_file(files[i], src, record, local_dirs, revision, i))
            if files[i] is not None or builtin is None
            else builtin[i]
            for i in (0, 1)
        )
        tokens = {g: self._token_id(g, t) for g, t in tokens.items()}
        medians = {g: self._median(g, m) for g, m in medians.items()}
        specials = 2 if record.special_tokens else 0
        positions = int(self.model.config.max_position_embeddings)
        max_genes = max_genes if max_genes is not None else positions - specials
        if max_genes + specials > positions:
            raise ConfigError(
                f"max_genes {max_genes} (+{specials} special tokens) exceeds the model's {positions} positions"
            )
        self.tokenizer = RankValueTokenizer("Geneformer", tokens, medians, max_genes, record.special_tokens)
        self._finish_init()

    def _load(self, record: GeneformerPreset, src: str | None, pretrained: bool, subfolder: str,
              revision: str | None) -> nn.Module:  # fmt: skip
        from transformers import BertConfig, BertModel

        try:
            if pretrained and src is not None:  # BertForMaskedLM checkpoints: the "bert." weights load
                return BertModel.from_pretrained(src, subfolder=subfolder, revision=revision, add_pooling_layer=False)
            config = BertConfig.from_pretrained(src, subfolder=subfolder) if src else BertConfig(**record.config)
            return BertModel(config, add_pooling_layer=False)
        except OSError as exc:
            raise weights_error(src or record.name, exc) from exc

    def _token_id(self, gene: str, token: Any) -> int:
        integral = isinstance(token, int | float) and not isinstance(token, bool) and float(token).is_integer()
        if not integral or not 0 <= token < self.model.config.vocab_size:
            raise ConfigError(
                f"token dictionary gives {gene!r} the id {token!r}, outside the model's vocabulary of "
                f"{self.model.config.vocab_size}; the dictionary belongs to another Geneformer version"
            )
        return int(token)

    @staticmethod
    def _median(gene: str, median: Any) -> float:
        if (
            isinstance(median, bool)
            or not isinstance(median, int | float)
            or not median > 0
            or not math.isfinite(median)
        ):
            raise ConfigError(f"gene median dictionary gives {gene!r} the median {median!r}; medians are numbers > 0")
        return float(median)

    def blocks(self) -> Sequence[nn.Module]:
        return self.model.encoder.layer

    @property
    def embed_dim(self) -> int:
        return int(self.model.config.hidden_size)

    def encode(self, batch: Mapping[str, Tensor]) -> BackboneOutput:
        mask = batch["attention_mask"].bool()
        out = self.model(input_ids=batch["input_ids"], attention_mask=mask)
        return BackboneOutput(out.last_hidden_state, mask)
