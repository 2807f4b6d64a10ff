"""One-GPU acceptance run: does the stack train, finetune, resume, log moments and reach its speed on this machine?

Every check is one row of a pass/fail table (name, result, the number it measured, seconds) and runs in its
own subprocess with a timeout, so one failing check never stops the others; the exit status is 1 when any
row fails. ``scripts/gpu_acceptance.sh`` is the launcher.

    bash scripts/gpu_acceptance.sh                  # one GPU, bf16, about 8 minutes
    bash scripts/gpu_acceptance.sh --cpu            # the same checks at tiny shapes in fp32 (a few minutes)
    bash scripts/gpu_acceptance.sh --peak-tflops 989 --out runs/acceptance

Rows: GPT and BERT pretraining (megatron and DSLM init, Pre- and Post-LN; mock GPT data, a generated BERT
corpus), MNLI finetuning from one of the BERT checkpoints, save -> resume (the loss of the first resumed step
equals the uninterrupted run's, read from the --metrics-file JSONL), per-layer moment logging, and tokens/s
with model-FLOPs utilisation of our default path next to stock megatron-core's local spec (timed by
``scripts/bench_train.py``'s own step functions, interleaved in one process).

MFU = tokens/s * (6 N + 12 L h s) / peak, N = all parameters of the GPT (tied embeddings counted once: the
logit projection is the matmul they do), 12 L h s the attention score and value matmuls per token (forward
and backward, no causal discount, as Megatron-LM reports it). Peak bf16 dense FLOP/s comes from PEAK_BF16_TFLOPS
by device name, or --peak-tflops.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import importlib.util
import json
import math
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, List, Optional, Sequence

REPO = Path(__file__).resolve().parents[1]

# Dense bf16 tensor-core peak in TFLOP/s (vendor data sheets, no sparsity); the first name contained in the
# device name wins, so the more specific names come first.
PEAK_BF16_TFLOPS = [
    ("H100 PCIe", 756.0), ("H100 NVL", 835.0), ("H100", 989.0), ("H200", 989.0), ("H800", 989.0),
    ("GH200", 989.0), ("B200", 2250.0), ("A100", 312.0), ("A800", 312.0), ("L40S", 362.0),
    ("L4", 121.0), ("A10", 125.0),
]

GPT_VOCAB = 1023  # +1 EOD = 1024 (a multiple of 128: no padding)


# ------------------------------------------------------------------------------------ FLOPs arithmetic

def gpt_params(layers: int, hidden: int, seq: int, vocab: int) -> int:
    """Parameters of megatron-core's GPT (local spec, 4h MLP, biases, learned positions, tied output)."""
    per_layer = 12 * hidden * hidden + 13 * hidden  # QKV 3h^2+3h, proj h^2+h, fc1 4h^2+4h, fc2 4h^2+h, 2 LN 4h
    return layers * per_layer + vocab * hidden + seq * hidden + 2 * hidden  # + word, position, final LN


def flops_per_token(layers: int, hidden: int, seq: int, vocab: int) -> float:
    """Model FLOPs of one trained token: 6 N (matmuls, forward + backward) + 12 L h s (attention)."""
    return 6.0 * gpt_params(layers, hidden, seq, vocab) + 12.0 * layers * hidden * seq


def mfu(tokens_per_s: float, layers: int, hidden: int, seq: int, vocab: int, peak_tflops: Optional[float]):
    """Model-FLOPs utilisation in [0, 1], or None without a peak."""
    if not peak_tflops:
        return None
    return tokens_per_s * flops_per_token(layers, hidden, seq, vocab) / (peak_tflops * 1e12)


def peak_tflops_for(device_name: str) -> Optional[float]:
    for name, peak in PEAK_BF16_TFLOPS:
        if name.lower() in device_name.lower():
            return peak
    return None


# ------------------------------------------------------------------------------------ rows and the table

class CheckFailed(Exception):
    """A check ran and its number is not acceptable (message: what was measured)."""


