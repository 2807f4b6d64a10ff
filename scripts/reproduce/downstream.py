"""Downstream: finetune the best small pretrained BERT checkpoints on the MNLI / QQP / RACE-layout data.

The paper's claim: the deep-narrow DSLM BERT beats the shallow-wide baseline after finetuning (MNLI, QQP,
RACE). Here the checkpoints come from ``depth_vs_width.py`` (its BERT runs keep them under
data/reproduce/ckpt/): the best one by validation loss overall and the deepest DSLM one (the paper's
candidate), so the paper's deep-vs-baseline pair is compared when the budget produced both. Each is finetuned with ``tasks/main.py``
on subsets of ../shared/data/finetune (stand-ins with the official layouts, see its README), and the best
dev accuracy is reported next to the majority class (MNLI, QQP) and chance (RACE: 25%).

    python scripts/reproduce/downstream.py --budget 12
    python scripts/reproduce/downstream.py --budget 1 --out /tmp/down     # smoke check
    python scripts/reproduce/downstream.py --gpu-scale

Without ../shared/data/finetune (or $DSLM_SHARED_DATA/finetune) it says so and exits 0.
"""

from __future__ import annotations

import argparse
import collections
import glob
import json
import random
import shutil
import time
from pathlib import Path

import common as C

FINETUNE = C.SHARED / "finetune"


def plan(budget: float) -> dict:
    if budget < 4:
        return {"mnli_train": 200, "mnli_dev": 100, "qqp_train": 200, "qqp_dev": 100, "race_train": 80,
                "race_dev": 40, "epochs": 1, "tasks": ["MNLI"], "max_ckpts": 1}
    if budget < 15:
        return {"mnli_train": 1500, "mnli_dev": 400, "qqp_train": 1500, "qqp_dev": 300, "race_train": 120,
                "race_dev": 60, "epochs": 1, "tasks": ["MNLI", "QQP", "RACE"], "max_ckpts": 2}
    scale = min(budget / 15, 3)
    return {"mnli_train": int(3000 * scale), "mnli_dev": 600, "qqp_train": 1500, "qqp_dev": 300,
            "race_train": int(300 * scale), "race_dev": 120, "epochs": 2, "tasks": ["MNLI", "QQP", "RACE"],
            "max_ckpts": 2}


def subset_tsv(src: Path, dst: Path, rows: int, seed: int) -> Path:
    """Header plus ``rows`` lines drawn with a fixed seed (the files are sorted by source, so no plain prefix)."""
    lines = src.read_text(encoding="utf-8").splitlines(keepends=True)
    body = lines[1:]
    random.Random(seed).shuffle(body)
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_text(lines[0] + "".join(body[:rows]), encoding="utf-8")
    return dst


def subset_race(src: Path, dst: Path, files: int, seed: int) -> Path:
    """A seeded subset of RACE JSON files, keeping the middle/high folders."""
    if dst.exists():
        shutil.rmtree(dst)
    paths = sorted(glob.glob(str(src / "*" / "*.txt")))
    random.Random(seed).shuffle(paths)
    for path in paths[:files]:
        target = dst / Path(path).parent.name / Path(path).name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, target)
    return dst


def majority(path: Path, column: int = -1) -> float:
    labels = [ln.rstrip("\n").split("\t")[column] for ln in path.read_text(encoding="utf-8").splitlines()[1:]]
    return max(collections.Counter(labels).values()) / len(labels)


def race_majority(folder: Path) -> float:
    answers = collections.Counter(a for f in glob.glob(str(folder / "*" / "*.txt")) for a in json.load(open(f))["answers"])
    return max(answers.values()) / sum(answers.values())


def pick_checkpoints(results_dir: Path, n: int) -> list:
    """Best BERT by validation loss, then the deepest DSLM one (the paper's pick), then the best shallow one."""
    path = results_dir / "depth_vs_width.json"
    if not path.exists():
        return []
    rows = [r for r in json.loads(path.read_text())["rows"]
            if r["model"] == "bert" and r.get("val_loss") is not None and r.get("checkpoint")
            and (C.REPO / r["checkpoint"]).exists()]
    rows.sort(key=lambda r: r["val_loss"])
    picked = rows[:1]
    # then the paper's candidate: the deepest DSLM model, then the best of the shallowest shape
    deep_dslm = [r for r in rows if r["scheme"] == "dslm" and r["layers"] == max(x["layers"] for x in rows)]
    shallow = [r for r in rows if r["layers"] == min(x["layers"] for x in rows)] if rows else []
    for extra in (deep_dslm[:1], shallow[:1]):
        if extra and extra[0] not in picked:
            picked.append(extra[0])
    return picked[:n]


