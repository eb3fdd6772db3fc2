"""What mmfuse says about a letter a tokenizer cannot read: where it is, and what to write instead."""

from __future__ import annotations

__all__ = ["bad_letter"]

#: IUPAC codes of ambiguous nucleotides (N aside), which the nucleotide models do not read
_IUPAC_AMBIGUOUS = "RYSWKMBDHV"


def bad_letter(sequence: str, pos: int, alphabet: str) -> str:
    """Why ``sequence[pos]`` cannot be read, and what to write instead (by the kind of letter and alphabet)."""
    letter = sequence[pos]
    context = repr(sequence[max(0, pos - 5) : pos + 6])[1:-1]  # a line break shows as \n
    where = f"letter {letter!r} at position {pos} (…{context}…)"
    if letter.isspace():
        return (
            f"{where} is whitespace: a sequence is one unbroken string of letters, and mmfuse removes no spaces or "
            f"line breaks (they often mean a split or shifted column). Remove them from the column (pandas: "
            f"table[column].str.replace(r'\\s+', '', regex=True)) or remove the record."
        )
    upper = letter.upper()
    if set(alphabet.upper()) <= set("ACGTUN"):  # a nucleotide model
        if upper == "U" and "T" in alphabet:
            fix = "this model reads DNA, where RNA's U is written T: replace U by T (pandas: .str.replace('U', 'T'))"
        elif upper == "T" and "U" in alphabet:
            fix = "this model reads RNA, where DNA's T is written U: replace T by U"
        elif upper in _IUPAC_AMBIGUOUS:
            fix = (
                f"IUPAC ambiguity codes ({', '.join(_IUPAC_AMBIGUOUS)}) are not read; write ambiguous and unknown "
                f"bases as N (pandas: .str.replace('[{_IUPAC_AMBIGUOUS}]', 'N', regex=True))"
            )
        else:
            fix = "write unknown bases as N"
    elif upper == "*":
        fix = "'*' is a stop codon inside the protein (a final one is dropped): translate only up to the first stop"
    elif set("ACDEFGHIKLMNPQRSTVWY") <= set(alphabet.upper()):  # a protein model
        fix = "write unknown residues as X"
    else:
        fix = "replace it"
    return f"{where} is not in the alphabet {alphabet}; {fix}, or remove the record."