@dataclass
class Row:
    name: str
    check: Callable[["Row"], str]  # returns the measured number as text; raises CheckFailed (or anything) to fail
    wave: int = 0  # rows of a wave run together; a wave starts after the previous one finished
    log: Optional[Path] = None
    passed: bool = False
    measured: str = ""
    seconds: float = 0.0


def run_row(row: Row) -> Row:
    t0 = time.time()
    try:
        row.measured = row.check(row)
        row.passed = True
    except CheckFailed as exc:
        row.measured = str(exc)
    except subprocess.TimeoutExpired as exc:
        row.measured = f"timeout after {exc.timeout:.0f} s"
    except Exception as exc:  # a broken check is a failed row, never a stopped run
        row.measured = f"{type(exc).__name__}: {exc}"
    row.seconds = time.time() - t0
    return row


def run_rows(rows: Sequence[Row], jobs: int = 1, on_done: Optional[Callable[[Row], None]] = None) -> List[Row]:
    """Run the rows wave by wave, up to ``jobs`` at a time inside a wave; every row runs whatever others do."""
    for wave in sorted({r.wave for r in rows}):
        todo = [r for r in rows if r.wave == wave]
        with concurrent.futures.ThreadPoolExecutor(max(1, jobs)) as pool:
            for done in pool.map(run_row, todo):
                if on_done:
                    on_done(done)
    return list(rows)


def format_table(rows: Sequence[Row]) -> str:
    lines = ["| check | result | measured | seconds |", "|---|---|---|---:|"]
    for r in rows:
        measured = r.measured.replace("|", "/").replace("\n", " ")
        lines.append(f"| {r.name} | {'pass' if r.passed else 'FAIL'} | {measured} | {r.seconds:.1f} |")
    return "\n".join(lines)


def exit_code(rows: Sequence[Row]) -> int:
    return 0 if rows and all(r.passed for r in rows) else 1


# ------------------------------------------------------------------------------------ subprocesses

def child_env(cfg) -> dict:
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""),
               PYTHONWARNINGS="ignore", HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    if cfg.cpu:
        env.setdefault("OMP_NUM_THREADS", "1")
        env["CUDA_VISIBLE_DEVICES"] = ""  # CPU mode even on a GPU machine
    return env


