"""Fixtures of the backbone tests: tiny Hugging Face checkpoints written to temporary directories."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

#: letters of the tiny DNA vocabularies (one token each)
DNA = "ACGTN"
#: the tiny architectures' sizes (hidden 32, 2 layers, 2 heads, odd intermediate width)
_SIZES = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37)


def _wordpiece(directory: Path) -> None:
    """A BERT-style tokenizer reading DNA one letter at a time: ``[CLS] A ##C ##G … [SEP]``."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    vocab = {t: i for i, t in enumerate(specials + list(DNA) + [f"##{c}" for c in DNA])}
    tok = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]", max_input_chars_per_word=10**6))
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])]
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]",
        mask_token="[MASK]",
    )  # fmt: skip
    fast.save_pretrained(directory)


def _byte_bpe(directory: Path) -> None:
    """A RoBERTa-style byte-level BPE tokenizer without merges: one token per DNA letter."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    vocab = {t: i for i, t in enumerate(specials + list(DNA))}
    tok = Tokenizer(models.BPE(vocab, [], unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.RobertaProcessing(("</s>", 2), ("<s>", 0))
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="<pad>",
        cls_token="<s>", sep_token="</s>", mask_token="<mask>",
    )  # fmt: skip
    fast.save_pretrained(directory)


def _esm(directory: Path) -> None:
    """ESM2's own (slow, offset-less) tokenizer and vocabulary."""
    from transformers import EsmTokenizer

    from mmfuse.tokenizers import ESM_VOCAB

    (directory / "vocab.txt").write_text("\n".join(ESM_VOCAB))
    EsmTokenizer(str(directory / "vocab.txt")).save_pretrained(directory)


#: ProtBert's residues, in its vocabulary's order (ProtT5's sentencepiece vocabulary holds the same, as ``▁A``)
PROTTRANS_LETTERS = "LAGVESIKRDTPNQFYMHCWXUBZO"
#: SpliceBERT's nucleotides (it reads RNA written with T)
SPLICEBERT_LETTERS = "NACGT"


def _letters_wordpiece(letters: str) -> Callable[[Path], None]:
    """A ProtBert/SpliceBERT-style ``vocab.txt``: the specials, then one token per letter and no ``##``
    continuations, so an unspaced sequence is one unknown word."""

    def write(directory: Path) -> None:
        from transformers import BertTokenizer

        (directory / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *letters]) + "\n")
        BertTokenizer(str(directory / "vocab.txt"), do_lower_case=False).save_pretrained(directory)

    return write


