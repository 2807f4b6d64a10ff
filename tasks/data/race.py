"""RACE: directories of *.txt files, each one JSON object
{"article", "questions": [...], "options": [[4 strings], ...], "answers": ["A".."D", ...]}
(the release nests them as {train,dev,test}/{middle,high}/). Every question becomes one
example of 4 (article, question-with-option) pairs: a blank `_` in the question is filled with
the option, otherwise the option is appended after the question.
"""

import json
import os
import re
from typing import List

from tasks.data.examples import MultipleChoiceExample, ReadResult, _Collector, as_path_list

RACE_LABELS = ("A", "B", "C", "D")
_BLANK = re.compile(r"_+")


def _race_files(path: str) -> List[str]:
    if os.path.isfile(path):
        return [path]
    if not os.path.isdir(path):
        raise FileNotFoundError(f"RACE path not found: {path}")
    found = []
    for root, dirs, files in os.walk(path):
        dirs.sort()
        found.extend(os.path.join(root, f) for f in sorted(files) if f.endswith(".txt"))
    if not found:
        raise FileNotFoundError(f"no RACE *.txt files under {path}")
    return found


def fill_option(question: str, option: str) -> str:
    """'The writer thinks _ .' + 'so' -> 'The writer thinks so .'; else 'question option'."""
    if _BLANK.search(question):
        return _BLANK.sub(lambda _m: option, question)
    return f"{question} {option}".strip()


def read_race(paths, strict: bool = False) -> ReadResult:
    """Read RACE directories (recursing into middle/high) or single files.

    Returns (examples, skipped): one MultipleChoiceExample per question, label indexing
    RACE_LABELS. Files that are not JSON or lack article/questions/options/answers, and
    questions without exactly 4 options or with an answer outside A-D, are skipped and
    reported (line = the JSON error's line, else 1); strict=True raises ReaderError instead.
    """
    out = _Collector(strict)
    for path in as_path_list(paths):
        for file in _race_files(path):
            try:
                with open(file, "r", encoding="utf-8") as f:
                    record = json.load(f)
            except json.JSONDecodeError as exc:
                out.skip(file, exc.lineno, f"invalid JSON: {exc.msg}")
                continue
            except UnicodeDecodeError as exc:
                out.skip(file, 1, f"not UTF-8 text: {exc.reason}")
                continue
            _add_record(out, file, record)
    return out.result()


def _add_record(out: _Collector, file: str, record) -> None:
    if not isinstance(record, dict):
        out.skip(file, 1, f"expected a JSON object, got {type(record).__name__}")
        return
    missing = [k for k in ("article", "questions", "options", "answers") if k not in record]
    if missing:
        out.skip(file, 1, f"missing field(s): {', '.join(missing)}")
        return
    article, questions, options, answers = (record[k] for k in ("article", "questions", "options", "answers"))
    if not isinstance(article, str) or not article.strip():
        out.skip(file, 1, "empty or non-string article")
        return
    if not (isinstance(questions, list) and isinstance(options, list) and isinstance(answers, list)):
        out.skip(file, 1, "questions, options and answers must be lists")
        return
    if not len(questions) == len(options) == len(answers):
        out.skip(file, 1, f"{len(questions)} questions, {len(options)} option lists and "
                          f"{len(answers)} answers do not line up")
        return
    stem = str(record.get("id") or os.path.basename(file))
    for q, (question, opts, answer) in enumerate(zip(questions, options, answers)):
        if not isinstance(question, str):
            out.skip(file, 1, f"question {q}: not a string")
            continue
        if not (isinstance(opts, list) and len(opts) == 4 and all(isinstance(o, str) for o in opts)):
            out.skip(file, 1, f"question {q}: needs exactly 4 string options")
            continue
        if answer not in RACE_LABELS:
            out.skip(file, 1, f"question {q}: unknown answer {answer!r} (expected A-D)")
            continue
        choices = tuple((article, fill_option(question, o)) for o in opts)
        out.examples.append(MultipleChoiceExample(f"{stem}-{q}", choices, RACE_LABELS.index(answer)))
