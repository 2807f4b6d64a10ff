"""A few hundred real Wikipedia documents, sentence-split and tokenized once per session."""

import itertools
from pathlib import Path

import pytest

from tests.support import REPO_ROOT, require_shared_data, run_python

NUM_DOCS = 300


@pytest.fixture(scope="session")
def bert_corpus(tmp_path_factory):
    """(data prefix, vocab path) of ``NUM_DOCS`` shared-corpus documents preprocessed with --split-sentences."""
    corpus = require_shared_data("corpus", "wiki-sample.jsonl")
    vocab = require_shared_data("vocab", "bert-base-uncased-vocab.txt")
    out = tmp_path_factory.mktemp("bert_corpus")
    subset = out / "wiki.jsonl"
    with open(corpus, encoding="utf-8") as src, open(subset, "w", encoding="utf-8") as dst:
        dst.writelines(itertools.islice(src, NUM_DOCS))
    proc = run_python([str(REPO_ROOT / "tools" / "preprocess_data.py"), "--input", str(subset),
                       "--json-keys", "text", "--split-sentences", "--tokenizer-type", "BertWordPieceLowerCase",
                       "--vocab-file", str(vocab), "--output-prefix", str(out / "wiki"), "--workers", "1"],
                      timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    prefix = out / "wiki_text_sentence"
    assert Path(str(prefix) + ".idx").is_file()
    return str(prefix), str(vocab)
