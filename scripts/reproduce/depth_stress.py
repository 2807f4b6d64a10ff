"""Depth stress: 48 -> 192 -> 1000 layers at a fixed small width, every scheme; which train, diverge or stall.

The paper's claim: with DSLM (λ² + β² = 1, β² = k/N, σ from the signal-propagation theory) 1000-layer models
train, while standard inits diverge or stop learning as depth grows. Each (depth, scheme, LN) is one
``pretrain_gpt.py`` run with the same seed and data; the outcome word comes from its metrics:
``diverged`` (NaN/inf loss), ``crashed``, ``stalled`` (last logged train loss not 2% below the first) or
``trains``, read from its metrics file. 1000-layer runs get only a few iterations on CPU.

It also profiles one config at initialisation (``--train-iters 1 --log-moments-interval 1``) and puts the
theory predictor's profile (``python -m megatron.dslm.predict``, r0 measured on the same data) beside it.

    python scripts/reproduce/depth_stress.py --budget 20
    python scripts/reproduce/depth_stress.py --budget 1 --out /tmp/stress    # smoke check
    python scripts/reproduce/depth_stress.py --gpu-scale
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import common as C

from megatron.dslm.config import DEFAULT_EMBEDDING_CORR

PRIORITY = [("dslm", False), ("dslm", True), ("megatron", False), ("deepnet", True), ("xavier", False),
            ("xavier", True), ("megatron", True)]
DEEPEST_VARIANTS = 4  # at the largest depth only the first four of PRIORITY (~2.5 min each on CPU)


def plan(budget: float) -> dict:
    if budget < 4:
        return {"depths": [12, 48], "hidden": 32, "heads": 2, "seq": 32, "mbs": 4,
                "iters": {12: 6, 48: 4}, "profile_layers": 12}
    iters = int(min(200, max(30, budget * 3)))
    return {"depths": [48, 192, 1000], "hidden": 32, "heads": 2, "seq": 64, "mbs": 4,
            "iters": {48: iters, 192: max(iters // 3, 15), 1000: 8}, "profile_layers": 48}


def profile_init(p, data, vocab, seed, out_dir: Path) -> dict:
    """Measured per-layer moments at init (one step, hooks on) vs the theory predictor, DSLM and xavier Pre-LN."""
    result = {}
    for scheme in ("dslm", "xavier"):
        layers = p["profile_layers"]
        moments = C.WORK / "profile" / f"{scheme}_{layers}.jsonl"
        if moments.exists():
            moments.unlink()
        cmd = [C.REPO / "pretrain_gpt.py", *C.gpt_flags(layers, 128, 4, 128, scheme, False),
               *C.train_flags(1, 8, 1e-3, data, vocab, eval_iters=0, seed=seed),
               "--log-moments-interval", 1, "--moments-file", moments, "--activation", "gelu"]
        res = C.run_training(cmd, C.WORK / "logs" / "depth_stress" / f"profile_{scheme}.log")
        log = C.read_result(res)
        if res["rc"] != 0 or not moments.exists():
            result[scheme] = {"error": log.error or f"rc {res['rc']}", "command": res["command"]}
            continue
        measured = [json.loads(line) for line in moments.read_text().splitlines() if line.strip()]
        measured = [m for m in measured if m["iteration"] == 0]  # the init profile
        pred_json = C.WORK / "profile" / f"{scheme}_{layers}_predicted.json"
        pcmd = ["-m", "megatron.dslm.predict", "--num-layers", layers, "--hidden-size", 128,
                "--num-attention-heads", 4, "--seq-length", 128, "--init-scheme", scheme, "--model-type", "gpt",
                "--embedding-corr", log.embedding_corr if log.embedding_corr is not None else DEFAULT_EMBEDDING_CORR,
                "--hidden-dropout", 0.1, "--attention-dropout", 0.1, "--activation", "gelu",
                "--vocab-size", 30592, "--json", pred_json]
        pres = C.run_cmd(pcmd, C.WORK / "logs" / "depth_stress" / f"predict_{scheme}.log")
        predicted = json.loads(pred_json.read_text())["layers"] if pred_json.exists() else []
        result[scheme] = {"layers": layers, "hidden": 128, "seq": 128, "embedding_corr": log.embedding_corr,
                          "command": res["command"], "predict_command": pres["command"],
                          "measured": [{k: m.get(k) for k in ("layer", "forward_var", "forward_corr", "grad_var")}
                                       for m in measured],
                          "predicted": predicted}
    return result


def plot(rows, curves, profile, out: Path):
    plt = C.pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.5))
    depths = sorted({r["layers"] for r in rows})
    ax = axes[0]
    for name, c in curves.items():
        if c:
            ax.plot(*zip(*c), lw=1, label=name)
    ax.set_yscale("log")
    ax.set_xscale("symlog", linthresh=10)
    ax.set_xlabel("iteration")
    ax.set_ylabel("train loss")
    ax.set_title("depth stress: training curves (all depths)")
    ax.legend(fontsize=5, ncol=2)
    ax = axes[1]
    colors = {"trains": "tab:green", "stalled": "tab:orange", "diverged": "tab:red", "crashed": "black"}
    labels = [f"{s} {l}" for s, l in [(s, C.ln_name(p)) for s, p in PRIORITY]]
    for r in rows:
        if r.get("outcome") in colors:
            y = labels.index(f"{r['scheme']} {r['ln']}")
            x = depths.index(r["layers"])
            ax.scatter(x, y, s=300, c=colors[r["outcome"]], marker="s")
            ax.annotate(f"{r.get('last_train_loss') or 'nan'}", (x, y), ha="center", va="center", fontsize=6,
                        color="white")
    ax.set_xticks(range(len(depths)), [str(d) for d in depths])
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("layers")
    ax.set_title("outcome (green trains, orange stalled, red NaN); last train loss")
    ax = axes[2]
    for scheme, prof in profile.items():
        if "measured" not in prof:
            continue
        m = [(x["layer"], x["forward_var"]) for x in prof["measured"] if x.get("forward_var") is not None]
        pr = [(x["layer"], x["forward_var"]) for x in prof["predicted"]]
        if m:
            ax.plot(*zip(*m), "o", ms=3, label=f"{scheme} measured")
        if pr:
            ax.plot(*zip(*pr), "-", label=f"{scheme} predicted")
    ax.set_yscale("log")
    ax.set_xlabel("layer")
    ax.set_ylabel("forward variance at init")
    ax.set_title("Pre-LN GPT at init: measured vs theory predictor")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "depth_stress.png", dpi=80)
    plt.close(fig)


def gpu_scale(out):
    common = ("--seq-length 512 --max-position-embeddings 512 --micro-batch-size 4 --global-batch-size 256 "
              "--train-iters 20000 --lr 1e-4 --lr-decay-style cosine --lr-warmup-fraction 0.01 --bf16 "
              "--data-path my-corpus_text_document --split 949,50,1 --tokenizer-type BertWordPieceLowerCase "
              "--vocab-file bert-base-uncased-vocab.txt --eval-interval 1000 --eval-iters 20 --seed 1234 "
              "--recompute-granularity full --recompute-method uniform --recompute-num-layers 1 "
              "--log-moments-interval 1000")
    cmds = []
    for layers, hidden, heads, pp in ((192, 1024, 16, 4), (1000, 512, 8, 8)):
        for scheme, post in PRIORITY[:5]:
            flag = " --apply-residual-connection-post-layernorm" if post else ""
            cmds.append(f"# {layers}x{hidden} {scheme} {C.ln_name(post)}\ntorchrun --nproc_per_node 8 pretrain_gpt.py "
                        f"--pipeline-model-parallel-size {pp} --num-layers {layers} --hidden-size {hidden} "
                        f"--num-attention-heads {heads} --init-scheme {scheme}{flag} {common} "
                        f"--save ckpt/stress_{layers}x{hidden}_{scheme}_{'post' if post else 'pre'}")
    C.write_gpu_scale("depth_stress", cmds, out)


def main():
    ap = C.add_common_args(argparse.ArgumentParser(description=__doc__.splitlines()[0]), default_budget=20)
    ap.add_argument("--no-profile", action="store_true", help="skip the init profile vs predictor")
    ap.add_argument("--profile-only", action="store_true",
                    help="(re)do only the init profile vs predictor, merged into an existing depth_stress.json")
    args = ap.parse_args()
    out = Path(args.out)
    if args.gpu_scale:
        return gpu_scale(out)
    if args.profile_only:
        saved = json.loads((out / "depth_stress.json").read_text())
        t0 = time.time()
        data, vocab = C.prepare_data("gpt")
        saved["init_profile"] = profile_init(saved["plan"], data, vocab, args.seed, out)
        saved["init_profile_wall_s"] = round(time.time() - t0, 1)
        C.write_json(saved, out / "depth_stress.json")
        plot(saved["rows"], saved["curves"], saved["init_profile"], out)
        print(f"init profile merged into {out}/depth_stress.json in {time.time() - t0:.0f} s")
        return
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    p = plan(args.budget)
    data, vocab = C.prepare_data("gpt")
    budget = C.Budget(args.budget)  # data preparation (first run only) does not count
    rows, curves = [], {}
    order = [(d, v) for d in p["depths"] for v in (PRIORITY[:DEEPEST_VARIANTS] if d == p["depths"][-1] else PRIORITY)]
    for depth, (scheme, post_ln) in order:
        iters = p["iters"][depth]
        name = f"{depth}x{p['hidden']}_{scheme}_{'post' if post_ln else 'pre'}"
        row = {"layers": depth, "hidden": p["hidden"], "scheme": scheme, "ln": C.ln_name(post_ln), "iters": iters,
               "micro_batch": p["mbs"], "seq": p["seq"], "seed": args.seed}
        if budget.spent() and rows:
            rows.append({**row, "outcome": "skipped (budget)"})
            continue
        cmd = [C.REPO / "pretrain_gpt.py", *C.gpt_flags(depth, p["hidden"], p["heads"], p["seq"], scheme, post_ln),
               *C.train_flags(iters, p["mbs"], 2e-3, data, vocab, eval_iters=2, eval_points=1, seed=args.seed)]
        cmd[cmd.index("--log-interval") + 1] = 1 if iters <= 20 else max(iters // 20, 1)
        res = C.run_training(cmd, C.WORK / "logs" / "depth_stress" / f"{name}.log")
        log = C.read_result(res)
        row.update(C.summarize(log), wall_s=res["wall_s"], command=res["command"])
        grad = [f.get("grad_norm") for _, f in log.train]
        row["last_grad_norm"] = grad[-1] if grad else None
        rows.append(row)
        curves[name] = C.curve(log)
        print(f"  {name}: {row['outcome']} first {row['first_train_loss']} last {row['last_train_loss']} "
              f"({res['wall_s']} s)", flush=True)
    profile = {} if args.no_profile or budget.spent() else profile_init(p, data, vocab, args.seed, out)
    C.write_rows(rows, out / "depth_stress.csv")
    C.write_json({"budget_min": args.budget, "seed": args.seed, "wall_s": round(time.time() - t0, 1), "plan": p,
                  "rows": rows, "curves": curves, "init_profile": profile}, out / "depth_stress.json")
    plot(rows, curves, profile, out)
    print(f"wrote {out}/depth_stress.{{csv,json,png}} in {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
