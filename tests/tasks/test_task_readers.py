"""tasks/data: MNLI/QQP/RACE readers on the official layouts, bad rows, pair encoding, Datasets."""

import json

import numpy
import pytest

from tests.support import require_shared_data
from tasks.data import (MNLI_LABELS, ClassificationDataset, MultipleChoiceDataset, ReaderError,
                        encode_pair, read_mnli, read_qqp, read_race)
from tasks.data.race import fill_option

MNLI_HEADER = ("index\tpromptID\tpairID\tgenre\tsentence1_binary_parse\tsentence2_binary_parse\t"
               "sentence1_parse\tsentence2_parse\tsentence1\tsentence2\tlabel1\tgold_label")


def _mnli_row(i, s1, s2, label, n_cols=12):
    cols = [str(i), str(i), f"{i}e", "fiction", "", "", "", "", s1, s2]
    if n_cols == 12:
        cols += [label, label]
    return "\t".join(cols)


@pytest.fixture
def mnli_file(tmp_path):
    path = tmp_path / "dev_matched.tsv"
    path.write_text("\n".join([
        MNLI_HEADER,
        _mnli_row(0, 'He said "yes".', "He agreed.", "entailment"),
        _mnli_row(1, "The cat sat.", "No cat sat.", "contradiction"),
        _mnli_row(2, "It rained.", "It was Tuesday.", "-"),          # line 4: no gold label
        "3\tonly\tthree",                                             # line 5: short row
        _mnli_row(4, "", "Empty premise.", "neutral"),                # line 6: empty sentence
        _mnli_row(5, "Birds fly.", "Some birds fly.", "neutral"),
    ]) + "\n", encoding="utf-8")
    return path


def test_mnli_reads_labels_and_reports_bad_rows(mnli_file):
    examples, skipped = read_mnli(mnli_file)
    assert [e.label for e in examples] == [1, 0, 2]
    assert examples[0].text_a == 'He said "yes".' and examples[0].text_b == "He agreed."
    assert [(s.line, s.reason.split(" ")[0]) for s in skipped] == [(4, "unknown"), (5, "expected"), (6, "empty")]
    assert all(s.file == str(mnli_file) for s in skipped)
    assert "unknown label '-'" in skipped[0].reason


def test_mnli_strict_raises_with_file_and_line(mnli_file):
    with pytest.raises(ReaderError, match=rf"{mnli_file}:4: unknown label"):
        read_mnli(mnli_file, strict=True)


def test_mnli_test_file_has_no_labels(tmp_path):
    path = tmp_path / "test_matched.tsv"
    header = "\t".join(MNLI_HEADER.split("\t")[:10])
    path.write_text(header + "\n" + _mnli_row(7, "A premise.", "A hypothesis.", None, n_cols=10) + "\n")
    examples, skipped = read_mnli(path)
    assert skipped == [] and len(examples) == 1 and examples[0].label is None and examples[0].uid == "7"


def test_qqp_train_and_test_layouts(tmp_path):
    train = tmp_path / "train.tsv"
    train.write_text("id\tqid1\tqid2\tquestion1\tquestion2\tis_duplicate\n"
                     "0\t1\t2\tHow do I learn?\tHow can I learn?\t1\n"
                     "1\t3\t4\tWhat is x?\tWhy is y?\t0\n"
                     "2\t5\t6\tBroken row without label\n"
                     "3\t7\t8\tWhat?\tWho?\tmaybe\n")
    examples, skipped = read_qqp(train)
    assert [(e.uid, e.label) for e in examples] == [("0", 1), ("1", 0)]
    assert [s.line for s in skipped] == [4, 5]
    with pytest.raises(ReaderError, match=":4:"):
        read_qqp(train, strict=True)
    test = tmp_path / "test.tsv"
    test.write_text("id\tquestion1\tquestion2\n9\tIs it?\tIs it not?\n")
    (ex,), skipped = read_qqp(test)
    assert ex.label is None and ex.uid == "9" and ex.text_b == "Is it not?" and skipped == []