def sh(cmd: Sequence, log: Path, timeout: float, env: Optional[dict] = None) -> str:
    """Run ``python cmd...`` with its output in ``log``; fail with the log's last line on a non-zero exit."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "a", encoding="utf-8") as f:
        f.write("$ python " + " ".join(map(str, cmd)) + "\n")
        f.flush()
        proc = subprocess.Popen([sys.executable, *map(str, cmd)], cwd=REPO, env=env, stdout=f,
                                stderr=subprocess.STDOUT, start_new_session=True)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait()
            raise
    out = log.read_text(encoding="utf-8", errors="replace")
    if proc.returncode != 0:
        tail = [line for line in out.splitlines() if line.strip()][-1:] or [""]
        raise CheckFailed(f"exit {proc.returncode}: {tail[0][:160]}")
    return out


def load_script(path: Path, name: str):
    """A repository file that is not part of the installed package, imported by path."""
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        sys.modules[name] = module
    return sys.modules[name]


def support():
    """tests/support.py: the vocabulary and MNLI fixture writers the finetuning tests use."""
    return load_script(REPO / "tests" / "support.py", "_acceptance_support")


def train_losses(path: Path) -> dict:
    from megatron.training.metrics import read_metrics

    return {r["iteration"]: r["lm loss"] for r in read_metrics(str(path), split="train") if "lm loss" in r}


# ------------------------------------------------------------------------------------ the checks

@dataclass
class Config:
    cpu: bool
    out: Path
    steps: int
    timeout: float
    peak_tflops: Optional[float]
    min_speed_ratio: float
    perf_steps: int
    perf_shapes: List[str]
    perf_micro_batch: int
    model: dict = field(default_factory=dict)  # layers, hidden, heads, seq, mbs for the training rows

    def model_flags(self, seq=None) -> list:
        m = self.model
        return ["--num-layers", m["layers"], "--hidden-size", m["hidden"], "--num-attention-heads", m["heads"],
                "--seq-length", seq or m["seq"], "--max-position-embeddings", seq or m["seq"],
                "--micro-batch-size", m["mbs"], "--global-batch-size", 2 * m["mbs"], "--seed", 7]

    def precision(self) -> list:
        return [] if self.cpu else ["--bf16"]


def _scheme_flags(scheme: str, post_ln: bool) -> list:
    return ["--init-scheme", scheme] + (["--apply-residual-connection-post-layernorm"] if post_ln else [])


def check_losses(losses: dict, steps: int) -> str:
    """All ``steps`` iterations logged, finite, and (from 10 steps on) the loss went down."""
    if sorted(losses) != list(range(1, steps + 1)):
        raise CheckFailed(f"logged iterations {sorted(losses)[:5]}... != 1..{steps}")
    values = [losses[i] for i in range(1, steps + 1)]
    if not all(math.isfinite(v) for v in values):
        raise CheckFailed(f"non-finite loss: {values}")
    text = f"loss {values[0]:.3f} -> {values[-1]:.3f}"
    if steps >= 10:
        third = max(1, steps // 3)
        first, last = sum(values[:third]) / third, sum(values[-third:]) / third
        if not last < first:
            raise CheckFailed(f"{text}: mean of the last {third} steps not below the first {third}")
    return text


def gpt_cmd(cfg: Config, scheme: str, post_ln: bool, iters: int, metrics: Path, extra=()) -> list:
    return ["pretrain_gpt.py", *cfg.model_flags(), "--train-iters", iters, "--lr", "1e-3", "--lr-warmup-iters", 2,
            "--mock-data", "--vocab-size", GPT_VOCAB, "--log-interval", 1, "--eval-iters", 0,
            "--metrics-file", metrics, *_scheme_flags(scheme, post_ln), *cfg.precision(), *extra]


def gpt_row(cfg: Config, scheme: str, post_ln: bool) -> Callable[[Row], str]:
    def check(row: Row) -> str:
        metrics = cfg.out / f"{row.log.stem}.metrics.jsonl"
        sh(gpt_cmd(cfg, scheme, post_ln, cfg.steps, metrics), row.log, cfg.timeout, child_env(cfg))
        return check_losses(train_losses(metrics), cfg.steps)
    return check


BERT_WORDS = ("the cat dog bird sat ran flew on a mat tree sky it is was not red blue green small big "
              "which one sees".split())


def bert_data(cfg: Config) -> Callable[[Row], str]:
    """A generated sentence-split corpus over the finetuning vocabulary, preprocessed to indexed data."""
    def check(row: Row) -> str:
        folder = cfg.out / "bert_data"
        folder.mkdir(parents=True, exist_ok=True)
        vocab = support().write_vocab(folder)
        rng = random.Random(0)
        with open(folder / "corpus.jsonl", "w", encoding="utf-8") as f:
            for _ in range(400):
                sentences = [" ".join(rng.choice(BERT_WORDS) for _ in range(rng.randint(4, 10))) + "."
                             for _ in range(rng.randint(3, 8))]
                f.write(json.dumps({"text": " ".join(s.capitalize() for s in sentences)}) + "\n")
        sh(["tools/preprocess_data.py", "--input", folder / "corpus.jsonl", "--json-keys", "text",
            "--split-sentences", "--tokenizer-type", "BertWordPieceLowerCase", "--vocab-file", vocab,
            "--output-prefix", folder / "corpus", "--workers", 1], row.log, cfg.timeout, child_env(cfg))
        idx = folder / "corpus_text_sentence.idx"
        if not idx.is_file():
            raise CheckFailed(f"{idx.name} not written")
        return f"400 documents, {idx.stat().st_size} B index"
    return check


def bert_flags(cfg: Config) -> list:
    folder = cfg.out / "bert_data"
    return ["--vocab-file", folder / "vocab.txt", "--tokenizer-type", "BertWordPieceLowerCase"]


def bert_row(cfg: Config, scheme: str, post_ln: bool, save: Optional[Path] = None) -> Callable[[Row], str]:
    def check(row: Row) -> str:
        prefix = cfg.out / "bert_data" / "corpus_text_sentence"
        if not Path(str(prefix) + ".idx").is_file():
            raise CheckFailed("no BERT data (the data row failed)")
        metrics = cfg.out / f"{row.log.stem}.metrics.jsonl"
        cmd = ["pretrain_bert.py", *cfg.model_flags(seq=cfg.model["bert_seq"]), *bert_flags(cfg),
               "--train-iters", cfg.steps, "--lr", "1e-3", "--lr-warmup-iters", 2, "--data-path", prefix,
               "--split", "1,0,0", "--eval-iters", 0, "--log-interval", 1, "--metrics-file", metrics,
               "--data-cache-path", cfg.out / f"{row.log.stem}.cache", *_scheme_flags(scheme, post_ln),
               *cfg.precision()]
        if save:
            cmd += ["--save", save]
        sh(cmd, row.log, cfg.timeout, child_env(cfg))
        text = check_losses(train_losses(metrics), cfg.steps)
        if save and not (save / "latest_checkpointed_iteration.txt").is_file():
            raise CheckFailed(f"{text}; no checkpoint under {save}")
        return text
    return check


def mnli_row(cfg: Config, pretrained: Path, steps: int) -> Callable[[Row], str]:
    """``steps`` finetuning iterations (one epoch of a generated TSV) from the saved BERT, at TP=1."""
    def check(row: Row) -> str:
        if not (pretrained / "latest_checkpointed_iteration.txt").is_file():
            raise CheckFailed("no pretrained BERT checkpoint (its row failed)")
        folder = cfg.out / "mnli"
        folder.mkdir(parents=True, exist_ok=True)
        gbs = 2 * cfg.model["mbs"]
        train = support().write_mnli(folder / "train.tsv", steps * gbs, seed=1)
        dev = support().write_mnli(folder / "dev.tsv", 2 * gbs, seed=2)
        out = sh(["tasks/main.py", "--task", "MNLI", *cfg.model_flags(seq=cfg.model["bert_seq"]),
                  *bert_flags(cfg), "--init-scheme", "dslm", "--tensor-model-parallel-size", 1, "--lr", "1e-4",
                  "--epochs", 1, "--log-interval", 1, "--train-data", train, "--valid-data", dev,
                  "--pretrained-checkpoint", pretrained, "--save", folder / "ckpt", *cfg.precision()],
                 row.log, cfg.timeout, child_env(cfg))
        if "loaded pretrained BERT" not in out:
            raise CheckFailed("the pretrained checkpoint was not loaded")
        iters = [line for line in out.splitlines() if line.startswith(" iteration") and "loss:" in line]
        if len(iters) != steps:
            raise CheckFailed(f"{len(iters)} iterations logged, expected {steps}")
        loss = float(iters[-1].split("loss: ")[1].split(" ")[0])
        accs = [line for line in out.splitlines() if "accuracy:" in line]
        if not math.isfinite(loss) or not accs:
            raise CheckFailed(f"last loss {loss}, {len(accs)} validation lines")
        return f"{steps} steps, last loss {loss:.3f}, dev accuracy {accs[-1].split('accuracy: ')[1].split()[0]}"
    return check


def resume_row(cfg: Config, k: int, rtol: float) -> Callable[[Row], str]:
    """Straight 2k steps vs save at k -> resume: the loss of step k+1 must agree (dropout on)."""
    def check(row: Row) -> str:
        ck, env = cfg.out / "resume_ckpt", child_env(cfg)
        a, b = cfg.out / "resume_straight.metrics.jsonl", cfg.out / "resume_resumed.metrics.jsonl"
        sh(gpt_cmd(cfg, "dslm", False, 2 * k, a), row.log, cfg.timeout, env)
        sh(gpt_cmd(cfg, "dslm", False, 2 * k, cfg.out / "resume_first.metrics.jsonl",
                   ["--save", ck, "--save-interval", k, "--exit-interval", k]), row.log, cfg.timeout, env)
        out = sh(gpt_cmd(cfg, "dslm", False, 2 * k, b, ["--load", ck]), row.log, cfg.timeout, env)
        if "resumed from" not in out:
            raise CheckFailed("the second run did not resume from the checkpoint")
        straight, resumed = train_losses(a), train_losses(b)
        if k + 1 not in straight or k + 1 not in resumed:
            raise CheckFailed(f"step {k + 1} missing (straight {sorted(straight)}, resumed {sorted(resumed)})")
        x, y = straight[k + 1], resumed[k + 1]
        rel = abs(x - y) / max(abs(x), 1e-12)
        text = f"step {k + 1}: {x:.6f} vs {y:.6f} (rel diff {rel:.1e})"
        if not rel <= rtol:
            raise CheckFailed(f"{text} > {rtol:g}")
        return text
    return check


def moments_row(cfg: Config) -> Callable[[Row], str]:
    """--log-moments-interval: the JSONL holds one finite record per layer at the logged iteration."""
    def check(row: Row) -> str:
        path = cfg.out / "moments.jsonl"
        layers, steps = cfg.model["layers"], cfg.steps
        sh(gpt_cmd(cfg, "dslm", False, steps, cfg.out / "moments_run.metrics.jsonl",
                   ["--log-moments-interval", steps, "--moments-file", path]), row.log, cfg.timeout, child_env(cfg))
        if not path.is_file():
            raise CheckFailed(f"{path.name} not written")
        records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        numbers = sorted(r["layer"] for r in records)
        if {r["iteration"] for r in records} != {0}:  # step 1 (before any update) is iteration 0
            raise CheckFailed(f"iterations {sorted({r['iteration'] for r in records})} != [0]")
        if len(set(numbers)) != len(numbers) or not set(range(1, layers + 1)) <= set(numbers):
            raise CheckFailed(f"layers {numbers} are not one record per layer 1..{layers}")
        bad = [r["layer"] for r in records if not all(math.isfinite(v) for v in r.values())]
        if bad:
            raise CheckFailed(f"non-finite moments at layers {bad}")
        return f"{len(records)} records, one per layer {numbers[0]}..{numbers[-1]}, at iteration 0"
    return check


def parse_shape(shape: str):
    dims, _, seq = shape.partition(":")
    layers, hidden = (int(v) for v in dims.split("x"))
    return layers, hidden, int(seq or 128)


def perf_row(cfg: Config, shape: str) -> Callable[[Row], str]:
    def check(row: Row) -> str:
        result = cfg.out / f"{row.log.stem}.json"
        cmd = [Path(__file__), "--perf-worker", shape, "--perf-steps", cfg.perf_steps, "--perf-micro-batch",
               cfg.perf_micro_batch, "--result", result] + ([] if cfg.cpu else ["--gpu"])
        env = child_env(cfg)
        if "OMP_NUM_THREADS" not in os.environ:  # speed rows run alone: all cores, as bench_train.py
            env.pop("OMP_NUM_THREADS", None)
        sh(cmd, row.log, 2 * cfg.timeout, env)
        r = json.loads(result.read_text())
        layers, hidden, seq = parse_shape(shape)
        peak = cfg.peak_tflops or (peak_tflops_for(r["device"]) if not cfg.cpu else None)
        parts = []
        for name in ("ours", "stock"):
            u = mfu(r[name], layers, hidden, seq, r["vocab"], peak)
            parts.append(f"{name} {r[name]:.0f} tok/s" + (f" MFU {100 * u:.1f}%" if u is not None else ""))
        ratio = r["ours"] / r["stock"]
        text = ", ".join(parts) + f", ours/stock {ratio:.2f}" + ("" if peak else " (no peak: MFU n/a)")
        if not (math.isfinite(ratio) and ratio >= cfg.min_speed_ratio):
            raise CheckFailed(f"{text} < {cfg.min_speed_ratio:g}")
        return text
    return check


def perf_worker(shape: str, steps: int, mbs: int, gpu: bool, result: Path) -> None:
    """Tokens/s of our default path (DSLM) and stock megatron-core's local spec, interleaved in this process."""
    bench = load_script(REPO / "scripts" / "bench_train.py", "bench_train")
    import torch

    layers, hidden, seq = parse_shape(shape)
    heads = max(1, hidden // 64) if hidden >= 256 else max(1, hidden // 32)
    fns = {
        "stock": bench.megatron_step_fn(layers, hidden, heads, seq, mbs, "megatron", "local", gpu, stock=True,
                                        linear_impl="megatron", grad_buffer="megatron")[0],
        "ours": bench.megatron_step_fn(layers, hidden, heads, seq, mbs, "dslm", "auto", gpu)[0],
    }
    times = bench.time_interleaved(fns, steps, 2, gpu)
    device = torch.cuda.get_device_name(0) if gpu else "CPU"
    out = {name: mbs * seq / t for name, t in times.items()}
    out.update(device=device, vocab=bench.VOCAB + 1, step_s=times)
    result.write_text(json.dumps(out))


# ------------------------------------------------------------------------------------ the run

def build_rows(cfg: Config, resume_rtol: float) -> List[Row]:
    bert_ckpt = cfg.out / "bert_dslm_pre_ckpt"
    rows = []
    for scheme in ("megatron", "dslm"):
        for post_ln in (False, True):
            ln = "Post-LN" if post_ln else "Pre-LN"
            rows.append(Row(f"GPT pretrain {scheme} {ln}", gpt_row(cfg, scheme, post_ln), wave=0))
    rows.append(Row("BERT data (preprocess)", bert_data(cfg), wave=0))
    rows.append(Row("GPT save -> resume", resume_row(cfg, 2 if cfg.cpu else 5, resume_rtol), wave=0))
    rows.append(Row("GPT moments logged", moments_row(cfg), wave=0))
    for scheme in ("megatron", "dslm"):
        for post_ln in (False, True):
            ln = "Post-LN" if post_ln else "Pre-LN"
            save = bert_ckpt if (scheme, post_ln) == ("dslm", False) else None
            rows.append(Row(f"BERT pretrain {scheme} {ln}", bert_row(cfg, scheme, post_ln, save), wave=1))
    rows.append(Row("MNLI finetune TP=1", mnli_row(cfg, bert_ckpt, 3 if cfg.cpu else 20), wave=2))
    for shape in cfg.perf_shapes:
        layers, hidden, seq = parse_shape(shape)
        rows.append(Row(f"speed GPT {layers}x{hidden} seq {seq}", perf_row(cfg, shape), wave=3))
    for r in rows:
        r.log = cfg.out / "logs" / (r.name.lower().replace(" ", "_").replace("->", "to").replace("=", "")
                                    .replace("-", "_").replace("(", "").replace(")", "") + ".log")
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cpu", action="store_true", help="tiny shapes, fp32, on CPU (tests the checks themselves)")
    p.add_argument("--out", help="folder for logs, metrics and checkpoints (default: a temporary folder, removed "
                                 "when every row passes)")
    p.add_argument("--steps", type=int, default=None, help="pretraining steps per run (default 30; 3 with --cpu)")
    p.add_argument("--timeout", type=float, default=None, help="seconds per subprocess (default 240; 300 with --cpu)")
    p.add_argument("--jobs", type=int, default=None, help="rows run at once inside a wave (default 4; 1 with "
                                                          "--cpu); speed rows always run alone")
    p.add_argument("--peak-tflops", type=float, default=None,
                   help="peak bf16 dense TFLOP/s for MFU (default: from the device name)")
    p.add_argument("--min-speed-ratio", type=float, default=None,
                   help="a speed row fails below this ours/stock tokens/s ratio (default 0.9; 0.7 with --cpu)")
    p.add_argument("--resume-rtol", type=float, default=None,
                   help="relative tolerance of the resumed step's loss (default 0 on CPU, 1e-3 on GPU)")
    p.add_argument("--perf-shapes", nargs="*", default=None, help="LAYERSxHIDDEN[:SEQ] for the speed rows")
    p.add_argument("--perf-steps", type=int, default=None, help="timed steps per variant (median; default 8)")
    p.add_argument("--perf-micro-batch", type=int, default=None, help="micro-batch of the speed rows (default 4)")
    p.add_argument("--perf-worker", help=argparse.SUPPRESS)
    p.add_argument("--result", help=argparse.SUPPRESS)
    p.add_argument("--gpu", action="store_true", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    for flag in ("steps", "timeout", "jobs", "perf_steps", "perf_micro_batch"):
        value = getattr(a, flag)
        if value is not None and value <= 0:
            p.error(f"--{flag.replace('_', '-')} must be positive, got {value}")
    if a.perf_worker:
        perf_worker(a.perf_worker, a.perf_steps or 8, a.perf_micro_batch or 4, a.gpu, Path(a.result))
        return 0
    if not a.cpu:
        import torch

        if not torch.cuda.is_available():
            p.error("no CUDA device: run on a GPU machine, or pass --cpu")
    if a.perf_shapes:
        for shape in a.perf_shapes:
            try:
                parse_shape(shape)
            except ValueError:
                p.error(f"--perf-shapes: {shape!r} is not LAYERSxHIDDEN[:SEQ]")
    keep = a.out is not None
    out = Path(a.out) if a.out else Path(tempfile.mkdtemp(prefix="gpu_acceptance_"))
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        p.error(f"--out {out} exists and is not an empty folder")
    out.mkdir(parents=True, exist_ok=True)
    model = (dict(layers=2, hidden=32, heads=2, seq=32, bert_seq=64, mbs=2) if a.cpu else
             dict(layers=12, hidden=256, heads=4, seq=256, bert_seq=128, mbs=8))
    cfg = Config(cpu=a.cpu, out=out, steps=a.steps or (3 if a.cpu else 30), timeout=a.timeout or (300 if a.cpu else 240),
                 peak_tflops=a.peak_tflops,
                 min_speed_ratio=a.min_speed_ratio if a.min_speed_ratio is not None else (0.7 if a.cpu else 0.9),
                 perf_steps=a.perf_steps or 8, perf_micro_batch=a.perf_micro_batch or 4,
                 perf_shapes=a.perf_shapes or (["4x64:64", "8x32:64"] if a.cpu
                                               else ["24x1024:512", "192x256:512", "1000x128:256"]),
                 model=model)
    rtol = a.resume_rtol if a.resume_rtol is not None else (0.0 if a.cpu else 1e-3)
    if not a.cpu:
        import torch

        name = torch.cuda.get_device_name(0)
        peak = a.peak_tflops or peak_tflops_for(name)
        print(f"device: {name}, peak bf16 {peak or 'unknown (pass --peak-tflops)'} TFLOP/s", flush=True)
    print(f"logs: {out / 'logs'}", flush=True)
    t0 = time.time()
    rows = build_rows(cfg, rtol)
    run_rows(rows, jobs=a.jobs or (1 if a.cpu else 4),
             on_done=lambda r: print(f"  {'pass' if r.passed else 'FAIL'}  {r.name}  ({r.seconds:.0f} s)", flush=True))
    print(f"\n{format_table(rows)}\n\n{sum(r.passed for r in rows)}/{len(rows)} passed in {time.time() - t0:.0f} s")
    for r in rows:
        if not r.passed and r.log and r.log.is_file():
            tail = r.log.read_text(errors="replace").splitlines()[-15:]
            print(f"\n--- {r.name}: last lines of {r.log}\n" + "\n".join(tail))
    code = exit_code(rows)
    if code == 0 and not keep:
        shutil.rmtree(out, ignore_errors=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
