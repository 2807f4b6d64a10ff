"""Depth vs width at equal non-embedding parameters, scheme vs scheme, Pre-LN and Post-LN (paper Tables 1-2).

The paper's claim: with DSLM, deeper-narrower models beat shallow-wide ones of the same size, and both
Pre-LN and Post-LN train. Shapes keep 12·L·H² fixed by multiplying depth by 4 while halving width
(e.g. 4×256, 16×128, 64×64). Each (shape, scheme, LN) is one ``pretrain_gpt.py`` (or ``pretrain_bert.py``)
run with the same seed, data, batch and iteration count; the final validation loss is measured on the
held-out split of the corpus (``--split 949,50,1``).

    python scripts/reproduce/depth_vs_width.py --budget 30            # CPU miniature (writes docs/results/)
    python scripts/reproduce/depth_vs_width.py --budget 1 --out /tmp/dvw   # smoke check
    python scripts/reproduce/depth_vs_width.py --gpu-scale            # paper-scale argument sets, not run

Runs are launched in priority order (DSLM and the megatron default first) and skipped once the budget is
spent; skipped runs appear as such in the CSV. BERT runs keep their checkpoints (for downstream.py).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import common as C

PRIORITY = [("dslm", False), ("megatron", False), ("dslm", True), ("deepnet", True), ("xavier", False),
            ("xavier", True), ("megatron", True)]


def shapes_for(budget: float, model: str) -> list:
    """(layers, hidden, heads) at equal 12·L·H²; wider at larger budgets."""
    if budget >= 120:
        base = [(4, 256), (16, 128), (64, 64)]
    elif budget >= 4:
        base = [(4, 128), (16, 64), (64, 32)]
    else:
        base = [(1, 64), (4, 32)]
    if model == "bert":  # BERT costs more per step (two heads, masking): one shape fewer
        base = base[:2]
    return [(layers, hidden, max(2, hidden // 32)) for layers, hidden in base]


def plan(budget: float, runs: int) -> dict:
    """Iterations and batch from the budget and the number of runs it must cover (a formula, so a rerun with
    the same arguments is the same run): ~25 s start-up per run, ~1 s per step at the CPU shapes, ~3 s at
    the 256-wide ones (2 shared cores, one thread)."""
    if budget < 4:
        return {"iters": 6, "mbs": 4, "seq": 32, "lr": 1e-3, "eval_iters": 1}
    step_s = 3.0 if budget >= 120 else 1.0
    iters = int((budget * 60 / max(runs, 1) - 25) / step_s)
    return {"iters": min(600, max(20, iters)), "mbs": 8, "seq": 64, "lr": 2e-3, "eval_iters": 8}


def pretrain_cmd(model, shape, scheme, post_ln, p, data, vocab, seed, save=None):
    layers, hidden, heads = shape
    entry = C.REPO / ("pretrain_bert.py" if model == "bert" else "pretrain_gpt.py")
    cmd = [entry, *C.gpt_flags(layers, hidden, heads, p["seq"], scheme, post_ln),
           *C.train_flags(p["iters"], p["mbs"], p["lr"], data, vocab, eval_iters=p["eval_iters"], seed=seed)]
    if model == "bert":
        cmd += ["--max-position-embeddings", 128]  # finetuning (downstream.py) runs at seq 128
        # Without Transformer Engine, megatron-core's BertModel only accepts the local attention backend
        # (its sanity check calls is_te_min_version otherwise and crashes on CPU installs).
        cmd += ["--attention-backend", "local"]
    if save:
        cmd += ["--save", save, "--save-interval", p["iters"]]
    return cmd


def run_model(model, args, minutes, rows, curves):
    variants = [v for v in PRIORITY if v in C.variants(args.schemes)][:args.max_variants]
    if model == "bert":
        variants = variants[:args.bert_max_variants]
    shapes = [s for s in shapes_for(args.budget, model) if not args.shapes or f"{s[0]}x{s[1]}" in args.shapes]
    order = [(v, s) for v in variants for s in shapes]
    p = plan(minutes, len(order))
    if args.lr:
        p["lr"] = args.lr
    if args.iters:
        p["iters"] = args.iters
    args.plans[model] = p
    data, vocab = C.prepare_data(model)
    budget = C.Budget(minutes)  # data preparation (first run only) does not count against the runs
    for (scheme, post_ln), shape in order:
        name = f"{model}_{shape[0]}x{shape[1]}_{scheme}_{'post' if post_ln else 'pre'}" + (f"_lr{p['lr']:g}" if args.lr else "")
        row = {"model": model, "layers": shape[0], "hidden": shape[1], "heads": shape[2],
               "non_embedding_params": 12 * shape[0] * shape[1] ** 2, "scheme": scheme, "ln": C.ln_name(post_ln),
               "iters": p["iters"], "micro_batch": p["mbs"], "seq": p["seq"], "lr": p["lr"], "seed": args.seed}
        row["name"] = name
        if budget.spent() and any(r["model"] == model and "outcome" in r for r in rows):
            rows.append({**row, "outcome": "skipped (budget)"})
            continue
        save = C.WORK / "ckpt" / name if model == "bert" else None
        res = C.run_training(pretrain_cmd(model, shape, scheme, post_ln, p, data, vocab, args.seed, save),
                             C.WORK / "logs" / "depth_vs_width" / f"{name}.log")
        log = C.read_result(res)
        row.update(C.summarize(log), wall_s=res["wall_s"], command=res["command"],
                   checkpoint=os.path.relpath(save, C.REPO) if save else "")
        rows.append(row)
        curves[name] = {"train": C.curve(log), "valid": [[i, f.get("lm loss")] for i, f in log.valid]}
        print(f"  {name}: val {row['val_loss']} ({row['outcome']}, {res['wall_s']} s)", flush=True)


def plot(rows, curves, out: Path):
    plt = C.pyplot()
    models = sorted({r["model"] for r in rows if r.get("val_loss") is not None})
    if not models:
        print("nothing finished: no figure")
        return
    fig, axes = plt.subplots(len(models), 2, figsize=(12, 4.2 * max(len(models), 1)), squeeze=False)
    for mi, model in enumerate(models):
        ax = axes[mi][0]
        done = [r for r in rows if r["model"] == model and r.get("val_loss") is not None]
        for scheme, post_ln in PRIORITY:
            pts = sorted((r["layers"], r["val_loss"]) for r in done
                         if r["scheme"] == scheme and r["ln"] == C.ln_name(post_ln))
            if pts:
                ax.plot(*zip(*pts), marker="o", ls="-" if not post_ln else "--", label=f"{scheme} {C.ln_name(post_ln)}")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("layers (width halves as depth ×4; equal 12·L·H²)")
        ax.set_ylabel("final validation loss")
        ax.set_title(f"{model.upper()}: validation loss vs depth")
        ax.legend(fontsize=7)
        ax = axes[mi][1]
        for name, c in curves.items():
            if name.startswith(model + "_") and "dslm" in name or name.startswith(model + "_") and "megatron_pre" in name:
                if c["train"]:
                    ax.plot(*zip(*c["train"]), label=name[len(model) + 1:], lw=1)
        ax.set_xlabel("iteration")
        ax.set_ylabel("train loss")
        ax.set_title(f"{model.upper()}: training curves (DSLM and megatron Pre-LN)")
        ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(out / "depth_vs_width.png", dpi=80)
    plt.close(fig)


def gpu_scale(out):
    common = ("--seq-length 512 --max-position-embeddings 512 --micro-batch-size 8 --global-batch-size 256 "
              "--train-iters 100000 --lr 1e-4 --lr-decay-style linear --lr-warmup-fraction 0.01 --bf16 "
              "--data-path wiki_text_sentence --split 949,50,1 --tokenizer-type BertWordPieceLowerCase "
              "--vocab-file bert-base-uncased-vocab.txt --eval-interval 1000 --eval-iters 50 --seed 1234")
    runs = [("bert_12x768_megatron_pre", "12x768 baseline, Pre-LN, megatron init (BERT-base shape)",
             "--num-layers 12 --hidden-size 768 --num-attention-heads 12 --init-scheme megatron"),
            ("bert_192x256_dslm_pre", "192x256 DSLM Pre-LN: 12·192·256² = 151M vs 85M non-embedding params",
             "--num-layers 192 --hidden-size 256 --num-attention-heads 4 --init-scheme dslm"),
            ("bert_192x256_dslm_post", "192x256 DSLM Post-LN",
             "--num-layers 192 --hidden-size 256 --num-attention-heads 4 --init-scheme dslm "
             "--apply-residual-connection-post-layernorm"),
            ("bert_48x512_dslm_pre", "48x512 DSLM Pre-LN: equal 12·L·H² to 12x1024",
             "--num-layers 48 --hidden-size 512 --num-attention-heads 8 --init-scheme dslm"),
            ("bert_12x1024_megatron_pre", "12x1024 megatron baseline",
             "--num-layers 12 --hidden-size 1024 --num-attention-heads 16 --init-scheme megatron"),
            ("bert_192x1024_dslm_pre", "192x1024 DSLM Pre-LN (the paper's large deep model)",
             "--num-layers 192 --hidden-size 1024 --num-attention-heads 16 --init-scheme dslm")]
    cmds = [f"# {title}\ntorchrun --nproc_per_node 8 pretrain_bert.py {model} {common} --save ckpt/{name} "
            "--save-interval 10000" for name, title, model in runs]
    C.write_gpu_scale("depth_vs_width", cmds, out)


def main():
    p = C.add_common_args(argparse.ArgumentParser(description=__doc__.splitlines()[0]), default_budget=30)
    p.add_argument("--models", default="gpt,bert", help="gpt, bert or both")
    p.add_argument("--schemes", default=None, help="comma list to restrict (default all)")
    p.add_argument("--bert-share", type=float, default=0.3, help="fraction of the budget for BERT")
    p.add_argument("--max-variants", type=int, default=len(PRIORITY),
                   help="run only the first N (scheme, LN) pairs of the priority list (DSLM and megatron first)")
    p.add_argument("--bert-max-variants", type=int, default=4, help="the same for BERT")
    p.add_argument("--shapes", default=None, help="comma list like 16x64 to restrict the shapes")
    p.add_argument("--lr", type=float, default=None, help="override the planned learning rate")
    p.add_argument("--iters", type=int, default=None, help="override the planned iteration count")
    args = p.parse_args()
    args.schemes = args.schemes.split(",") if args.schemes else None
    out = Path(args.out)
    if args.gpu_scale:
        return gpu_scale(out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    rows, curves = [], {}
    args.plans = {}
    models = args.models.split(",")
    for model in models:
        share = args.bert_share if model == "bert" and len(models) > 1 else 1 - args.bert_share if len(models) > 1 else 1
        run_model(model, args, args.budget * share, rows, curves)
    saved = out / "depth_vs_width.json"
    record = {"budget_min": args.budget, "seed": args.seed, "wall_s": round(time.time() - t0, 1),
              "plan": args.plans, "priority": PRIORITY, "rows": rows, "curves": curves,
              "argv": sys.argv[1:]}
    if saved.exists():  # keep the other model's rows from an earlier invocation (e.g. --models bert alone)
        old = json.loads(saved.read_text())
        keep = [r for r in old.get("rows", []) if r["model"] not in models]
        if keep:
            record["rows"] = keep + rows
            record["curves"] = {**{k: v for k, v in old.get("curves", {}).items() if k.split("_")[0] not in models},
                                **curves}
            record["plan"] = {**{k: v for k, v in old.get("plan", {}).items() if k not in models}, **args.plans}
            record["earlier"] = {k: old.get(k) for k in ("budget_min", "wall_s", "argv")}
    C.write_rows(record["rows"], out / "depth_vs_width.csv")
    C.write_json(record, saved)
    rows, curves = record["rows"], record["curves"]
    plot(rows, curves, out)
    print(f"wrote {out}/depth_vs_width.{{csv,json,png}} in {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
