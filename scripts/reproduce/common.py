"""Shared helpers for the miniature reproductions of Kedia et al. 2024: data, launching, log parsing, output.

Every experiment launches the product's own entry points (``pretrain_gpt.py``, ``pretrain_bert.py``,
``tasks/main.py``) as subprocesses; pretraining runs write the training loop's JSONL metrics file
(``--metrics-file``, format in ``megatron/training/metrics.py``) and the numbers come from there, so each
printed command can be rerun by hand and gives the same row (same seed, same data prefix, CPU fp32).
The human log (stdout) is kept per run for reading and for the last error line.

The experiments run as scripts (``python scripts/reproduce/<name>.py``), so this folder is on ``sys.path``
and they import this module as ``common``.
"""

from __future__ import annotations

import csv
import json
import math
import os
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional

REPO = Path(__file__).resolve().parents[2]
SHARED = Path(os.environ.get("DSLM_SHARED_DATA", REPO.parent / "shared" / "data"))
DEFAULT_OUT = REPO / "docs" / "results"
WORK = REPO / "data" / "reproduce"  # gitignored: indexed data, checkpoints, logs
SEED = 1234

# Pre-LN schemes and Post-LN schemes compared everywhere; deepnet is a Post-LN method only.
PRE_LN_SCHEMES = ("megatron", "xavier", "dslm")
POST_LN_SCHEMES = ("megatron", "xavier", "deepnet", "dslm")


def variants(schemes=None) -> List[tuple]:
    """(scheme, post_ln) pairs in a fixed order; ``schemes`` filters by name."""
    pairs = [(s, False) for s in PRE_LN_SCHEMES] + [(s, True) for s in POST_LN_SCHEMES]
    return [p for p in pairs if schemes is None or p[0] in schemes]


def ln_name(post_ln: bool) -> str:
    return "Post-LN" if post_ln else "Pre-LN"


# --------------------------------------------------------------------------------------------- data

def corpus_and_vocab() -> tuple:
    """../shared/data's corpus and vocab when present, else the sample corpus fetched by the product's tool."""
    corpus, vocab = SHARED / "corpus" / "wiki-sample.jsonl", SHARED / "vocab" / "bert-base-uncased-vocab.txt"
    if corpus.exists() and vocab.exists():
        return corpus, vocab
    sample = REPO / "data" / "sample"
    if not (sample / "wiki-sample.jsonl").exists():
        run_cmd([REPO / "tools" / "download_sample_corpus.py", "--output-dir", sample], WORK / "logs" / "download.log")
    return sample / "wiki-sample.jsonl", sample / "bert-base-uncased-vocab.txt"


def prepare_data(kind: str, max_docs: Optional[int] = None) -> tuple:
    """Indexed dataset prefix for ``kind`` 'gpt' (documents + EOD) or 'bert' (sentence-split); (prefix, vocab).

    Built once under data/reproduce/ with tools/preprocess_data.py and reused afterwards."""
    corpus, vocab = corpus_and_vocab()
    tag = f"{kind}{max_docs or 'all'}"
    prefix = WORK / f"wiki_{tag}"
    suffix = "_text_sentence" if kind == "bert" else "_text_document"
    if not Path(f"{prefix}{suffix}.idx").exists():
        WORK.mkdir(parents=True, exist_ok=True)
        src = corpus
        if max_docs:
            src = WORK / f"corpus_{max_docs}.jsonl"
            with open(corpus, encoding="utf-8") as f, open(src, "w", encoding="utf-8") as g:
                for i, line in enumerate(f):
                    if i >= max_docs:
                        break
                    g.write(line)
        cmd = [REPO / "tools" / "preprocess_data.py", "--input", src, "--output-prefix", prefix,
               "--tokenizer-type", "BertWordPieceLowerCase", "--vocab-file", vocab, "--workers", 1,
               "--log-interval", 5000]
        cmd += ["--split-sentences"] if kind == "bert" else ["--append-eod"]
        run_cmd(cmd, WORK / "logs" / f"preprocess_{tag}.log", check=True)
    return Path(f"{prefix}{suffix}"), vocab


# --------------------------------------------------------------------------------------------- launching

