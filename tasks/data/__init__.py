"""Readers for the official MNLI / QQP / RACE file layouts, pair encoding, torch Datasets."""

from tasks.data.datasets import ClassificationDataset, MultipleChoiceDataset, encode_pair
from tasks.data.examples import (ClassificationExample, MultipleChoiceExample, ReaderError,
                                 ReadResult, SkippedRow)
from tasks.data.glue import MNLI_LABELS, QQP_LABELS, read_mnli, read_qqp
from tasks.data.race import RACE_LABELS, read_race

__all__ = [
    "ClassificationDataset", "MultipleChoiceDataset", "encode_pair",
    "ClassificationExample", "MultipleChoiceExample", "ReaderError", "ReadResult", "SkippedRow",
    "MNLI_LABELS", "QQP_LABELS", "RACE_LABELS", "read_mnli", "read_qqp", "read_race",
]
