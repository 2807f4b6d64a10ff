"""`build_tokenizer`: upstream's --tokenizer-type names mapped to our local-file tokenizers."""

import math
from typing import Optional

from megatron.training.tokenizers.base import LocalTokenizer, TokenizerError
from megatron.training.tokenizers.text import (BertWordPieceTokenizer, GPT2BPETokenizer,
                                               HuggingFaceTokenizer, NullTokenizer)

TOKENIZER_TYPES = ("BertWordPieceLowerCase", "BertWordPieceCase", "GPT2BPETokenizer",
                   "HuggingFaceTokenizer", "NullTokenizer")


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
                    tensor_model_parallel_size: int = 1) -> LocalTokenizer:
    """Build a tokenizer from local files; the result carries `padded_vocab_size`.

    Args:
        tokenizer_type: one of TOKENIZER_TYPES (upstream --tokenizer-type names).
        vocab_file: vocab.txt (BERT) or vocab.json (GPT-2).
        merge_file: merges.txt (GPT-2).
        tokenizer_model: tokenizer.json or its directory (HuggingFaceTokenizer).
        vocab_size: text vocabulary size (NullTokenizer).
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
    elif tokenizer_type == "NullTokenizer":
        tok = NullTokenizer(vocab_size)
    else:
        raise TokenizerError(f"unknown --tokenizer-type {tokenizer_type!r}; "
                             f"choose one of {', '.join(TOKENIZER_TYPES)}")
    tok.padded_vocab_size = padded_vocab_size(tok.vocab_size, make_vocab_size_divisible_by,
                                              tensor_model_parallel_size)
    return tok
