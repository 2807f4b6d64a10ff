"""End to end on CPU: preprocess Wikipedia -> pretrain a small BERT -> finetune MNLI and RACE -> report.

    python scripts/e2e_bert_finetune.py [--out runs/e2e_bert] [--data ../shared/data] [--quick]

Every stage is the product's own command line (tools/preprocess_data.py, pretrain_bert.py, tasks/main.py),
so the printed commands can be rerun by hand. The report compares the best dev accuracy with the
majority-class baseline (MNLI) and chance (RACE, 25%) and is written to <out>/results.json. Sizes are
for a 2-core CPU (about 20 minutes); --quick is a few-minute smoke version.
"""

from __future__ import annotations

import argparse
import collections
import glob
import itertools
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from megatron.dslm import config as dslm_config
from megatron.dslm.schemes.registry import check_config
from tasks.tapt import write_pair_documents

REPO = Path(__file__).resolve().parents[1]


def run(cmd, log: Path) -> float:
    print("$ " + " ".join(map(str, cmd)), flush=True)
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"), HF_HUB_OFFLINE="1",
               HF_DATASETS_OFFLINE="1", PYTHONWARNINGS="ignore", PYTHONPATH=str(REPO))
    t0 = time.time()
    with open(log, "w") as f:
        proc = subprocess.run([sys.executable, *map(str, cmd)], cwd=REPO, env=env, stdout=f, stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        sys.exit(f"failed (exit {proc.returncode}); see {log}:\n" + "".join(open(log).readlines()[-30:]))
    return time.time() - t0


def subset_tsv(src: Path, dst: Path, rows: int) -> None:
    with open(src, encoding="utf-8") as f, open(dst, "w", encoding="utf-8") as g:
        g.writelines(itertools.islice(f, rows + 1))  # header + rows


def majority(path: Path) -> tuple:
    labels = [line.rstrip("\n").split("\t")[-1] for line in open(path, encoding="utf-8").readlines()[1:]]
    label, count = collections.Counter(labels).most_common(1)[0]
    return label, count / len(labels)


def best_of(save: Path) -> dict:
    return json.loads((save / "best" / "best.json").read_text())


def model_flags(a) -> list:
    return ["--num-layers", a.layers, "--hidden-size", a.hidden, "--num-attention-heads", a.heads,
            "--max-position-embeddings", 128, "--vocab-file", a.vocab, "--tokenizer-type", "BertWordPieceLowerCase",
            *method_flags(a), "--seed", 1234]


def method_flags(a) -> list:
    """--init-scheme, plus the scheme knobs given here (a scheme refuses knobs it does not read)."""
    explicit = dslm_config.explicit_fields(a)
    return [item for name in METHOD_FIELDS if name == "init_scheme" or name in explicit
            for item in (dslm_config.flag(name), getattr(a, name))]


METHOD_FIELDS = ("init_scheme", "dslm_k")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=str(REPO / "runs" / "e2e_bert"))
    p.add_argument("--data", default=str(REPO.parent / "shared" / "data"))
    p.add_argument("--docs", type=int, default=3000, help="Wikipedia documents to pretrain on (0: none, needs --tapt)")
    p.add_argument("--tapt", action="store_true",
                   help="task-adaptive pretraining (Gururangan et al. 2020): add the text of the MNLI training "
                        "subset (premise and hypothesis of each pair as one document, labels unused) to the "
                        "pretraining corpus, so MLM learns to recover hypothesis words from the premise")
    p.add_argument("--pretrain-iters", type=int, default=300)
    p.add_argument("--pretrain-seq-length", type=int, default=64)
    p.add_argument("--pretrain-micro-batch", type=int, default=16)
    p.add_argument("--pretrain-lr", type=float, default=1e-3)
    p.add_argument("--mnli-train", type=int, default=3000, help="MNLI training examples (a prefix of train.tsv)")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--mnli-lr", type=float, default=3e-4)
    p.add_argument("--mnli-epochs", type=int, default=None, help="default --epochs")
    p.add_argument("--mnli-micro-batch", type=int, default=32)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--heads", type=int, default=4)
    # weight init for pretraining and the finetuning heads, declared as training declares it
    dslm_config.add_arguments(p, METHOD_FIELDS)
    p.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run of every stage")
    p.add_argument("--pretrained", default=None,
                   help="reuse this pretrain_bert.py checkpoint (same model flags) and skip stages 1-2")
    p.add_argument("--tasks", nargs="+", default=["MNLI", "RACE"], choices=["MNLI", "RACE"])
    a = p.parse_args()
    if a.quick:
        a.docs, a.pretrain_iters, a.mnli_train, a.epochs = 400, 20, 400, 1
    arch = dslm_config.model_arch(a, num_layers=a.layers, hidden_size=a.hidden, num_attention_heads=a.heads,
                                  seq_length=a.pretrain_seq_length, model_type="bert")
    try:
        check_config(a.init_scheme, arch, dslm_config.explicit_fields(a))
    except ValueError as err:
        p.error(str(err))
    data, out = Path(a.data), Path(a.out)
    a.vocab = data / "vocab" / "bert-base-uncased-vocab.txt"
    for need in (data / "corpus" / "wiki-sample.jsonl", a.vocab, data / "finetune" / "MNLI", data / "finetune" / "RACE"):
        if not need.exists():
            sys.exit(f"{need} not found: pass --data (a folder like ../shared/data)")
    if a.docs == 0 and not a.tapt and not a.pretrained:
        sys.exit("--docs 0 leaves nothing to pretrain on: add --tapt or pass --pretrained")
    if a.pretrained and Path(a.pretrained).resolve().is_relative_to(out.resolve()):
        sys.exit("--pretrained must lie outside --out (which is cleared first)")
    if out.exists():
        shutil.rmtree(out)
    (out / "logs").mkdir(parents=True)
    times, results = {}, {}
    if a.pretrained:
        bert = Path(a.pretrained)
        results["pretrain"] = {"reused": str(bert)}
    else:
        bert = pretrain(a, data, out, times, results)
    if "MNLI" in a.tasks:
        finetune_mnli(a, data, out, bert, times, results)
    if "RACE" in a.tasks:
        finetune_race(a, data, out, bert, times, results)
    results["wall_times_s"] = {k: round(v, 1) for k, v in times.items()}
    (out / "results.json").write_text(json.dumps(results, indent=1))
    print(json.dumps(results, indent=1))


