"""tools/preprocess_data.py: round trips through megatron-core's indexed dataset, sentence
splitting, and bad input (one clear error, exit != 0, nothing half-written)."""

import json
import subprocess
import sys

import numpy
import pytest

from tests.support import REPO_ROOT, TINY_TEXTS
from tests.support import cpu_env, require_shared_data
from megatron.training.indexed_data import (IndexedDataError, open_indexed_dataset,
                                            validate_indexed_dataset)
from megatron.training.tokenizers import build_tokenizer
from megatron.training.tokenizers.sentences import build_sentence_splitter
from tests.data.test_tokenizers import normalise


def _docs(ds):
    """[[sequence ids, ...] per document] from an IndexedDataset."""
    di = ds.document_indices
    return [[ds[i].tolist() for i in range(di[d], di[d + 1])] for d in range(len(di) - 1)]


def _gpt2_argv(gpt2_files, inp, prefix, *extra):
    vocab, merges = gpt2_files
    return ["--input", str(inp), "--output-prefix", str(prefix), "--tokenizer-type",
            "GPT2BPETokenizer", "--vocab-file", str(vocab), "--merge-file", str(merges), *extra]


def _bert_argv(vocab, inp, prefix, *extra):
    return ["--input", str(inp), "--output-prefix", str(prefix), "--tokenizer-type",
            "BertWordPieceLowerCase", "--vocab-file", str(vocab), *extra]


def _outputs(folder):
    return sorted(p.name for p in folder.iterdir() if p.suffix in (".bin", ".idx") or ".tmp" in p.name)


@pytest.mark.parametrize("workers,partitions", [(1, 1), (2, 3)])
def test_gpt2_round_trip_exact(preprocess, gpt2_files, tiny_jsonl, tmp_path, workers, partitions):
    prefix = tmp_path / "out" / "gpt"
    rc = preprocess.main(_gpt2_argv(gpt2_files, tiny_jsonl, prefix, "--append-eod",
                                    "--workers", str(workers), "--partitions", str(partitions)))
    assert rc == 0
    tok = build_tokenizer("GPT2BPETokenizer", vocab_file=str(gpt2_files[0]), merge_file=str(gpt2_files[1]))
    ds = open_indexed_dataset(str(prefix) + "_text_document", vocab_size=tok.vocab_size)
    docs = _docs(ds)
    assert len(docs) == len(TINY_TEXTS)
    for text, seqs in zip(TINY_TEXTS, docs):
        assert len(seqs) == 1 and seqs[0][-1] == tok.eod
        assert tok.detokenize(seqs[0][:-1]) == text
    assert ds.index.dtype == numpy.uint16
    assert _outputs(prefix.parent) == ["gpt_text_document.bin", "gpt_text_document.idx"]


def test_bert_split_sentences_keeps_document_boundaries(preprocess, wordpiece_vocab, tiny_jsonl, tmp_path):
    prefix = tmp_path / "bert"
    assert preprocess.main(_bert_argv(wordpiece_vocab, tiny_jsonl, prefix, "--split-sentences",
                                      "--workers", "2")) == 0
    tok = build_tokenizer("BertWordPieceLowerCase", vocab_file=str(wordpiece_vocab))
    split = build_sentence_splitter("english")
    docs = _docs(open_indexed_dataset(str(prefix) + "_text_sentence"))
    assert len(docs) == len(TINY_TEXTS)
    for text, seqs in zip(TINY_TEXTS, docs):
        sentences = split(text)
        assert len(seqs) == len(sentences) > 1  # one sequence per sentence, per document
        for ids, sentence in zip(seqs, sentences):
            assert normalise(tok.detokenize(ids)) == normalise(sentence)
    # Punkt must not break after the abbreviation "Dr."
    assert split(TINY_TEXTS[1])[0].startswith("Dr. Smith went")


def test_keep_newlines_attaches_newline_to_sentence():
    text = "First line ends here.\nSecond one here. Third."
    assert build_sentence_splitter(keep_newlines=True)(text)[0] == "First line ends here.\n"
    assert build_sentence_splitter(keep_newlines=False)(text)[0] == "First line ends here."


