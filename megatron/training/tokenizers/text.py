"""Tokenizers built from local vocabulary files with the `tokenizers` library.

megatron.core.tokenizers loads BERT WordPiece and GPT-2 BPE through the HF hub
(`AutoTokenizer.from_pretrained('bert-large-uncased')`), which fails offline; these read the
same vocabularies from disk and check them first, so a wrong file gives one clear error
instead of a tokenizer that silently maps everything to [UNK].
"""

import json
import os
from typing import Dict, List, Optional

from megatron.training.tokenizers.base import LocalTokenizer, TokenizerError

_BERT_SPECIALS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")


def _require_file(path: Optional[str], what: str, flag: str) -> str:
    if not path:
        raise TokenizerError(f"{what} is required: pass {flag}")
    if not os.path.isfile(path):
        raise TokenizerError(f"{what} not found: {path} (from {flag})")
    return path


def _read_wordpiece_vocab(path: str) -> Dict[str, int]:
    """vocab.txt: one token per line, id = line number. Rejects JSON vocabularies and files
    lacking BERT's special tokens (e.g. a GPT-2 vocab.json passed as --vocab-file)."""
    with open(path, "r", encoding="utf-8") as f:
        head = f.read(4096)
        f.seek(0)
        tokens = [line.rstrip("\n").rstrip("\r") for line in f]
    if head.lstrip().startswith("{"):
        raise TokenizerError(
            f"{path} looks like a JSON vocabulary (GPT-2 vocab.json?); BertWordPiece tokenizers "
            "need a WordPiece vocab.txt with one token per line")
    vocab: Dict[str, int] = {}
    for i, tok in enumerate(tokens):
        vocab.setdefault(tok, i)
    missing = [t for t in _BERT_SPECIALS if t not in vocab]
    if missing:
        raise TokenizerError(
            f"{path} is not a BERT WordPiece vocabulary: special tokens {missing} are missing "
            f"({len(tokens)} lines read)")
    return vocab


class _LibraryTokenizer(LocalTokenizer):
    """Shared encode/decode for tokenizers backed by a `tokenizers` object in `self._tok`.
    Special tokens are never added here: datasets insert [CLS]/[SEP]/EOD themselves."""

    def tokenize(self, text: str) -> List[int]:
        return self._tok.encode(text, add_special_tokens=False).ids

    def tokenize_batch(self, texts: List[str]) -> List[List[int]]:
        return [e.ids for e in self._tok.encode_batch(texts, add_special_tokens=False)]

    def detokenize(self, ids: List[int]) -> str:
        return self._tok.decode([int(i) for i in ids], skip_special_tokens=False)


class BertWordPieceTokenizer(_LibraryTokenizer):
    """BERT WordPiece from a vocab.txt; lower_case=True also strips accents, as BERT uncased."""

    def __init__(self, vocab_file: str, lower_case: bool = True) -> None:
        from tokenizers import BertWordPieceTokenizer as _HFWordPiece

        _require_file(vocab_file, "BERT vocab file", "--vocab-file")
        vocab = _read_wordpiece_vocab(vocab_file)
        self._vocab = vocab
        self._tok = _HFWordPiece(vocab, lowercase=lower_case, strip_accents=lower_case,
                                 clean_text=True, handle_chinese_chars=True)
        specials = {
            "pad": vocab["[PAD]"], "cls": vocab["[CLS]"], "sep": vocab["[SEP]"],
            "mask": vocab["[MASK]"], "unk": vocab["[UNK]"],
            # BERT has no dedicated document token: documents are separated by [SEP].
            "eod": vocab["[SEP]"], "bos": vocab["[CLS]"], "eos": vocab["[SEP]"],
        }
        super().__init__(os.path.abspath(vocab_file), specials, {"lower_case": lower_case})
        self.lower_case = lower_case

    def decode_token_ids(self, ids: List[int]) -> List[str]:
        return [self.inv_vocab[int(i)] for i in ids]

    @property
    def unk(self) -> int:
        return self._special_id("unk")