def pretrain(a, data, out, times, results) -> Path:
    # 1. Sentence-split, tokenized Wikipedia sample.
    corpus = out / "wiki.jsonl"
    with open(data / "corpus" / "wiki-sample.jsonl", encoding="utf-8") as f, open(corpus, "w", encoding="utf-8") as g:
        g.writelines(itertools.islice(f, a.docs))
        if a.tapt:
            results["tapt_documents"] = write_pair_documents(data / "finetune" / "MNLI" / "train.tsv", a.mnli_train, g)
    times["preprocess_s"] = run([REPO / "tools" / "preprocess_data.py", "--input", corpus, "--json-keys", "text",
                                 "--split-sentences", "--tokenizer-type", "BertWordPieceLowerCase", "--vocab-file",
                                 a.vocab, "--output-prefix", out / "wiki", "--workers", 1],
                                out / "logs" / "preprocess.log")

    # 2. Pretrain (MLM + sentence order).
    bert = out / "bert"
    times["pretrain_s"] = run([REPO / "pretrain_bert.py", *model_flags(a), "--seq-length", a.pretrain_seq_length,
                               "--micro-batch-size", a.pretrain_micro_batch, "--global-batch-size",
                               a.pretrain_micro_batch, "--train-iters", a.pretrain_iters,
                               "--lr", a.pretrain_lr, "--lr-warmup-fraction", 0.05, "--lr-decay-style", "linear",
                               "--data-path", out / "wiki_text_sentence", "--split", "98,1,1",
                               "--eval-interval", max(a.pretrain_iters // 3, 1), "--eval-iters", 2,
                               "--log-interval", 10, "--save", bert, "--data-cache-path", out / "cache"],
                              out / "logs" / "pretrain.log")
    losses = [line for line in open(out / "logs" / "pretrain.log") if " iteration " in line and "lm loss:" in line]
    grab = lambda line, key: float(line.split(f"{key}: ")[1].split(" ")[0])  # noqa: E731
    results["pretrain"] = {"iters": a.pretrain_iters, "tokens_per_iter": a.pretrain_seq_length * a.pretrain_micro_batch, "first_lm_loss": grab(losses[0], "lm loss"),
                           "last_lm_loss": grab(losses[-1], "lm loss"), "last_sop_loss": grab(losses[-1], "sop loss")}
    return bert


def finetune_mnli(a, data, out, bert, times, results) -> None:
    # 3. MNLI (a prefix of train; full dev_matched and dev_mismatched).
    mnli = data / "finetune" / "MNLI"
    train = out / "mnli_train_subset.tsv"
    subset_tsv(mnli / "train.tsv", train, a.mnli_train)
    dev_files = [mnli / "dev_matched.tsv", mnli / "dev_mismatched.tsv"]
    times["mnli_s"] = run([REPO / "tasks" / "main.py", "--task", "MNLI", *model_flags(a), "--seq-length", 128,
                           "--micro-batch-size", a.mnli_micro_batch, "--eval-micro-batch-size", 64, "--lr", a.mnli_lr,
                           "--lr-warmup-fraction", 0.1, "--epochs", a.mnli_epochs or a.epochs, "--log-interval", 20,
                           "--train-data", train, "--valid-data", *dev_files,
                           "--pretrained-checkpoint", bert, "--save", out / "mnli"], out / "logs" / "mnli.log")
    best = best_of(out / "mnli")
    results["mnli"] = {"train_examples": a.mnli_train, "lr": a.mnli_lr, "best_epoch": best["epoch"], "accuracy": best["accuracy"],
                       "majority": {f.stem: majority(f) for f in dev_files}}


def finetune_race(a, data, out, bert, times, results) -> None:
    # 4. RACE (all of train; dev middle + high).
    race = data / "finetune" / "RACE"
    times["race_s"] = run([REPO / "tasks" / "main.py", "--task", "RACE", *model_flags(a), "--seq-length", 128,
                           "--micro-batch-size", 8, "--eval-micro-batch-size", 16, "--lr", 3e-4,
                           "--lr-warmup-fraction", 0.1, "--epochs", a.epochs, "--log-interval", 20,
                           "--train-data", race / "train", "--valid-data", race / "dev" / "middle", race / "dev" / "high",
                           "--pretrained-checkpoint", bert, "--save", out / "race"], out / "logs" / "race.log")
    best = best_of(out / "race")
    answers = collections.Counter(ans for f in glob.glob(str(race / "dev" / "*" / "*.txt"))
                                  for ans in json.load(open(f))["answers"])
    results["race"] = {"best_epoch": best["epoch"], "accuracy": best["accuracy"], "chance": 0.25,
                       "majority_answer_share": max(answers.values()) / sum(answers.values())}


if __name__ == "__main__":
    main()
