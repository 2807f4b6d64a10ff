"""GLUE MNLI and QQP in their official TSV layouts.

MNLI: a header row, sentence1/sentence2 in columns 8/9 and `gold_label` last
(contradiction, entailment, neutral); the test files have 10 columns and no label.
QQP: `id qid1 qid2 question1 question2 is_duplicate`; test files `id question1 question2`.
Rows are split on tabs only (no CSV quoting: GLUE text contains bare quote characters).
"""

import os
from typing import Dict, List, Optional, Sequence

from tasks.data.examples import ClassificationExample, ReadResult, _Collector, as_path_list

MNLI_LABELS = ("contradiction", "entailment", "neutral")
QQP_LABELS = ("0", "1")


def _rows(path: str):
    """(line number, columns) for every line after the header; the header first as line 1."""
    with open(path, "r", encoding="utf-8", newline="") as f:
        for lineno, line in enumerate(f, 1):
            line = line.rstrip("\n").rstrip("\r")
            yield lineno, line.split("\t")


def _read_tsv(paths, strict: bool, columns_for_header, labels: Sequence[str]) -> ReadResult:
    out = _Collector(strict)
    label_ids: Dict[str, int] = {name: i for i, name in enumerate(labels)}
    for path in as_path_list(paths):
        if not os.path.isfile(path):
            raise FileNotFoundError(f"task data file not found: {path}")
        rows = _rows(path)
        header = next(rows, None)
        if header is None:
            out.skip(path, 1, "empty file (no header row)")
            continue
        cols = columns_for_header(header[1])
        if cols is None:
            out.skip(path, 1, f"unrecognised header: {header[1][:12]}")
            continue
        stem = os.path.splitext(os.path.basename(path))[0]
        for lineno, fields in rows:
            if fields == [""]:
                continue  # blank line (e.g. at the end)
            if len(fields) != cols["n"]:
                out.skip(path, lineno, f"expected {cols['n']} tab-separated columns, got {len(fields)}")
                continue
            text_a, text_b = fields[cols["a"]].strip(), fields[cols["b"]].strip()
            if not text_a or not text_b:
                out.skip(path, lineno, "empty sentence")
                continue
            label: Optional[int] = None
            if cols["label"] is not None:
                raw = fields[cols["label"]].strip()
                if raw not in label_ids:
                    out.skip(path, lineno, f"unknown label {raw!r} (expected one of {', '.join(labels)})")
                    continue
                label = label_ids[raw]
            uid = fields[cols["uid"]].strip() or f"{stem}-{lineno}"
            out.examples.append(ClassificationExample(uid, text_a, text_b, label))
    return out.result()


def _mnli_columns(header: List[str]):
    names = [h.strip() for h in header]
    if "sentence1" in names and "sentence2" in names:
        a, b = names.index("sentence1"), names.index("sentence2")
    elif len(names) >= 10:
        a, b = 8, 9
    else:
        return None
    label = len(names) - 1 if names[-1] == "gold_label" or len(names) > 10 else None
    return {"n": len(names), "a": a, "b": b, "label": label, "uid": 0}


def _qqp_columns(header: List[str]):
    names = [h.strip() for h in header]
    if "question1" not in names or "question2" not in names:
        return None
    label = names.index("is_duplicate") if "is_duplicate" in names else None
    return {"n": len(names), "a": names.index("question1"), "b": names.index("question2"),
            "label": label, "uid": names.index("id") if "id" in names else 0}


def read_mnli(paths, strict: bool = False) -> ReadResult:
    """Read MNLI TSV file(s) (train, dev_matched, dev_mismatched, or test without labels).

    Returns (examples, skipped); labels index MNLI_LABELS. strict=True raises ReaderError at the
    first bad row (wrong column count, empty sentence, unknown label such as '-').
    """
    return _read_tsv(paths, strict, _mnli_columns, MNLI_LABELS)


def read_qqp(paths, strict: bool = False) -> ReadResult:
    """Read QQP TSV file(s); test files (`id question1 question2`) give label None."""
    return _read_tsv(paths, strict, _qqp_columns, QQP_LABELS)