class GPT2BPETokenizer(_LibraryTokenizer):
    """GPT-2 byte-level BPE from vocab.json + merges.txt; `eod` is <|endoftext|>, no pad token."""

    EOD_TOKEN = "<|endoftext|>"

    def __init__(self, vocab_file: str, merge_file: str) -> None:
        from tokenizers import ByteLevelBPETokenizer

        _require_file(vocab_file, "GPT-2 vocab.json", "--vocab-file")
        _require_file(merge_file, "GPT-2 merges file", "--merge-file")
        try:
            with open(vocab_file, "r", encoding="utf-8") as f:
                vocab = json.load(f)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise TokenizerError(
                f"{vocab_file} is not a GPT-2 vocab.json ({exc.__class__.__name__}: {exc}); "
                "a WordPiece vocab.txt belongs to --tokenizer-type BertWordPieceLowerCase/Case"
            ) from None
        if not isinstance(vocab, dict) or not all(isinstance(v, int) for v in vocab.values()):
            raise TokenizerError(f"{vocab_file} is not a GPT-2 vocab.json (expected token -> id)")
        if self.EOD_TOKEN not in vocab:
            raise TokenizerError(f"{vocab_file} has no {self.EOD_TOKEN} token; not a GPT-2 vocab")
        self._check_merges(merge_file, vocab)
        self._vocab = vocab
        try:
            self._tok = ByteLevelBPETokenizer(vocab, _read_merges(merge_file))
        except Exception as exc:  # the Rust side reports vocabulary/merge inconsistencies
            raise TokenizerError(f"cannot build GPT-2 BPE from {vocab_file} + {merge_file}: {exc}")
        eod = vocab[self.EOD_TOKEN]
        specials = {"eod": eod, "bos": eod, "eos": eod}
        super().__init__(os.path.abspath(vocab_file), specials,
                         {"merge_file": os.path.abspath(merge_file)})

    @staticmethod
    def _check_merges(merge_file: str, vocab: Dict[str, int]) -> None:
        merges = _read_merges(merge_file)
        if not merges:
            raise TokenizerError(f"{merge_file} holds no merges")
        unknown = [m for m in merges[:1000] if "".join(m) not in vocab]
        if len(unknown) > len(merges[:1000]) // 2:
            raise TokenizerError(
                f"{merge_file} does not match the vocabulary: {len(unknown)} of the first "
                f"{min(len(merges), 1000)} merges produce tokens absent from it")