def test_multiple_json_keys(preprocess, gpt2_files, tmp_path):
    inp = tmp_path / "two.jsonl"
    inp.write_text("".join(json.dumps({"text": t, "title": t.split()[0]}) + "\n" for t in TINY_TEXTS))
    assert preprocess.main(_gpt2_argv(gpt2_files, inp, tmp_path / "kv", "--json-keys", "text", "title")) == 0
    titles = open_indexed_dataset(str(tmp_path / "kv_title_document"))
    assert len(titles.document_indices) - 1 == len(TINY_TEXTS)


def test_real_corpus_bert_round_trip(preprocess, tmp_path):
    vocab = require_shared_data("vocab", "bert-base-uncased-vocab.txt")
    corpus = require_shared_data("corpus", "wiki-sample.jsonl")
    with open(corpus, encoding="utf-8") as f:
        lines = [next(f) for _ in range(200)]
    inp = tmp_path / "wiki200.jsonl"
    inp.write_text("".join(lines), encoding="utf-8")
    prefix = tmp_path / "wiki"
    assert preprocess.main(_bert_argv(vocab, inp, prefix, "--split-sentences", "--workers", "2")) == 0
    tok = build_tokenizer("BertWordPieceLowerCase", vocab_file=str(vocab))
    docs = _docs(open_indexed_dataset(str(prefix) + "_text_sentence", vocab_size=tok.vocab_size))
    assert len(docs) == 200
    exact = 0
    for line, seqs in zip(lines, docs):
        decoded = "".join(normalise(tok.detokenize(ids)) for ids in seqs)
        exact += decoded == normalise(json.loads(line)["text"])
    assert exact >= 195  # the rest hold characters outside the vocab ([UNK])
    assert sum(len(s) for s in docs) > 2 * len(docs)  # lead sections have several sentences


# ---- bad input ------------------------------------------------------------------------------
def _malformed_file(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join([
        json.dumps({"text": TINY_TEXTS[0]}),
        '{"text": "unterminated',
        json.dumps({"text": TINY_TEXTS[1]}),
        "[1, 2, 3]",
        json.dumps({"body": "no text key"}),
        "",
        json.dumps({"text": 42}),
        json.dumps({"text": TINY_TEXTS[2]}),
    ]) + "\n", encoding="utf-8")
    return path


def test_malformed_lines_are_counted_and_reported(preprocess, gpt2_files, tmp_path, capsys):
    prefix = tmp_path / "out"
    assert preprocess.main(_gpt2_argv(gpt2_files, _malformed_file(tmp_path), prefix)) == 0
    err = capsys.readouterr().err
    assert "4 malformed" in err
    for lineno in (2, 4, 5, 7):
        assert f"bad.jsonl:{lineno}:" in err
    assert "bad.jsonl:1:" not in err and "bad.jsonl:6:" not in err
    assert len(open_indexed_dataset(str(prefix) + "_text_document").document_indices) - 1 == 3


def test_strict_fails_on_first_malformed_line_and_writes_nothing(preprocess, gpt2_files, tmp_path, capsys):
    prefix = tmp_path / "out"
    # a previous good output must survive a failed run untouched
    (tmp_path / "out_text_document.bin").write_bytes(b"old")
    rc = preprocess.main(_gpt2_argv(gpt2_files, _malformed_file(tmp_path), prefix, "--strict",
                                    "--workers", "2"))
    assert rc == 1
    err = capsys.readouterr().err
    assert "bad.jsonl:2: invalid JSON" in err
    assert _outputs(tmp_path) == ["out_text_document.bin"]
    assert (tmp_path / "out_text_document.bin").read_bytes() == b"old"


@pytest.mark.parametrize("content", ["", "\n  \n\n"])
def test_empty_input(preprocess, gpt2_files, tmp_path, capsys, content):
    inp = tmp_path / "empty.jsonl"
    inp.write_text(content)
    assert preprocess.main(_gpt2_argv(gpt2_files, inp, tmp_path / "out")) == 1
    assert "empty" in capsys.readouterr().err
    assert _outputs(tmp_path) == []


