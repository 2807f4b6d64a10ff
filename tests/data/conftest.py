"""Tiny tokenizer fixtures built in tmp_path, so the data tests run without ../shared."""

import json
from pathlib import Path

import pytest

from tests.support import WORDPIECE_TOKENS, TINY_TEXTS, load_tool


@pytest.fixture
def wordpiece_vocab(tmp_path) -> Path:
    path = tmp_path / "vocab.txt"
    path.write_text("\n".join(WORDPIECE_TOKENS) + "\n", encoding="utf-8")
    return path


@pytest.fixture
def gpt2_files(tmp_path):
    """A small byte-level BPE trained on TINY_TEXTS, saved as GPT-2's vocab.json + merges.txt."""
    from tokenizers import ByteLevelBPETokenizer

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(TINY_TEXTS * 5, vocab_size=400, min_frequency=1,
                            special_tokens=["<|endoftext|>"], show_progress=False)
    folder = tmp_path / "gpt2"
    folder.mkdir()
    bpe.save_model(str(folder))
    bpe.save(str(folder / "tokenizer.json"))
    return folder / "vocab.json", folder / "merges.txt"


@pytest.fixture
def tiny_jsonl(tmp_path) -> Path:
    path = tmp_path / "tiny.jsonl"
    path.write_text("".join(json.dumps({"text": t, "id": i}) + "\n" for i, t in enumerate(TINY_TEXTS)),
                    encoding="utf-8")
    return path



@pytest.fixture(scope="session")
def preprocess():
    return load_tool("preprocess_data")