def _read_merges(merge_file: str) -> List[tuple]:
    merges = []
    with open(merge_file, "r", encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            line = line.rstrip("\n")
            if not line or (lineno == 1 and line.startswith("#version")):
                continue
            parts = line.split(" ")
            if len(parts) != 2:
                raise TokenizerError(
                    f"{merge_file}:{lineno}: not a BPE merges file (expected 'a b' per line)")
            merges.append((parts[0], parts[1]))
    return merges


# Names tried, in order, for each special role of an arbitrary tokenizer.json.
_HF_SPECIAL_CANDIDATES = {
    "eod": ("<|endoftext|>", "</s>", "<eos>", "<|end_of_text|>", "[SEP]", "<|eot_id|>"),
    "eos": ("</s>", "<eos>", "<|endoftext|>", "<|end_of_text|>", "[SEP]"),
    "bos": ("<s>", "<bos>", "<|begin_of_text|>", "<|endoftext|>", "[CLS]"),
    "pad": ("<pad>", "[PAD]", "<|pad|>"),
    "cls": ("[CLS]", "<cls>", "<s>"),
    "sep": ("[SEP]", "<sep>", "</s>"),
    "mask": ("[MASK]", "<mask>"),
    "unk": ("[UNK]", "<unk>"),
}
_HF_MAP_KEYS = {"eos": "eos_token", "bos": "bos_token", "pad": "pad_token", "cls": "cls_token",
                "sep": "sep_token", "mask": "mask_token", "unk": "unk_token"}


class HuggingFaceTokenizer(_LibraryTokenizer):
    """Any `tokenizers` tokenizer.json on disk (a file, or a directory holding one).

    Special tokens come from a `special_tokens_map.json` beside it when present, else from the
    usual names (`<|endoftext|>`, `</s>`, `[SEP]`, ...). Only local files are read.
    """

    def __init__(self, tokenizer_model: str) -> None:
        from tokenizers import Tokenizer

        if not tokenizer_model:
            raise TokenizerError("HuggingFaceTokenizer needs --tokenizer-model (a tokenizer.json "
                                 "or a directory holding one)")
        path = tokenizer_model
        if os.path.isdir(path):
            path = os.path.join(path, "tokenizer.json")
        if not os.path.isfile(path):
            raise TokenizerError(f"tokenizer.json not found: {path} (from --tokenizer-model; "
                                 "only local files are supported, no hub downloads)")
        try:
            self._tok = Tokenizer.from_file(path)
        except Exception as exc:
            raise TokenizerError(f"{path} is not a `tokenizers` tokenizer.json: {exc}") from None
        self._vocab = self._tok.get_vocab(with_added_tokens=True)
        specials = self._find_specials(os.path.dirname(path))
        super().__init__(os.path.abspath(path), specials, {})

    def _find_specials(self, folder: str) -> Dict[str, Optional[int]]:
        declared: Dict[str, str] = {}
        map_path = os.path.join(folder, "special_tokens_map.json")
        if os.path.isfile(map_path):
            with open(map_path, "r", encoding="utf-8") as f:
                raw = json.load(f)
            for role, key in _HF_MAP_KEYS.items():
                value = raw.get(key)
                if isinstance(value, dict):
                    value = value.get("content")
                if isinstance(value, str):
                    declared[role] = value
            if "eos" in declared:
                declared.setdefault("eod", declared["eos"])
        specials: Dict[str, Optional[int]] = {}
        for role, names in _HF_SPECIAL_CANDIDATES.items():
            chosen = declared.get(role)
            if chosen is None:
                chosen = next((n for n in names if n in self._vocab), None)
            specials[role] = self._vocab.get(chosen) if chosen is not None else None
        return specials


class NullTokenizer(LocalTokenizer):
    """Token ids written as whitespace-separated integers, for mock data and smoke runs.

    As upstream's --tokenizer-type NullTokenizer --vocab-size N: ids 0..N-1 are text and the
    end-of-document id is N, so `vocab_size` is N + 1.
    """

    def __init__(self, vocab_size: int) -> None:
        if vocab_size is None or int(vocab_size) <= 0:
            raise TokenizerError("NullTokenizer needs --vocab-size > 0")
        self._text_vocab_size = int(vocab_size)
        super().__init__(None, {"eod": self._text_vocab_size, "eos": self._text_vocab_size},
                         {"vocab_size": self._text_vocab_size})

    @property
    def vocab_size(self) -> int:
        return self._text_vocab_size + 1

    @property
    def vocab(self) -> Dict[str, int]:
        raise NotImplementedError("NullTokenizer has no vocabulary")

    @property
    def inv_vocab(self) -> Dict[int, str]:
        raise NotImplementedError("NullTokenizer has no vocabulary")

    def tokenize(self, text: str) -> List[int]:
        ids = [int(t) for t in text.split()]
        bad = [i for i in ids if not 0 <= i < self._text_vocab_size]
        if bad:
            raise TokenizerError(f"NullTokenizer ids must lie in [0, {self._text_vocab_size}): {bad[:5]}")
        return ids

    def detokenize(self, ids: List[int]) -> str:
        return " ".join(str(int(i)) for i in ids)
