"""Example records and the skipped-row report shared by all readers.

Readers never stop on a bad row unless asked (`strict=True`): real GLUE/RACE dumps contain a few
broken lines, and one of them should not cost a finetuning run. Every skipped row is recorded
with its file and line so the caller can print or fail on it.
"""

from dataclasses import dataclass
from typing import List, NamedTuple, Optional, Tuple, Union


@dataclass(frozen=True)
class ClassificationExample:
    """A sentence pair; `label` is the class index, None in unlabeled (test) files."""

    uid: str
    text_a: str
    text_b: Optional[str]
    label: Optional[int]


@dataclass(frozen=True)
class MultipleChoiceExample:
    """One question with its candidate (text_a, text_b) pairs, e.g. (article, question+option)."""

    uid: str
    choices: Tuple[Tuple[str, str], ...]
    label: Optional[int]


@dataclass(frozen=True)
class SkippedRow:
    file: str
    line: int
    reason: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.reason}"


class ReaderError(ValueError):
    """Raised by a reader with strict=True on the first bad row (message: file:line: reason)."""


Example = Union[ClassificationExample, MultipleChoiceExample]


class ReadResult(NamedTuple):
    """`examples, skipped = read_mnli(...)` works; so does `result.examples`."""

    examples: List[Example]
    skipped: List[SkippedRow]

    def summary(self) -> str:
        text = f"{len(self.examples)} examples, {len(self.skipped)} rows skipped"
        return text + "".join(f"\n  {row}" for row in self.skipped[:20])


class _Collector:
    """Accumulates examples and skipped rows; raises at the first skip when strict."""

    def __init__(self, strict: bool):
        self.strict = strict
        self.examples: List[Example] = []
        self.skipped: List[SkippedRow] = []

    def skip(self, file: str, line: int, reason: str) -> None:
        row = SkippedRow(str(file), line, reason)
        if self.strict:
            raise ReaderError(str(row))
        self.skipped.append(row)

    def result(self) -> ReadResult:
        return ReadResult(self.examples, self.skipped)


def as_path_list(paths) -> List[str]:
    if isinstance(paths, (str, bytes)) or hasattr(paths, "__fspath__"):
        return [str(paths)]
    return [str(p) for p in paths]
