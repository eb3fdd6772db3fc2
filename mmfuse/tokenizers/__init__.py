"""Offline tokenizers for biological sequences, and the protocol every backbone tokenizer follows.

Tokenizers are plain picklable objects: DataLoader workers run them inside the collate function, so
no tokenization happens in the training step. Each maps a list of strings to a padded batch::

    {"input_ids": LongTensor (B, L), "attention_mask": BoolTensor (B, L)}

Bad input raises :class:`InvalidSequenceError` carrying the index of the offending sequence in the
batch, so the collate function can name the record. Lowercase letters read as their uppercase
(soft-masked genomes); whitespace anywhere in a sequence is refused, never stripped (a line break
inside a table cell often means a split or shifted column), with the fix in the message.

The vocabularies are written here (no network): ESM2's 33 tokens, Nucleotide Transformer's 4,107
(6-mers, single nucleotides, specials) and Enformer's five bases. Tests compare them with the
``transformers`` tokenizers built from the same vocabulary files the hub ships.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
from torch import Tensor

from mmfuse.errors import ConfigError, MmfuseError
from mmfuse.tokenizers.letters import bad_letter

__all__ = [
    "ESM_VOCAB",
    "NT_VOCAB",
    "BatchEncoder",
    "CharTokenizer",
    "InvalidSequenceError",
    "KmerTokenizer",
    "LocatesLetters",
    "Span",
    "Tokenizer",
    "check_vocab_file",
]


class InvalidSequenceError(MmfuseError, ValueError):
    """A sequence a tokenizer cannot encode.

    Attributes:
        index: position of the sequence in the batch given to the tokenizer (``None`` if unknown).
        reason: the message without the location, so callers can re-raise naming their record.
        limit: for a sequence that is too long, about how many letters the tokenizer accepts (so a data
            module can say what to crop to); ``None`` otherwise.
    """

    def __init__(self, reason: str, index: int | None = None, limit: int | None = None) -> None:
        self.reason = reason
        self.index = index
        self.limit = limit
        where = f"sequence {index} of the batch: " if index is not None else ""
        super().__init__(where + reason)


@runtime_checkable
class Tokenizer(Protocol):
    """What the collate function needs from a backbone's tokenizer.

    A tokenizer may also say which letters it reads (``letters``, either case) and how many always
    fit (``max_letters``, ``None`` for no limit), as :class:`CharTokenizer` and :class:`KmerTokenizer`
    do: data modules then check a whole table in bulk and call :meth:`validate` only on the sequences
    that may fail (:mod:`mmfuse.data.store.validate`); without them every sequence goes through ``validate``.
    """

    name: str

    def __call__(self, sequences: Sequence[str]) -> Mapping[str, Any]:
        """Encodes and pads ``sequences`` to ``{"input_ids": (B, L), "attention_mask": (B, L)}`` (what the
        backbone's ``encode`` reads; a cached backbone's tokenizer gives lists of keys and sequences)."""
        ...

    def validate(self, sequence: str) -> None:
        """Raises :class:`InvalidSequenceError` if ``sequence`` cannot be encoded."""
        ...


#: the letters ``[start, end)`` of a sequence that one token reads; ``None`` for a special token
Span = tuple[int, int] | None


@runtime_checkable
class LocatesLetters(Protocol):
    """A tokenizer that says which letters each token reads, and which token stands for "no letter".

    ``mmfuse explain`` needs both: attributions per token are given back per letter, and integrated
    gradients start from the sequence with every letter token replaced by :attr:`reference_id` (the
    mask token, ``N`` for DNA, ``X`` for protein), special tokens kept.
    """

    #: the token id of the integrated-gradients baseline
    reference_id: int

    def spans(self, sequence: str) -> list[Span]:
        """One entry per token of ``self([sequence])`` (padding excluded): the letters it reads."""
        ...


# ---------------------------------------------------------------------------------------------
# vocabularies

#: ESM-1b/ESM2 alphabet, in the order of the hub's ``vocab.txt`` (33 tokens).
ESM_VOCAB: tuple[str, ...] = (
    "<cls>", "<pad>", "<eos>", "<unk>",
    "L", "A", "G", "V", "S", "E", "R", "T", "I", "D", "P", "K", "Q", "N", "F", "Y", "M", "H", "W",
    "C", "X", "B", "U", "Z", "O", ".", "-", "<null_1>", "<mask>",
)  # fmt: skip
ESM_RESIDUES = "LAGVSERTIDPKQNFYMHWCXBUZO"

_NT_BASES = "ATCG"  # Nucleotide Transformer orders its k-mers over A, T, C, G
#: Nucleotide Transformer v2 vocabulary (4,107 tokens): specials, 6-mers, single nucleotides.
NT_VOCAB: tuple[str, ...] = (
    ("<unk>", "<pad>", "<mask>", "<cls>", "<eos>", "<bos>")
    + tuple("".join(p) for p in itertools.product(_NT_BASES, repeat=6))
    + tuple(_NT_BASES + "N")
)


def check_vocab_file(path: Path, expected: Sequence[str], model: str) -> None:
    """Checks a checkpoint's ``vocab.txt`` against the built-in vocabulary, if the file exists.

    Raises:
        ConfigError: the file lists other tokens, in which case the built-in tokenizer would feed the
            model wrong ids.
    """
    if not path.is_file():
        return
    tokens = path.read_text().split()
    if tuple(tokens) != tuple(expected):
        pairs = enumerate(zip(tokens, expected, strict=False))
        diff = next((i for i, (a, b) in pairs if a != b), min(len(tokens), len(expected)))
        raise ConfigError(
            f"{path} does not hold the {model} vocabulary mmfuse tokenizes with (first difference at "
            f"token {diff}; {len(tokens)} tokens vs {len(expected)}). This checkpoint needs its own "
            f"tokenizer: write a backbone for it (see docs: add a backbone)."
        )


# ---------------------------------------------------------------------------------------------
# helpers


def _lookup_table(mapping: dict[str, int], invalid: int) -> np.ndarray:
    table = np.full(256, invalid, dtype=np.int64)
    for char, idx in mapping.items():
        table[ord(char)] = idx
        table[ord(char.lower())] = idx  # soft-masked (lowercase) input is accepted as uppercase
    return table


_INVALID = -(10**6)


def _codes(sequence: str, table: np.ndarray, alphabet: str, index: int | None) -> np.ndarray:
    """Maps characters through ``table``; raises naming the first character not in ``alphabet``."""
    if not sequence:
        raise InvalidSequenceError("the sequence is empty; drop the record or provide a sequence", index)
    try:
        raw = np.frombuffer(sequence.encode("ascii"), dtype=np.uint8)
    except UnicodeEncodeError:
        pos = next(i for i, c in enumerate(sequence) if ord(c) > 127)
        raise InvalidSequenceError(bad_letter(sequence, pos, alphabet), index) from None
    codes = table[raw]
    bad = np.flatnonzero(codes == _INVALID)
    if bad.size:
        raise InvalidSequenceError(bad_letter(sequence, int(bad[0]), alphabet), index)
    return codes


def _pad(rows: list[np.ndarray], pad_id: int) -> dict[str, Tensor]:
    length = max(len(r) for r in rows)
    ids = np.full((len(rows), length), pad_id, dtype=np.int64)
    mask = np.zeros((len(rows), length), dtype=bool)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = row
        mask[i, : len(row)] = True
    return {"input_ids": torch.from_numpy(ids), "attention_mask": torch.from_numpy(mask)}


# ---------------------------------------------------------------------------------------------
# tokenizers


class BatchEncoder:
    """Shared batching: subclasses give ``name``, ``pad_id`` and ``encode(sequence, index)``."""

    name: str
    pad_id: int

    def encode(self, sequence: str, index: int | None = None) -> np.ndarray:
        raise NotImplementedError

    def validate(self, sequence: str) -> None:
        """Raises :class:`InvalidSequenceError` if ``sequence`` cannot be encoded."""
        self.encode(sequence)

    def __call__(self, sequences: Sequence[str]) -> dict[str, Tensor]:
        """Encodes and pads ``sequences`` to ``{"input_ids": (B, L), "attention_mask": (B, L)}``."""
        return self.pad([self.encode(s, i) for i, s in enumerate(sequences)])

    def pad(self, encoded: Sequence[np.ndarray]) -> dict[str, Tensor]:
        """Token ids already encoded (:meth:`encode`'s), padded as :meth:`__call__` pads them."""
        return _pad(list(encoded), self.pad_id)


class CharTokenizer(BatchEncoder):
    """One token per letter, with optional special tokens around each sequence.

    Args:
        name: model name used in error messages.
        alphabet: accepted letters (case-insensitive).
        ids: token id of each letter of ``alphabet`` (same order).
        pad_id: id written in padded positions.
        max_tokens: longest accepted encoding, special tokens included (``None``: unlimited).
        bos_id: id prepended to every sequence, if any.
        eos_id: id appended to every sequence, if any.
        aliases: extra accepted letters mapped onto alphabet letters (e.g. ``{"U": "T"}``).
        strip_trailing: characters removed from the end of each sequence first (ESM2 drops the
            ``*`` a translator writes for the stop codon).

    Examples:
        >>> tok = CharTokenizer("dna", "ACGTN", [0, 1, 2, 3, 4], pad_id=-1)
        >>> tok(["ACG", "T"])["input_ids"].tolist()
        [[0, 1, 2], [3, -1, -1]]
    """

    def __init__(
        self,
        name: str,
        alphabet: str,
        ids: Sequence[int],
        pad_id: int,
        max_tokens: int | None = None,
        bos_id: int | None = None,
        eos_id: int | None = None,
        aliases: dict[str, str] | None = None,
        strip_trailing: str = "",
    ) -> None:
        if len(alphabet) != len(ids):
            raise ValueError("alphabet and ids must have the same length")
        self.name = name
        self.alphabet = alphabet
        self.pad_id = pad_id
        self.max_tokens = max_tokens
        self.prefix = [bos_id] if bos_id is not None else []
        self.suffix = [eos_id] if eos_id is not None else []
        self.strip_trailing = strip_trailing
        mapping = dict(zip(alphabet, ids, strict=True))
        for alias, target in (aliases or {}).items():
            mapping[alias] = mapping[target]
        self._table = _lookup_table(mapping, _INVALID)
        self._accepted = "".join(mapping)
        #: the letters it reads (either case): data modules check tables in bulk (with :attr:`max_letters`)
        self.letters = self._accepted
        #: "no letter": N for nucleotides, X for residues, else padding (:class:`LocatesLetters`)
        self.reference_id = next((mapping[c] for c in "NX" if c in mapping), pad_id)

    def spans(self, sequence: str) -> list[Span]:
        """One letter per token, special tokens ``None`` (:class:`LocatesLetters`).

        Examples:
            >>> CharTokenizer("p", "AC", [5, 6], pad_id=0, bos_id=1, eos_id=2).spans("CA")
            [None, (0, 1), (1, 2), None]
        """
        if self.strip_trailing:
            sequence = sequence.rstrip(self.strip_trailing)
        letters: list[Span] = [(i, i + 1) for i in range(len(sequence))]
        return [*([None] * len(self.prefix)), *letters, *([None] * len(self.suffix))]

    def encode(self, sequence: str, index: int | None = None) -> np.ndarray:
        """Token ids of one sequence, special tokens included."""
        if self.strip_trailing:
            sequence = sequence.rstrip(self.strip_trailing)
        codes = _codes(sequence, self._table, self._accepted, index)
        n_tokens = len(codes) + len(self.prefix) + len(self.suffix)
        if self.max_tokens is not None and n_tokens > self.max_tokens:
            limit = self.max_tokens - len(self.prefix) - len(self.suffix)
            raise InvalidSequenceError(
                f"{len(sequence)} letters is longer than {self.name} accepts ({limit} letters). "
                f"Crop the sequence in the data (or raise the backbone's max_length if the model allows it).",
                index,
                limit=limit,
            )
        if not self.prefix and not self.suffix:
            return codes
        return np.concatenate([self.prefix, codes, self.suffix]).astype(np.int64)

    @property
    def max_letters(self) -> int | None:
        """The most letters that always fit (``None``: no limit)."""
        return None if self.max_tokens is None else self.max_tokens - len(self.prefix) - len(self.suffix)

    def __repr__(self) -> str:
        return f"CharTokenizer({self.name!r}, alphabet={self.alphabet!r}, max_tokens={self.max_tokens})"


class KmerTokenizer(BatchEncoder):
    """Non-overlapping k-mers as Nucleotide Transformer tokenizes DNA.

    Each run of A/C/G/T is cut greedily into k-mers from its start; a leftover shorter than ``k`` and
    every ``N`` become single-nucleotide tokens. ``U`` is read as ``T`` so RNA can be given as is. A
    ``<cls>`` token starts every sequence (no end token), as in the hub tokenizer.

    Args:
        name: model name used in error messages.
        k: k-mer length (6 for Nucleotide Transformer).
        max_tokens: longest accepted encoding, ``<cls>`` included.

    Examples:
        >>> tok = KmerTokenizer("nt")
        >>> [NT_VOCAB[i] for i in tok.encode("AAAAAAGNCC")]
        ['<cls>', 'AAAAAA', 'G', 'N', 'C', 'C']
    """

    def __init__(self, name: str = "NucleotideTransformer", k: int = 6, max_tokens: int | None = 2048) -> None:
        if k != 6:
            raise ValueError("only the 6-mer vocabulary of Nucleotide Transformer v2 is built in")
        self.name = name
        self.k = k
        self.max_tokens = max_tokens
        index = {tok: i for i, tok in enumerate(NT_VOCAB)}
        self.pad_id, self.cls_id = index["<pad>"], index["<cls>"]
        self._kmer_offset = index["A" * k]
        self._single = np.array([index[b] for b in _NT_BASES + "N"], dtype=np.int64)
        mapping = {b: i for i, b in enumerate(_NT_BASES + "N")}
        mapping["U"] = mapping["T"]
        self._table = _lookup_table(mapping, _INVALID)
        self._accepted = "ACGTUN"
        self.letters = self._accepted
        self._powers = 4 ** np.arange(k - 1, -1, -1)
        self.reference_id = index["<mask>"]

    def spans(self, sequence: str) -> list[Span]:
        """The letters of each token, ``<cls>`` ``None`` (:class:`LocatesLetters`): runs of A/C/G/T cut into
        k-mers from their start, leftovers and ``N`` one letter each, as :meth:`encode` cuts them.

        Examples:
            >>> KmerTokenizer("nt").spans("AAAAAAGNCC")
            [None, (0, 6), (6, 7), (7, 8), (8, 9), (9, 10)]
        """
        spans: list[Span] = [None]
        start = 0
        upper = sequence.upper()
        for stop in [*(i for i, c in enumerate(upper) if c == "N"), len(upper)]:
            n_kmers = (stop - start) // self.k
            spans += [(start + j * self.k, start + (j + 1) * self.k) for j in range(n_kmers)]
            spans += [(p, p + 1) for p in range(start + n_kmers * self.k, stop)]
            if stop < len(upper):
                spans.append((stop, stop + 1))
            start = stop + 1
        return spans

    def encode(self, sequence: str, index: int | None = None) -> np.ndarray:
        """Token ids of one sequence, ``<cls>`` included."""
        codes = _codes(sequence, self._table, self._accepted, index)
        pieces: list[np.ndarray] = [np.array([self.cls_id])]
        n_code = 4
        bounds = np.flatnonzero(codes == n_code)
        start = 0
        for stop in [*bounds.tolist(), len(codes)]:
            run = codes[start:stop]
            n_kmers = len(run) // self.k
            if n_kmers:
                kmers = run[: n_kmers * self.k].reshape(n_kmers, self.k)
                pieces.append(self._kmer_offset + kmers @ self._powers)
            pieces.append(self._single[run[n_kmers * self.k :]])
            if stop < len(codes):
                pieces.append(self._single[[n_code]])
            start = stop + 1
        ids = np.concatenate(pieces)
        if self.max_tokens is not None and len(ids) > self.max_tokens:
            raise InvalidSequenceError(
                f"{len(sequence)} nucleotides make {len(ids)} tokens, more than {self.name} accepts "
                f"({self.max_tokens}, about {(self.max_tokens - 1) * self.k} nt). Crop the sequence in the "
                f"data (IsoFormer keeps the 3' end of transcripts).",
                index,
                limit=(self.max_tokens - 1) * self.k,
            )
        return ids

    @property
    def max_letters(self) -> int | None:
        """The most letters that always fit: at worst (N between letters) one token each, after ``<cls>``."""
        return None if self.max_tokens is None else self.max_tokens - 1

    def __repr__(self) -> str:
        return f"KmerTokenizer({self.name!r}, k={self.k}, max_tokens={self.max_tokens})"
