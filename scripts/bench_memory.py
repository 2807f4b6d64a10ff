"""Peak memory of one GPT training step (forward, backward, Adam) with activation recompute off, selective, full.

Each configuration runs in a fresh subprocess that builds exactly what ``pretrain_gpt.py`` builds (the
``scripts/bench_train.py`` step function, default speed flags, mock batches, vocab 1024) and takes one warm-up
step first, so Adam's moment buffers already exist; the measured step is the second.

- CPU (fp32): the step's peak resident memory above the resident memory just before it. The kernel's high-water
  mark is reset first (``/proc/self/clear_refs``) and read back from ``VmHWM``; glibc is told to mmap every
  allocation above 64 KiB (``MALLOC_MMAP_THRESHOLD_``), so freed tensors leave the resident set at once and the
  warm-up step's peak does not hide the measured one.
- GPU (bf16, ``--gpu``): ``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats``, minus what was
  allocated before the step (the weights, grads and optimizer state, also printed).

    python scripts/bench_memory.py                           # 192x256 and 1000x128, seq 256, micro-batch 1
    python scripts/bench_memory.py --shapes 48x128,192x64    # a few minutes on 2 cores
    python scripts/bench_memory.py --gpu --micro-batch-size 2
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

RECOMPUTE = {
    "off": [],
    "selective": ["--recompute-activations"],
    "full": ["--recompute-granularity", "full", "--recompute-method", "uniform", "--recompute-num-layers", "1"],
}


def bench_train():
    """scripts/bench_train.py as a module (its step functions; scripts are not part of the package)."""
    if "bench_train" not in sys.modules:
        spec = importlib.util.spec_from_file_location("bench_train", REPO / "scripts" / "bench_train.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        sys.modules["bench_train"] = module
    return sys.modules["bench_train"]


def parse_shapes(text: str):
    shapes = []
    for item in text.split(","):
        m = re.fullmatch(r"\s*(\d+)x(\d+)\s*", item)
        if not m or int(m.group(1)) <= 0 or int(m.group(2)) <= 0:
            raise ValueError(f"--shapes: {item!r} is not LAYERSxHIDDEN")
        shapes.append((int(m.group(1)), int(m.group(2))))
    return shapes


def _rss_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        return int(re.search(rf"^{field}:\s+(\d+) kB", f.read(), re.M).group(1))


def worker(layers: int, hidden: int, seq: int, mbs: int, recompute: str, gpu: bool) -> dict:
    import torch

    bench = bench_train()
    heads = max(1, hidden // 64) if hidden >= 256 else max(1, hidden // 32)
    step, _ = bench.megatron_step_fn(layers, hidden, heads, seq, mbs, "dslm", "auto", gpu,
                                     extra_argv=RECOMPUTE[recompute])
    step()  # warm-up: Adam state, allocator pools, lazily built buffers
    if gpu:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        step()
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated()
        return {"step_peak": peak - before, "resident": before, "total_peak": peak}
    before = _rss_kib("VmRSS") * 1024
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset VmHWM to the current resident set
    step()
    peak = _rss_kib("VmHWM") * 1024
    return {"step_peak": peak - before, "resident": before, "total_peak": peak}


def run_config(layers, hidden, seq, mbs, recompute, gpu, timeout) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        result = Path(tmp) / "result.json"
        env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536", PYTHONWARNINGS="ignore",
                   PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
        cmd = [sys.executable, __file__, "--worker", f"{layers}x{hidden}", "--recompute", recompute,
               "--seq-length", str(seq), "--micro-batch-size", str(mbs), "--result", str(result)]
        proc = subprocess.run(cmd + (["--gpu"] if gpu else []), cwd=REPO, env=env, capture_output=True,
                              text=True, timeout=timeout)
        if proc.returncode != 0:
            tail = (proc.stdout + proc.stderr).strip().splitlines()[-1:] or [""]
            raise RuntimeError(f"{layers}x{hidden} {recompute}: exit {proc.returncode}: {tail[0]}")
        return json.loads(result.read_text())


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shapes", default="192x256,1000x128", help="comma-separated LAYERSxHIDDEN")
    p.add_argument("--seq-length", type=int, default=256)
    p.add_argument("--micro-batch-size", type=int, default=1)
    p.add_argument("--recompute", default=None, help="comma-separated subset of off,selective,full (default all)")
    p.add_argument("--gpu", action="store_true", help="bf16 on CUDA, torch.cuda.max_memory_allocated")
    p.add_argument("--timeout", type=float, default=1800, help="seconds per configuration")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--result", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    try:
        shapes = parse_shapes(a.worker or a.shapes)
        modes = (a.recompute or ",".join(RECOMPUTE)).split(",")
        if any(m not in RECOMPUTE for m in modes):
            raise ValueError(f"--recompute: {a.recompute!r} is not a subset of {','.join(RECOMPUTE)}")
        if a.seq_length <= 0 or a.micro_batch_size <= 0:
            raise ValueError("--seq-length and --micro-batch-size must be positive")
    except ValueError as exc:
        p.error(str(exc))
    if a.worker:
        (layers, hidden), = shapes
        out = worker(layers, hidden, a.seq_length, a.micro_batch_size, modes[0], a.gpu)
        Path(a.result).write_text(json.dumps(out))
        return 0
    if a.gpu:
        import torch

        if not torch.cuda.is_available():
            p.error("--gpu needs a CUDA device")
        device = torch.cuda.get_device_name(0)
    else:
        device = "CPU"
    measure = ("torch.cuda.max_memory_allocated - allocated before the step" if a.gpu else
               "peak RSS during the step (VmHWM after clear_refs) - RSS before it")
    print(f"device: {device} | {'bf16' if a.gpu else 'fp32'} | seq {a.seq_length} | micro-batch "
          f"{a.micro_batch_size} | vocab 1024 | DSLM, default speed flags | second step of a fresh process\n"
          f"step peak = {measure}\n")
    print("| shape | recompute | step peak MiB | ratio to off | resident before MiB | total peak MiB |")
    print("|---|---|---:|---:|---:|---:|", flush=True)
    failed = False
    for layers, hidden in shapes:
        off = None
        for mode in modes:
            try:
                r = run_config(layers, hidden, a.seq_length, a.micro_batch_size, mode, a.gpu, a.timeout)
            except (RuntimeError, subprocess.TimeoutExpired) as exc:
                print(f"| {layers}x{hidden} | {mode} | failed: {str(exc)[:120]} | | | |", flush=True)
                failed = True
                continue
            if mode == "off":
                off = r["step_peak"]
            ratio = f"{r['step_peak'] / off:.2f}" if off else "-"
            mib = 1 << 20
            print(f"| {layers}x{hidden} | {mode} | {r['step_peak'] / mib:.1f} | {ratio} | "
                  f"{r['resident'] / mib:.0f} | {r['total_peak'] / mib:.0f} |", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
