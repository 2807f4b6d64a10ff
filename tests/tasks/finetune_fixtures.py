"""Hand-written finetuning fixtures (tiny vocab, MNLI TSV, RACE JSON) so the task tests need no ../shared."""

import json
import random
from pathlib import Path

WORDS = ("the cat dog bird sat ran flew on a mat tree sky yes no maybe it is was not true false "
         "which one story best fits what did do sees red blue green small big").split()
VOCAB = ["[PAD]"] + [f"[unused{i}]" for i in range(3)] + ["[UNK]", "[CLS]", "[SEP]", "[MASK]"] + \
    list(".,?!_") + WORDS + ["##s", "##ed", "##ing"]

MNLI_HEADER = ("index\tpromptID\tpairID\tgenre\tsentence1_binary_parse\tsentence2_binary_parse\t"
               "sentence1_parse\tsentence2_parse\tsentence1\tsentence2\tlabel1\tgold_label")
# The hypothesis' keyword decides the label: learnable by a tiny model in a few dozen steps.
KEYWORD = {"entailment": "yes", "contradiction": "no", "neutral": "maybe"}


def write_vocab(folder: Path) -> Path:
    path = folder / "vocab.txt"
    path.write_text("\n".join(VOCAB) + "\n", encoding="utf-8")
    return path


def _sentence(rng, n):
    return " ".join(rng.choice(WORDS[:12]) for _ in range(n))


def mnli_row(i: int, premise: str, hypothesis: str, label: str, genre: str = "fixture") -> str:
    """One GLUE MNLI TSV line (12 columns; parses left empty, label1 = gold_label)."""
    return "\t".join([str(i), str(i), f"{i}x", genre, "", "", "", "", premise, hypothesis, label, label])


def write_mnli(path: Path, rows: int, seed: int, bad_rows: bool = False) -> Path:
    rng = random.Random(seed)
    lines = [MNLI_HEADER]
    for i in range(rows):
        label = rng.choice(sorted(KEYWORD))
        premise = _sentence(rng, rng.randint(4, 9)) + " ."
        hypothesis = f"{_sentence(rng, 2)} {KEYWORD[label]} {_sentence(rng, 2)} ."
        lines.append(mnli_row(i, premise, hypothesis, label))
    if bad_rows:
        lines.append("too\tfew\tcolumns")
        lines.append(mnli_row(99, "a cat .", "a dog .", "-"))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def write_membership_mnli(path: Path, rows: int, seed: int) -> Path:
    """Entailment iff the one-word hypothesis occurs in the 4-word premise, else contradiction (50/50).

    Every word is equally likely in either class, so neither sentence alone says anything: the model has to
    relate the two segments (attention across [SEP] with token types), the ability MNLI-style tasks need."""
    rng = random.Random(seed)
    pool = WORDS[:12]
    lines = [MNLI_HEADER]
    for i in range(rows):
        premise = rng.sample(pool, 4)
        entailed = rng.random() < 0.5
        word = rng.choice(premise) if entailed else rng.choice([w for w in pool if w not in premise])
        label = "entailment" if entailed else "contradiction"
        lines.append(mnli_row(i, " ".join(premise) + " .", word + " .", label))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def write_race(folder: Path, items: int, seed: int) -> Path:
    """RACE layout: <folder>/middle/*.txt, one JSON object each; the right option repeats the article's colour."""
    rng = random.Random(seed)
    colours = ["red", "blue", "green", "small"]
    (folder / "middle").mkdir(parents=True, exist_ok=True)
    for i in range(items):
        answer = rng.randrange(4)
        colour = rng.choice(colours)
        options = [c for c in colours if c != colour]
        rng.shuffle(options)
        options.insert(answer, colour)
        record = {"id": f"f{i}.txt", "article": f"the {rng.choice(['cat', 'dog', 'bird'])} is {colour} .",
                  "questions": ["what is it ?"], "options": [options], "answers": ["ABCD"[answer]]}
        (folder / "middle" / f"f{i}.txt").write_text(json.dumps(record), encoding="utf-8")
    return folder
