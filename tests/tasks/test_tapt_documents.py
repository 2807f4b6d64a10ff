"""tasks/tapt.py (scripts/e2e_bert_finetune.py --tapt): MNLI pairs become pretraining documents whose sentences split into
premise and hypothesis (BERT's dataset then makes them segments A and B, as finetuning does)."""

import io
import json

from megatron.training.tokenizers.sentences import build_sentence_splitter
from tasks.tapt import write_pair_documents
from tests.support import MNLI_HEADER, mnli_row


def test_pair_documents_split_into_premise_and_hypothesis(tmp_path):
    rows = [("The cat sat on the mat .", "A cat sat ."),
            ("Paris: Paris is the capital of France", "Paris is in Spain ."),  # no final punctuation
            ("He left. Then he came back!", "He returned ."),
            ("unused row", "not read")]
    lines = [MNLI_HEADER] + [mnli_row(i, a, b, "neutral") for i, (a, b) in enumerate(rows)]
    tsv = tmp_path / "train.tsv"
    tsv.write_text("\n".join(lines) + "\n", encoding="utf-8")
    out = io.StringIO()
    assert write_pair_documents(tsv, 3, out) == 3
    docs = [json.loads(line)["text"] for line in out.getvalue().splitlines()]
    assert len(docs) == 3 and "unused" not in out.getvalue()
    split = build_sentence_splitter()
    for (premise, hypothesis), doc in zip(rows, docs):
        sentences = [s.strip() for s in split(doc)]
        assert sentences[-1] == hypothesis
        assert " ".join(sentences[:-1]).rstrip(" .") == premise.rstrip(" .")
    assert len(split(docs[2])) == 3
