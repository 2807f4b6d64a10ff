"""Depth vs width at equal non-embedding parameters (12·L·H²), per-shape-and-scheme learning rates (paper Table 1).

The paper's claim: with DSLM, deeper-narrower models beat shallow-wide ones of the same size. The protocol:

* an 8k lowercase WordPiece vocabulary trained on the training documents only (``tools/train_tokenizer.py``),
  so the transformer body, not a 30k embedding and LM head, dominates the compute of a 32-128-wide model;
* the sample corpus split by document: training (95 % of the indexed data), validation (the other 5 %) and
  held-out Wikipedia documents that neither the tokenizer nor the model ever see (scored at the end);
* GPT shapes 4×128, 16×64, 64×32 (786,432 non-embedding parameters each), sequence length 128;
* schemes DSLM Pre-LN, DSLM Post-LN, megatron Pre-LN (the standard baseline) and DeepNet Post-LN;
* phase ``grid``: for every (shape, scheme) short runs of equal token budget at each learning rate of the grid,
  extended outward along ``LR_LADDER`` while the best lr is the lowest or highest tried;
  phase ``final``: the grid's best lr (lowest validation loss) for ``--final-tokens`` tokens; phase ``seeds``: a
  second seed for the best shallow and the best deep final model;
* each final run: validation loss on the validation split, perplexity on the held-out documents
  (``tools/generate.py --score`` when that tool exists, else an evaluation-only ``pretrain_gpt.py`` pass over
  the held-out indexed data loaded from the run's checkpoint), wall time and training tokens/s.

Every run lives in ``runs/depth_vs_width/<name>/`` (gitignored) and is finished when its ``result.json`` is
there: rerunning the script skips finished runs and restarts unfinished ones, so a sweep can be stopped at any
time and resumed with the same command. Each finished run's row is also kept, tracked in git, in
``docs/results/depth_vs_width_runs/<name>.json`` beside the vocabulary it was trained with (``vocab.txt``; a
second tokenizer training would break frequency ties differently), so a fresh checkout resumes the sweep::

    nohup setsid nice -n 19 python scripts/reproduce/depth_vs_width.py --jobs 2 > runs/depth_vs_width/sweep.log 2>&1 &
    python scripts/reproduce/depth_vs_width.py --plan          # the plan and its CPU time; runs nothing
    python scripts/reproduce/depth_vs_width.py --measure       # tokens/s per shape on one thread (50 steps)
    python scripts/reproduce/depth_vs_width.py --report-only   # JSON and figure from the finished runs
    python scripts/reproduce/depth_vs_width.py --tiny --work /tmp/dvw --out /tmp/dvw   # end-to-end smoke (~1 min)

Results: ``docs/results/depth_vs_width.json`` (one row per final run) and ``depth_vs_width.png`` (validation
loss vs training tokens per shape and scheme).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import shutil
import sys
import time
from pathlib import Path

import common as C

SHAPES = [(4, 128), (16, 64), (64, 32)]
SCHEMES = [("dslm", False), ("dslm", True), ("megatron", False), ("deepnet", True)]
LR_GRID = (1e-3, 3e-3, 1e-2)
# A best lr at the edge of what was tried is no optimum: the grid then grows outward along this ladder, one value at
# a time, until the best is inside (or the ladder ends).
LR_LADDER = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1)
SEQ = 128
MICRO_BATCH = 16
SEEDS = (1234, 1235)
HELDOUT_EVERY = 50  # one document in 50 (by a hash of its title) is held out from tokenizer and model
VALID_FRACTION = 0.05
DEFAULT_WORK = C.REPO / "runs" / "depth_vs_width"
# Finished runs' rows, tracked in git: a sweep of many CPU-hours resumes from them on a fresh checkout.
KEEP = C.REPO / "docs" / "results" / "depth_vs_width_runs"
KEEP_DISABLED = False  # --tiny and --work elsewhere keep nothing in the repository

TINY = {"shapes": [(2, 32), (8, 16)], "schemes": [("dslm", False)], "lrs": (1e-3, 3e-3),
        "grid_tokens": 8 * 4 * 32, "final_tokens": 16 * 4 * 32, "seq": 32, "mbs": 4, "docs": 400, "vocab": 400,
        "eval_iters": 2, "evals": 2}
FULL = {"shapes": SHAPES, "schemes": SCHEMES, "lrs": LR_GRID, "extend_grid": True, "grid_tokens": 500_000,
        "final_tokens": 5_000_000, "seq": SEQ, "mbs": MICRO_BATCH, "docs": None, "vocab": 8192,
        "eval_iters": 16, "evals": 10}


def heads_for(hidden: int) -> int:
    return max(2, hidden // 32)


def shape_name(shape) -> str:
    return f"{shape[0]}x{shape[1]}"


def scheme_name(scheme, post_ln) -> str:
    return f"{scheme}_{'post' if post_ln else 'pre'}"


# --------------------------------------------------------------------------------------------- data

def _is_heldout(title: str) -> bool:
    return int(hashlib.sha1(title.encode("utf-8")).hexdigest(), 16) % HELDOUT_EVERY == 0


def prepare_data(work: Path, cfg: dict) -> dict:
    """Split the corpus, train the vocabulary on the training documents, build the indexed datasets (once).

    ``model.jsonl`` holds the training documents first and the validation documents last, in the counts that
    ``--split 95,5,0`` cuts at (megatron-core rounds ``0.95 · documents``), so the validation split is exactly
    the validation documents."""
    data = work / "data"
    done = data / "ready.json"
    if done.exists():
        return json.loads(done.read_text())
    corpus, _ = C.corpus_and_vocab()
    data.mkdir(parents=True, exist_ok=True)
    docs, heldout = [], []
    with open(corpus, encoding="utf-8") as fh:
        for line in fh:
            rec = json.loads(line)
            if not isinstance(rec.get("text"), str):
                continue
            (heldout if _is_heldout(rec.get("title", rec["text"][:80])) else docs).append(line)
            if cfg["docs"] and len(docs) >= cfg["docs"]:
                break
    n_train = int(round((1 - VALID_FRACTION) * len(docs)))
    # the evaluation-only pass needs a training split too: the training documents, then the held-out ones
    files = {"train": (data / "train.jsonl", docs[:n_train]), "model": (data / "model.jsonl", docs),
             "heldout": (data / "heldout.jsonl", heldout), "heldout_eval": (data / "heldout_eval.jsonl",
                                                                            docs[:n_train] + heldout)}
    for path, lines in files.values():
        tmp = path.with_suffix(".tmp")
        tmp.write_text("".join(lines), encoding="utf-8")
        os.replace(tmp, path)
    vocab = data / "vocab.txt"
    if not KEEP_DISABLED and (KEEP / "vocab.txt").exists():
        # `tokenizers` breaks ties between equally frequent merges by hash-map order, so a second training gives
        # another vocabulary; runs kept from earlier checkouts were trained on this one
        shutil.copyfile(KEEP / "vocab.txt", vocab)
    else:
        C.run_cmd([C.REPO / "tools" / "train_tokenizer.py", "--input", files["train"][0], "--vocab-size",
                   cfg["vocab"], "--output", vocab], work / "logs" / "tokenizer.log", check=True)
        if not KEEP_DISABLED:
            KEEP.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(vocab, KEEP / "vocab.txt")
    prefixes = {}
    for key in ("model", "heldout", "heldout_eval"):
        prefix = data / key
        C.run_cmd([C.REPO / "tools" / "preprocess_data.py", "--input", files[key][0], "--output-prefix", prefix,
                   "--tokenizer-type", "BertWordPieceLowerCase", "--vocab-file", vocab, "--workers", 1,
                   "--append-eod", "--log-interval", 5000], work / "logs" / f"preprocess_{key}.log", check=True)
        prefixes[key] = str(prefix) + "_text_document"
    info = {"vocab": str(vocab), "model_prefix": prefixes["model"], "heldout_prefix": prefixes["heldout_eval"],
            "heldout_split": f"{n_train},{len(heldout)},0",
            "heldout_jsonl": str(files["heldout"][0]), "documents": {"train": n_train,
                                                                       "validation": len(docs) - n_train,
                                                                       "heldout": len(files["heldout"][1])},
            "tokens": {k: _token_count(Path(p)) for k, p in prefixes.items()}, "vocab_size": _lines(vocab)}
    info["tokens"].pop("heldout_eval")
    C.write_json(info, done)
    return info


def _token_count(prefix: Path) -> int:
    return (Path(str(prefix) + ".bin").stat().st_size) // 2 if Path(str(prefix) + ".bin").exists() else 0


def _lines(path: Path) -> int:
    return sum(1 for _ in open(path, encoding="utf-8"))


# --------------------------------------------------------------------------------------------- runs

def run_flags(shape, scheme, post_ln, lr, tokens, seed, cfg, data, save=None, evals=None) -> list:
    """pretrain_gpt.py's command; ``evals`` validation points during the run (default cfg's; the grid needs
    only the last one)."""
    layers, hidden = shape
    tokens_per_step = cfg["mbs"] * cfg["seq"]
    iters = max(2, tokens // tokens_per_step)
    eval_interval = max(1, iters // (evals or cfg["evals"]))
    flags = [C.REPO / "pretrain_gpt.py", *C.gpt_flags(layers, hidden, heads_for(hidden), cfg["seq"], scheme, post_ln),
             "--micro-batch-size", cfg["mbs"], "--global-batch-size", cfg["mbs"], "--train-iters", iters,
             "--lr", lr, "--min-lr", lr / 10, "--lr-decay-style", "cosine", "--lr-warmup-fraction", 0.05,
             "--weight-decay", 0.01, "--clip-grad", 1.0, "--data-path", data["model_prefix"],
             "--split", "95,5,0", "--tokenizer-type", "BertWordPieceLowerCase", "--vocab-file", data["vocab"],
             "--log-interval", max(1, iters // 50), "--eval-interval", eval_interval,
             "--eval-iters", cfg["eval_iters"], "--data-cache-path", Path(data["vocab"]).parent / "cache",
             "--seed", seed]
    if save:
        flags += ["--save", save, "--save-interval", iters]
    return flags


def _vocab_digest(flags: list) -> str:
    vocab = Path(flags[flags.index("--vocab-file") + 1])
    return hashlib.sha1(vocab.read_bytes()).hexdigest()[:16]


def _kept(name: str, flags: list):
    """A finished run's row from the tracked keep folder (it survives a fresh checkout; ``runs/`` does not),
    refused when it was trained on another vocabulary than the one prepared here."""
    kept = KEEP / f"{name}.json"
    if not kept.exists() or KEEP_DISABLED:
        return None
    row = json.loads(kept.read_text())
    if row.get("vocab_sha1") != _vocab_digest(flags):
        sys.exit(f"error: {kept} was trained with vocabulary {row.get('vocab_sha1')}, the prepared one is "
                 f"{_vocab_digest(flags)}: remove the kept runs or prepare the same data")
    return row


def _finished(work: Path, name: str) -> bool:
    return (work / "runs" / name / "result.json").exists() or (not KEEP_DISABLED and (KEEP / f"{name}.json").exists())


def run_one(work: Path, name: str, flags: list, meta: dict, heldout: dict = None) -> dict:
    """One training run under work/runs/<name>/, skipped when its result.json (or its kept copy) exists."""
    folder = work / "runs" / name
    result = folder / "result.json"
    if result.exists():
        return json.loads(result.read_text())
    kept = _kept(name, flags)
    if kept is not None:
        return kept
    if folder.exists():  # an unfinished earlier attempt: start it again from scratch
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    res = C.run_training(flags, folder / "train.log")
    log = C.read_result(res)
    summary = C.summarize(log)
    train_s = _train_seconds(REPO_METRICS(res))
    row = {**meta, "name": name, **summary, "wall_s": res["wall_s"], "train_s": train_s,
           "tokens_per_s": round(meta["train_tokens"] / train_s, 1) if train_s else None,
           "command": res["command"], "curve": [[i * meta["tokens_per_step"], f.get("lm loss")] for i, f in log.valid],
           "rc": res["rc"], "vocab_sha1": _vocab_digest(flags)}
    if heldout is not None and res["rc"] == 0:
        row.update(score_heldout(work, name, flags, heldout, meta))
    C.write_json(row, result)
    if not KEEP_DISABLED and not name.startswith("measure_"):
        C.write_json(row, KEEP / f"{name}.json")
    return row


def REPO_METRICS(res):
    return C.REPO / res["metrics"]


def _train_seconds(metrics: Path):
    """Seconds from the loop's start line to its last train line (start-up and final evaluation excluded)."""
    last = None
    if not metrics.exists():
        return None
    for line in metrics.read_text().splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if rec.get("split") == "train" and rec.get("elapsed_s") is not None:
            last = rec["elapsed_s"]
    return last


