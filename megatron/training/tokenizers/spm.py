"""SentencePiece tokenizers (upstream's SentencePieceTokenizer, GPTSentencePieceTokenizer, Llama2Tokenizer).

All three read a local `tokenizer.model` (--tokenizer-model) with the `sentencepiece` library and keep
upstream's id conventions, so a dataset preprocessed with upstream Megatron-LM decodes the same here:

- ``SentencePieceTokenizer`` appends <CLS>, <SEP>, <EOD>, <MASK> (and pad/bos/eos pieces the model lacks)
  after the model's pieces, and splits those strings out of the text before encoding (BERT/T5 style);
- ``GPTSentencePieceTokenizer`` is the model as is; the end-of-document id is the model's eos;
- ``Llama2Tokenizer`` is the same but prepends bos when tokenizing (text completion), as Llama-2 was trained.
"""

import os
from typing import Dict, List, Optional

from megatron.training.tokenizers.base import LocalTokenizer, TokenizerError


def _load_processor(tokenizer_model: Optional[str], type_name: str):
    if not tokenizer_model:
        raise TokenizerError(f"{type_name} needs --tokenizer-model (a SentencePiece tokenizer.model file)")
    if not os.path.isfile(tokenizer_model):
        raise TokenizerError(f"SentencePiece model not found: {tokenizer_model} (from --tokenizer-model)")
    try:
        import sentencepiece
    except ImportError:
        raise TokenizerError(f"{type_name} needs the sentencepiece package: pip install sentencepiece") from None
    try:
        return sentencepiece.SentencePieceProcessor(model_file=tokenizer_model)
    except Exception as exc:  # the C++ side reports a broken or foreign file as RuntimeError/OSError
        raise TokenizerError(f"{tokenizer_model} is not a SentencePiece model: {exc}") from None


def _model_special(sp, piece_id: int) -> Optional[int]:
    """sentencepiece reports an absent special piece as id -1."""
    return piece_id if 0 <= piece_id < sp.get_piece_size() else None


class _SentencePieceBase(LocalTokenizer):
    """Vocabulary = the model's pieces in id order; encode/decode by the model itself."""

    def __init__(self, tokenizer_model: str, type_name: str) -> None:
        self._sp = _load_processor(tokenizer_model, type_name)
        self._vocab: Dict[str, int] = {}
        for i in range(self._sp.get_piece_size()):
            self._vocab.setdefault(self._sp.id_to_piece(i), i)
        self._piece_count = self._sp.get_piece_size()
        specials = self._special_ids()
        super().__init__(os.path.abspath(tokenizer_model), specials, {})

    def _special_ids(self) -> Dict[str, Optional[int]]:
        sp = self._sp
        eos = _model_special(sp, sp.eos_id())
        return {"eod": eos, "eos": eos, "bos": _model_special(sp, sp.bos_id()),
                "pad": _model_special(sp, sp.pad_id()), "unk": _model_special(sp, sp.unk_id())}

    @property
    def vocab_size(self) -> int:
        return self._piece_count

    def tokenize(self, text: str) -> List[int]:
        return self._sp.encode_as_ids(text)

    def detokenize(self, ids: List[int]) -> str:
        return self._sp.decode_ids([int(i) for i in ids])

    @property
    def unk(self) -> int:
        return self._special_id("unk")


class GPTSentencePieceTokenizer(_SentencePieceBase):
    """A SentencePiece model used as is (no bos/eos added); documents end with the model's eos."""

    def __init__(self, tokenizer_model: str) -> None:
        super().__init__(tokenizer_model, "GPTSentencePieceTokenizer")
        if self._special.get("eod") is None:
            raise TokenizerError(f"{tokenizer_model} defines no eos piece; GPTSentencePieceTokenizer ends "
                                 "documents with it (train the model with eos_id >= 0)")


class Llama2Tokenizer(_SentencePieceBase):
    """Llama-2's convention: bos before every tokenized text, eos (the end-of-document id) appended by datasets."""

    def __init__(self, tokenizer_model: str) -> None:
        super().__init__(tokenizer_model, "Llama2Tokenizer")
        for role in ("bos", "eos"):
            if self._special.get(role) is None:
                raise TokenizerError(f"{tokenizer_model} defines no {role} piece; Llama2Tokenizer needs both")

    def tokenize(self, text: str, bos: bool = True, eos: bool = False) -> List[int]:
        ids = self._sp.encode_as_ids(text)
        return ([self.bos] if bos else []) + ids + ([self.eos] if eos else [])


class SentencePieceTokenizer(_SentencePieceBase):
    """Upstream's BERT/T5-style wrapper: <CLS> <SEP> <EOD> <MASK> (and pad/bos/eos when the model lacks them)
    get ids after the model's pieces; those strings in the text are encoded as their single ids."""

    _ADDED = (("cls", "<CLS>"), ("sep", "<SEP>"), ("eod", "<EOD>"), ("mask", "<MASK>"))

    def __init__(self, tokenizer_model: str, vocab_extra_ids: int = 0) -> None:
        self._vocab_extra_ids = int(vocab_extra_ids)
        super().__init__(tokenizer_model, "SentencePieceTokenizer")
        self.unique_identifiers["vocab_extra_ids"] = self._vocab_extra_ids

    def _special_ids(self) -> Dict[str, Optional[int]]:
        sp = self._sp
        self._added: Dict[str, int] = {}

        def add(piece: str) -> int:
            if piece not in self._vocab:
                self._vocab[piece] = len(self._vocab)
            self._added[piece] = self._vocab[piece]
            return self._vocab[piece]

        specials = {role: add(piece) for role, piece in self._ADDED}
        for role, model_id, fallback in (("pad", sp.pad_id(), "<PAD>"), ("bos", sp.bos_id(), "<BOS>"),
                                         ("eos", sp.eos_id(), "<EOS>")):
            known = _model_special(sp, model_id)
            specials[role] = add(sp.id_to_piece(known) if known is not None else fallback)
        for i in range(self._vocab_extra_ids):
            add(f"<extra_id_{i}>")
        specials["unk"] = _model_special(sp, sp.unk_id())
        return specials

    @property
    def vocab_size(self) -> int:
        return len(self._vocab)

    @property
    def additional_special_tokens_ids(self) -> List[int]:
        return [self._vocab[f"<extra_id_{i}>"] for i in range(self._vocab_extra_ids)]

    def tokenize(self, text: str) -> List[int]:
        ids: List[int] = []
        start = 0
        while True:
            hits = [(text.find(piece, start), piece) for piece in self._added]
            hits = [(pos, piece) for pos, piece in hits if pos >= 0]
            if not hits:
                break
            pos, piece = min(hits)
            ids.extend(self._sp.encode_as_ids(text[start:pos]))
            ids.append(self._added[piece])
            start = pos + len(piece)
        ids.extend(self._sp.encode_as_ids(text[start:]))
        return ids

    def detokenize(self, ids: List[int]) -> str:
        by_id = {i: piece for piece, i in self._added.items()}
        parts: List[str] = []
        run: List[int] = []
        for i in (int(x) for x in ids):
            if i in by_id:
                parts.append(self._sp.decode_ids(run))
                parts.append(by_id[i])
                run = []
            else:
                run.append(i)
        parts.append(self._sp.decode_ids(run))
        return " ".join(p for p in parts if p)