def gpu_scale(out):
    cmds = []
    for name, model in (("bert_12x768_megatron_pre", "--num-layers 12 --hidden-size 768 --num-attention-heads 12"),
                        ("bert_192x256_dslm_pre", "--num-layers 192 --hidden-size 256 --num-attention-heads 4")):
        for task, data in (("MNLI", "--train-data MNLI/train.tsv --valid-data MNLI/dev_matched.tsv MNLI/dev_mismatched.tsv"),
                           ("QQP", "--train-data QQP/train.tsv --valid-data QQP/dev.tsv"),
                           ("RACE", "--train-data RACE/train --valid-data RACE/dev/middle RACE/dev/high")):
            for lr in ("1e-5", "2e-5", "3e-5"):
                cmds.append(f"torchrun --nproc_per_node 8 tasks/main.py --task {task} {model} --seq-length 512 "
                            f"--max-position-embeddings 512 {data} --pretrained-checkpoint ckpt/{name} --epochs 3 "
                            f"--micro-batch-size 4 --lr {lr} --lr-warmup-fraction 0.06 --vocab-file "
                            f"bert-base-uncased-vocab.txt --seed 1234 --save ckpt/{name}_{task}_lr{lr}")
    C.write_gpu_scale("downstream", cmds, out)


def main():
    ap = C.add_common_args(argparse.ArgumentParser(description=__doc__.splitlines()[0]), default_budget=12)
    ap.add_argument("--results", default=None, help="folder with depth_vs_width.json (default --out)")
    args = ap.parse_args()
    out = Path(args.out)
    if args.gpu_scale:
        return gpu_scale(out)
    if not FINETUNE.exists():
        print(f"downstream: {FINETUNE} not found (set DSLM_SHARED_DATA to a folder with finetune/MNLI, QQP, "
              "RACE); skipping.")
        return
    t0 = time.time()
    p = plan(args.budget)
    budget = C.Budget(args.budget)
    ckpts = pick_checkpoints(Path(args.results or out), p["max_ckpts"])
    if not ckpts:
        print("downstream: no BERT checkpoint from depth_vs_width.py (run it first, with --models bert); skipping.")
        return
    out.mkdir(parents=True, exist_ok=True)
    work = C.WORK / "downstream"
    vocab = C.corpus_and_vocab()[1]
    mnli_dev = [subset_tsv(FINETUNE / "MNLI" / f, work / "MNLI" / f, p["mnli_dev"], args.seed)
                for f in ("dev_matched.tsv", "dev_mismatched.tsv")]
    data = {
        "MNLI": ([subset_tsv(FINETUNE / "MNLI" / "train.tsv", work / "MNLI" / "train.tsv", p["mnli_train"], args.seed)],
                 mnli_dev, {f.stem: majority(f) for f in mnli_dev}, 32),
        "QQP": ([subset_tsv(FINETUNE / "QQP" / "train.tsv", work / "QQP" / "train.tsv", p["qqp_train"], args.seed)],
                [subset_tsv(FINETUNE / "QQP" / "dev.tsv", work / "QQP" / "dev.tsv", p["qqp_dev"], args.seed)],
                None, 32),
        "RACE": ([subset_race(FINETUNE / "RACE" / "train", work / "RACE" / "train", p["race_train"], args.seed)],
                 [subset_race(FINETUNE / "RACE" / "dev", work / "RACE" / "dev", p["race_dev"], args.seed)],
                 None, 8),
    }
    data["QQP"] = (*data["QQP"][:2], {"dev": majority(data["QQP"][1][0])}, 32)
    data["RACE"] = (*data["RACE"][:2], {"dev (majority answer letter)": race_majority(data["RACE"][1][0]),
                                        "chance": 0.25}, 8)
    rows = []
    for task in p["tasks"]:
        train, valid, baseline, mbs = data[task]
        for ck in ckpts:
            name = f"{task}_{ck['layers']}x{ck['hidden']}_{ck['scheme']}_{'post' if ck['ln'] == 'Post-LN' else 'pre'}"
            row = {"task": task, "checkpoint": ck["checkpoint"], "layers": ck["layers"], "hidden": ck["hidden"],
                   "scheme": ck["scheme"], "ln": ck["ln"], "pretrain_val_loss": ck["val_loss"],
                   "train_examples": p[f"{task.lower()}_train"], "epochs": p["epochs"], "seed": args.seed,
                   "baseline": json.dumps({k: round(v, 4) for k, v in baseline.items()})}
            if budget.spent() and rows:
                rows.append({**row, "outcome": "skipped (budget)"})
                continue
            save = work / "ckpt" / name
            if save.exists():
                shutil.rmtree(save)
            cmd = [C.REPO / "tasks" / "main.py", "--task", task, "--num-layers", ck["layers"],
                   "--hidden-size", ck["hidden"], "--num-attention-heads", ck["heads"],
                   "--max-position-embeddings", 128, "--seq-length", 128, "--vocab-file", vocab,
                   "--tokenizer-type", "BertWordPieceLowerCase", "--init-scheme", ck["scheme"],
                   "--attention-backend", "local",  # as in pretraining (see depth_vs_width.py)
                   *(["--apply-residual-connection-post-layernorm"] if ck["ln"] == "Post-LN" else []),
                   "--micro-batch-size", mbs, "--eval-micro-batch-size", 2 * mbs, "--lr", 3e-4,
                   "--lr-warmup-fraction", 0.1, "--epochs", p["epochs"], "--log-interval", 20, "--seed", args.seed,
                   "--train-data", *train, "--valid-data", *valid, "--pretrained-checkpoint", C.REPO / ck["checkpoint"],
                   "--save", save]
            res = C.run_cmd(cmd, C.WORK / "logs" / "downstream" / f"{name}.log")
            best = save / "best" / "best.json"
            if best.exists():
                b = json.loads(best.read_text())
                row.update(best_epoch=b["epoch"], mean_accuracy=round(b["mean_accuracy"], 4),
                           accuracy=json.dumps({Path(k).stem if "/" in k else k: round(v, 4)
                                                for k, v in b["accuracy"].items()}), outcome="done")
            else:
                row.update(outcome=f"failed (rc {res['rc']})", error=C.error_line(C.REPO / res["log"]))
            row.update(wall_s=res["wall_s"], command=res["command"])
            rows.append(row)
            print(f"  {name}: {row.get('mean_accuracy')} vs baseline {row['baseline']} ({res['wall_s']} s)", flush=True)
    C.write_rows(rows, out / "downstream.csv")
    C.write_json({"budget_min": args.budget, "seed": args.seed, "plan": p, "wall_s": round(time.time() - t0, 1),
                  "rows": rows}, out / "downstream.json")
    plot(rows, out)
    print(f"wrote {out}/downstream.{{csv,json,png}} in {time.time() - t0:.0f} s")