def _race_file(folder, name, record):
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(record if isinstance(record, str) else json.dumps(record), encoding="utf-8")
    return path


@pytest.fixture
def race_dir(tmp_path):
    root = tmp_path / "RACE" / "dev"
    _race_file(root / "middle", "1.txt", {
        "id": "1.txt", "article": "Tom has a dog. The dog is brown.",
        "questions": ["The dog is _ .", "What does Tom have?"],
        "options": [["red", "brown", "blue", "green"], ["a cat", "a dog", "a bird", "a fish"]],
        "answers": ["B", "B"]})
    _race_file(root / "high", "2.txt", {
        "article": "Text.", "questions": ["Q1?", "Q2?"],
        "options": [["a", "b", "c"], ["a", "b", "c", "d"]], "answers": ["A", "E"]})
    _race_file(root / "high", "3.txt", {"article": "No questions field.", "options": [], "answers": []})
    _race_file(root / "high", "4.txt", '{"article": "broken",\n "questions": [')
    return root


def test_race_reads_nested_dirs_and_reports_bad_files(race_dir):
    examples, skipped = read_race(race_dir)
    assert len(examples) == 2 and all(len(e.choices) == 4 for e in examples)
    first = examples[0]
    assert first.uid == "1.txt-0" and first.label == 1
    assert first.choices[1] == ("Tom has a dog. The dog is brown.", "The dog is brown .")
    assert examples[1].choices[0][1] == "What does Tom have? a cat"
    rows = [(s.file.split("/")[-1], s.line, s.reason) for s in skipped]
    assert rows == [("2.txt", 1, "question 0: needs exactly 4 string options"),
                    ("2.txt", 1, "question 1: unknown answer 'E' (expected A-D)"),
                    ("3.txt", 1, "missing field(s): questions"),
                    ("4.txt", 2, rows[3][2])]
    assert rows[3][2].startswith("invalid JSON")
    with pytest.raises(ReaderError, match="2.txt:1: question 0"):
        read_race(race_dir, strict=True)


def test_fill_option():
    assert fill_option("The writer thinks ____ .", "so") == "The writer thinks so ."
    assert fill_option("Why?", "Because") == "Why? Because"
    assert fill_option("_ is right", r"\1 odd") == r"\1 odd is right"


def test_missing_path_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_mnli(tmp_path / "none.tsv")
    with pytest.raises(FileNotFoundError):
        read_race(tmp_path / "none")


# ---- encoding ------------------------------------------------------------------------------
class _CharTokenizer:
    """One id per character: 'a' -> 10, ...; cls/sep/pad as BERT's roles."""

    cls, sep, pad = 1, 2, 0

    def tokenize(self, text):
        return [10 + ord(c) - ord("a") for c in text.replace(" ", "")]


def test_encode_pair_layout_and_padding():
    ids, types, mask = encode_pair(_CharTokenizer(), "ab", "c", 8)
    assert ids.tolist() == [1, 10, 11, 2, 12, 2, 0, 0]
    assert types.tolist() == [0, 0, 0, 0, 1, 1, 0, 0]
    assert mask.tolist() == [1, 1, 1, 1, 1, 1, 0, 0]
    assert ids.dtype == numpy.int64
    ids, types, mask = encode_pair(_CharTokenizer(), "abc", None, 6)
    assert ids.tolist() == [1, 10, 11, 12, 2, 0] and types.sum() == 0


def test_encode_pair_truncates_longest_first():
    ids, types, _ = encode_pair(_CharTokenizer(), "abcdefgh", "xyz", 10)  # budget 7 of 11
    assert ids.tolist() == [1, 10, 11, 12, 13, 2, 33, 34, 35, 2]
    ids, _, _ = encode_pair(_CharTokenizer(), "abcdefgh", "uvwxyz", 9)  # budget 6: 3 + 3
    assert ids.tolist() == [1, 10, 11, 12, 2, 30, 31, 32, 2]


