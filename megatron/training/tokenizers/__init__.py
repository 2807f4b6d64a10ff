"""Tokenizers that load from local files only (offline-safe), with the attributes
megatron-core's datasets read. Use `build_tokenizer(tokenizer_type, ...)`."""

from megatron.training.tokenizers.base import LocalTokenizer, TokenizerError
from megatron.training.tokenizers.build import TOKENIZER_TYPES, build_tokenizer, padded_vocab_size
from megatron.training.tokenizers.text import (BertWordPieceTokenizer, GPT2BPETokenizer,
                                               HuggingFaceTokenizer, NullTokenizer)

__all__ = [
    "LocalTokenizer", "TokenizerError", "TOKENIZER_TYPES", "build_tokenizer", "padded_vocab_size",
    "BertWordPieceTokenizer", "GPT2BPETokenizer", "HuggingFaceTokenizer", "NullTokenizer",
]
