"""Reference points for an MNLI-format dataset: majority class, hypothesis-only and pair-overlap bag-of-words.

A BERT finetuning result means little without them. Two linear models (multinomial logistic regression over
sparse word features, trained on --train, scored on each --valid file):

- ``hypothesis-only``: words of sentence2 only. On MNLI itself this is the well-known annotation-artifact
  baseline (~52 % matched); on a contrastive stand-in, where the same claim appears with supporting and
  refuting evidence, it can fall far *below* the majority class: a model that learns claim-only cues is
  punished.
- ``pair-overlap``: each sentence2 word tagged as present / absent in sentence1, plus the overlap fraction
  (bucketed): the cheapest feature that needs both sentences.

    python scripts/mnli_baselines.py --train MNLI/train.tsv --valid MNLI/dev_matched.tsv MNLI/dev_mismatched.tsv

(``scripts/mnli_baselines.py`` is a thin command line over this module; ``python -m tasks.baselines`` is the same.)
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import sys
from typing import Dict, List, Sequence

import torch

from tasks.data.glue import MNLI_LABELS, read_mnli

_WORD = re.compile(r"\w+|[^\w\s]")


def _words(text: str) -> List[str]:
    return _WORD.findall(text.lower())


def features(a: str, b: str, kind: str) -> List[str]:
    hyp = _words(b)
    if kind == "hypothesis-only":
        return ["h:" + w for w in hyp]
    premise = set(_words(a))
    overlap = sum(w in premise for w in hyp) / max(1, len(hyp))
    return [("in:" if w in premise else "out:") + w for w in hyp] + [f"overlap:{int(overlap * 10)}"]


def _matrix(rows: Sequence[List[str]], vocab: Dict[str, int], grow: bool) -> torch.Tensor:
    r, c = [], []
    for i, feats in enumerate(rows):
        for f in feats:
            if grow and f not in vocab:
                vocab[f] = len(vocab)
            if f in vocab:
                r.append(i)
                c.append(vocab[f])
    values = torch.ones(len(c))
    return torch.sparse_coo_tensor(torch.tensor([r, c], dtype=torch.long).reshape(2, -1), values,
                                   (len(rows), max(1, len(vocab))))


def fit_and_score(train, valids, kind: str, steps: int, seed: int) -> Dict[str, float]:
    vocab: Dict[str, int] = {}
    x = _matrix([features(e.text_a, e.text_b, kind) for e in train], vocab, grow=True).coalesce()
    y = torch.tensor([e.label for e in train])
    torch.manual_seed(seed)
    w = torch.zeros(len(vocab), len(MNLI_LABELS), requires_grad=True)
    b = torch.zeros(len(MNLI_LABELS), requires_grad=True)
    opt = torch.optim.Adam([w, b], lr=0.05)
    for _ in range(steps):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(torch.sparse.mm(x, w) + b, y) + 1e-5 * (w ** 2).sum()
        loss.backward()
        opt.step()
    scores = {}
    with torch.no_grad():
        for name, examples in valids.items():
            xv = _matrix([features(e.text_a, e.text_b, kind) for e in examples], vocab, grow=False)
            pred = (torch.sparse.mm(xv, w) + b).argmax(dim=1)
            gold = torch.tensor([e.label for e in examples])
            scores[name] = (pred == gold).float().mean().item()
    return scores


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--train", required=True)
    p.add_argument("--valid", nargs="+", required=True)
    p.add_argument("--steps", type=int, default=150, help="full-batch Adam steps")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    for path in [a.train, *a.valid]:
        if not os.path.isfile(path):
            print(f"error: {path} not found", file=sys.stderr)
            return 2
    train = [e for e in read_mnli([a.train]).examples if e.label is not None]
    valids = {os.path.splitext(os.path.basename(v))[0]:
              [e for e in read_mnli([v]).examples if e.label is not None] for v in a.valid}
    print(f"| baseline | {' | '.join(valids)} |")
    print("|---|" + "---:|" * len(valids))
    majority = collections.Counter(e.label for e in train).most_common(1)[0][0]
    row = {n: sum(e.label == majority for e in ex) / len(ex) for n, ex in valids.items()}
    print(f"| train-majority ({MNLI_LABELS[majority]}) | " + " | ".join(f"{100 * v:.2f} %" for v in row.values()) + " |")
    own = [collections.Counter(e.label for e in ex).most_common(1)[0] + (len(ex),) for ex in valids.values()]
    print("| each file's own majority class | " + " | ".join(
        f"{100 * count / n:.2f} % ({MNLI_LABELS[label]})" for label, count, n in own) + " |")
    for kind in ("hypothesis-only", "pair-overlap"):
        scores = fit_and_score(train, valids, kind, a.steps, a.seed)
        print(f"| {kind} bag of words | " + " | ".join(f"{100 * v:.2f} %" for v in scores.values()) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
