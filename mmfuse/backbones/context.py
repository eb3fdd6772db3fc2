"""A learned embedding of a categorical context (cell type, tissue, assay, …), trained from scratch.

Some systems condition on what a record was measured in rather than on a sequence: tf-bind-transformer
predicts a transcription factor's binding in a given cell type. It embeds a free-text description of
the cell type with a pretrained text model; :class:`ContextEmbedding` is the simpler, common
alternative: a few learned vectors per known category, so a categorical column of the data enters
fusion like any other modality (one "sequence" per record, here a category name). It has no
pretrained weights, hence no presets.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal

import numpy as np
from torch import Tensor, nn

from mmfuse.backbones.base import Backbone, BackboneOutput
from mmfuse.backbones.finetune import FineTuning
from mmfuse.errors import ConfigError
from mmfuse.registry import BACKBONES, suggest_name
from mmfuse.tokenizers import BatchEncoder, InvalidSequenceError

__all__ = ["CategoryTokenizer", "ContextEmbedding"]

Unknown = Literal["error", "shared"]
_LISTED = 12  # known categories named in a message


class CategoryTokenizer(BatchEncoder):
    """Maps a category name to the ids of its ``tokens`` learned tokens.

    Category ``i`` of ``categories`` gets the ids ``i * tokens`` … ``i * tokens + tokens - 1``; with
    ``unknown="shared"`` every name not listed gets the ids after the known ones (one shared
    ``<unk>`` category). Names are matched exactly (case-sensitive) after stripping surrounding
    whitespace; every input has ``tokens`` tokens, so nothing is ever padded.

    Args:
        name: model name used in error messages.
        categories: the known category names, in order.
        tokens: token ids per category.
        unknown: ``error``: an unknown name raises :class:`~mmfuse.tokenizers.InvalidSequenceError`
            naming the known ones and the closest; ``shared``: it maps to the ``<unk>`` ids.
        kind: what a category is, in messages (the modality, e.g. ``context``).

    Examples:
        >>> tok = CategoryTokenizer("ContextEmbedding", ["HepG2", "K562"], tokens=2)
        >>> tok(["K562", " HepG2 "])["input_ids"].tolist()
        [[2, 3], [0, 1]]
    """

    def __init__(
        self, name: str, categories: Sequence[str], tokens: int = 1, unknown: Unknown = "error", kind: str = "context"
    ) -> None:
        self.name = name
        self.categories = tuple(categories)
        self.tokens = tokens
        self.unknown = unknown
        self.kind = kind
        self.pad_id = 0  # never written: all inputs have the same length
        self._index = {c: i for i, c in enumerate(self.categories)}

    def encode(self, sequence: str, index: int | None = None) -> np.ndarray:
        """The token ids of one category name."""
        if not isinstance(sequence, str):
            raise InvalidSequenceError(f"a {self.kind} is a name (text), not {type(sequence).__name__}", index)
        category = sequence.strip()
        if not category:
            raise InvalidSequenceError(
                f"the {self.kind} is empty; give one of the known categories or drop the record", index
            )
        i = self._index.get(category)
        if i is None:
            if self.unknown == "error":
                raise InvalidSequenceError(self._unknown_message(category), index)
            i = len(self.categories)
        return np.arange(i * self.tokens, (i + 1) * self.tokens, dtype=np.int64)

    def _unknown_message(self, category: str) -> str:
        known = ", ".join(map(repr, self.categories[:_LISTED]))
        more = f", … ({len(self.categories) - _LISTED} more)" if len(self.categories) > _LISTED else ""
        close = suggest_name(category, self.categories)
        hint = f" Did you mean {close!r}?" if close is not None else ""
        return (
            f"{category!r} is not among the {len(self.categories)} {self.kind} categories {self.name} knows "
            f"({known}{more}).{hint} Add it to the backbone's `categories` (it then gets its own learned "
            f"embedding), or set `unknown: shared` to map unknown names to one shared <unk> embedding."
        )

    def __repr__(self) -> str:
        return (f"CategoryTokenizer({self.name!r}, categories={len(self.categories)}, tokens={self.tokens}, "
                f"unknown={self.unknown!r})")  # fmt: skip


@BACKBONES.register()
class ContextEmbedding(Backbone):
    """A learned embedding of a categorical context: ``tokens`` vectors of width ``embed_dim`` per category.

    The input of each record is the category's name (a cell type such as ``HepG2``, a tissue, an
    assay), read from the table column of the modality. The output is ``(B, tokens, embed_dim)``
    with an all-true mask. The embeddings start random (``N(0, 1)``) and train with the rest of the
    model; ``finetune: {freeze: true}`` keeps them at their random values (a fixed random code per
    category). The layer-wise fine-tuning options (``train_last_layers``, ``gradient_checkpointing``)
    do not apply to a lookup table and are refused.

    With ``unknown: shared``, names missing from ``categories`` share one ``<unk>`` embedding; it
    learns from the training records whose context is not listed (list only the frequent contexts
    to give the rare ones a common embedding), and serves contexts never seen in training.

    Args:
        categories: the known categories, in order (the order fixes which weights belong to which
            category: keep it when loading a checkpoint). Names are matched exactly
            (case-sensitive), after stripping surrounding whitespace.
        embed_dim: width ``D`` of each token.
        tokens: learned tokens per category (several give attention-based adapters more to attend to).
        unknown: a name not in ``categories``: ``error`` (the data module names the record, the
            known categories and the closest one) or ``shared`` (one ``<unk>`` embedding for all).
        modality: the modality name this encoder reads.
        finetune: which weights train (:class:`~mmfuse.backbones.finetune.FineTuning`); ``freeze``
            keeps the embeddings fixed at their random initial values.

    Examples:
        >>> backbone = ContextEmbedding(["HepG2", "K562", "MCF-7"], embed_dim=8, tokens=2)
        >>> out = backbone(backbone.tokenizer(["MCF-7", "HepG2"]))
        >>> tuple(out.embeddings.shape), out.mask.all().item()
        ((2, 2, 8), True)
    """

    def __init__(
        self,
        categories: list[str],
        embed_dim: int = 64,
        tokens: int = 1,
        unknown: Unknown = "error",
        modality: str = "context",
        finetune: FineTuning | None = None,
    ) -> None:
        super().__init__(modality, finetune)
        names = _check_categories(categories)
        for option, value in (("embed_dim", embed_dim), ("tokens", tokens)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"ContextEmbedding `{option}` must be a positive whole number, not {value!r}")
        if unknown not in ("error", "shared"):
            raise ConfigError(f"ContextEmbedding `unknown` must be 'error' or 'shared', not {unknown!r}")
        self.categories = names
        self.unknown = unknown
        rows = (len(names) + (unknown == "shared")) * tokens
        self.embedding = nn.Embedding(rows, embed_dim)
        self.tokenizer = CategoryTokenizer("ContextEmbedding", names, tokens, unknown, kind=modality)
        self._finish_init()

    @property
    def embed_dim(self) -> int:
        return int(self.embedding.embedding_dim)

    def encode(self, batch: Mapping[str, Tensor]) -> BackboneOutput:
        mask = batch["attention_mask"].bool()
        return BackboneOutput(self.embedding(batch["input_ids"]), mask)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", categories={len(self.categories)}, tokens={self.tokenizer.tokens}"


def _check_categories(categories: Sequence[str]) -> list[str]:
    """The category names, stripped; raises on an empty list, a blank or non-text name, or a repeat."""
    if isinstance(categories, str) or not categories:
        raise ConfigError(
            "ContextEmbedding needs `categories`: the list of known contexts, e.g. [HepG2, K562, MCF-7] "
            "(a data module may list those of its data, e.g. TFBinding.context_categories)"
        )
    names = []
    for i, name in enumerate(categories):
        if not isinstance(name, str) or not name.strip():
            raise ConfigError(f"ContextEmbedding `categories` item {i} is {name!r}; categories are non-empty names")
        names.append(name.strip())
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ConfigError(f"ContextEmbedding `categories` lists {repeated} more than once; list each category once")
    return names
