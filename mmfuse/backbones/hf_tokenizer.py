"""A Hugging Face tokenizer behind mmfuse's tokenizer protocol, for sequences written without spaces.

Some checkpoints read one letter per token, the letters separated by spaces (ProtBert, ProtT5, Ankh,
SpliceBERT: ``"M K T A Y"``); their tokenizers see an unspaced ``MKTAY…`` as one unknown word. The
data keeps sequences unspaced (a space inside a sequence is refused as a data error); the tokenizer
spaces them itself when the vocabulary asks for it (:func:`spaced_letters`), after an optional
per-model letter mapping (ProtT5 and ProtBert write the rare residues U, Z, O and B as X).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from torch import Tensor

from mmfuse.errors import ConfigError
from mmfuse.tokenizers import InvalidSequenceError, Span

__all__ = ["ALPHABETS", "HFTokenizer", "spaced_letters"]

#: the letters probed per modality to tell whether a vocabulary reads spaced letters
ALPHABETS = {"dna": "ACGT", "rna": "ACGU", "protein": "ACDEFGHIKLMNPQRSTVWY"}


def _ids(tokenizer: Any, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"])


def spaced_letters(tokenizer: Any, letters: str) -> bool:
    """Whether ``tokenizer`` reads ``letters`` only when they are separated by spaces: unspaced, it maps them
    to its unknown token (or to fewer tokens than letters), spaced it gives one known token per letter."""
    if not letters:
        return False
    unk = tokenizer.unk_token_id
    joined, spaced = _ids(tokenizer, letters), _ids(tokenizer, " ".join(letters))
    spaced_ok = len(spaced) == len(letters) and (unk is None or unk not in spaced)
    joined_ok = unk not in joined if unk is not None else len(joined) >= len(letters)
    return spaced_ok and not joined_ok


class HFTokenizer:
    """A Hugging Face tokenizer behind mmfuse's :class:`~mmfuse.tokenizers.Tokenizer` protocol.

    Pads to the batch's longest sequence, returns a bool attention mask and refuses what the model
    cannot read: empty sequences, sequences over ``max_length`` tokens and letters that the
    vocabulary maps to the unknown token (or drops). Picklable, so DataLoader workers can run it.

    Args:
        tokenizer: the ``transformers`` tokenizer.
        name: model name used in error messages.
        max_length: longest accepted encoding, in tokens including special tokens.
        spaced: separate the letters by spaces before tokenizing (one letter per token).
        letter_map: letters replaced before tokenizing (``{"U": "X"}``), applied to upper-case letters.
    """

    def __init__(
        self,
        tokenizer: Any,
        name: str,
        max_length: int,
        spaced: bool = False,
        letter_map: Mapping[str, str] | None = None,
    ) -> None:
        self.tokenizer = tokenizer
        self.name = name
        self.max_length = max_length
        self.spaced = spaced
        self.letter_map = dict(letter_map or {})
        if any(len(k) != 1 or len(v) != 1 for k, v in self.letter_map.items()):
            raise ValueError(f"letter_map maps single letters to single letters, not {self.letter_map}")
        self._table = str.maketrans(self.letter_map)

    def text(self, sequence: str) -> str:
        """What the Hugging Face tokenizer is given for ``sequence``.

        Examples:
            >>> HFTokenizer(None, "m", 8, spaced=True, letter_map={"U": "X"}).text("MKUA")
            'M K X A'
        """
        mapped = sequence.translate(self._table) if self.letter_map else sequence
        return " ".join(mapped) if self.spaced else mapped

    @property
    def reference_id(self) -> int:
        """The integrated-gradients baseline token: the mask token, else the unknown one, else padding."""
        for token in (self.tokenizer.mask_token_id, self.tokenizer.unk_token_id, self.tokenizer.pad_token_id):
            if token is not None:
                return int(token)
        raise ConfigError(f"{self.name}'s tokenizer has no mask, unknown or padding token to start attributions from")

    def spans(self, sequence: str) -> list[Span]:
        """The letters of ``sequence`` each token reads (special tokens ``None``), from the fast tokenizer's
        offsets; a slow tokenizer of spaced letters reads one letter per non-special token."""
        text = self.text(sequence)
        step = 2 if self.spaced else 1  # a letter and its space
        if getattr(self.tokenizer, "is_fast", False):
            enc = self.tokenizer(text, truncation=False, return_offsets_mapping=True, verbose=False)
            return [None if e <= s else (s // step, (e + step - 1) // step) for s, e in enc["offset_mapping"]]
        if not self.spaced:
            raise ConfigError(
                f"{self.name}'s tokenizer is a slow one that gives no letter offsets, so its tokens cannot be placed "
                f"on the sequence; use a checkpoint with a fast tokenizer (tokenizer.json) to explain this modality"
            )
        special = set(self.tokenizer.all_special_ids)
        ids = self.tokenizer(text, truncation=False, verbose=False)["input_ids"]
        spans: list[Span] = []
        letter = 0
        for token in ids:
            spans.append(None if token in special else (letter, letter + 1))
            letter += token not in special
        return spans

    def __call__(self, sequences: Sequence[str]) -> dict[str, Tensor]:
        """Encodes and pads ``sequences`` to ``{"input_ids": (B, L), "attention_mask": (B, L)}``."""
        sequences = list(sequences)
        for i, sequence in enumerate(sequences):
            if not sequence:
                raise InvalidSequenceError(self._empty(), i)
        enc = self.tokenizer(
            [self.text(s) for s in sequences], padding="longest", truncation=False, return_tensors="pt",
            return_attention_mask=True, return_token_type_ids=False, verbose=False,
        )  # fmt: skip
        ids, mask = enc["input_ids"].long(), enc["attention_mask"].bool()
        unk = self.tokenizer.unk_token_id
        suspect = mask.sum(1) > self.max_length
        if unk is not None:
            suspect |= (mask & (ids == unk)).any(1)
        for i in suspect.nonzero().flatten().tolist():
            self._check(sequences[i], i)
        return {"input_ids": ids, "attention_mask": mask}

    def validate(self, sequence: str) -> None:
        """Raises :class:`InvalidSequenceError` if ``sequence`` cannot be encoded."""
        self._check(sequence, None)

    def _empty(self) -> str:
        return "the sequence is empty; drop the record or provide a sequence"

    def _check(self, sequence: str, index: int | None) -> None:
        if not sequence:
            raise InvalidSequenceError(self._empty(), index)
        text = self.text(sequence)
        step = 2 if self.spaced else 1  # a letter and its space
        fast = bool(getattr(self.tokenizer, "is_fast", False))
        enc = self.tokenizer(text, truncation=False, return_offsets_mapping=fast, verbose=False)
        ids: list[int] = enc["input_ids"]
        unk = self.tokenizer.unk_token_id
        if fast:
            offsets: list[tuple[int, int]] = enc["offset_mapping"]
            bad = next((s for (s, e), i in zip(offsets, ids, strict=True) if i == unk and e > s), None)
            if bad is None:  # byte-level vocabularies without an unknown token drop letters instead
                covered = [False] * len(text)
                for s, e in offsets:
                    covered[s:e] = [True] * (e - s)
                bad = next((p for p, c in enumerate(text) if not covered[p] and not c.isspace()), None)
            if bad is not None:
                raise InvalidSequenceError(self._bad_letter(sequence, bad // step), index)
        elif unk is not None and unk in ids:
            # slow tokenizers give no offsets: find the first letter that alone maps to the unknown token
            for pos, char in enumerate(sequence):
                if unk in _ids(self.tokenizer, self.text(char)):
                    raise InvalidSequenceError(self._bad_letter(sequence, pos), index)
            raise InvalidSequenceError(self._joined_word(sequence), index)
        if len(ids) > self.max_length:
            raise InvalidSequenceError(
                f"{len(sequence)} letters make {len(ids)} tokens, more than {self.name} accepts "
                f"({self.max_length} tokens). Crop the sequence in the data (or raise the backbone's "
                f"max_length if the model allows it).",
                index,
            )

    def _bad_letter(self, sequence: str, pos: int) -> str:
        letter = sequence[pos]
        unk = self.tokenizer.unk_token_id
        if not self.spaced and unk is not None and unk not in _ids(self.tokenizer, self.text(letter)):
            return self._joined_word(sequence)  # the letter is known alone: the word around it is not
        context = sequence[max(0, pos - 5) : pos + 6]
        mapped = f" (mapped to {self.text(letter).strip()!r})" if letter in self.letter_map else ""
        return (
            f"letter {letter!r}{mapped} at position {pos} (…{context}…) is not in the vocabulary of "
            f"{self.name}. Replace it (unknown bases are usually written N, unknown residues X; or map it with "
            f"the backbone's letter_map) or remove the record."
        )

    def _joined_word(self, sequence: str) -> str:
        return (
            f"{self.name}'s tokenizer read {sequence[:12]!r}… as one word and mapped it to its unknown token "
            f"{self.tokenizer.unk_token!r}, although its letters are in the vocabulary one by one: this "
            f"checkpoint reads letters separated by spaces. Set the backbone's `spaced_letters: true` (the data "
            f"keeps its sequences unspaced)."
        )

    def __repr__(self) -> str:
        spaced = ", spaced" if self.spaced else ""
        return f"HFTokenizer({self.name!r}, max_length={self.max_length}{spaced})"
