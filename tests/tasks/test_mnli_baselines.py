"""tasks/baselines.py (CLI: scripts/mnli_baselines.py): each bag-of-words baseline finds exactly the signal it
is built to see."""

import random

from tasks import baselines as mnli_baselines
from tasks.data.examples import ClassificationExample
from tests.support import write_mnli

WORDS = [f"w{i}" for i in range(40)]


def _overlap_examples(n, seed):
    """entailment: the hypothesis copies premise words; neutral: words absent from the premise. Every word is
    as frequent in both classes, so the hypothesis alone carries no signal."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        premise = rng.sample(WORDS, 6)
        label = rng.choice([1, 2])  # MNLI_LABELS: 1 entailment, 2 neutral
        pool = premise if label == 1 else [w for w in WORDS if w not in premise]
        out.append(ClassificationExample(uid=str(i), text_a=" ".join(premise),
                                         text_b=" ".join(rng.sample(pool, 3)), label=label))
    return out


def test_pair_overlap_sees_overlap_and_hypothesis_only_does_not():
    train, dev = _overlap_examples(1500, 0), {"dev": _overlap_examples(400, 1)}
    pair = mnli_baselines.fit_and_score(train, dev, "pair-overlap", steps=150, seed=0)["dev"]
    hyp = mnli_baselines.fit_and_score(train, dev, "hypothesis-only", steps=150, seed=0)["dev"]
    assert pair > 0.95
    assert hyp < 0.6


def test_cli_on_keyword_fixture(tmp_path, capsys):
    """The fixture's hypothesis keyword decides the label: hypothesis-only must find it."""
    train = write_mnli(tmp_path / "train.tsv", 600, seed=3)
    dev = write_mnli(tmp_path / "dev.tsv", 200, seed=4)
    assert mnli_baselines.main(["--train", str(train), "--valid", str(dev)]) == 0
    lines = {line.split("|")[1].strip(): line for line in capsys.readouterr().out.splitlines() if line.startswith("|")}
    hyp = float(lines["hypothesis-only bag of words"].split("|")[2].strip().rstrip(" %"))
    assert hyp > 95.0
    assert mnli_baselines.main(["--train", str(tmp_path / "missing.tsv"), "--valid", str(dev)]) == 2