def score_heldout(work: Path, name: str, flags: list, heldout: dict, meta: dict) -> dict:
    """Perplexity on the held-out documents with the run's checkpoint."""
    ckpt = work / "runs" / name / "ckpt"
    generate = C.REPO / "tools" / "generate.py"
    log = work / "runs" / name / "heldout.log"
    if generate.exists():
        res = C.run_cmd([generate, "--load", ckpt, "--vocab-file", heldout["vocab"], "--score",
                         heldout["heldout_jsonl"]], log)
        for line in reversed(log.read_text(errors="replace").splitlines()):
            if line.startswith("score:"):
                parts = dict(kv.split("=") for kv in line[len("score:"):].split())
                return {"heldout_ppl": float(parts["ppl"]), "heldout_nll": float(parts["nll"]),
                        "heldout_tokens": int(parts["tokens"]), "heldout_method": "tools/generate.py --score",
                        "heldout_command": res["command"]}
    # evaluation only: load the checkpoint at its last iteration, no step, evaluate the held-out documents as
    # the validation split of the training-then-held-out indexed data
    iters = flags[flags.index("--train-iters") + 1]
    cmd = list(flags)
    data_at = cmd.index("--data-path")
    cmd[data_at + 1] = heldout["heldout_prefix"]
    cmd[cmd.index("--split") + 1] = heldout["heldout_split"]
    windows = max(1, heldout["heldout_tokens"] // (meta["tokens_per_step"]))
    cmd[cmd.index("--eval-iters") + 1] = windows
    cmd[cmd.index("--eval-interval") + 1] = iters
    cmd = [c for c in cmd] + ["--load", ckpt]
    cmd = _without(cmd, "--save", 1) if "--save" in cmd else cmd
    cmd = _without(cmd, "--save-interval", 1) if "--save-interval" in cmd else cmd
    res = C.run_training(cmd, log)
    ev = C.read_result(res)
    if not ev.valid:
        return {"heldout_ppl": None, "heldout_method": "evaluation-only pretrain_gpt.py (failed)",
                "heldout_error": ev.error}
    loss = ev.valid[-1][1].get("lm loss")
    return {"heldout_ppl": round(math.exp(loss), 2) if loss is not None and math.isfinite(loss) else None,
            "heldout_nll": loss, "heldout_tokens": windows * meta["tokens_per_step"],
            "heldout_method": "evaluation-only pretrain_gpt.py --load (held-out indexed data as validation split)",
            "heldout_command": res["command"]}


def _without(cmd, flag, nargs):
    i = cmd.index(flag)
    return cmd[:i] + cmd[i + 1 + nargs:]


def meta_for(shape, scheme, post_ln, lr, tokens, seed, cfg, phase):
    tokens_per_step = cfg["mbs"] * cfg["seq"]
    iters = max(2, tokens // tokens_per_step)
    return {"model": "gpt", "phase": phase, "shape": shape_name(shape), "layers": shape[0], "hidden": shape[1],
            "heads": heads_for(shape[1]), "scheme": scheme, "ln": C.ln_name(post_ln),
            "non_embedding_params": 12 * shape[0] * shape[1] ** 2, "train_tokens": iters * tokens_per_step,
            "tokens_per_step": tokens_per_step, "iters": iters, "seq": cfg["seq"], "micro_batch": cfg["mbs"],
            "lr": lr, "seed": seed}


def grid_name(shape, scheme, post_ln, lr, seed):
    return f"grid_{shape_name(shape)}_{scheme_name(scheme, post_ln)}_lr{lr:g}_s{seed}"


def final_name(shape, scheme, post_ln, seed):
    return f"final_{shape_name(shape)}_{scheme_name(scheme, post_ln)}_s{seed}"


def best_lr(rows):
    ok = [r for r in rows if r.get("val_loss") is not None and math.isfinite(r["val_loss"])]
    return min(ok, key=lambda r: r["val_loss"])["lr"] if ok else None


def extension_lr(rows, ladder=LR_LADDER):
    """The next lr for one (shape, scheme): the ladder's neighbour beyond the best when the best is the lowest or
    the highest lr tried; None when the best is inside, nothing has finished, or the ladder ends there."""
    best = best_lr(rows)
    tried = sorted(r["lr"] for r in rows)
    if best is None or len(tried) < 2 or tried[0] < best < tried[-1]:
        return None
    at = min(range(len(ladder)), key=lambda i: abs(math.log(ladder[i] / best)))
    step = -1 if best == tried[0] else 1
    nxt = at + step
    return ladder[nxt] if 0 <= nxt < len(ladder) and ladder[nxt] not in tried else None


def _run_many(jobs: int, tasks: list) -> list:
    """Run ``tasks`` (callables returning a row) ``jobs`` at a time (each run is its own one-thread process),
    printing each finished run with the count and an ETA."""
    from concurrent.futures import ThreadPoolExecutor

    t0, done, rows = time.time(), [0], [None] * len(tasks)

    def one(i):
        rows[i] = tasks[i]()
        done[0] += 1
        left = (time.time() - t0) / done[0] * (len(tasks) - done[0])
        print(f"  [{done[0]}/{len(tasks)}] {time.time() - t0:.0f} s, ETA {left / 60:.0f} min", flush=True)

    with ThreadPoolExecutor(max(1, jobs)) as pool:
        list(pool.map(one, range(len(tasks))))
    return rows


def sweep(work: Path, cfg: dict, data: dict, budget: C.Budget, phases, on_progress=None, jobs: int = 1) -> dict:
    """Grid, then finals, then seeds; ``on_progress(result so far)`` after the grid and after each phase."""
    grid, finals = {}, {}
    progress = on_progress or (lambda result: None)
    heldout = {**data, "heldout_tokens": data["tokens"]["heldout"]}
    todo = []
    for shape in cfg["shapes"]:  # grid, every (shape, scheme, lr)
        for scheme, post_ln in cfg["schemes"]:
            key = (shape, scheme, post_ln)
            grid[key] = []
            for lr in cfg["lrs"]:
                name = grid_name(shape, scheme, post_ln, lr, SEEDS[0])
                if "grid" not in phases or (budget.spent() and not _finished(work, name)):
                    continue
                todo.append((key, name, shape, scheme, post_ln, lr))

    def grid_task(key, name, shape, scheme, post_ln, lr):
        def task():
            meta = meta_for(shape, scheme, post_ln, lr, cfg["grid_tokens"], SEEDS[0], cfg, "grid")
            row = run_one(work, name, run_flags(shape, scheme, post_ln, lr, cfg["grid_tokens"], SEEDS[0], cfg,
                                                data, evals=1), meta)
            print(f"  {name}: val {row.get('val_loss')} ({row.get('outcome')})", flush=True)
            return row
        return task

    for (key, *_), row in zip(todo, _run_many(jobs, [grid_task(*t) for t in todo])):
        grid[key].append(row)
    while cfg.get("extend_grid") and "grid" in phases:  # outward while a best lr sits at an edge
        todo = []
        for key, rows in grid.items():
            lr = extension_lr(rows) if len(rows) >= len(cfg["lrs"]) else None
            name = lr and grid_name(key[0], key[1], key[2], lr, SEEDS[0])
            if lr and not (budget.spent() and not _finished(work, name)):
                todo.append((key, name, *key, lr))
        if not todo:
            break
        for (key, *_), row in zip(todo, _run_many(jobs, [grid_task(*t) for t in todo])):
            grid[key].append(row)
    progress({"grid": grid, "finals": finals})
    keys = [key for key, rows in grid.items()
            if best_lr(rows) is not None and len(rows) >= len(cfg["lrs"]) and "final" in phases
            and not (cfg.get("extend_grid") and extension_lr(rows))]
    rows = _run_many(jobs, [lambda key=key: _final(work, key, best_lr(grid[key]), SEEDS[0], cfg, data, heldout,
                                                   budget) for key in keys])
    finals.update({key: [row] for key, row in zip(keys, rows)})
    progress({"grid": grid, "finals": finals})
    if "seeds" in phases:
        done = {k: v[0] for k, v in finals.items() if v[0] and v[0].get("val_loss") is not None}
        depth = sorted({k[0][0] for k in done})
        picks = []
        for layers in (depth[:1] + depth[-1:]) if len(depth) > 1 else []:
            cands = [(r["val_loss"], k) for k, r in done.items() if k[0][0] == layers]
            picks.append(min(cands)[1])
        extras = _run_many(jobs, [lambda key=key: _final(work, key, done[key]["lr"], SEEDS[1], cfg, data, heldout,
                                                         budget) for key in picks])
        for key, extra in zip(picks, extras):
            if extra:
                finals[key].append(extra)
        progress({"grid": grid, "finals": finals})
    return {"grid": grid, "finals": finals}


def _final(work, key, lr, seed, cfg, data, heldout, budget):
    shape, scheme, post_ln = key
    name = final_name(shape, scheme, post_ln, seed)
    if budget.spent() and not _finished(work, name):
        return None
    meta = meta_for(shape, scheme, post_ln, lr, cfg["final_tokens"], seed, cfg, "final")
    flags = run_flags(shape, scheme, post_ln, lr, cfg["final_tokens"], seed, cfg, data,
                      save=work / "runs" / name / "ckpt")
    row = run_one(work, name, flags, meta, heldout=heldout)
    print(f"  {name}: val {row.get('val_loss')} heldout ppl {row.get('heldout_ppl')} ({row.get('outcome')})",
          flush=True)
    return row


# --------------------------------------------------------------------------------------------- plan and speed

def measure(work: Path, cfg: dict, data: dict, steps: int = 50) -> dict:
    """Training tokens/s per shape (DSLM Pre-LN, one thread), from the loop's own elapsed time."""
    speeds = {}
    for shape in cfg["shapes"]:
        meta = meta_for(shape, "dslm", False, 1e-3, steps * cfg["mbs"] * cfg["seq"], 0, cfg, "measure")
        flags = run_flags(shape, "dslm", False, 1e-3, meta["train_tokens"], 0, cfg, data)
        flags[flags.index("--eval-iters") + 1] = 0
        row = run_one(work, f"measure_{shape_name(shape)}", flags, meta)
        speeds[shape_name(shape)] = {"tokens_per_s": row["tokens_per_s"], "start_s": round(row["wall_s"] - (row["train_s"] or 0), 1)}
        print(f"  {shape_name(shape)}: {row['tokens_per_s']} tokens/s, {speeds[shape_name(shape)]['start_s']} s start-up "
              f"and end", flush=True)
    C.write_json(speeds, work / "speeds.json")
    return speeds


def plan_cpu_hours(cfg: dict, speeds: dict) -> dict:
    """CPU time of the whole protocol from measured tokens/s (one thread per run); evaluation ~ +10 %."""
    n_sch = len(cfg["schemes"])
    total = {"grid": 0.0, "final": 0.0, "seeds": 0.0}
    for shape in cfg["shapes"]:
        s = speeds[shape_name(shape)]
        per = lambda tokens: tokens / s["tokens_per_s"] * 1.1 + s["start_s"]
        total["grid"] += n_sch * len(cfg["lrs"]) * per(cfg["grid_tokens"])
        total["final"] += n_sch * (per(cfg["final_tokens"]) + 60)  # + held-out scoring
    slowest = max(cfg["shapes"], key=lambda sh: cfg["final_tokens"] / speeds[shape_name(sh)]["tokens_per_s"])
    total["seeds"] = 2 * (cfg["final_tokens"] / speeds[shape_name(slowest)]["tokens_per_s"] * 1.1 + 60)
    total = {k: round(v / 3600, 2) for k, v in total.items()}
    total["all"] = round(sum(total.values()), 2)
    return total


# --------------------------------------------------------------------------------------------- output

def write_results(work: Path, out: Path, cfg: dict, data: dict, result: dict) -> None:
    rows = [r for rs in result["finals"].values() for r in rs if r]
    grid = {f"{shape_name(k[0])} {scheme_name(k[1], k[2])}": {str(r["lr"]): r.get("val_loss") for r in rs}
            for k, rs in result["grid"].items() if rs}
    keep = ("shape", "scheme", "ln", "layers", "hidden", "heads", "non_embedding_params", "train_tokens", "lr",
            "seed", "val_loss", "val_ppl", "heldout_ppl", "heldout_nll", "heldout_tokens", "heldout_method",
            "wall_s", "train_s", "tokens_per_s", "outcome", "command", "heldout_command", "curve")
    speeds = json.loads((work / "speeds.json").read_text()) if (work / "speeds.json").exists() else {}
    record = {"protocol": {"shapes": [shape_name(s) for s in cfg["shapes"]],
                           "schemes": [scheme_name(*s) for s in cfg["schemes"]], "lr_grid": list(cfg["lrs"]),
                           "grid_tokens": cfg["grid_tokens"], "final_tokens": cfg["final_tokens"], "seq": cfg["seq"],
                           "micro_batch": cfg["mbs"], "seeds": list(SEEDS), "data": _relative(data)},
              "speeds_1_thread": speeds, "lr_grid_val_loss": grid,
              "plan": {"gpt": {"iters": None, "mbs": cfg["mbs"], "seq": cfg["seq"], "lr": "per shape and scheme"}},
              "seed": SEEDS[0],
              "rows": [{**{k: r.get(k) for k in keep}, "model": "gpt"} for r in rows],
              "runs_finished": len({p.parent.name for p in (work / "runs").glob("*/result.json")
                                    if not p.parent.name.startswith("measure_")}
                                   | ({p.stem for p in KEEP.glob("*.json")} if not KEEP_DISABLED else set())),
              "final_runs_expected": len(cfg["shapes"]) * len(cfg["schemes"]) + 2}
    record["status"] = "complete" if len(rows) >= record["final_runs_expected"] else "in progress"
    if speeds:
        record["cpu_hours_planned"] = plan_cpu_hours(cfg, speeds)
    C.write_json(record, out / "depth_vs_width.json")
    C.write_rows([{k: v for k, v in r.items() if k != "curve"} for r in record["rows"]], out / "depth_vs_width.csv")
    plot(rows, cfg, out / "depth_vs_width.png")
    print(f"wrote {out}/depth_vs_width.json ({len(rows)} final rows) and depth_vs_width.png", flush=True)


def _relative(data: dict) -> dict:
    """Paths under the repository as repository-relative strings (the JSON is committed)."""
    def rel(v):
        return os.path.relpath(v, C.REPO) if isinstance(v, str) and v.startswith(str(C.REPO)) else v
    return {k: rel(v) for k, v in data.items()}


def plot(rows, cfg, path: Path) -> None:
    if not rows:
        return
    plt = C.pyplot()
    fig, axes = plt.subplots(1, len(cfg["schemes"]), figsize=(4.2 * len(cfg["schemes"]), 3.6), squeeze=False,
                             sharey=True)
    for ax, (scheme, post_ln) in zip(axes[0], cfg["schemes"]):
        for r in sorted(rows, key=lambda r: (r["layers"], r["seed"])):
            if r["scheme"] != scheme or r["ln"] != C.ln_name(post_ln) or not r.get("curve"):
                continue
            xs = [p[0] / 1e6 for p in r["curve"] if p[1] is not None]
            ys = [p[1] for p in r["curve"] if p[1] is not None]
            ax.plot(xs, ys, marker=".", lw=1, ls="-" if r["seed"] == SEEDS[0] else ":",
                    label=f"{r['shape']} lr {r['lr']:g} s{r['seed']}")
        ax.set_title(f"{scheme} {C.ln_name(post_ln)}", fontsize=9)
        ax.set_xlabel("training tokens (M)")
        ax.legend(fontsize=6)
    axes[0][0].set_ylabel("validation loss")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=90)
    os.replace(tmp, path)
    plt.close(fig)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", default=str(DEFAULT_WORK), help="state folder (runs, data, logs); resumable")
    ap.add_argument("--out", default=str(C.DEFAULT_OUT), help="where depth_vs_width.json/png go")
    ap.add_argument("--budget", type=float, default=None,
                    help="minutes: launch no new run after this (finished runs are kept; rerun to continue)")
    ap.add_argument("--phases", default="grid,final,seeds", help="comma list of grid, final, seeds")
    ap.add_argument("--grid-tokens", type=int, default=None, help="tokens per lr-grid run")
    ap.add_argument("--final-tokens", type=int, default=None, help="tokens per final run")
    ap.add_argument("--jobs", type=int, default=1, help="runs at a time (each one thread); 2 on a 2-core machine")
    ap.add_argument("--tiny", action="store_true", help="two tiny shapes, two schemes, 400 documents: smoke check")
    ap.add_argument("--plan", action="store_true", help="print the protocol's CPU time from measured speeds")
    ap.add_argument("--measure", action="store_true", help="measure tokens/s per shape (one thread) and stop")
    ap.add_argument("--report-only", action="store_true", help="write the JSON and figure from finished runs")
    ap.add_argument("--prepare-only", action="store_true",
                    help="split the corpus, train the vocabulary, build the indexed data; print the prefixes")
    ap.add_argument("--seed", type=int, default=None, help="accepted for run_all.py; seeds are fixed (1234, 1235)")
    ap.add_argument("--gpu-scale", action="store_true", help="see scripts/reproduce/gpu_quick.sh")
    args = ap.parse_args()
    if args.gpu_scale:
        print("the one-GPU depth-vs-width comparison is scripts/reproduce/gpu_quick.sh")
        return 0
    cfg = dict(TINY if args.tiny else FULL)
    for key in ("grid_tokens", "final_tokens"):
        if getattr(args, key) is not None:
            if getattr(args, key) < cfg["mbs"] * cfg["seq"] * 2:
                sys.exit(f"error: --{key.replace('_', '-')} {getattr(args, key)} is under two steps "
                         f"({cfg['mbs'] * cfg['seq']} tokens each)")
            cfg[key] = getattr(args, key)
    phases = set(args.phases.split(","))
    if not phases <= {"grid", "final", "seeds"}:
        sys.exit(f"error: --phases takes grid, final, seeds; got {args.phases}")
    work, out = Path(args.work), Path(args.out)
    work.mkdir(parents=True, exist_ok=True)
    global KEEP_DISABLED
    KEEP_DISABLED = args.tiny or work.resolve() != DEFAULT_WORK.resolve()
    t0 = time.time()
    data = prepare_data(work, cfg)
    print(f"data: {data['documents']} documents, {data['tokens']} tokens, vocab {data['vocab_size']}", flush=True)
    if args.prepare_only:
        print(f"model data: {data['model_prefix']}\nvocab: {data['vocab']}")
        return 0
    if args.measure or args.plan:
        speeds = measure(work, cfg, data)
        hours = plan_cpu_hours(cfg, speeds)
        print(f"CPU time of the protocol (one thread per run, hours): {hours}")
        return 0
    budget = C.Budget(args.budget if args.budget is not None else 1e9)
    if args.report_only:  # every phase, but no run is launched: only finished ones are read
        budget = C.Budget(0)
    if args.jobs < 1:
        sys.exit(f"error: --jobs {args.jobs}: at least 1")
    result = sweep(work, cfg, data, budget, phases,
                   on_progress=lambda partial: write_results(work, out, cfg, data, partial), jobs=args.jobs)
    write_results(work, out, cfg, data, result)
    print(f"done in {time.time() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
