"""Upstream's TikTokenizer: a byte-level BPE vocabulary in Megatron's JSON format, run by `tiktoken`.

The vocabulary is a local file (--tokenizer-model), a JSON list of ``{"rank", "token_bytes" (base64),
"token_str"}`` in rank order whose first 256 entries are the single bytes; tiktoken's own hub vocabularies
are not fetched. As upstream: ids 0..num_special_tokens-1 are special tokens (<unk>, <s>, </s>, then
<SPECIAL_k> fillers), the file's ranks follow, cut so that the total is --vocab-size (default 2**17).
"""

import base64
import json
import os
from typing import Dict, List, Optional, Sequence

from megatron.training.tokenizers.base import LocalTokenizer, TokenizerError

# The two pre-tokenisation regexes upstream offers as --tiktoken-pattern v1 / v2.
PATTERNS = {
    "v1": r"[^\r\n\p{L}\p{N}]?+\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]++[\r\n]*|\s*[\r\n]|\s+(?!\S)|\s+",
    "v2": (r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+"
           r"|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*"
           r"|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+"),
}
REQUIRED_SPECIALS = ("<unk>", "<s>", "</s>")


def read_ranks(path: str, max_vocab: Optional[int] = None) -> Dict[bytes, int]:
    """token bytes -> rank from Megatron's tiktoken JSON; checks the format instead of asserting."""
    try:
        with open(path, "r", encoding="utf-8") as f:
            entries = json.load(f)
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise TokenizerError(f"{path} is not a tiktoken JSON vocabulary: {exc}") from None
    if not isinstance(entries, list) or not entries:
        raise TokenizerError(f"{path} is not a tiktoken JSON vocabulary (expected a list of "
                             "{rank, token_bytes, token_str})")
    if max_vocab is not None:
        entries = entries[:max_vocab]
    ranks: Dict[bytes, int] = {}
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict) or entry.get("rank") != i or "token_bytes" not in entry:
            raise TokenizerError(f"{path}: entry {i} is not {{'rank': {i}, 'token_bytes': ...}}")
        token = base64.b64decode(entry["token_bytes"])
        if i < 256 and token != bytes([i]):
            raise TokenizerError(f"{path}: the first 256 ranks must be the single bytes (rank {i} is {token!r})")
        if token in ranks:
            raise TokenizerError(f"{path}: token {token!r} appears twice")
        ranks[token] = i
    return ranks


class TikTokenizer(LocalTokenizer):
    """Megatron's tiktoken vocabulary with upstream's special-token layout; `eod` is </s>."""

    def __init__(self, tokenizer_model: str, pattern: str = "v2", vocab_size: Optional[int] = None,
                 num_special_tokens: int = 1000, special_tokens: Optional[Sequence[str]] = None) -> None:
        try:
            import tiktoken
        except ImportError:
            raise TokenizerError("TikTokenizer needs the tiktoken package: pip install tiktoken") from None
        if not tokenizer_model or not os.path.isfile(tokenizer_model):
            raise TokenizerError(f"TikTokenizer needs --tokenizer-model, a local tiktoken JSON vocabulary "
                                 f"(got {tokenizer_model!r})")
        if pattern not in PATTERNS:
            raise TokenizerError(f"--tiktoken-pattern must be one of {', '.join(PATTERNS)} (got {pattern!r})")
        total = int(vocab_size) if vocab_size else 2 ** 17
        specials = list(special_tokens) if special_tokens else list(REQUIRED_SPECIALS)
        missing = [t for t in REQUIRED_SPECIALS if t not in specials]
        if missing or len(set(specials)) != len(specials):
            raise TokenizerError(f"TikTokenizer special tokens must be unique and include {REQUIRED_SPECIALS}")
        if not len(specials) <= num_special_tokens < total:
            raise TokenizerError(f"--tiktoken-num-special-tokens {num_special_tokens} must lie in "
                                 f"[{len(specials)}, vocab size {total})")
        specials += [f"<SPECIAL_{i}>" for i in range(len(specials), num_special_tokens)]
        ranks = {tok: rank + num_special_tokens
                 for tok, rank in read_ranks(tokenizer_model, total - num_special_tokens).items()}
        if len(ranks) + num_special_tokens != total:
            raise TokenizerError(f"{tokenizer_model} holds {len(ranks)} tokens: with {num_special_tokens} "
                                 f"special tokens that is not --vocab-size {total}")
        special_ids = {tok: i for i, tok in enumerate(specials)}
        self._model = tiktoken.Encoding(name=os.path.basename(tokenizer_model), pat_str=PATTERNS[pattern],
                                        mergeable_ranks=ranks, special_tokens=special_ids)
        self._total = total
        # the vocabulary maps strings to ids; byte tokens that are not valid UTF-8 keep their bytes' repr
        self._vocab = {tok: i for tok, i in special_ids.items()}
        for tok, i in ranks.items():
            self._vocab.setdefault(tok.decode("utf-8", errors="backslashreplace"), i)
        super().__init__(os.path.abspath(tokenizer_model),
                         {"unk": special_ids["<unk>"], "bos": special_ids["<s>"], "eos": special_ids["</s>"],
                          "eod": special_ids["</s>"]},
                         {"pattern": pattern, "vocab_size": total, "num_special_tokens": num_special_tokens,
                          "special_tokens": specials[:len(special_tokens or REQUIRED_SPECIALS)]})

    @property
    def vocab_size(self) -> int:
        return self._total

    @property
    def unk(self) -> int:
        return self._special_id("unk")

    def tokenize(self, text: str, bos: bool = False, eos: bool = False) -> List[int]:
        ids = self._model.encode_ordinary(text)
        return ([self.bos] if bos else []) + ids + ([self.eos] if eos else [])

    def detokenize(self, ids: List[int]) -> str:
        return self._model.decode([int(i) for i in ids])
