"""Damaged training data stops a run with one line naming the file, before the first step.

* a truncated or overwritten ``.bin``/``.idx`` under --data-path: ``error: <file>: ...``, exit 2, no megatron-core
  traceback, no checkpoint written;
* tools/preprocess_data.py on a document holding a lone surrogate (the JSON escape "\\ud800", which no tokenizer
  encodes): the document is skipped with a warning naming ``file:line``; with --strict one ``error: file:line``.
"""

import json

import numpy as np
import pytest

from tests.support import WORDPIECE_TOKENS, load_tool, run_python
from tests.training.gpt_cases import TINY_GPT

DOCS = 20


def _write_data(prefix, dtype=np.uint16):
    import torch
    from megatron.core.datasets.indexed_dataset import IndexedDatasetBuilder

    rng = np.random.default_rng(0)
    builder = IndexedDatasetBuilder(str(prefix) + ".bin", dtype=dtype)
    for _ in range(DOCS):
        builder.add_document(torch.from_numpy(rng.integers(0, 255, 40).astype(np.int64)), [40])
    builder.finalize(str(prefix) + ".idx")


def _damage(prefix, how):
    """Damage one file of the dataset; returns that file's path."""
    path = f"{prefix}.{how.split('-')[1]}"
    data = open(path, "rb").read()
    rng = np.random.default_rng(1)
    if how.startswith("truncated"):
        data = data[: len(data) // 2]
    else:  # overwritten with garbage of the same size
        data = rng.integers(0, 256, len(data), dtype=np.uint8).tobytes()
    open(path, "wb").write(data)
    return path


@pytest.mark.parametrize("how, needle", [
    ("truncated-bin", "do not belong together"),
    ("garbage-bin", ">= vocabulary size 256"),
    ("truncated-idx", "truncated or corrupt"),
    ("garbage-idx", "bad magic"),
])
def test_damaged_dataset_is_one_error_naming_the_file(tmp_path, how, needle):
    from megatron.training.datasets import check_data_and_split
    from megatron.training.validate import ConfigError

    prefix = tmp_path / "data"
    _write_data(prefix)
    check_data_and_split([str(prefix)], "1,0,0", [16, 0, 0], vocab_size=256)  # intact: fine
    path = _damage(prefix, how)
    with pytest.raises(ConfigError) as err:
        check_data_and_split([str(prefix)], "1,0,0", [16, 0, 0], vocab_size=256)
    assert str(err.value).startswith(path) and needle in str(err.value) and "\n" not in str(err.value)


def test_negative_ids_in_a_signed_dataset_are_corruption(tmp_path):
    """Token dtype int32 (vocabularies over 65500): garbage bytes read as negative ids."""
    from megatron.training.indexed_data import IndexedDataError, validate_indexed_dataset

    prefix = tmp_path / "wide"
    _write_data(prefix, dtype=np.int32)
    with open(str(prefix) + ".bin", "r+b") as f:
        f.seek(8)
        f.write(b"\xff\xff\xff\xff")
    with pytest.raises(IndexedDataError, match="negative token id -1; the file is corrupt"):
        validate_indexed_dataset(str(prefix), vocab_size=100000)


def test_training_on_a_damaged_dataset_stops_before_the_first_step(tmp_path):
    prefix = tmp_path / "data"
    _write_data(prefix)
    path = _damage(prefix, "garbage-idx")
    save = tmp_path / "ck"
    argv = [a for a in TINY_GPT if a != "--mock-data"] + [
        "--data-path", str(prefix), "--tokenizer-type", "NullTokenizer", "--split", "1,0,0", "--train-iters", "4",
        "--save", str(save), "--save-interval", "1"]
    proc = run_python(argv, timeout=300)
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith(f"error: {path}: not a megatron indexed-dataset index"), \
        proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr and " iteration " not in proc.stdout
    assert not list(save.glob("iter_*")) and not (save / "latest_checkpointed_iteration.txt").exists()


@pytest.fixture
def surrogate_input(tmp_path):
    inp = tmp_path / "docs.jsonl"
    lines = [json.dumps({"text": "the quick brown fox"}),
             '{"text": "the lazy \\ud800 dog"}',  # a lone high surrogate: valid JSON, not valid Unicode
             json.dumps({"text": "it was not amused"})]
    inp.write_text("\n".join(lines) + "\n", encoding="utf-8")
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("\n".join(WORDPIECE_TOKENS) + "\n", encoding="utf-8")
    return inp, ["--input", str(inp), "--tokenizer-type", "BertWordPieceLowerCase", "--vocab-file", str(vocab),
                 "--output-prefix", str(tmp_path / "out")]


def test_lone_surrogate_document_is_skipped_with_file_and_line(surrogate_input, tmp_path, capsys):
    from megatron.training.indexed_data import open_indexed_dataset

    inp, argv = surrogate_input
    assert load_tool("preprocess_data").main(argv) == 0
    err = capsys.readouterr().err
    assert "warning: 1 malformed line(s) skipped" in err
    assert f"{inp}:2: key 'text' holds a lone surrogate U+D800 at character 9" in err, err
    assert len(open_indexed_dataset(str(tmp_path / "out_text_document")).document_indices) - 1 == 2


def test_lone_surrogate_with_strict_is_one_error_line(surrogate_input, tmp_path, capsys):
    inp, argv = surrogate_input
    assert load_tool("preprocess_data").main(argv + ["--strict"]) == 1
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and lines[0].startswith(f"error: {inp}:2: key 'text' holds a lone surrogate"), lines
    assert not list(tmp_path.glob("out_*"))
