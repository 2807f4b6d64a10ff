"""`build_tokenizer`: upstream's --tokenizer-type names mapped to our local-file tokenizers."""

import math
from typing import Optional

from megatron.training.tokenizers.base import LocalTokenizer, TokenizerError
from megatron.training.tokenizers.spm import (GPTSentencePieceTokenizer, Llama2Tokenizer,
                                              SentencePieceTokenizer)
from megatron.training.tokenizers.text import (BertWordPieceTokenizer, GPT2BPETokenizer,
                                               HuggingFaceTokenizer, NullTokenizer)
from megatron.training.tokenizers.tiktoken_bpe import TikTokenizer

TOKENIZER_TYPES = ("BertWordPieceLowerCase", "BertWordPieceCase", "GPT2BPETokenizer", "SentencePieceTokenizer",
                   "GPTSentencePieceTokenizer", "HuggingFaceTokenizer", "Llama2Tokenizer", "TikTokenizer",
                   "NullTokenizer")
DEFAULT_TOKENIZER_TYPE = "GPT2BPETokenizer"  # upstream's --tokenizer-type default

# Upstream types we recognise and refuse, with the reason (text-only language models here).
REFUSED_TOKENIZER_TYPES = {
    "MultimodalTokenizer": "multimodal (vision-language) training is not supported",
    "NullMultimodalTokenizer": "multimodal (vision-language) training is not supported",
    "SFTTokenizer": "supervised finetuning with chat prompt formats is not supported",
}


def padded_vocab_size(vocab_size: int, make_vocab_size_divisible_by: int = 128,
                      tensor_model_parallel_size: int = 1) -> int:
    """Round up so the embedding splits evenly over TP ranks into GEMM-friendly widths.

    Upstream Megatron pads to a multiple of `make_vocab_size_divisible_by * TP`, so the padded
    size depends on TP; pass TP=1 where weights must be identical across layouts.
    """
    multiple = int(make_vocab_size_divisible_by) * int(tensor_model_parallel_size)
    if multiple <= 0:
        raise ValueError("make_vocab_size_divisible_by and tensor_model_parallel_size must be > 0")
    return int(math.ceil(vocab_size / multiple) * multiple)


def build_tokenizer(tokenizer_type: str, vocab_file: Optional[str] = None,
                    merge_file: Optional[str] = None, tokenizer_model: Optional[str] = None,
                    vocab_size: Optional[int] = None, make_vocab_size_divisible_by: int = 128,
                    tensor_model_parallel_size: int = 1, tiktoken_pattern: str = "v2",
                    tiktoken_num_special_tokens: int = 1000, tokenizer_special_tokens=None,
                    vocab_extra_ids: int = 0) -> LocalTokenizer:
    """Build a tokenizer from local files; the result carries `padded_vocab_size`.

    Args:
        tokenizer_type: one of TOKENIZER_TYPES (upstream --tokenizer-type names).
        vocab_file: vocab.txt (BERT) or vocab.json (GPT-2).
        merge_file: merges.txt (GPT-2).
        tokenizer_model: tokenizer.json or its directory (HuggingFaceTokenizer), a SentencePiece
            tokenizer.model (*SentencePieceTokenizer, Llama2Tokenizer), a tiktoken JSON (TikTokenizer).
        vocab_size: text vocabulary size (NullTokenizer), total vocabulary size (TikTokenizer).
        tiktoken_pattern, tiktoken_num_special_tokens, tokenizer_special_tokens: TikTokenizer (upstream's).
        vocab_extra_ids: <extra_id_k> tokens appended by SentencePieceTokenizer (T5 style).
        make_vocab_size_divisible_by, tensor_model_parallel_size: padding of the embedding.
    Raises:
        TokenizerError: unknown type, missing or mismatched files.
    """
    if tokenizer_type in ("BertWordPieceLowerCase", "BertWordPieceCase"):
        tok = BertWordPieceTokenizer(vocab_file, lower_case=tokenizer_type.endswith("LowerCase"))
    elif tokenizer_type == "GPT2BPETokenizer":
        tok = GPT2BPETokenizer(vocab_file, merge_file)
    elif tokenizer_type == "HuggingFaceTokenizer":
        tok = HuggingFaceTokenizer(tokenizer_model)
    elif tokenizer_type == "SentencePieceTokenizer":
        tok = SentencePieceTokenizer(tokenizer_model, vocab_extra_ids=vocab_extra_ids)
    elif tokenizer_type == "GPTSentencePieceTokenizer":
        tok = GPTSentencePieceTokenizer(tokenizer_model)
    elif tokenizer_type == "Llama2Tokenizer":
        tok = Llama2Tokenizer(tokenizer_model)
    elif tokenizer_type == "TikTokenizer":
        tok = TikTokenizer(tokenizer_model, pattern=tiktoken_pattern, vocab_size=vocab_size,
                           num_special_tokens=tiktoken_num_special_tokens, special_tokens=tokenizer_special_tokens)
    elif tokenizer_type == "NullTokenizer":
        tok = NullTokenizer(vocab_size)
    elif tokenizer_type in REFUSED_TOKENIZER_TYPES:
        raise TokenizerError(f"--tokenizer-type {tokenizer_type} is not supported: "
                             f"{REFUSED_TOKENIZER_TYPES[tokenizer_type]}")
    else:
        raise TokenizerError(f"unknown --tokenizer-type {tokenizer_type!r}; "
                             f"choose one of {', '.join(TOKENIZER_TYPES)}")
    tok.padded_vocab_size = padded_vocab_size(tok.vocab_size, make_vocab_size_divisible_by,
                                              tensor_model_parallel_size)
    return tok


def build_tokenizer_from_args(args) -> LocalTokenizer:
    """`build_tokenizer` with upstream's flag names read off parsed args (absent flags take upstream defaults)."""
    return build_tokenizer(
        getattr(args, "tokenizer_type", None) or DEFAULT_TOKENIZER_TYPE,
        vocab_file=getattr(args, "vocab_file", None), merge_file=getattr(args, "merge_file", None),
        tokenizer_model=getattr(args, "tokenizer_model", None), vocab_size=getattr(args, "vocab_size", None),
        make_vocab_size_divisible_by=getattr(args, "make_vocab_size_divisible_by", 128),
        tensor_model_parallel_size=getattr(args, "tensor_model_parallel_size", 1),
        tiktoken_pattern=getattr(args, "tiktoken_pattern", None) or "v2",
        tiktoken_num_special_tokens=getattr(args, "tiktoken_num_special_tokens", 1000),
        tokenizer_special_tokens=getattr(args, "tokenizer_special_tokens", None),
        vocab_extra_ids=getattr(args, "vocab_extra_ids", 0) or 0)