def plot(rows, out: Path):
    plt = C.pyplot()
    done = [r for r in rows if r.get("mean_accuracy") is not None]
    fig, ax = plt.subplots(figsize=(8, 4))
    tasks = sorted({r["task"] for r in done})
    ckpts = sorted({(r["layers"], r["hidden"], r["scheme"], r["ln"]) for r in done})
    width = 0.8 / max(len(ckpts), 1)
    for ci, ck in enumerate(ckpts):
        ys = [next((r["mean_accuracy"] for r in done if r["task"] == t and
                    (r["layers"], r["hidden"], r["scheme"], r["ln"]) == ck), 0) for t in tasks]
        ax.bar([i + ci * width for i in range(len(tasks))], ys, width, label=f"{ck[0]}x{ck[1]} {ck[2]} {ck[3]}")
    for i, t in enumerate(tasks):
        base = json.loads(next(r["baseline"] for r in done if r["task"] == t))
        ax.hlines(max(base.values()), i - 0.1, i + 0.9, colors="k", linestyles="--")
    ax.set_xticks([i + 0.4 - width / 2 for i in range(len(tasks))], tasks)
    ax.set_ylabel("best dev accuracy (mean over dev files)")
    ax.set_title("finetuning (dashed: majority class / chance)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "downstream.png", dpi=80)
    plt.close(fig)


if __name__ == "__main__":
    main()