def test_pair_truncation_is_transformers_longest_first():
    """Real QQP stand-in pairs cut at several lengths: the same tokens as transformers' BertTokenizerFast with
    truncation="longest_first" (ties and off-by-one splits included)."""
    from transformers import BertTokenizerFast

    root = require_shared_data("finetune")
    vocab = require_shared_data("vocab", "bert-base-uncased-vocab.txt")
    peer = BertTokenizerFast(str(vocab), do_lower_case=True)
    from megatron.training.tokenizers.text import BertWordPieceTokenizer

    ours = BertWordPieceTokenizer(str(vocab), lower_case=True)
    examples = read_qqp(root / "QQP" / "train.tsv").examples[:400]
    cut = 0
    for seq in (24, 33, 64):
        for e in examples:
            ids, _, mask = encode_pair(ours, e.text_a, e.text_b, seq)
            ref = peer(e.text_a, e.text_b, truncation="longest_first", max_length=seq)["input_ids"]
            assert ids[: int(mask.sum())].tolist() == ref, (seq, e.text_a, e.text_b)
            cut += len(ref) == seq
    assert cut > 300  # most pairs were truncated at the short lengths


def test_datasets_shapes(mnli_file, race_dir):
    tok = _CharTokenizer()
    cls = ClassificationDataset(read_mnli(mnli_file).examples, tok, 16)
    item = cls[0]
    assert len(cls) == 3 and item["text"].shape == (16,) and item["label"] == 1 and item["uid"] == "0"
    mc = MultipleChoiceDataset(read_race(race_dir).examples, tok, 32)
    item = mc[1]
    assert item["text"].shape == item["types"].shape == item["padding_mask"].shape == (4, 32)
    assert item["label"] == 1 and item["uid"] == "1.txt-1"


# ---- the stand-in data in ../shared (official layouts, real text) ----------------------------
def test_shared_finetune_data_parses_cleanly():
    root = require_shared_data("finetune")
    train, skipped = read_mnli(root / "MNLI" / "train.tsv", strict=True)
    assert len(train) == 45000 and skipped == []
    counts = numpy.bincount([e.label for e in train], minlength=3)
    assert counts.min() > 0 and counts.sum() == 45000
    dev = read_mnli([root / "MNLI" / "dev_matched.tsv", root / "MNLI" / "dev_mismatched.tsv"], strict=True)
    assert len(dev.examples) == 2500 + 735
    qqp = read_qqp(root / "QQP" / "train.tsv", strict=True)
    assert len(qqp.examples) == 1500 and {e.label for e in qqp.examples} == {0, 1}
    race = read_race(root / "RACE" / "train", strict=True)
    assert len(race.examples) >= 1000
    assert {e.label for e in race.examples} == {0, 1, 2, 3}
    assert all(len(e.choices) == 4 and e.choices[0][0] for e in race.examples)


def test_shared_mnli_encodes_with_real_bert_vocab():
    root = require_shared_data("finetune")
    vocab = require_shared_data("vocab", "bert-base-uncased-vocab.txt")
    from megatron.training.tokenizers import build_tokenizer

    tok = build_tokenizer("BertWordPieceLowerCase", vocab_file=str(vocab))
    examples = read_mnli(root / "MNLI" / "dev_mismatched.tsv").examples[:64]
    ds = ClassificationDataset(examples, tok, 128)
    item = ds[0]
    n = int(item["padding_mask"].sum())
    assert item["text"][0] == tok.cls and item["text"][n - 1] == tok.sep
    first_sep = int(numpy.argmax(item["text"] == tok.sep))
    assert item["text"][1:first_sep].tolist() == tok.tokenize(examples[0].text_a)[:first_sep - 1]
    assert (item["types"][:first_sep + 1] == 0).all() and item["types"][first_sep + 1] == 1
    assert item["label"] == MNLI_LABELS.index("entailment")  # the file's first gold label
