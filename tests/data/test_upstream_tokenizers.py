"""Upstream's SentencePiece and tiktoken tokenizer types against the libraries themselves: ids, upstream's special-
token layout, round trips, and preprocess_data.py writing an indexed dataset with them."""

from __future__ import annotations

import base64
import json
import random

import pytest

from megatron.training.tokenizers import TokenizerError, build_tokenizer

spm = pytest.importorskip("sentencepiece")
tiktoken = pytest.importorskip("tiktoken")

WORDS = ["deep", "signal", "propagation", "layer", "norm", "residual", "attention", "the", "of", "model", "train"]
TEXT = "the deep model trains; attention of the residual layer norm."


def _corpus(path, lines=300, seed=0):
    rng = random.Random(seed)
    path.write_text("\n".join(" ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 12))) for _ in range(lines)))
    return path


@pytest.fixture(scope="module")
def sp_model(tmp_path_factory):
    folder = tmp_path_factory.mktemp("spm")
    corpus = _corpus(folder / "corpus.txt")
    spm.SentencePieceTrainer.train(input=str(corpus), model_prefix=str(folder / "tok"), vocab_size=80,
                                   model_type="bpe", bos_id=1, eos_id=2, unk_id=0, pad_id=-1,
                                   minloglevel=2)
    return folder / "tok.model"


def test_gpt_sentencepiece_and_llama2_equal_the_library(sp_model):
    sp = spm.SentencePieceProcessor(model_file=str(sp_model))
    gpt = build_tokenizer("GPTSentencePieceTokenizer", tokenizer_model=str(sp_model))
    llama = build_tokenizer("Llama2Tokenizer", tokenizer_model=str(sp_model))
    ids = sp.encode(TEXT)
    assert gpt.tokenize(TEXT) == ids and gpt.eod == sp.eos_id() and gpt.vocab_size == sp.get_piece_size()
    assert llama.tokenize(TEXT) == [sp.bos_id()] + ids  # Llama-2 prepends bos to every text
    assert llama.detokenize(llama.tokenize(TEXT)[1:]) == sp.decode(ids)
    assert gpt.padded_vocab_size % 128 == 0 and gpt.padded_vocab_size >= gpt.vocab_size


def test_sentencepiece_tokenizer_appends_upstreams_specials(sp_model):
    sp = spm.SentencePieceProcessor(model_file=str(sp_model))
    n = sp.get_piece_size()
    tok = build_tokenizer("SentencePieceTokenizer", tokenizer_model=str(sp_model), vocab_extra_ids=3)
    # <CLS> <SEP> <EOD> <MASK>, then <PAD> (the model has none); bos/eos are the model's own; 3 extra ids
    assert (tok.cls, tok.sep, tok.eod, tok.mask, tok.pad) == (n, n + 1, n + 2, n + 3, n + 4)
    assert (tok.bos, tok.eos) == (sp.bos_id(), sp.eos_id())
    assert tok.vocab_size == n + 5 + 3 and tok.additional_special_tokens_ids == [n + 5, n + 6, n + 7]
    left, right = "the deep model", "attention of the layer"
    ids = tok.tokenize(f"{left}<MASK>{right}")
    assert ids == sp.encode(left) + [tok.mask] + sp.encode(right)


def _tiktoken_vocab(path):
    """256 single bytes, then merges each built from two lower-ranked tokens (what tiktoken requires)."""
    tokens = [bytes([i]) for i in range(256)]
    for word in ("the", " the", "deep", " deep", "model", " model", "attention", " attention"):
        for end in range(2, len(word) + 1):
            piece = word[:end].encode()
            if piece not in tokens:
                tokens.append(piece)
    path.write_text(json.dumps([{"rank": i, "token_bytes": base64.b64encode(t).decode(), "token_str": ""}
                                for i, t in enumerate(tokens)]))
    return path, tokens


def test_tiktokenizer_offsets_the_library_ids_by_the_special_tokens(tmp_path):
    from megatron.training.tokenizers.tiktoken_bpe import PATTERNS

    path, tokens = _tiktoken_vocab(tmp_path / "vocab.json")
    specials = 10
    tok = build_tokenizer("TikTokenizer", tokenizer_model=str(path), vocab_size=len(tokens) + specials,
                          tiktoken_num_special_tokens=specials)
    plain = tiktoken.Encoding(name="plain", pat_str=PATTERNS["v2"],
                              mergeable_ranks={t: i for i, t in enumerate(tokens)}, special_tokens={})
    expected = [i + specials for i in plain.encode_ordinary(TEXT)]
    assert tok.tokenize(TEXT) == expected and tok.detokenize(expected) == TEXT
    assert (tok.unk, tok.bos, tok.eos, tok.eod) == (0, 1, 2, 2)
    assert len(expected) < len(TEXT.encode())  # the merges were used
    with pytest.raises(TokenizerError, match="not --vocab-size"):
        build_tokenizer("TikTokenizer", tokenizer_model=str(path), vocab_size=len(tokens) + specials + 5,
                        tiktoken_num_special_tokens=specials)


def test_preprocess_data_with_llama2_tokenizer(tmp_path, sp_model):
    from megatron.core.datasets.indexed_dataset import IndexedDataset

    from tests.support import run_python

    docs = tmp_path / "docs.jsonl"
    texts = [TEXT, "deep signal propagation of the model"]
    docs.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    out = run_python(["tools/preprocess_data.py", "--input", str(docs), "--output-prefix", str(tmp_path / "d"),
                      "--tokenizer-type", "Llama2Tokenizer", "--tokenizer-model", str(sp_model), "--append-eod",
                      "--workers", "1"])
    assert out.returncode == 0, out.stderr
    sp = spm.SentencePieceProcessor(model_file=str(sp_model))
    ds = IndexedDataset(str(tmp_path / "d_text_document"))
    assert [list(ds[i]) for i in range(len(ds))] == [[sp.bos_id()] + sp.encode(t) + [sp.eos_id()] for t in texts]
