"""Task-adaptive pretraining (Gururangan et al. 2020) documents from an MNLI-format training file.

Used by ``scripts/e2e_bert_finetune.py --tapt``: each pair becomes one loose-JSON document whose sentences
split into premise and hypothesis, so BERT's pretraining dataset makes them segments A and B, as finetuning does.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TextIO

from tasks.data.glue import read_mnli


def write_pair_documents(tsv: Path, rows: int, out: TextIO) -> int:
    """The first `rows` MNLI pairs as loose-JSON documents "premise. hypothesis" (labels unused); returns the count.

    A premise without final punctuation gets a " ." so the sentence splitter cuts between the two texts and
    BERT's dataset sees them as two segments (the finetuning layout)."""
    examples = read_mnli([str(tsv)]).examples[:rows]
    for ex in examples:
        premise = ex.text_a.strip()
        if not premise.endswith((".", "!", "?", '"', "'")):
            premise += " ."
        out.write(json.dumps({"text": f"{premise}\n{ex.text_b.strip()}"}) + "\n")
    return len(examples)
