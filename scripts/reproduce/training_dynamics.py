"""What happens to the moments once training starts: 48×128 GPT, DSLM vs megatron init, three learning rates.

DSLM conserves the forward/backward moments at init; this measures per-layer forward variance, token correlation
and gradient variance at iterations 0, 10, 50, 100, 500 and 1000 (iteration k = the model after k updates,
``--log-moments-interval 10``) for the quickstart's model (48 layers × 128, seq 64, micro-batch 4, dropout 0.1,
the sample corpus with the bert-base-uncased vocabulary, cosine schedule with 5 % warmup).

Each run lives in ``runs/training_dynamics/<name>/`` (gitignored); a finished run's summary is also kept in
``docs/results/training_dynamics_runs/<name>.json`` (tracked); reruns skip finished runs, so the same command resumes a stopped sweep::

    nohup setsid nice -n 19 python scripts/reproduce/training_dynamics.py > runs/training_dynamics/sweep.log 2>&1 &
    python scripts/reproduce/training_dynamics.py --report-only      # table, JSON and figure from finished runs
    python scripts/reproduce/training_dynamics.py --tiny --work /tmp/td --out /tmp/td   # smoke check

Writes ``docs/results/training_dynamics.json`` (per run and iteration: max/top-layer forward variance, max
token correlation, layers with correlation > 0.9, gradient-variance spread; validation loss) and
``training_dynamics.png``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import time
from pathlib import Path

import common as C

ITERATIONS = (0, 10, 50, 100, 500, 1000)
SCHEMES = ("dslm", "megatron")
LRS = (5e-4, 2e-3, 8e-3)  # the quickstart's 2e-3, a quarter of it and four times it
# Today's decoder shape next to the classic one (same depth, width, data, schedule and tokens): RMSNorm, SwiGLU,
# RoPE, grouped-query attention (2 groups of the 4 heads), no biases, untied output layer.
LLAMA_FLAGS = ["--normalization", "RMSNorm", "--swiglu", "--position-embedding-type", "rope",
               "--group-query-attention", "--num-query-groups", 2, "--disable-bias-linear",
               "--untie-embeddings-and-output-weights"]
FULL = {"layers": 48, "hidden": 128, "heads": 4, "seq": 64, "mbs": 4, "iters": 1001, "interval": 10,
        "iterations": ITERATIONS, "schemes": SCHEMES, "lrs": LRS, "llama": (("dslm", 2e-3),), "eval_iters": 20,
        "max_docs": None}
TINY = {"layers": 4, "hidden": 32, "heads": 2, "seq": 32, "mbs": 2, "iters": 11, "interval": 5,
        "iterations": (0, 5, 10), "schemes": ("dslm",), "lrs": (2e-3,), "llama": (("dslm", 2e-3),), "eval_iters": 2,
        "max_docs": 200}
DEFAULT_WORK = C.REPO / "runs" / "training_dynamics"
DEFAULT_KEEP = C.REPO / "docs" / "results" / "training_dynamics_runs"  # tracked: finished runs survive a checkout


def run_name(scheme: str, lr: float, cfg: dict, llama: bool = False) -> str:
    return f"{cfg['layers']}x{cfg['hidden']}_{'llama_' if llama else ''}{scheme}_lr{lr:g}"


def command(scheme: str, lr: float, cfg: dict, data: Path, vocab: Path, folder: Path, llama: bool = False) -> list:
    return [C.REPO / "pretrain_gpt.py", *C.gpt_flags(cfg["layers"], cfg["hidden"], cfg["heads"], cfg["seq"], scheme,
                                                    False),
            "--micro-batch-size", cfg["mbs"], "--global-batch-size", cfg["mbs"], "--train-iters", cfg["iters"],
            "--lr", lr, "--min-lr", lr / 10, "--lr-decay-style", "cosine", "--lr-warmup-fraction", 0.05,
            "--weight-decay", 0.01, "--clip-grad", 1.0, "--hidden-dropout", 0.1, "--attention-dropout", 0.1,
            "--data-path", data, "--split", "98,2,0", "--tokenizer-type", "BertWordPieceLowerCase",
            "--vocab-file", vocab, "--log-interval", cfg["interval"],
            "--eval-interval", max(1, (cfg["iters"] - 1) // 5), "--eval-iters", cfg["eval_iters"],
            "--data-cache-path", C.WORK / "cache", "--seed", C.SEED,
            "--log-moments-interval", cfg["interval"], "--moments-file", folder / "moments.jsonl",
            *(LLAMA_FLAGS if llama else [])]


def read_moments(path: Path) -> dict:
    """{iteration: [records sorted by layer]}."""
    out = {}
    if not path.exists():
        return out
    for line in path.read_text().splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        out.setdefault(rec["iteration"], {})[rec["layer"]] = rec
    return {it: [recs[k] for k in sorted(recs)] for it, recs in out.items()}


def summarize_iteration(records: list) -> dict:
    """The bounds the quickstart needs and the shape of the profile at one iteration (layers >= 1)."""
    body = [r for r in records if r["layer"] >= 1]
    fv = [r["forward_var"] for r in body if r.get("forward_var") is not None]
    fc = [r["forward_corr"] for r in body if r.get("forward_corr") is not None]
    gv = [r["grad_var"] for r in body if r.get("grad_var") and r["grad_var"] > 0]
    return {"embedding_var": records[0].get("forward_var") if records and records[0]["layer"] == 0 else None,
            "max_forward_var": max(fv) if fv else None, "top_forward_var": fv[-1] if fv else None,
            "max_forward_corr": max(fc) if fc else None,
            "layers_corr_above_0.9": sum(c > 0.9 for c in fc),
            "grad_var_max_over_min": max(gv) / min(gv) if gv else None,
            "bottom_grad_var": gv[0] if gv else None, "top_grad_var": gv[-1] if gv else None}


def run_one(work: Path, keep: Path, scheme: str, lr: float, cfg: dict, data: Path, vocab: Path,
            llama: bool = False) -> dict:
    name = run_name(scheme, lr, cfg, llama)
    folder = work / "runs" / name
    result = folder / "result.json"
    kept = keep / f"{name}.json"
    for done in (kept, result):
        if done.exists():
            return json.loads(done.read_text())
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    res = C.run_training(command(scheme, lr, cfg, data, vocab, folder, llama), folder / "train.log")
    log = C.read_result(res)
    moments = read_moments(folder / "moments.jsonl")
    row = {"name": name, "scheme": scheme, "lr": lr, "arch": "llama" if llama else "classic", **C.summarize(log),
           "wall_s": res["wall_s"],
           "command": res["command"], "valid_curve": [[i, f.get("lm loss")] for i, f in log.valid],
           "iterations": {str(it): summarize_iteration(moments[it]) for it in cfg["iterations"] if it in moments},
           "profiles": {str(it): [{k: r.get(k) for k in ("layer", "forward_var", "forward_corr", "grad_var")}
                                  for r in moments[it]] for it in cfg["iterations"] if it in moments}}
    C.write_json(row, result)
    C.write_json(row, kept)
    print(f"  {name}: val {row['val_loss']} ({row['outcome']}, {res['wall_s']} s)", flush=True)
    return row


def plot(rows: list, cfg: dict, path: Path) -> None:
    if not rows:
        return
    plt = C.pyplot()
    keys = (("forward_var", "forward variance", True), ("forward_corr", "token correlation", False),
            ("grad_var", "gradient variance", True))
    fig, axes = plt.subplots(len(rows), 3, figsize=(12, 2.6 * len(rows)), squeeze=False)
    cmap = plt.get_cmap("viridis")
    for ri, row in enumerate(rows):
        for ci, (key, label, log) in enumerate(keys):
            ax = axes[ri][ci]
            its = [it for it in cfg["iterations"] if str(it) in row["profiles"]]
            for n, it in enumerate(its):
                prof = [p for p in row["profiles"][str(it)] if p.get(key) is not None]
                ax.plot([p["layer"] for p in prof], [p[key] for p in prof], lw=1,
                        color=cmap(n / max(len(its) - 1, 1)), label=f"it {it}")
            if log:
                ax.set_yscale("log")
            arch = "Llama-shaped " if row.get("arch") == "llama" else ""
            ax.set_title(f"{arch}{row['scheme']} lr {row['lr']:g}: {label}", fontsize=8)
            if ri == len(rows) - 1:
                ax.set_xlabel("layer (0 = embedding)")
            if ci == 0:
                ax.legend(fontsize=6)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=80)
    os.replace(tmp, path)
    plt.close(fig)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", default=str(DEFAULT_WORK))
    ap.add_argument("--out", default=str(C.DEFAULT_OUT))
    ap.add_argument("--keep", default=None, help="where each finished run's summary is kept (default: "
                    "docs/results/training_dynamics_runs, or <work>/kept with --tiny)")
    ap.add_argument("--tiny", action="store_true", help="a 4×32 model, 11 steps: smoke check")
    ap.add_argument("--report-only", action="store_true", help="no new runs; JSON and figure from finished ones")
    args = ap.parse_args()
    cfg = TINY if args.tiny else FULL
    work, out = Path(args.work), Path(args.out)
    keep = Path(args.keep) if args.keep else (work / "kept" if args.tiny else DEFAULT_KEEP)
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    data, vocab = C.prepare_data("gpt", cfg["max_docs"])
    rows = []
    plan = [(scheme, lr, False) for scheme in cfg["schemes"] for lr in cfg["lrs"]]
    plan += [(scheme, lr, True) for scheme, lr in cfg["llama"]]
    for scheme, lr, llama in plan:
        name = run_name(scheme, lr, cfg, llama)
        done = (work / "runs" / name / "result.json").exists() or (keep / f"{name}.json").exists()
        if args.report_only and not done:
            continue
        rows.append(run_one(work, keep, scheme, lr, cfg, data, vocab, llama))
    record = {"model": {k: cfg[k] for k in ("layers", "hidden", "heads", "seq", "mbs", "iters", "interval")},
              "iterations": list(cfg["iterations"]),
              "rows": [{k: v for k, v in r.items() if k != "profiles"} for r in rows],
              "profiles": {r["name"]: r["profiles"] for r in rows}}
    C.write_json(record, out / "training_dynamics.json")
    plot(rows, cfg, out / "training_dynamics.png")
    print(f"wrote {out}/training_dynamics.json ({len(rows)} runs) and training_dynamics.png in "
          f"{time.time() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