def _t5_letters(directory: Path) -> None:
    """A ProtT5-style T5 tokenizer: ``<pad> </s> <unk>`` then ``▁A``, ``▁L``, … (unigram pieces of one residue)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import T5Tokenizer

    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)] + [(f"\u2581{a}", -1.0) for a in PROTTRANS_LETTERS]
    tok = Tokenizer(models.Unigram(vocab + [("\u2581", -2.0)], unk_id=2))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="always")
    tok.decoder = decoders.Metaspace(replacement="\u2581", prepend_scheme="always")
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    T5Tokenizer(tokenizer_object=tok, eos_token="</s>", unk_token="<unk>", pad_token="<pad>",
                extra_ids=0).save_pretrained(directory)  # fmt: skip


_T5 = dict(vocab_size=len(PROTTRANS_LETTERS) + 4, d_ff=37, d_kv=16, pad_token_id=0, eos_token_id=1,
           decoder_start_token_id=0)  # fmt: skip

#: per model type: config arguments beyond the sizes, and the tokenizer writer
_RECIPES: dict[str, tuple[dict, Callable[[Path], None]]] = {
    "bert": (dict(vocab_size=15, pad_token_id=0, max_position_embeddings=256), _wordpiece),
    "roberta": (dict(vocab_size=10, pad_token_id=1, max_position_embeddings=258), _byte_bpe),
    "xlm-roberta": (dict(vocab_size=10, pad_token_id=1, max_position_embeddings=258), _byte_bpe),
    "camembert": (dict(vocab_size=10, pad_token_id=1, max_position_embeddings=258), _byte_bpe),
    "esm": (dict(vocab_size=33, pad_token_id=1, mask_token_id=32, max_position_embeddings=258), _esm),
    "distilbert": (
        dict(vocab_size=15, pad_token_id=0, max_position_embeddings=256, dim=32, n_layers=2, n_heads=2, hidden_dim=37),
        _wordpiece,
    ),  # fmt: skip
    "electra": (dict(vocab_size=15, pad_token_id=0, max_position_embeddings=256, embedding_size=16), _wordpiece),
    "deberta-v2": (dict(vocab_size=15, pad_token_id=0, max_position_embeddings=256), _wordpiece),
    "mpnet": (dict(vocab_size=15, pad_token_id=0, max_position_embeddings=256), _wordpiece),
    "modernbert": (
        dict(
            vocab_size=15,
            pad_token_id=0,
            cls_token_id=2,
            sep_token_id=3,
            bos_token_id=2,
            eos_token_id=3,
            max_position_embeddings=256,
            global_attn_every_n_layers=1,
            local_attention=16,
        ),
        _wordpiece,
    ),  # fmt: skip
    "t5": (_T5, _t5_letters),
    "mt5": (_T5, _t5_letters),
    "umt5": (_T5, _t5_letters),
}

TINY_HF_TYPES = tuple(_RECIPES)
#: the architectures of the letter-per-token presets: (model_type, config arguments, tokenizer writer)
PRESET_RECIPES = {
    "prot_bert": ("bert", dict(vocab_size=30, pad_token_id=0, max_position_embeddings=256),
                  _letters_wordpiece(PROTTRANS_LETTERS)),
    "prot_t5_xl_u50": ("t5", _T5, _t5_letters),
    "splicebert_1024nt": ("bert", dict(vocab_size=10, pad_token_id=0, max_position_embeddings=256),
                          _letters_wordpiece(SPLICEBERT_LETTERS)),
}  # fmt: skip


def make_tiny_hf(model_type: str, directory: Path) -> Path:
    """Writes a randomly initialised tiny ``model_type`` encoder and its tokenizer to ``directory``."""
    extra, write_tokenizer = _RECIPES[model_type]
    return _write_tiny(model_type, extra, write_tokenizer, directory)


def make_tiny_preset(preset: str, directory: Path) -> Path:
    """A tiny random checkpoint of the architecture and vocabulary of ``HF_PRESETS[preset]``."""
    return _write_tiny(*PRESET_RECIPES[preset], directory)


def _write_tiny(model_type: str, extra: dict, write_tokenizer: Callable[[Path], None], directory: Path) -> Path:
    import transformers
    from transformers import AutoConfig, AutoModel

    sizes = {k: v for k, v in _SIZES.items() if model_type != "distilbert"}
    config = AutoConfig.for_model(model_type, **sizes, **extra)
    directory.mkdir(parents=True, exist_ok=True)
    # t5 as ProtT5's "-enc" checkpoint (the encoder alone); mt5 and umt5 whole (the encoder is read from them)
    model = transformers.T5EncoderModel(config) if model_type == "t5" else AutoModel.from_config(config)
    model.save_pretrained(directory)
    write_tokenizer(directory)
    return directory


@pytest.fixture(scope="session")
def tiny_hf(tmp_path_factory) -> Callable[[str], Path]:
    """``tiny_hf(model_type)``: directory of a tiny random checkpoint of that type (built once)."""
    built: dict[str, Path] = {}

    def get(model_type: str) -> Path:
        if model_type not in built:
            built[model_type] = make_tiny_hf(model_type, tmp_path_factory.mktemp(f"tiny-{model_type}"))
        return built[model_type]

    return get


@pytest.fixture(scope="session")
def tiny_bert_dir(tiny_hf) -> Path:
    """A tiny random BERT reading DNA letter by letter, for :class:`HuggingFaceEncoder`."""
    return tiny_hf("bert")
