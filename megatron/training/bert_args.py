"""The BERT-only pretraining flags (upstream names), shared by pretrain_bert.py and the tools that rebuild a BERT
from a checkpoint's saved flags (checkpoint converter, generation)."""

from __future__ import annotations

import argparse


def add_bert_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Upstream BERT flags, added only where the common argument set does not already define them."""
    existing = parser._option_string_actions  # argparse has no public "has option" query
    group = parser.add_argument_group("bert")

    def add(flag, **kwargs):
        if flag not in existing:
            group.add_argument(flag, **kwargs)

    add("--mask-prob", type=float, default=0.15, help="Probability of masking a candidate (whole-word) n-gram.")
    add("--short-seq-prob", type=float, default=0.1,
        help="Probability of drawing a sample shorter than --seq-length.")
    add("--bert-no-binary-head", action="store_true",
        help="Drop the sentence-order (binary) head; train masked LM only.")
    add("--masking-max-ngram", type=int, default=3, help="Longest n-gram masked as one unit.")
    add("--no-masking-full-word", action="store_false", dest="masking_do_full_word",
        help="Mask word pieces independently instead of whole words.")
    parser.set_defaults(model_family="bert")  # what --dry-run describes (pretrain_gpt.py's is the default)
    return parser