def subprocess_env() -> Dict[str, str]:
    # One thread: the 2-core machine is shared, and OpenMP spin-waiting on oversubscribed cores made a
    # 64-layer run ~20x slower with 2 threads than with 1 (measured while writing this).
    return dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"), HF_HUB_OFFLINE="1",
                HF_DATASETS_OFFLINE="1", PYTHONWARNINGS="ignore", PYTHONPATH=str(REPO))


def format_cmd(cmd) -> str:
    return "python " + " ".join(shlex.quote(str(c)) for c in cmd)


def run_cmd(cmd, log: Path, check: bool = False, timeout: Optional[float] = None) -> dict:
    """Run ``python cmd...`` from the repo root, output to ``log``; returns rc, wall seconds and the command."""
    log = Path(log)
    log.parent.mkdir(parents=True, exist_ok=True)
    shown = format_cmd([os.path.relpath(c, REPO) if isinstance(c, Path) else c for c in cmd])
    print("$ " + shown, flush=True)
    t0 = time.time()
    with open(log, "w") as f:
        try:
            rc = subprocess.run([sys.executable, *map(str, cmd)], cwd=REPO, env=subprocess_env(), stdout=f,
                                stderr=subprocess.STDOUT, timeout=timeout).returncode
        except subprocess.TimeoutExpired:
            rc = "timeout"
    wall = time.time() - t0
    if check and rc != 0:
        sys.exit(f"failed ({rc}); see {log}:\n" + "".join(open(log).readlines()[-30:]))
    return {"rc": rc, "wall_s": round(wall, 1), "command": shown, "log": os.path.relpath(log, REPO)}


def run_training(cmd, log: Path, timeout: Optional[float] = None) -> dict:
    """:func:`run_cmd` for a pretraining entry point, writing its metrics next to ``log`` (any old file removed:
    the loop appends). The result's ``metrics`` is that file, relative to the repo."""
    metrics = Path(log).with_suffix(".metrics.jsonl")
    metrics.parent.mkdir(parents=True, exist_ok=True)
    if metrics.exists():
        metrics.unlink()
    res = run_cmd([*cmd, "--metrics-file", metrics], log, timeout=timeout)
    res["metrics"] = os.path.relpath(metrics, REPO)
    return res


# --------------------------------------------------------------------------------------------- reading

@dataclass
class RunLog:
    train: List[tuple] = field(default_factory=list)  # (iteration, {key: value}) per log interval
    valid: List[tuple] = field(default_factory=list)  # (iteration, {key: value}) incl. end of training
    nan_iters: int = 0
    skipped_iters: int = 0
    embedding_corr: Optional[float] = None
    error: str = ""


def error_line(log: Path) -> str:
    """The last error-looking line of a run's human log ('' if none or no log)."""
    path = Path(log)
    lines = path.read_text(errors="replace").splitlines() if path.exists() else []
    errors = [ln for ln in lines if "Error" in ln or "error:" in ln or "Traceback" in ln]
    return errors[-1].strip()[:300] if errors else ""


def read_run(metrics: Path, log: Optional[Path] = None) -> RunLog:
    """A run's metrics file as a RunLog (its last error line from ``log``, when given)."""
    out = RunLog(error=error_line(log) if log is not None else "")
    path = Path(metrics)
    lines = path.read_text(encoding="utf-8").splitlines() if path.exists() else []
    for line in lines:
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:  # a line cut short by a killed run
            continue
        if rec.get("event") == "start":
            out.embedding_corr = rec.get("embedding_corr", out.embedding_corr)
        elif rec.get("split") in ("train", "validation"):
            # null is how the writer stores a non-finite number
            values = {k: float("nan") if v is None else v for k, v in rec.items()
                      if k not in ("split", "iteration", "end_of_training") and not isinstance(v, str)}
            if rec["split"] == "train":
                out.train.append((rec["iteration"], values))
                out.nan_iters += int(rec.get("nan_iterations") or 0)
                out.skipped_iters += int(rec.get("skipped") or 0)
            else:
                out.valid.append((rec["iteration"], values))
    return out


def read_result(res: dict) -> RunLog:
    """The RunLog of a :func:`run_training` result."""
    return read_run(REPO / res["metrics"], REPO / res["log"])


