"""Cost of moment logging and of DSLM itself, measured on the real training step (same shape, same run).

For each variant, 200 optimizer steps are timed end to end (median over --rounds interleaved rounds):
- ``megatron``: default init, lambda = beta = 1 (the stock residual path)
- ``dslm``: DSLM init and lambda/beta residual scaling
- ``dslm +moments@100``: DSLM with --log-moments-interval 100 (hooks attached on 2 of the 200 steps)
Targets (issue 4): moments@100 <= 3 % over dslm; dslm vs megatron <= 2 % apart.

    python scripts/bench_moments.py [--shape 24x64] [--iters 200] [--rounds 3]
"""

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import bench_train  # noqa: E402


def run(step, hooked, iters, interval):
    t0 = time.perf_counter()
    for it in range(1, iters + 1):
        (hooked if hooked is not None and it % interval == 0 else step)()
    return time.perf_counter() - t0


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shape", default="24x64", help="LAYERSxHIDDEN[:SEQ]")
    p.add_argument("--iters", type=int, default=200)
    p.add_argument("--interval", type=int, default=100)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--micro-batch-size", type=int, default=4)
    p.add_argument("--attention-backend", default="auto", choices=["auto", "local", "sdpa"])
    a = p.parse_args()
    dims, _, seq = a.shape.partition(":")
    layers, d = (int(v) for v in dims.split("x"))
    seq = int(seq or 128)
    heads = max(1, d // 32)
    variants = {}
    for scheme in ("megatron", "dslm"):
        step, hooked = bench_train.megatron_step_fn(layers, d, heads, seq, a.micro_batch_size, scheme,
                                                    a.attention_backend, gpu=False)
        for _ in range(3):
            step()
        variants[scheme] = (step, None)
        if scheme == "dslm":
            variants[f"dslm +moments@{a.interval}"] = (step, hooked)
    totals = {name: [] for name in variants}
    for _ in range(a.rounds):
        for name, (step, hooked) in variants.items():
            totals[name].append(run(step, hooked, a.iters, a.interval))
    med = {name: statistics.median(v) for name, v in totals.items()}
    print(f"shape {layers}x{d} seq {seq} heads {heads} micro-batch {a.micro_batch_size}, {a.iters} steps per run, "
          f"median of {a.rounds} interleaved rounds, attention {a.attention_backend}")
    print("| variant | total s | ms/step | vs dslm |")
    print("|---|---:|---:|---:|")
    for name, t in med.items():
        print(f"| {name} | {t:.2f} | {1e3 * t / a.iters:.1f} | {t / med['dslm']:.3f} |")
    mom = med[f"dslm +moments@{a.interval}"] / med["dslm"] - 1
    gap = abs(med["dslm"] / med["megatron"] - 1)
    print(f"moment logging overhead: {100 * mom:+.2f} % (target <= 3 %)   "
          f"dslm vs megatron: {100 * gap:.2f} % apart (target <= 2 %)")


if __name__ == "__main__":
    main()
