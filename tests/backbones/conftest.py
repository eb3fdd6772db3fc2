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
}

TINY_HF_TYPES = tuple(_RECIPES)


def make_tiny_hf(model_type: str, directory: Path) -> Path:
    """Writes a randomly initialised tiny ``model_type`` encoder and its tokenizer to ``directory``."""
    from transformers import AutoConfig, AutoModel

    extra, write_tokenizer = _RECIPES[model_type]
    sizes = {k: v for k, v in _SIZES.items() if model_type != "distilbert"}
    config = AutoConfig.for_model(model_type, **sizes, **extra)
    directory.mkdir(parents=True, exist_ok=True)
    AutoModel.from_config(config).save_pretrained(directory)
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
