"""Tokenizers that load from local files only (offline-safe), with the attributes
megatron-core's datasets read. Use `build_tokenizer(tokenizer_type, ...)`."""

from megatron.training.tokenizers.base import LocalTokenizer, TokenizerError
from megatron.training.tokenizers.build import (DEFAULT_TOKENIZER_TYPE, REFUSED_TOKENIZER_TYPES, TOKENIZER_TYPES,
                                                build_tokenizer, build_tokenizer_from_args, padded_vocab_size)
from megatron.training.tokenizers.spm import GPTSentencePieceTokenizer, Llama2Tokenizer, SentencePieceTokenizer
from megatron.training.tokenizers.text import (BertWordPieceTokenizer, GPT2BPETokenizer,
                                               HuggingFaceTokenizer, NullTokenizer)
from megatron.training.tokenizers.tiktoken_bpe import TikTokenizer

__all__ = [
    "LocalTokenizer", "TokenizerError", "TOKENIZER_TYPES", "DEFAULT_TOKENIZER_TYPE", "REFUSED_TOKENIZER_TYPES",
    "build_tokenizer", "build_tokenizer_from_args", "padded_vocab_size",
    "BertWordPieceTokenizer", "GPT2BPETokenizer", "HuggingFaceTokenizer", "NullTokenizer",
    "SentencePieceTokenizer", "GPTSentencePieceTokenizer", "Llama2Tokenizer", "TikTokenizer",
]
