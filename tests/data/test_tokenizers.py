import json
import unicodedata

import pytest

from tests.support import require_shared_data
from megatron.core.tokenizers import MegatronTokenizerBase
from megatron.training.tokenizers import (TokenizerError, build_tokenizer, padded_vocab_size)

from tests.support import TINY_TEXTS


def normalise(text: str) -> str:
    """What BERT uncased keeps of a text: lower case, no accents, no whitespace."""
    text = unicodedata.normalize("NFD", text.lower())
    return "".join(c for c in text if not c.isspace() and unicodedata.category(c) != "Mn")


def test_bert_lowercase_round_trip_and_attributes(wordpiece_vocab):
    tok = build_tokenizer("BertWordPieceLowerCase", vocab_file=str(wordpiece_vocab))
    assert isinstance(tok, MegatronTokenizerBase)
    text = "The quick brown fox jumps over the lazy dog. Café au lait!"
    ids = tok.tokenize(text)
    assert tok.unk not in ids
    assert normalise(tok.detokenize(ids)) == normalise(text)
    assert tok.inv_vocab[tok.tokenize("jumps")[1]] == "##s"  # continuation pieces carry ##
    assert (tok.pad, tok.cls, tok.sep, tok.mask) == (0, 2, 3, 4)
    assert tok.eod == tok.sep
    assert tok.vocab_size == len(tok.vocab) == len(tok.inv_vocab)
    # megatron-core json-dumps this attribute into its dataset cache key
    assert isinstance(tok.unique_identifiers, dict)
    json.dumps(tok.unique_identifiers)


def test_bert_case_keeps_case(wordpiece_vocab):
    cased = build_tokenizer("BertWordPieceCase", vocab_file=str(wordpiece_vocab))
    lower = build_tokenizer("BertWordPieceLowerCase", vocab_file=str(wordpiece_vocab))
    assert cased.inv_vocab[cased.tokenize("The")[0]] == "The"
    assert lower.inv_vocab[lower.tokenize("The")[0]] == "the"
    assert cased.unique_identifiers != lower.unique_identifiers


def test_gpt2_bpe_exact_round_trip(gpt2_files):
    vocab, merges = gpt2_files
    tok = build_tokenizer("GPT2BPETokenizer", vocab_file=str(vocab), merge_file=str(merges))
    for text in TINY_TEXTS + ["unseen wörds and émojis 🙂\n\n  spaces"]:
        assert tok.detokenize(tok.tokenize(text)) == text
    assert tok.inv_vocab[tok.eod] == "<|endoftext|>"
    with pytest.raises(AttributeError):
        tok.pad  # GPT-2 has no pad token; megatron-core then uses its own


def test_huggingface_tokenizer_from_file_and_directory(gpt2_files):
    folder = gpt2_files[0].parent
    by_file = build_tokenizer("HuggingFaceTokenizer", tokenizer_model=str(folder / "tokenizer.json"))
    by_dir = build_tokenizer("HuggingFaceTokenizer", tokenizer_model=str(folder))
    text = TINY_TEXTS[1]
    assert by_file.tokenize(text) == by_dir.tokenize(text)
    assert by_file.detokenize(by_file.tokenize(text)) == text
    assert by_file.inv_vocab[by_file.eod] == "<|endoftext|>"


def test_null_tokenizer():
    tok = build_tokenizer("NullTokenizer", vocab_size=1000)
    assert tok.vocab_size == 1001 and tok.eod == 1000
    assert tok.tokenize("5 7 999") == [5, 7, 999]
    assert tok.detokenize([5, 7]) == "5 7"
    with pytest.raises(TokenizerError):
        tok.tokenize("1000")


@pytest.mark.parametrize("size,divisible,tp,expected", [
    (30522, 128, 1, 30592), (30522, 128, 2, 30720), (50257, 128, 1, 50304), (256, 128, 2, 256),
])
def test_padded_vocab_size(size, divisible, tp, expected):
    assert padded_vocab_size(size, divisible, tp) == expected


def test_build_tokenizer_records_padded_size(wordpiece_vocab):
    tok = build_tokenizer("BertWordPieceLowerCase", vocab_file=str(wordpiece_vocab),
                          make_vocab_size_divisible_by=8, tensor_model_parallel_size=2)
    assert tok.padded_vocab_size % 16 == 0 and tok.padded_vocab_size >= tok.vocab_size


def test_missing_files_give_clear_errors(tmp_path, gpt2_files):
    with pytest.raises(TokenizerError, match="not found"):
        build_tokenizer("BertWordPieceLowerCase", vocab_file=str(tmp_path / "nope.txt"))
    with pytest.raises(TokenizerError, match="required"):
        build_tokenizer("BertWordPieceLowerCase")
    with pytest.raises(TokenizerError, match="merges file"):
        build_tokenizer("GPT2BPETokenizer", vocab_file=str(gpt2_files[0]))
    with pytest.raises(TokenizerError, match="tokenizer.json not found"):
        build_tokenizer("HuggingFaceTokenizer", tokenizer_model=str(tmp_path))
    with pytest.raises(TokenizerError, match="needs --tokenizer-model"):
        build_tokenizer("SentencePieceTokenizer")
    with pytest.raises(TokenizerError, match="SentencePiece model not found"):
        build_tokenizer("Llama2Tokenizer", tokenizer_model=str(tmp_path / "tokenizer.model"))
    with pytest.raises(TokenizerError, match="unknown --tokenizer-type"):
        build_tokenizer("WordLevelTokenizer")
    with pytest.raises(TokenizerError, match="MultimodalTokenizer is not supported: multimodal"):
        build_tokenizer("MultimodalTokenizer")


def test_vocab_kind_mismatch_is_rejected(tmp_path, wordpiece_vocab, gpt2_files):
    vocab_json, merges = gpt2_files
    with pytest.raises(TokenizerError, match="JSON vocabulary"):
        build_tokenizer("BertWordPieceLowerCase", vocab_file=str(vocab_json))
    with pytest.raises(TokenizerError, match="not a GPT-2 vocab.json"):
        build_tokenizer("GPT2BPETokenizer", vocab_file=str(wordpiece_vocab), merge_file=str(merges))
    plain = tmp_path / "words.txt"
    plain.write_text("hello\nworld\n")
    with pytest.raises(TokenizerError, match="special tokens"):
        build_tokenizer("BertWordPieceCase", vocab_file=str(plain))
    other = tmp_path / "other_merges.txt"
    other.write_text("#version: 0.2\n" + "".join(f"zq{i} xw{i}\n" for i in range(50)))
    with pytest.raises(TokenizerError, match="does not match"):
        build_tokenizer("GPT2BPETokenizer", vocab_file=str(vocab_json), merge_file=str(other))


def test_real_bert_vocab_round_trips_wikipedia_text():
    vocab = require_shared_data("vocab", "bert-base-uncased-vocab.txt")
    corpus = require_shared_data("corpus", "wiki-sample.jsonl")
    tok = build_tokenizer("BertWordPieceLowerCase", vocab_file=str(vocab))
    assert tok.vocab_size == 30522 and (tok.cls, tok.sep, tok.mask, tok.pad) == (101, 102, 103, 0)
    with open(corpus, encoding="utf-8") as f:
        texts = [json.loads(next(f))["text"] for _ in range(50)]
    unknown = 0
    for text in texts:
        ids = tok.tokenize(text)
        unknown += ids.count(tok.unk)
        if tok.unk not in ids:
            assert normalise(tok.detokenize(ids)) == normalise(text)
    assert unknown < 5