def summarize(log: RunLog, loss_key: str = "lm loss") -> dict:
    """first/last train loss, final validation loss and PPL, and an outcome word.

    outcome: 'diverged' (NaN/inf loss, or a crash), 'stalled' (last train loss not below the first by 2%),
    'trains' otherwise."""
    train = [(i, f[loss_key]) for i, f in log.train if loss_key in f]
    first = train[0][1] if train else float("nan")
    last = train[-1][1] if train else float("nan")
    val = log.valid[-1][1].get(loss_key, float("nan")) if log.valid else float("nan")
    nan_seen = log.nan_iters > 0 or any(not math.isfinite(v) for _, v in train) or (log.valid and not math.isfinite(val))
    if nan_seen or log.error:
        outcome = "diverged" if nan_seen else "crashed"
    elif not train:
        outcome = "no log"
    elif last > first * 0.98:
        outcome = "stalled"
    else:
        outcome = "trains"
    return {"first_train_loss": _r(first), "last_train_loss": _r(last), "val_loss": _r(val),
            "val_ppl": _r(math.exp(min(val, 20)) if math.isfinite(val) else float("nan"), 1),
            "nan_iters": log.nan_iters, "outcome": outcome, "embedding_corr": log.embedding_corr,
            "error": log.error}


def _r(x, nd=4):
    return round(x, nd) if isinstance(x, float) and math.isfinite(x) else (None if x != x else x)


# --------------------------------------------------------------------------------------------- model flags

def gpt_flags(layers: int, hidden: int, heads: int, seq: int, scheme: str, post_ln: bool) -> list:
    flags = ["--num-layers", layers, "--hidden-size", hidden, "--num-attention-heads", heads,
             "--seq-length", seq, "--max-position-embeddings", seq, "--init-scheme", scheme]
    return flags + (["--apply-residual-connection-post-layernorm"] if post_ln else [])


def train_flags(iters: int, mbs: int, lr: float, data, vocab, split="949,50,1", eval_iters=4,
                eval_points=4, seed=SEED) -> list:
    """Optimizer/data/logging flags shared by every pretraining run (cosine decay, warmup 5%, clip 1)."""
    return ["--micro-batch-size", mbs, "--global-batch-size", mbs, "--train-iters", iters,
            "--lr", lr, "--min-lr", lr / 10, "--lr-decay-style", "cosine", "--lr-warmup-fraction", 0.05,
            "--weight-decay", 0.01, "--clip-grad", 1.0, "--data-path", data, "--split", split,
            "--tokenizer-type", "BertWordPieceLowerCase", "--vocab-file", vocab,
            "--log-interval", max(iters // 20, 1), "--eval-interval", max(iters // eval_points, 1),
            "--eval-iters", eval_iters, "--data-cache-path", WORK / "cache", "--seed", seed]


# --------------------------------------------------------------------------------------------- output

def write_rows(rows: List[dict], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    keys = []
    for r in rows:
        keys += [k for k in r if k not in keys and not isinstance(r[k], (list, dict))]
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)


def write_json(obj, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1, default=str))
    tmp.replace(path)


def curve(log: RunLog, loss_key: str = "lm loss") -> List[list]:
    return [[i, f[loss_key]] for i, f in log.train if loss_key in f]


def pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


class Budget:
    """Wall-clock allowance for an experiment: runs are skipped (and reported as such) once it is spent."""

    def __init__(self, minutes: float):
        self.minutes = minutes
        self.deadline = time.time() + minutes * 60

    def left_s(self) -> float:
        return self.deadline - time.time()

    def spent(self) -> bool:
        return self.left_s() <= 0


def add_common_args(p, default_budget: float):
    p.add_argument("--budget", type=float, default=default_budget,
                   help="wall-clock minutes on a 2-core CPU; sizes and iterations scale with it")
    p.add_argument("--out", default=str(DEFAULT_OUT), help="where the CSV/JSON and PNG go")
    p.add_argument("--seed", type=int, default=SEED)
    p.add_argument("--gpu-scale", action="store_true",
                   help="print and write the paper-scale argument sets (8 GPUs) without running anything")
    return p


def write_gpu_scale(name: str, commands: List[str], out: Path) -> None:
    text = "\n\n".join(commands) + "\n"
    print(text)
    path = Path(out) / f"{name}_gpu_scale.sh"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/usr/bin/env bash\n# Paper-scale argument sets (not run here). Generated by "
                    f"scripts/reproduce/{name}.py --gpu-scale.\nset -euo pipefail\n\n" + text)
    print(f"written {os.path.relpath(path, REPO)}")