def test_untokenizable_text_is_a_malformed_line(preprocess, tmp_path, capsys):
    inp = tmp_path / "ids.jsonl"
    inp.write_text('{"text": "1 2 3"}\n{"text": "one two"}\n{"text": "4 5"}\n')
    assert preprocess.main(["--input", str(inp), "--output-prefix", str(tmp_path / "n"),
                            "--tokenizer-type", "NullTokenizer", "--vocab-size", "10"]) == 0
    assert "ids.jsonl:2: key 'text' could not be tokenized" in capsys.readouterr().err
    ds = open_indexed_dataset(str(tmp_path / "n_text_document"), vocab_size=11)
    assert [d[0] for d in _docs(ds)] == [[1, 2, 3], [4, 5]]


def test_only_malformed_lines(preprocess, gpt2_files, tmp_path, capsys):
    inp = tmp_path / "junk.jsonl"
    inp.write_text("not json\nstill not\n")
    assert preprocess.main(_gpt2_argv(gpt2_files, inp, tmp_path / "out")) == 1
    assert "no valid documents" in capsys.readouterr().err
    assert _outputs(tmp_path) == []


def test_missing_vocab_and_mismatched_vocab(preprocess, gpt2_files, tiny_jsonl, tmp_path, capsys):
    assert preprocess.main(_bert_argv(tmp_path / "missing.txt", tiny_jsonl, tmp_path / "o")) == 1
    assert "not found" in capsys.readouterr().err
    assert preprocess.main(_bert_argv(gpt2_files[0], tiny_jsonl, tmp_path / "o")) == 1
    assert "JSON vocabulary" in capsys.readouterr().err
    assert _outputs(tmp_path) == []


def test_cli_error_is_one_line_without_traceback(gpt2_files, tmp_path):
    inp = _malformed_file(tmp_path)
    proc = subprocess.run([sys.executable, str(REPO_ROOT / "tools" / "preprocess_data.py"),
                           *_gpt2_argv(gpt2_files, inp, tmp_path / "cli", "--strict")],
                          capture_output=True, text=True, timeout=120, env=cpu_env())
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    errors = [l for l in proc.stderr.splitlines() if l.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith(f"error: {inp}:2: invalid JSON")
    assert _outputs(tmp_path) == []


# ---- opening indexed data -------------------------------------------------------------------
@pytest.fixture
def good_prefix(preprocess, gpt2_files, tiny_jsonl, tmp_path):
    prefix = tmp_path / "g"
    assert preprocess.main(_gpt2_argv(gpt2_files, tiny_jsonl, prefix, "--append-eod")) == 0
    return str(prefix) + "_text_document"


def test_validate_reports_counts(good_prefix):
    info = validate_indexed_dataset(good_prefix)
    assert info["documents"] == info["sequences"] == len(TINY_TEXTS) and info["tokens"] > 0


@pytest.mark.parametrize("damage,match", [
    (lambda b: b[:-5], "truncated or corrupt"),
    (lambda b: b"XXXXXXXXX" + b[9:], "bad magic"),
    (lambda b: b[:30], "truncated"),
    (lambda b: b[:26] + (10 ** 6).to_bytes(8, "little") + b[34:], "does not match its header"),
])
def test_corrupt_idx_gives_one_clear_error(good_prefix, damage, match):
    idx = good_prefix + ".idx"
    with open(idx, "rb") as f:
        data = f.read()
    with open(idx, "wb") as f:
        f.write(damage(data))
    with pytest.raises(IndexedDataError, match=match):
        open_indexed_dataset(good_prefix)


def test_bin_idx_mismatch_and_missing_files(good_prefix, tmp_path):
    with open(good_prefix + ".bin", "ab") as f:
        f.write(b"\0\0")
    with pytest.raises(IndexedDataError, match="do not belong together"):
        open_indexed_dataset(good_prefix)
    with pytest.raises(IndexedDataError, match="not found"):
        open_indexed_dataset(str(tmp_path / "nothing_text_document"))


def test_vocab_size_check_catches_tokenizer_mismatch(good_prefix):
    top = int(max(max(s) for s in _docs(open_indexed_dataset(good_prefix)) for s in [s[0]]))
    open_indexed_dataset(good_prefix, vocab_size=top + 1)
    with pytest.raises(IndexedDataError, match="different tokenizer"):
        open_indexed_dataset(good_prefix, vocab_size=top)
