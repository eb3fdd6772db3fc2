"""Geneformer single-cell encoders (Theodoris et al., Nature 2023) through ``transformers.BertModel``.

A cell is one "sequence": its transcriptome as a rank value encoding, the genes it expresses ordered by
expression scaled by each gene's median across the pretraining corpus. The tokenizer needs two files
Geneformer ships beside its weights: the token dictionary (gene id → token id) and the gene median
dictionary (gene id → non-zero median expression). They are Python pickles; mmfuse reads them with an
unpickler that builds nothing but dicts, strings and numbers, or reads the same dicts as JSON.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from mmfuse.backbones._hf import TransformersBackbone
from mmfuse.backbones.builder import WeightsPlan
from mmfuse.backbones.finetune import FineTuning
from mmfuse.backbones.geneformer_inputs import RankValueTokenizer, read_dictionary
from mmfuse.backbones.presets import Preset, fetch_file, is_local, preset_table
from mmfuse.errors import ConfigError
from mmfuse.registry import BACKBONES

__all__ = ["GENEFORMER_PRESETS", "Geneformer", "GeneformerPreset", "RankValueTokenizer", "read_dictionary"]

_PAPER = "Theodoris et al. 2023, Nature 618:616, https://doi.org/10.1038/s41586-023-06139-9"
_PAPER_V2 = "Chen et al. 2024, bioRxiv, https://doi.org/10.1101/2024.08.16.608180"
_REPO = "ctheodoris/Geneformer"
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
    token_file, median_file = files or (None, None)
    return GeneformerPreset(
        name=name, source=_REPO if files is not None else None, config=config, embed_dim=config["hidden_size"],
        max_tokens=config["max_position_embeddings"], modality="cell", license="Apache-2.0", paper=paper,
        subfolder=subfolder, token_dictionary=token_file, gene_medians=median_file, special_tokens=special,
    )  # fmt: skip


#: Named Geneformer checkpoints (all in the hub repository ``ctheodoris/Geneformer``, Apache-2.0).
#: ``tiny`` is a random 2-layer model over 100 made-up genes ``G0000`` … ``G0099`` for tests.
#: V1 reads 2,048 genes and no special tokens (token dictionary of 25,426 entries); V2 reads ``<cls>``,
#: 4,094 genes and ``<eos>`` (20,275 entries). The V1 12L weights lie in ``gf-12L-30M-i2048`` in the
#: repository's 2024 layout; if the hub's current layout lacks them, download a revision that has them
#: and set ``source`` to that directory.
GENEFORMER_PRESETS = preset_table(
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
_TINY_GENES = tuple(f"G{i:04d}" for i in range(100))


# ---------------------------------------------------------------------------------------------
# model


def _tiny_dictionaries() -> tuple[dict[str, int], dict[str, float]]:
    tokens = {"<pad>": 0, "<mask>": 1, "<cls>": 2, "<eos>": 3}
    tokens.update({g: 4 + i for i, g in enumerate(_TINY_GENES)})
    return tokens, dict.fromkeys(_TINY_GENES, 1.0)


def _locate(source: str | None, record: GeneformerPreset) -> tuple[str | None, str, list[Path]]:
    """``(source, subfolder, local directories)`` of a checkpoint: a hub id, or a local model folder or
    copy of the whole hub repository (where the preset's subfolder is used)."""
    subfolder = record.subfolder or ""
    if source is None or not is_local(source):
        return source, subfolder, []
    root = Path(source).expanduser()
    if (root / "config.json").is_file() or not subfolder or not (root / subfolder / "config.json").is_file():
        subfolder = ""
    return str(root), subfolder, [root / subfolder, root]


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
class Geneformer(TransformersBackbone):
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
            ``geneformer_v1_12L``, ``geneformer_v2_104M``); ``None``: ``geneformer_v2_104M``.
        source: a hub id or local directory instead of the preset's (a model folder, or a copy of the
            whole hub repository, where the preset's subfolder is used).
        pretrained: load weights; ``False`` builds the architecture (of ``source`` if given, else of
            the preset) with random weights.
        token_dictionary: gene id → token id file (``.json`` or Geneformer's ``.pkl``); default: the
            file shipped with the checkpoint.
        gene_medians: gene id → non-zero median file (``.json`` or ``.pkl``); default: as above.
        max_genes: most genes kept per cell (default: the model's input size less special tokens:
            2,048 for V1, 4,094 for V2).
        modality: the modality name this encoder reads (``None``: ``cell``).
        finetune: which weights train (:class:`~mmfuse.backbones.finetune.FineTuning`; LoRA's default
            targets: ``query``, ``value``).

    Examples:
        >>> backbone = Geneformer("tiny")
        >>> out = backbone(backbone.tokenizer(["G0001:5;G0002:1;G0003:2", "G0004:1"]))
        >>> tuple(out.embeddings.shape), out.mask.sum(1).tolist()
        ((2, 5, 32), [5, 3])
    """

    presets = GENEFORMER_PRESETS
    default_preset = "geneformer_v2_104M"
    default_modality = "cell"
    preset: GeneformerPreset

    def __init__(
        self,
        preset: str | None = None,
        source: str | None = None,
        pretrained: bool = True,
        token_dictionary: str | None = None,
        gene_medians: str | None = None,
        max_genes: int | None = None,
        modality: str | None = None,
        finetune: FineTuning | None = None,
    ) -> None:
        super().__init__(modality or self.default_modality, finetune)
        self._build_model(preset, source, pretrained)
        record = self.preset
        revision = record.revision if source is None else None
        # the dictionaries lie beside the checkpoint's weights, also when only its architecture is built
        src, _, local_dirs = _locate(source or record.source, record)
        builtin = _tiny_dictionaries() if source is None and record.source is None else None
        files = (token_dictionary, gene_medians)
        tokens, medians = (
            read_dictionary(_find_file(files[i], src, record, local_dirs, revision, i))
            if files[i] is not None or builtin is None
            else builtin[i]
            for i in (0, 1)
        )
        tokens = {g: self._token_id(g, t) for g, t in tokens.items()}
        medians = {g: _median(g, m) for g, m in medians.items()}
        specials = 2 if record.special_tokens else 0
        positions = int(self.model.config.max_position_embeddings)
        max_genes = max_genes if max_genes is not None else positions - specials
        if max_genes + specials > positions:
            raise ConfigError(
                f"max_genes {max_genes} (+{specials} special tokens) exceeds the model's {positions} positions"
            )
        self.tokenizer = RankValueTokenizer("Geneformer", tokens, medians, max_genes, record.special_tokens)
        self._finish_init()

    def _load_pretrained(self, source: str, revision: str | None) -> nn.Module:
        from transformers import BertModel

        src, subfolder, _ = _locate(source, self.preset)  # BertForMaskedLM checkpoints: the "bert." weights load
        return BertModel.from_pretrained(src, subfolder=subfolder, revision=revision, add_pooling_layer=False)

    def _read_config(self, source: str, revision: str | None) -> Any:
        from transformers import BertConfig

        src, subfolder, _ = _locate(source, self.preset)
        return BertConfig.from_pretrained(src, subfolder=subfolder, revision=revision)

    def _from_config(self, config: Any) -> nn.Module:
        from transformers import BertConfig, BertModel

        return BertModel(BertConfig(**config) if isinstance(config, dict) else config, add_pooling_layer=False)

    def _weights_location(self, plan: WeightsPlan) -> str | None:
        if plan.source is None or not plan.pretrained:
            return None
        src, subfolder, local_dirs = _locate(plan.source, self.preset)
        return str(local_dirs[0]) if local_dirs else f"{src}/{subfolder}".rstrip("/")

    def _token_id(self, gene: str, token: Any) -> int:
        integral = isinstance(token, int | float) and not isinstance(token, bool) and float(token).is_integer()
        if not integral or not 0 <= token < self.model.config.vocab_size:
            raise ConfigError(
                f"token dictionary gives {gene!r} the id {token!r}, outside the model's vocabulary of "
                f"{self.model.config.vocab_size}; the dictionary belongs to another Geneformer version"
            )
        return int(token)


def _median(gene: str, median: Any) -> float:
    if isinstance(median, bool) or not isinstance(median, int | float) or not median > 0 or not math.isfinite(median):
        raise ConfigError(f"gene median dictionary gives {gene!r} the median {median!r}; medians are numbers > 0")
    return float(median)
